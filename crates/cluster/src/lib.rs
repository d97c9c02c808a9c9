//! Sluice's cluster layer: seed/join enrolment, the Raft transport over mutual TLS, write
//! forwarding to the leader and membership operations. The state itself is `sluice-store`'s;
//! this crate only moves it between nodes and decides who belongs.
//!
//! - [`pki`], [`join`] and [`identity`]: certificates, the join handshake's cryptography (pure),
//!   and the identity a member keeps on disk.
//! - [`tls`]: rustls configurations and the accept loop; [`network`]: Raft's network and the
//!   node-agent clients; [`service`]: the RPC servers; [`enroll`]: the joiner's side.
//! - [`node`]: [`Cluster`], a running member; [`upgrade`]: the member RPCs of a rolling
//!   upgrade (opaque requests to the runtime's agent, chunked release fetch).

pub mod enroll;
pub mod identity;
pub mod join;
mod membership;
pub mod network;
pub mod node;
pub mod pki;
pub mod restored;
pub mod service;
pub mod tls;
pub mod upgrade;

pub use node::{Cluster, ClusterConfig, LocalNode, Probe, Role, CONTACT_BOUND};

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sluice.cluster.v1");
}
