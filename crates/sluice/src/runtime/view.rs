//! What the management API reads from the running node ([`NodeView`]): the same stats
//! document `stats.json` is written from (the control loop hands each one over), the DNS
//! proxy's state as it started, and the policy version the dataplane runs (advanced by the
//! policy follower in [`super::control`]).

use std::sync::Mutex;

use serde_json::Value;
use sluice_api::node::NamedCounters;
use sluice_api::{AllowlistEntry, AllowlistFilter, Check, FlowEntry, FlowFilter, NodeCounters, NodeView};
use tokio::sync::watch;

pub(super) struct NodeState {
    /// The last stats document (`Value::Null` before the first one).
    stats: Mutex<Value>,
    /// The DNS proxy's check, fixed at start (listening addresses, or off).
    dns: Check,
    /// The store's policy version the dataplane runs; `None` while it runs no stored version.
    applied: watch::Sender<Option<u64>>,
}

impl NodeState {
    pub(super) fn new(dns: Check, applied: Option<u64>) -> NodeState {
        NodeState { stats: Mutex::new(Value::Null), dns, applied: watch::Sender::new(applied) }
    }

    /// Takes the stats document just built for `stats.json`.
    pub(super) fn publish_stats(&self, doc: Value) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = doc;
    }

    pub(super) fn applied(&self) -> Option<u64> {
        *self.applied.borrow()
    }

    /// The dataplane now runs stored version `version`.
    pub(super) fn set_applied(&self, version: u64) {
        self.applied.send_replace(Some(version));
    }
}

/// Name/value pairs of a JSON object of counters (non-numbers skipped).
fn named(object: &Value) -> NamedCounters {
    object.as_object().map_or_else(Vec::new, |map| {
        map.iter().filter_map(|(name, value)| value.as_u64().map(|v| (name.clone(), v))).collect()
    })
}

impl NodeView for NodeState {
    fn stats(&self) -> Value {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn counters(&self) -> NodeCounters {
        let stats = self.stats();
        let ports = stats["ports"]
            .as_object()
            .map_or_else(Vec::new, |ports| ports.iter().map(|(name, port)| (name.clone(), named(port))).collect());
        let gauges = ["flows_active"]
            .iter()
            .filter_map(|name| stats["counters"][name].as_u64().map(|v| ((*name).to_owned(), v)))
            .collect();
        NodeCounters { dataplane: named(&stats["counters"]), dns: named(&stats["dns"]["counters"]), ports, gauges }
    }

    fn dataplane_check(&self) -> Check {
        let stats = self.stats();
        match stats["running"].as_bool() {
            Some(true) => Check::ok(format!(
                "{} worker(s) running, policy generation {}",
                stats["workers"].as_u64().unwrap_or(1),
                stats["counters"]["policy_generation"].as_u64().unwrap_or(0)
            )),
            Some(false) => Check::failed("the dataplane worker has stopped"),
            None => Check::failed("the dataplane is starting"),
        }
    }

    fn dns_check(&self) -> Check {
        self.dns.clone()
    }

    fn applied_policy_version(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }

    /// Empty for now: the learned entries live in each worker's engine and there is no
    /// read path from the control plane to them yet.
    fn allowlist(&self, _filter: &AllowlistFilter, _limit: usize) -> Vec<AllowlistEntry> {
        Vec::new()
    }

    /// Empty for now, like [`NodeView::allowlist`]: the flow tables are the workers' own.
    fn flows(&self, _filter: &FlowFilter, _limit: usize) -> Vec<FlowEntry> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_and_counters_come_from_the_stats_document() {
        let state = NodeState::new(Check::ok("off"), None);
        assert!(!state.dataplane_check().ok, "no document yet: starting");
        state.publish_stats(json!({
            "running": true, "workers": 1,
            "counters": {"policy_generation": 2, "flows_active": 5, "policy_denied": 3},
            "ports": {"internal": {"rx_packets": 7}},
            "dns": {"counters": {"answered": 4}},
        }));
        assert!(state.dataplane_check().ok);
        let counters = state.counters();
        assert!(counters.dataplane.contains(&("policy_denied".to_owned(), 3)));
        assert_eq!(counters.dns, [("answered".to_owned(), 4)]);
        assert_eq!(counters.ports, [("internal".to_owned(), vec![("rx_packets".to_owned(), 7)])]);
        assert_eq!(counters.gauges, [("flows_active".to_owned(), 5)]);
        state.publish_stats(json!({"running": false}));
        assert!(!state.dataplane_check().ok);
        let applied = state.applied_policy_version();
        state.set_applied(3);
        assert_eq!((*applied.borrow(), state.applied()), (Some(3), Some(3)));
    }
}
