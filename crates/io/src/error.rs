//! Errors opening ports, worded for the operator: what failed and what to do about it.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum IoError {
    /// No network interface has this name (in the current network namespace).
    InterfaceMissing { name: String },
    /// An interface name the kernel cannot accept (empty, too long, or containing NUL).
    BadInterfaceName { name: String },
    /// The interface is not an Ethernet device (loopback, a tunnel, ...).
    NotEthernet { name: String, hardware_type: u16 },
    /// The process lacks a capability the operation needs.
    PermissionDenied { what: String, source: io::Error },
    /// The interface or the kernel cannot host an AF_XDP port, and why.
    Xdp { name: String, why: String },
    /// Any other failure of a system call.
    Os { op: &'static str, target: String, source: io::Error },
}

impl IoError {
    /// Classify a failed system call on `target`.
    pub(crate) fn os(op: &'static str, target: &str, source: io::Error) -> IoError {
        match source.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => IoError::InterfaceMissing { name: target.to_string() },
            Some(libc::EPERM) | Some(libc::EACCES) => {
                IoError::PermissionDenied { what: format!("{op} on {target}"), source }
            }
            _ => IoError::Os { op, target: target.to_string(), source },
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::InterfaceMissing { name } => write!(
                f,
                "network interface {name:?} does not exist; check the name with `ip link show` \
                 (and that Sluice runs in the network namespace that holds it)"
            ),
            IoError::BadInterfaceName { name } => {
                write!(f, "{name:?} is not a valid interface name: it must be 1 to 15 bytes without NUL or '/'")
            }
            IoError::NotEthernet { name, hardware_type } => write!(
                f,
                "network interface {name:?} is not an Ethernet device (ARP hardware type {hardware_type}); \
                 data ports must be Ethernet interfaces"
            ),
            IoError::PermissionDenied { what, source } => write!(
                f,
                "permission denied for {what} ({source}); run Sluice as root or grant it the \
                 CAP_NET_RAW and CAP_NET_ADMIN capabilities (and CAP_BPF for --software-io af-xdp)"
            ),
            IoError::Xdp { name, why } => write!(f, "network interface {name:?} cannot be an AF_XDP port: {why}"),
            IoError::Os { op, target, source } => write!(f, "{op} on {target} failed: {source}"),
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IoError::PermissionDenied { source, .. } | IoError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}
