//! Exit codes and the error type every command returns.
//!
//! Each startup problem has its own code so scripts and the appliance's service manager can
//! tell them apart without reading the message. The table is in the crate docs and in
//! `sluice run --help`.

use std::fmt;

/// Why `sluice` stopped. The discriminant is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The node ran and was stopped by SIGTERM/SIGINT, or the command succeeded.
    Success = 0,
    /// `policy validate` / `policy explain` found errors in the policy.
    PolicyRejected = 1,
    /// Command line not understood (clap's own code).
    Usage = 2,
    /// A client command without `--api`: the admin socket could not be reached, or it
    /// refused the request.
    AdminSocket = 3,
    /// A client command: the API could not be reached (connect, TLS, timeout).
    Unreachable = 4,
    /// A client command: the node answered with a refusal other than authentication (404,
    /// 409, 413, 503, ...); for `status`, the node is not ready.
    Refused = 5,
    /// A client command: the token is missing, invalid or expired, or lacks the role.
    Unauthorized = 6,
    /// A snapshot file is refused: truncated, corrupted, foreign, too new, wrong passphrase
    /// or secrets absent.
    SnapshotRefused = 7,
    /// `sluice restore` into a data root that is not empty, without --force.
    DataRootNotEmpty = 8,
    /// Configuration file unreadable, not TOML, unknown key or wrong type.
    ConfigFile = 10,
    /// A setting is missing or has an invalid value.
    Setting = 11,
    /// Internal and external networks overlap.
    NetworksOverlap = 12,
    /// The gateway is not on the external network.
    GatewayOffNetwork = 13,
    /// The same interface or device was given for both ports.
    SamePort = 14,
    /// The policy file is unreadable or invalid.
    Policy = 15,
    /// A port's network interface does not exist.
    InterfaceMissing = 16,
    /// Not root and without CAP_NET_RAW and CAP_NET_ADMIN.
    Permission = 17,
    /// `--dataplane dpdk` on a binary built without DPDK.
    DpdkNotBuilt = 18,
    /// DPDK needs hugepages and none are configured.
    HugepagesMissing = 19,
    /// Another sluice process holds one of the ports.
    PortBusy = 20,
    /// The data directory cannot be created or written.
    DataDir = 21,
    /// A port or the service lane could not be opened or set up (not an Ethernet device,
    /// no TAP support, or another system error).
    PortOpen = 22,
    /// The DPDK environment could not start: EAL arguments rejected, no worker lcore, no
    /// memory for the packet buffers.
    DpdkInit = 23,
    /// The DNS proxy could not start: a target address or port 53 is taken, or the routes to
    /// the upstreams could not be added.
    DnsProxy = 24,
    /// The control plane could not start: the store cannot be opened, the API's address is
    /// in use, or its certificate or key is unreadable or invalid.
    ControlPlane = 25,
    /// Cluster mode could not start: the join was refused or the seed unreachable, the
    /// identity or token is missing or damaged, or a cluster address is in use.
    Cluster = 26,
    /// The node ran, but its dataplane worker failed (panicked); it was stopped.
    WorkerFailed = 30,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failure with the message shown to the operator: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
