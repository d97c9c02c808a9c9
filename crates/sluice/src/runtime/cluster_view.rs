//! The cluster as the API sees it: the member list, the `cluster` and `policy_replication`
//! readiness checks, and membership operations, over a running `sluice_cluster::Cluster`;
//! and the node as its peers see it (`LocalNode`).

use std::sync::Arc;
use std::time::Duration;

use sluice_api::cluster::BoxFuture;
use sluice_api::grace::{Grace, POLICY_GRACE};
use sluice_api::{Check, ClusterOverview, ClusterRefusal, ClusterView, MemberInfo, NodeView};
use sluice_cluster::{Cluster, LocalNode, CONTACT_BOUND};

use super::view::NodeState;

/// What this node tells its peers about itself.
pub(super) struct Local {
    pub state: Arc<NodeState>,
    pub store: Arc<sluice_store::Store>,
    pub api_address: String,
}

impl LocalNode for Local {
    fn locally_ready(&self) -> bool {
        let active = self.store.read(|s| s.active_policy().map(|p| p.version));
        let release_ok = self.state.release_check().is_none_or(|c| c.ok);
        self.state.dataplane_check().ok && self.state.dns_check().ok && release_ok && active == self.state.applied()
    }

    fn release(&self) -> String {
        crate::build_info::version()
    }

    fn applied_policy_version(&self) -> Option<u64> {
        self.state.applied()
    }

    fn api_address(&self) -> String {
        self.api_address.clone()
    }
}

/// The cluster, and since when this node's store has been behind the leader's last answer.
pub(super) struct ClusterHandle(pub Arc<Cluster>, pub Grace);

impl ClusterHandle {
    pub fn new(cluster: Arc<Cluster>) -> ClusterHandle {
        ClusterHandle(cluster, Grace::new(POLICY_GRACE))
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn classify(message: String) -> ClusterRefusal {
    if message.contains("not a member") {
        ClusterRefusal::UnknownMember(message)
    } else if message.contains("no leader") || message.contains("address is unknown") {
        ClusterRefusal::Unavailable(message)
    } else {
        ClusterRefusal::Conflict(message)
    }
}

impl ClusterView for ClusterHandle {
    fn overview(&self) -> ClusterOverview {
        let shared = &self.0.shared;
        let status = shared.store.status();
        let metrics = shared.store.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let probes = shared.probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let (answer, contact, error) = if *id == shared.node_id {
                    (Some(shared.local_status()), Some(0), None)
                } else {
                    let probe = probes.get(id).cloned().unwrap_or_default();
                    (probe.status, probe.last_contact.map(|t| millis(t.elapsed())), probe.error)
                };
                MemberInfo {
                    id: *id,
                    cluster_address: node.addr.clone(),
                    api_address: answer.as_ref().map(|a| a.api_address.clone()),
                    role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                    leader: status.leader == Some(*id),
                    release: answer.as_ref().map(|a| a.release.clone()),
                    applied_index: answer.as_ref().map(|a| a.applied_index),
                    lag: answer.as_ref().map(|a| status.applied_index.saturating_sub(a.applied_index)),
                    state_hash: answer.as_ref().map(|a| a.state_hash.clone()),
                    last_contact_ms: contact,
                    ready: answer.as_ref().map(|a| a.ready),
                    error,
                }
            })
            .collect();
        ClusterOverview {
            mode: "cluster".into(),
            cluster_id: Some(shared.cluster_id.clone()),
            node_id: shared.node_id,
            leader: status.leader,
            term: status.term,
            members,
        }
    }

    fn checks(&self, applied: Option<u64>) -> Vec<(String, Check)> {
        let shared = &self.0.shared;
        let status = shared.store.status();
        let metrics = shared.store.raft().metrics().borrow().clone();
        let bound = millis(CONTACT_BOUND);
        let (cluster, leader_view) = match status.leader {
            None => {
                (Check::failed(format!("no leader is known (term {}); writes are refused with 503", status.term)), None)
            }
            Some(leader) if leader == shared.node_id => {
                let acked = metrics.millis_since_quorum_ack;
                let check = if status.voters.len() == 1 || acked.is_some_and(|ms| ms < bound) {
                    Check::ok(format!(
                        "leader (term {}), a quorum acknowledged {} ms ago",
                        status.term,
                        acked.unwrap_or(0)
                    ))
                } else {
                    Check::failed(format!(
                        "leader (term {}) without a quorum for {} ms",
                        status.term,
                        acked.map_or_else(|| "unknown".into(), |ms| ms.to_string())
                    ))
                };
                (check, Some(shared.local_status()))
            }
            Some(leader) => {
                let probe = shared.probes.lock().unwrap_or_else(|p| p.into_inner()).get(&leader).cloned();
                let probe = probe.unwrap_or_default();
                let heard = probe.last_contact.map(|t| millis(t.elapsed()));
                let check = match heard {
                    Some(ms) if ms < bound => Check::ok(format!(
                        "follower of node {leader} (term {}), heard from it {ms} ms ago",
                        status.term
                    )),
                    Some(ms) => Check::failed(format!("node {leader} leads but has not answered for {ms} ms")),
                    None => Check::failed(format!(
                        "node {leader} leads but has not answered yet{}",
                        probe.error.map(|e| format!(": {e}")).unwrap_or_default()
                    )),
                };
                let view = if cluster_ok(&check) { probe.status } else { None };
                (check, view)
            }
        };
        // Replication is judged on the store: this node has applied what the leader had at its
        // last answer (up to a second old), so a write a moment ago is not a lag. The
        // dataplane running this store's active version is the `policy` check's part.
        let replication = match leader_view {
            None => Check::failed("the leader's committed policy version is not known (no leader heard from)"),
            Some(leader) => {
                let committed = Some(leader.active_policy_version).filter(|v| *v != 0);
                let lag = leader.applied_index.saturating_sub(status.applied_index);
                let behind = self.1.behind(lag > 0);
                let runs = applied.map_or_else(|| "none".into(), |a| a.to_string());
                match (committed, applied) {
                    (None, None) => Check::ok("no policy committed; the dataplane denies everything"),
                    (None, Some(a)) => Check::failed(format!(
                        "the dataplane runs version {a} but the leader has no policy (index lag {lag})"
                    )),
                    (Some(c), None) => {
                        Check::failed(format!("the leader committed version {c}; the dataplane runs none"))
                    }
                    (Some(c), Some(_)) if behind.is_some() && !self.1.tolerated(behind) => Check::failed(format!(
                        "this node is {lag} entries behind the leader's applied index {} ({}; the leader committed \
                         version {c}, the dataplane runs {runs})",
                        leader.applied_index,
                        match behind.flatten() {
                            Some(d) => format!("last in sync {} ms ago", d.as_millis()),
                            None => "not in sync since it started".to_owned(),
                        }
                    )),
                    (Some(c), Some(_)) => Check::ok(format!(
                        "caught up with the leader's last answer (index lag {lag}); the leader committed version \
                         {c}, the dataplane runs {runs}"
                    )),
                }
            }
        };
        vec![("cluster".into(), cluster), ("policy_replication".into(), replication)]
    }

    fn remove_member(&self, id: u64, force: bool) -> BoxFuture<'_, Result<Vec<u64>, ClusterRefusal>> {
        Box::pin(async move { self.0.remove_member(id, force).await.map_err(classify) })
    }

    fn transfer_leader(&self, to: Option<u64>) -> BoxFuture<'_, Result<u64, ClusterRefusal>> {
        Box::pin(async move { self.0.transfer_leader(to).await.map_err(classify) })
    }
}

fn cluster_ok(check: &Check) -> bool {
    check.ok
}
