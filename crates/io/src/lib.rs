//! Packet I/O for the Sluice dataplane: software ports on named interfaces (AF_PACKET or
//! AF_XDP), the TAP service lane to the node's own host stack, and the worker thread that
//! moves frames between them and a [`sluice_dataplane::engine::Engine`].
//!
//! Invariants: a worker never allocates or locks per packet (all buffers are preallocated
//! when a port or worker is created); the control plane reaches a running worker only
//! through the engine's policy handle and allowlist channel, and reads it only through
//! lock-free counter blocks.

pub mod afpacket;
#[cfg(feature = "dpdk")]
pub mod dpdk;
mod error;
mod frame;
mod offload;
mod sys;
pub mod tap;
pub mod worker;
pub mod xdp;

pub use afpacket::AfPacketPort;
pub use error::IoError;
pub use frame::IoFrame;
pub use tap::Tap;
pub use worker::{IoStats, Port, PortStats, Worker, WorkerConfig};
pub use xdp::XdpPort;
