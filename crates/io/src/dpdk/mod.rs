//! DPDK ports (feature `dpdk`): safe wrappers over `sluice-dpdk-sys`.
//!
//! - [`Eal`]: the DPDK environment, initialised once per process.
//! - [`Mempool`]: a pool of packet buffers (mbufs).
//! - [`Mbuf`]: one owned mbuf, implementing the engine's [`Packet`](sluice_dataplane::packet::Packet)
//!   trait (`push_front` prepends into the headroom, `pull_front` trims the front).
//! - [`DpdkPort`]: an ethdev port opened by name or devargs, with bounded rx/tx bursts,
//!   link status, and stats and xstats as named counters.
//! - [`DpdkNode`]: an [`Engine`](sluice_dataplane::engine::Engine) between an internal and an
//!   external DPDK port: receives a burst, runs it through the engine, transmits what the
//!   engine forwards and frees what it drops or consumes.
//! - [`DpdkWorker`]: a node busy-polled on an EAL worker lcore ([`launch`]), with the TAP
//!   service lane read every few microseconds; stopped through a flag.
//!
//! Nothing here allocates per packet: bursts live in fixed arrays of [`MAX_BURST`] mbufs.

mod eal;
mod lcore;
mod mbuf;
mod node;
mod port;
mod worker;

pub use eal::{DpdkError, Eal};
pub use lcore::{launch, LcoreJob};
pub use mbuf::{Burst, Mbuf, Mempool, MempoolConfig};
pub use node::{DpdkNode, NodeStats};
pub use port::{DpdkPort, LinkStatus, PortConfig, PortStatsReader};
pub use worker::{DpdkWorker, DpdkWorkerConfig, BUSY_HOUSEKEEPING_NS, IDLE_HOUSEKEEPING_NS};

/// The largest burst read from or written to a port at once (the engine's burst size).
pub const MAX_BURST: usize = sluice_dataplane::engine::MAX_BURST;
