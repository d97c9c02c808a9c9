//! Sluice's management API as a library: HTTPS (rustls on the ring provider) over axum, bearer
//! tokens checked against the store, policy versions, tokens, readiness, metrics, node-local
//! views and a redacted sysdump. The OpenAPI document is generated from the handlers
//! (utoipa) and served at `/api/v1/openapi.json`.
//!
//! The `sluice` binary starts it with [`ApiServer::start`], giving the [`sluice_store::Store`]
//! and a [`NodeView`] (what only the running node knows: dataplane and DNS health, counters,
//! the allowlist, flows, and the policy version the dataplane runs).

pub mod admin_socket;
pub mod auth;
pub mod body;
pub mod cluster;
pub mod config;
pub mod error;
pub mod grace;
pub mod local;
pub mod metrics;
pub mod node;
pub mod routes;
pub mod secret;
pub mod server;
pub mod snapshots;
pub mod state;
pub mod tls;
pub mod upgrade;

pub use cluster::{ClusterOverview, ClusterRefusal, ClusterView, MemberInfo};
pub use config::{ApiConfig, MAX_BODY_BYTES};
pub use local::{LocalAnswer, LocalApi};
pub use node::{AllowlistEntry, AllowlistFilter, Check, FlowEntry, FlowFilter, ListingError, NodeCounters, NodeView};
pub use server::{ApiServer, Probe, StartError};
