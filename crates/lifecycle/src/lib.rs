//! What keeps a node's state safe across disasters: state snapshots and restore.
//!
//! - [`snapshot`]: a snapshot file of a running store (consistent at one applied index),
//!   optionally with the node's identity and secrets sealed under a passphrase, and the full
//!   verification of a file (format, checksums, schema, state hash against the manifest).
//! - [`repository`]: the node's own snapshot directory: atomic writes, listing, retention.
//! - [`releases`], [`boot`]: release slots and the probation of a new release (design §7).
//! - [`rollout`]: the rolling-upgrade plan kept in the replicated state, and its pure state
//!   machine; [`stamp`]: test release variants.
//! - [`restore`]: the offline `sluice restore`: a fresh data root from a verified snapshot, as
//!   the seed of a new cluster.
//!
//! The file format itself is `sluice-snapshot` (pure); the state and its schema are
//! `sluice-store`'s; identities are `sluice-cluster`'s. This crate composes them and owns the
//! data root layout they share.

pub mod boot;
pub mod layout;
pub mod releases;
pub mod repository;
pub mod restore;
pub mod rollout;
pub mod snapshot;
pub mod stamp;
