//! What the management API reads from the running node ([`NodeView`]): the same stats
//! document `stats.json` is written from (the control loop hands each one over), the DNS
//! proxy's state as it started, the policy version the dataplane runs (advanced by the
//! policy follower in [`super::control`]), and the worker's tables through
//! [`super::listing`].

use std::sync::Mutex;

use serde_json::Value;
use sluice_api::node::NamedCounters;
use sluice_api::{AllowlistEntry, AllowlistFilter, Check, FlowEntry, FlowFilter, ListingError, NodeCounters, NodeView};
use tokio::sync::watch;

use super::listing::Listings;

pub(super) struct NodeState {
    /// The last stats document (`Value::Null` before the first one).
    stats: Mutex<Value>,
    /// The DNS proxy's check, fixed at start (listening addresses, or off).
    dns: Check,
    /// The store's policy version the dataplane runs; `None` while it runs no stored version.
    applied: watch::Sender<Option<u64>>,
    listings: Listings,
}

impl NodeState {
    pub(super) fn new(dns: Check, applied: Option<u64>, listings: Listings) -> NodeState {
        NodeState { stats: Mutex::new(Value::Null), dns, applied: watch::Sender::new(applied), listings }
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

    fn allowlist(&self, filter: &AllowlistFilter, limit: usize) -> Result<Vec<AllowlistEntry>, ListingError> {
        self.listings.allowlist(filter, limit)
    }

    fn flows(&self, filter: &FlowFilter, limit: usize) -> Result<Vec<FlowEntry>, ListingError> {
        self.listings.flows(filter, limit)
    }

    fn release(&self) -> String {
        crate::build_info::version()
    }

    fn release_check(&self) -> Option<Check> {
        match crate::build_info::fault() {
            sluice_lifecycle::stamp::Fault::NeverReady => {
                Some(Check::failed("this is a test release stamped never-ready: it never becomes ready"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_dataplane::policy_handle::PolicyHandle;
    use sluice_dataplane::view::view_channel;

    #[test]
    fn checks_and_counters_come_from_the_stats_document() {
        let policy =
            PolicyHandle::new(sluice_policy::compile_json(r#"{"default_action":"deny","source_groups":[]}"#).unwrap());
        let (client, _server) = view_channel(1);
        let state = NodeState::new(Check::ok("off"), None, Listings::new(client, policy));
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
