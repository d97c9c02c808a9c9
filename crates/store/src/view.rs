//! The applied view subscribers watch: enough to notice that the state moved and to pick up a
//! newly active policy without reading the whole state.

use std::sync::Arc;

use crate::state::{Digest, State, StateHash};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedView {
    pub applied_index: u64,
    pub state_hash: StateHash,
    pub active_policy: Option<ActivePolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    pub version: u64,
    /// The policy JSON as stored (shared, not copied).
    pub document: Arc<str>,
    pub sha256: Digest,
}

impl AppliedView {
    pub(crate) fn of(state: &State) -> AppliedView {
        AppliedView {
            applied_index: state.applied_index(),
            state_hash: state.state_hash(),
            active_policy: state.active_policy().map(|policy| ActivePolicy {
                version: policy.version,
                document: policy.document.clone(),
                sha256: policy.sha256,
            }),
        }
    }
}
