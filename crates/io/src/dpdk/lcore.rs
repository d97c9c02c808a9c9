//! Lcores: the threads DPDK runs. The EAL makes one per lcore named in `-l`/`--lcores`,
//! pinned where the operator said; the first is the main lcore (the thread that called
//! `rte_eal_init`), the others wait for a function to run ([`launch`]).
//!
//! The dataplane runs on a worker lcore rather than on a thread of our own because an EAL
//! thread has an lcore id, and with it the mempool's per-lcore cache: buffer allocation and
//! release on the fast path then stay local to the core instead of touching the shared ring.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use sluice_dpdk_sys as sys;

use super::eal::{DpdkError, Eal};

impl Eal {
    /// The main lcore: the thread that initialised the EAL.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: reads EAL configuration after init.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// Every enabled lcore except the main one, ascending.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut lcores = Vec::new();
        // Starting from -1 visits the first lcore; RTE_MAX_LCORE means there are no more.
        let mut i = u32::MAX;
        loop {
            // SAFETY: reads EAL configuration after init; skip the main lcore, no wrap-around.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                return lcores;
            }
            lcores.push(i);
        }
    }

    /// The CPU an lcore runs on (the first of its set when it may float over several).
    pub fn lcore_cpu(&self, lcore: u32) -> Option<u32> {
        if lcore >= sys::RTE_MAX_LCORE {
            return None;
        }
        // SAFETY: returns -1 for an lcore that is not enabled; no other precondition.
        let cpu = unsafe { sys::rte_lcore_to_cpu_id(lcore as c_int) };
        u32::try_from(cpu).ok()
    }
}

/// A function running on a worker lcore; [`wait`](LcoreJob::wait) returns its result.
#[must_use = "a launched job should be waited for"]
pub struct LcoreJob<T> {
    lcore: u32,
    result: Arc<Mutex<Option<std::thread::Result<T>>>>,
}

type Payload = Box<dyn FnOnce() + Send>;

/// Runs `f` on the worker lcore `lcore` (which must be idle). A panic in `f` is caught on
/// the lcore and handed to [`LcoreJob::wait`], never unwound into DPDK's C frames.
pub fn launch<T, F>(_eal: &Eal, lcore: u32, f: F) -> Result<LcoreJob<T>, DpdkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let result = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&result);
    let payload: Payload = Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    // A thin pointer to the fat boxed closure.
    let arg = Box::into_raw(Box::new(payload));
    // SAFETY: `trampoline` takes ownership of `arg` when DPDK runs it; on failure DPDK does
    // not run it and ownership comes back here.
    let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg.cast::<c_void>(), lcore) };
    if rc < 0 {
        // SAFETY: not launched, so `arg` is still ours and was made by Box::into_raw above.
        drop(unsafe { Box::from_raw(arg) });
        return Err(DpdkError::new(format!("rte_eal_remote_launch(lcore {lcore})"), rc));
    }
    Ok(LcoreJob { lcore, result })
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Box<Payload>` leaked by `launch`, given to exactly one run.
    let payload = unsafe { Box::from_raw(arg.cast::<Payload>()) };
    // The payload catches panics itself; this outer guard only covers dropping it.
    match catch_unwind(AssertUnwindSafe(move || (*payload)())) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

impl<T> LcoreJob<T> {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Blocks until the function has returned; its value, or the panic it raised.
    pub fn wait(self) -> std::thread::Result<T> {
        // SAFETY: waits for a lcore we launched on; no other precondition.
        unsafe { sys::rte_eal_wait_lcore(self.lcore) };
        let taken = self.result.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken.unwrap_or_else(|| Err(Box::new("the lcore job ended without a result")))
    }
}
