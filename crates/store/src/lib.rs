//! Sluice's replicated state on one node: typed commands applied through a Raft group
//! (openraft, v2 storage) whose log and snapshots live in one redb file.
//!
//! - [`state`] is pure: the state, its commands, the state hash chain and the snapshot image
//!   with its schema version. It has no clock and no I/O.
//! - [`raft`] holds the openraft type configuration and the network of a one-voter group.
//! - [`storage`] is the only module that knows redb.
//! - [`Store`] is the handle the rest of the node uses: open, write, read, watch, status.

pub mod raft;
pub mod state;
pub mod storage;
mod store;
mod view;

pub use store::{Applied, Capture, Forwarder, RaftTiming, Status, Store, StoreConfig, StoreError};
pub use view::{ActivePolicy, AppliedView};
