//! The API's allowlist and flow listings, read from the dataplane worker over its view
//! channel ([`sluice_dataplane::view`]): the API's filter becomes the worker's (names become
//! rule keys through the active policy), the worker fills a buffer allocated here, and its
//! rows get their names back. Waiting is bounded: one listing at a time per worker, each
//! caller waiting at most [`LISTING_TIMEOUT`] in all.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use sluice_api::{AllowlistEntry, AllowlistFilter, FlowEntry, FlowFilter, ListingError};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::view::{
    origin_name, state_name, AllowlistQuery, FlowQuery, SubmitError, ViewClient, ViewPoll, ViewQuery, ViewRequest,
};
use sluice_policy::RuleKey;

/// How long a listing may take, waiting for an earlier one included. A worker scans a few
/// thousand slots per turn and turns at least every millisecond, so a million-flow table
/// takes well under a second; past this the worker is not turning.
pub(super) const LISTING_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Listings {
    client: Mutex<ViewClient>,
    policy: PolicyHandle,
    timeout: Duration,
}

/// Group and rule ids by rule key, from the active policy.
type Names = HashMap<RuleKey, (String, String)>;

impl Listings {
    pub(super) fn new(client: ViewClient, policy: PolicyHandle) -> Listings {
        Listings::with_timeout(client, policy, LISTING_TIMEOUT)
    }

    pub(super) fn with_timeout(client: ViewClient, policy: PolicyHandle, timeout: Duration) -> Listings {
        Listings { client: Mutex::new(client), policy, timeout }
    }

    fn names(&self) -> Names {
        let current = self.policy.current();
        current.policy.hostname_rules().map(|(key, group, rule)| (key, (group.to_owned(), rule.to_owned()))).collect()
    }

    pub(super) fn flows(&self, filter: &FlowFilter, limit: usize) -> Result<Vec<FlowEntry>, ListingError> {
        let proto = match filter.proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("tcp") => Some(6),
            Some("udp") => Some(17),
            Some("icmp") => Some(1),
            // A protocol no flow can have: nothing matches.
            Some(_) => return Ok(Vec::new()),
        };
        let query =
            FlowQuery { src: filter.src.map(u32::from), dst: filter.dst.map(u32::from), proto, dst_port: filter.port };
        let done = self.ask(ViewRequest::flows(query, limit))?;
        let ViewQuery::Flows { rows, .. } = done.query else { unreachable!("a flow request comes back as one") };
        let names = self.names();
        Ok(rows
            .iter()
            .map(|r| {
                let named = r.rule.and_then(|k| names.get(&k));
                FlowEntry {
                    proto: match r.orig.proto {
                        6 => "tcp".to_owned(),
                        17 => "udp".to_owned(),
                        1 => "icmp".to_owned(),
                        other => other.to_string(),
                    },
                    src: Ipv4Addr::from(r.orig.src),
                    src_port: r.orig.sport,
                    dst: Ipv4Addr::from(r.orig.dst),
                    dst_port: r.orig.dport,
                    nat_ip: Ipv4Addr::from(r.nat_ip),
                    nat_port: r.nat_port,
                    state: state_name(r.state).to_owned(),
                    origin: origin_name(r.origin).to_owned(),
                    idle_ms: r.idle_ns / 1_000_000,
                    expires_in_ms: r.expires_in_ns / 1_000_000,
                    policy_generation: r.generation,
                    group: named.map(|(g, _)| g.clone()),
                    rule: named.map(|(_, r)| r.clone()),
                }
            })
            .collect())
    }

    pub(super) fn allowlist(
        &self,
        filter: &AllowlistFilter,
        limit: usize,
    ) -> Result<Vec<AllowlistEntry>, ListingError> {
        let names = self.names();
        let rules = if filter.group.is_some() || filter.rule.is_some() {
            let mut keys: Vec<RuleKey> = names
                .iter()
                .filter(|(_, (g, r))| {
                    filter.group.as_deref().is_none_or(|want| want == g)
                        && filter.rule.as_deref().is_none_or(|want| want == r)
                })
                .map(|(k, _)| *k)
                .collect();
            if keys.is_empty() {
                // No hostname rule of the active policy has those names.
                return Ok(Vec::new());
            }
            keys.sort_unstable();
            Some(keys)
        } else {
            None
        };
        let query = AllowlistQuery { ip: filter.ip.map(u32::from), rules };
        let done = self.ask(ViewRequest::allowlist(query, limit))?;
        let ViewQuery::Allowlist { rows, .. } = done.query else {
            unreachable!("an allowlist request comes back as one")
        };
        Ok(rows
            .iter()
            .map(|r| {
                let named = names.get(&r.rule);
                AllowlistEntry {
                    ip: Ipv4Addr::from(r.ip),
                    group: named.map(|(g, _)| g.clone()),
                    rule: named.map(|(_, r)| r.clone()),
                    rule_key: r.rule.to_string(),
                    expires_in_ms: r.expires_in_ns / 1_000_000,
                    pinned: r.pins > 0,
                }
            })
            .collect())
    }

    /// Sends `request` to the worker and waits for it to come back, all within the timeout.
    fn ask(&self, request: ViewRequest) -> Result<ViewRequest, ListingError> {
        let deadline = Instant::now() + self.timeout;
        let mut client = self.lock(deadline)?;
        // A caller that timed out left its request with the worker: collect it first, so
        // the worker's reply slot is free for ours.
        if client.outstanding() {
            wait_reply(&mut client, deadline)?;
        }
        match client.submit(request) {
            Ok(()) => {}
            Err(SubmitError::Disconnected(_)) => return Err(gone()),
            Err(SubmitError::Busy(_)) => unreachable!("the outstanding request was collected above"),
        }
        wait_reply(&mut client, deadline)
    }

    fn lock(&self, deadline: Instant) -> Result<MutexGuard<'_, ViewClient>, ListingError> {
        let mut backoff = Backoff::default();
        loop {
            match self.client.try_lock() {
                Ok(guard) => return Ok(guard),
                // Nothing here panics while holding it but an `unreachable!`; the client's own
                // state stays consistent.
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return Err(ListingError::Busy(format!(
                        "another flow or allowlist listing is in progress on this node and did not finish within {} ms; \
                         try again",
                        self.timeout.as_millis()
                    )))
                }
                Err(TryLockError::WouldBlock) => backoff.wait(),
            }
        }
    }
}

fn gone() -> ListingError {
    ListingError::Unavailable("the dataplane worker has stopped: no listing can be served".into())
}

/// Polls for the outstanding request until `deadline`. Polling, not a blocking receive: the
/// worker then never has anyone to wake (no system call on its side).
fn wait_reply(client: &mut ViewClient, deadline: Instant) -> Result<ViewRequest, ListingError> {
    let mut backoff = Backoff::default();
    loop {
        match client.poll() {
            ViewPoll::Ready(done) => return Ok(done),
            ViewPoll::Disconnected => return Err(gone()),
            ViewPoll::Pending if Instant::now() >= deadline => {
                return Err(ListingError::Timeout(
                    "the dataplane worker did not answer the listing in time (it is not turning: stuck or \
                     overloaded); forwarding is unaffected"
                        .into(),
                ))
            }
            ViewPoll::Pending => backoff.wait(),
        }
    }
}

/// Sleeps of 50 µs doubling to 1 ms: a listing usually takes a few worker turns.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        thread::sleep(Duration::from_micros(50 << self.0.min(4)).min(Duration::from_millis(1)));
        self.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use sluice_dataplane::flow::{Flow, FlowKey, FlowState, FlowTable, Origin, NO_PIN};
    use sluice_dataplane::view::view_channel;

    use super::*;

    const POLICY: &str = r#"{"default_action":"deny","source_groups":[{"id":"apps","priority":1,
        "sources":{"cidrs":["10.10.0.0/24"]},"rules":[{"id":"web","action":"allow",
        "match":{"hostnames":["web.test"],"proto":"tcp","dst_ports":[80]}}]}]}"#;

    fn handle() -> PolicyHandle {
        PolicyHandle::new(sluice_policy::compile_json(POLICY).unwrap())
    }

    #[test]
    fn a_silent_worker_times_out_a_busy_one_refuses_and_a_gone_one_is_unavailable() {
        let (client, server) = view_channel(16);
        let listings = std::sync::Arc::new(Listings::with_timeout(client, handle(), Duration::from_millis(100)));
        let started = Instant::now();
        let err = listings.flows(&FlowFilter::default(), 10).unwrap_err();
        assert!(matches!(err, ListingError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "bounded by the timeout");
        // While one caller waits, another is refused once its own timeout passes.
        let waiting = {
            let listings = listings.clone();
            thread::spawn(move || listings.flows(&FlowFilter::default(), 10))
        };
        thread::sleep(Duration::from_millis(10));
        // Which of the two asks first is up to the scheduler: the first times out, the
        // second is refused or times out too; neither gets an answer.
        let err = listings.allowlist(&AllowlistFilter::default(), 10).unwrap_err();
        assert!(matches!(err, ListingError::Busy(_) | ListingError::Timeout(_)), "{err:?}");
        let other = waiting.join().unwrap();
        assert!(matches!(other, Err(ListingError::Busy(_) | ListingError::Timeout(_))), "{other:?}");
        drop(server);
        assert!(matches!(listings.flows(&FlowFilter::default(), 10), Err(ListingError::Unavailable(_))));
    }

    #[test]
    fn a_served_listing_is_named_and_filtered() {
        let (client, mut server) = view_channel(16);
        let listings = std::sync::Arc::new(Listings::with_timeout(client, handle(), Duration::from_secs(5)));
        let mut table = FlowTable::new(64, 1, Some(u32::from(Ipv4Addr::new(203, 0, 113, 2))));
        for i in 0..3u16 {
            table
                .insert(Flow {
                    orig: FlowKey {
                        src: u32::from(Ipv4Addr::new(10, 10, 0, 2)),
                        dst: u32::from(Ipv4Addr::new(198, 51, 100, 10)),
                        sport: 40_000 + i,
                        dport: 80,
                        proto: if i == 2 { 17 } else { 6 },
                    },
                    nat_port: 50_000 + i,
                    state: FlowState::TcpEstablished,
                    origin: Origin::Internal,
                    generation: 1,
                    pin: NO_PIN,
                    last_seen: 0,
                })
                .unwrap();
        }
        let asking = {
            let listings = listings.clone();
            thread::spawn(move || {
                let filter = FlowFilter { proto: Some("TCP".into()), ..FlowFilter::default() };
                listings.flows(&filter, 10)
            })
        };
        // The "worker": turns until it answered.
        while !server.serve(&table, None, &[u32::MAX / 2; FlowState::ALL.len()], 0) {
            thread::sleep(Duration::from_micros(100));
        }
        let flows = asking.join().unwrap().unwrap();
        assert_eq!(flows.len(), 2);
        assert!(flows
            .iter()
            .all(|f| f.proto == "tcp" && f.state == "tcp_established" && f.nat_ip.octets() == [203, 0, 113, 2]));
        // Names the active policy does not have match nothing, without asking the worker.
        let filter = AllowlistFilter { group: Some("nope".into()), ..AllowlistFilter::default() };
        assert_eq!(listings.allowlist(&filter, 10), Ok(Vec::new()));
        let filter = FlowFilter { proto: Some("sctp".into()), ..FlowFilter::default() };
        assert_eq!(listings.flows(&filter, 10), Ok(Vec::new()));
    }
}
