//! The DPDK Environment Abstraction Layer: initialised once per process.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_char;
use std::sync::Mutex;

use sluice_dpdk_sys as sys;

/// An error from DPDK, with the failing call and DPDK's own description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    pub context: String,
    /// A positive errno value (DPDK's `rte_errno` or a negated return code), 0 if none.
    pub errno: i32,
    pub message: String,
}

impl DpdkError {
    pub(crate) fn new(context: impl Into<String>, errno: i32) -> DpdkError {
        let errno = errno.abs();
        DpdkError { context: context.into(), errno, message: strerror(errno) }
    }

    /// An error described by `rte_errno`, as set by the call that just failed.
    pub(crate) fn from_rte_errno(context: impl Into<String>) -> DpdkError {
        DpdkError::new(context, rte_errno())
    }

    pub(crate) fn other(context: impl Into<String>, message: impl Into<String>) -> DpdkError {
        DpdkError { context: context.into(), errno: 0, message: message.into() }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno != 0 {
            write!(f, "{}: {} (errno {})", self.context, self.message, self.errno)
        } else {
            write!(f, "{}: {}", self.context, self.message)
        }
    }
}

impl std::error::Error for DpdkError {}

/// DPDK's `rte_errno` of the calling thread.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer; no preconditions.
    unsafe { sys::sluice_rte_errno() }
}

/// DPDK's description of an errno value (its own codes included).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string (static or in a
    // thread-local buffer) that stays valid until the next call on this thread; it is copied
    // at once.
    unsafe {
        let p = sys::rte_strerror(errno);
        if p.is_null() {
            return format!("error {errno}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Whether `rte_eal_init` has been called in this process (successfully or not: DPDK does
/// not allow a second attempt either way).
static INIT: Mutex<Option<Result<(), DpdkError>>> = Mutex::new(None);

/// Proof that the EAL is initialised. DPDK can be initialised only once per process and is
/// never torn down while it runs, so this token is `Copy` and lives forever.
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise DPDK with these EAL arguments (without the program name), for example
    /// `["-l", "0", "--no-huge", "-m", "256", "--vdev=net_ring0"]`.
    ///
    /// Fails if DPDK was already initialised (or a previous attempt failed) in this process:
    /// the EAL initialises once per process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        let mut state = INIT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = state.as_ref() {
            let how = match previous {
                Ok(()) => "it is already initialised".to_string(),
                Err(e) => format!("the first attempt failed ({e})"),
            };
            return Err(DpdkError::other(
                "rte_eal_init",
                format!("the DPDK EAL initialises once per process and {how}; reuse the first Eal"),
            ));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("sluice").expect("no NUL"));
        for a in args {
            let a = a.as_ref();
            owned.push(
                CString::new(a)
                    .map_err(|_| DpdkError::other("rte_eal_init", format!("argument {a:?} contains NUL")))?,
            );
        }
        // DPDK may permute argv, so it gets its own array of pointers into `owned`, which
        // outlives the call. EAL keeps no pointer to the strings after init returns.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).expect("argument count");
        // SAFETY: argv holds argc valid NUL-terminated strings; the INIT lock guarantees this
        // is the only call in the process.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        let result = if rc < 0 {
            Err(DpdkError::from_rte_errno(format!(
                "rte_eal_init({})",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>().join(" ")
            )))
        } else {
            Ok(())
        };
        *state = Some(result.clone());
        result.map(|()| Eal { _private: () })
    }

    /// The lcore id of the calling thread (`u32::MAX` for a thread DPDK did not create or
    /// register).
    pub fn lcore_id(&self) -> u32 {
        // SAFETY: reads a per-thread variable of an initialised EAL.
        unsafe { sys::rte_lcore_id() }
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> u32 {
        // SAFETY: as lcore_id.
        unsafe { sys::rte_socket_id() }
    }
}
