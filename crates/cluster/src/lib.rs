//! Sluice's cluster layer.

pub mod identity;
pub mod join;
pub mod network;
pub mod pki;
pub mod tls;

pub mod proto {
    tonic::include_proto!("sluice.cluster.v1");
}
