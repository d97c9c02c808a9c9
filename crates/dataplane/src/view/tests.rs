use std::time::Duration;

use super::*;
use crate::allowlist::{allowlist_channel, Allowlist, AllowlistConfig, AllowlistWriter};
use crate::flow::{Flow, FlowTable, NO_PIN, TICK_SHIFT};

const SNAT: u32 = 0xCB00_7102;
const NOW: u64 = 10_000 << TICK_SHIFT;
/// Every state times out after 5000 ticks.
const TIMEOUTS: [u32; FlowState::ALL.len()] = [5000; FlowState::ALL.len()];
const R1: RuleKey = RuleKey(0x1111);
const R2: RuleKey = RuleKey(0x2222);

fn flow(i: u32, proto: u8, dport: u16) -> Flow {
    Flow {
        orig: FlowKey { src: 0x0A0A_0000 + i, dst: 0xC633_6400 + i % 4, sport: 40_000 + i as u16, dport, proto },
        nat_port: 1024 + i as u16,
        state: if proto == 6 { FlowState::TcpEstablished } else { FlowState::UdpReplied },
        origin: Origin::Internal,
        generation: 3,
        pin: NO_PIN,
        last_seen: (NOW >> TICK_SHIFT) as u32 - 100,
    }
}

/// A table of `n` flows: even ones TCP to port 443, odd ones UDP to port 53.
fn table(capacity: usize, n: u32) -> FlowTable {
    let mut t = FlowTable::new(capacity, 9, Some(SNAT));
    for i in 0..n {
        let (proto, port) = if i % 2 == 0 { (6, 443) } else { (17, 53) };
        t.insert(flow(i, proto, port)).unwrap();
    }
    t
}

/// Serves `request` to completion; returns it with the number of turns it took.
fn serve_all(
    server: &mut ViewServer,
    client: &mut ViewClient,
    flows: &FlowTable,
    a: Option<&Allowlist>,
) -> ViewRequest {
    for _ in 0..10_000 {
        if server.serve(flows, a, &TIMEOUTS, NOW) {
            match client.poll() {
                ViewPoll::Ready(done) => return done,
                other => panic!("served but not delivered: {other:?}"),
            }
        }
        assert!(matches!(client.poll(), ViewPoll::Pending), "a reply before the server said it answered");
    }
    panic!("the view never finished")
}

fn flow_rows(done: ViewRequest) -> Vec<FlowRow> {
    match done.query {
        ViewQuery::Flows { rows, .. } => rows,
        other => panic!("not a flow view: {other:?}"),
    }
}

#[test]
fn flow_view_returns_exactly_the_matches_over_several_turns() {
    let flows = table(1000, 300);
    let (mut client, mut server) = view_channel(64);
    let filter = FlowQuery { proto: Some(6), dst: Some(0xC633_6400), ..FlowQuery::default() };
    client.submit(ViewRequest::flows(filter, 1000)).unwrap();
    let done = serve_all(&mut server, &mut client, &flows, None);
    assert!(done.complete, "the buffer never filled: the whole table was scanned");
    assert_eq!(done.scanned, 1000, "every slot once");
    assert_eq!(done.turns, 1000usize.div_ceil(64) as u32, "at most the budget per turn, resuming at the cursor");
    let mut got: Vec<u16> = flow_rows(done).iter().map(|r| r.orig.sport).collect();
    got.sort_unstable();
    // TCP (even i) to .0 (i % 4 == 0).
    let want: Vec<u16> = (0..300u32).filter(|i| i % 4 == 0).map(|i| 40_000 + i as u16).collect();
    assert_eq!(got, want);
    assert_eq!(server.served(), 1);
}

#[test]
fn flow_rows_carry_translation_times_and_state() {
    let flows = table(8, 1);
    let (mut client, mut server) = view_channel(8);
    client.submit(ViewRequest::flows(FlowQuery::default(), 10)).unwrap();
    let rows = flow_rows(serve_all(&mut server, &mut client, &flows, None));
    let r = rows[0];
    assert_eq!((r.nat_ip, r.nat_port, r.state, r.generation), (SNAT, 1024, FlowState::TcpEstablished, 3));
    assert_eq!(r.idle_ns, 100 << TICK_SHIFT);
    assert_eq!(r.expires_in_ns, 4900 << TICK_SHIFT);
    assert_eq!(r.rule, None);
}

#[test]
fn limit_stops_the_scan_early_and_expired_flows_are_skipped() {
    let mut flows = table(1000, 300);
    let mut stale = flow(999, 6, 443);
    stale.last_seen -= 6000;
    flows.insert(stale).unwrap();
    let (mut client, mut server) = view_channel(64);
    client.submit(ViewRequest::flows(FlowQuery { dst_port: Some(443), ..FlowQuery::default() }, 5)).unwrap();
    let done = serve_all(&mut server, &mut client, &flows, None);
    assert!(!done.complete, "the buffer filled before the end");
    assert!(done.scanned < 64, "stopped at the fifth match, not at the end of the slice: {}", done.scanned);
    assert_eq!(flow_rows(done).len(), 5);
    client.submit(ViewRequest::flows(FlowQuery { src: Some(0x0A0A_0000 + 999), ..FlowQuery::default() }, 5)).unwrap();
    assert!(flow_rows(serve_all(&mut server, &mut client, &flows, None)).is_empty(), "past its timeout: gone");
}

#[test]
fn the_buffer_handed_in_is_the_one_handed_back() {
    let flows = table(256, 200);
    let (mut client, mut server) = view_channel(16);
    let request = ViewRequest::flows(FlowQuery::default(), 50);
    let ViewQuery::Flows { rows, .. } = &request.query else { unreachable!() };
    let (ptr, cap) = (rows.as_ptr(), rows.capacity());
    client.submit(request).unwrap();
    let rows = flow_rows(serve_all(&mut server, &mut client, &flows, None));
    assert_eq!((rows.as_ptr(), rows.capacity(), rows.len()), (ptr, cap, 50), "filled in place, never grown");
}

#[test]
fn one_request_at_a_time_and_a_late_reply_is_collected() {
    let flows = table(64, 10);
    let (mut client, mut server) = view_channel(4);
    client.submit(ViewRequest::flows(FlowQuery::default(), 5)).unwrap();
    assert!(matches!(client.submit(ViewRequest::flows(FlowQuery::default(), 5)), Err(SubmitError::Busy(_))));
    assert!(client.outstanding());
    // A caller that gave up leaves the request with the worker; it still completes and the
    // next caller collects it before sending its own.
    while !server.serve(&flows, None, &TIMEOUTS, NOW) {}
    assert!(matches!(client.poll(), ViewPoll::Ready(_)));
    assert!(!client.outstanding());
    client.submit(ViewRequest::flows(FlowQuery::default(), 5)).unwrap();
    drop(server);
    assert!(matches!(client.poll(), ViewPoll::Disconnected));
}

fn allowlist(capacity: usize) -> (AllowlistWriter, Allowlist) {
    let (w, mut lists) = allowlist_channel(1, &AllowlistConfig { capacity, channel_capacity: 4096 });
    (w, lists.pop().unwrap())
}

#[test]
fn allowlist_view_filters_by_rule_and_ip_and_reports_pins() {
    let (w, mut a) = allowlist(512);
    let t = Duration::from_secs(1);
    for i in 0..200u32 {
        w.learn(if i % 2 == 0 { R1 } else { R2 }, 0xC633_6400 + i, NOW + 1_000 + u64::from(i), t).unwrap();
    }
    // One entry past its TTL but pinned by a flow, one past it and unpinned.
    w.learn(R1, 0x0808_0808, NOW + 1, t).unwrap();
    w.learn(R1, 0x0909_0909, NOW + 1, t).unwrap();
    a.drain(NOW, usize::MAX);
    let pin = a.pin(R1, 0x0808_0808).unwrap();
    let mut flows = table(16, 0);
    let mut f = flow(0, 6, 443);
    f.pin = pin.to_raw();
    flows.insert(f).unwrap();
    let later = NOW + 1;
    let (mut client, mut server) = view_channel(32);
    let serve = |server: &mut ViewServer, client: &mut ViewClient, filter: AllowlistQuery, limit: usize| {
        client.submit(ViewRequest::allowlist(filter, limit)).unwrap();
        loop {
            if server.serve(&flows, Some(&a), &TIMEOUTS, later) {
                let ViewPoll::Ready(done) = client.poll() else { panic!("no reply") };
                let ViewQuery::Allowlist { rows, .. } = done.query else { panic!("not an allowlist view") };
                return (rows, done.complete, done.turns);
            }
        }
    };
    let (rows, complete, turns) =
        serve(&mut server, &mut client, AllowlistQuery { ip: None, rules: Some(vec![R1]) }, 512);
    assert!(complete && turns == 16, "512 slots, 32 per turn: {turns} turns");
    assert_eq!(rows.len(), 101, "100 live R1 entries and the pinned one; the expired unpinned one is not listed");
    assert!(rows.iter().all(|r| r.rule == R1));
    let pinned: Vec<_> = rows.iter().filter(|r| r.pins > 0).collect();
    assert_eq!(pinned.len(), 1);
    assert_eq!((pinned[0].ip, pinned[0].expires_in_ns), (0x0808_0808, 0));
    let (rows, ..) = serve(&mut server, &mut client, AllowlistQuery { ip: Some(0xC633_6401), rules: None }, 10);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].rule, rows[0].expires_in_ns), (R2, 1_000));
    let (rows, complete, _) = serve(&mut server, &mut client, AllowlistQuery::default(), 3);
    assert!(rows.len() == 3 && !complete, "limit reached before the end");
    // A flow admitted through a pinned entry names its rule.
    client.submit(ViewRequest::flows(FlowQuery::default(), 4)).unwrap();
    let done = serve_all(&mut server, &mut client, &flows, Some(&a));
    assert_eq!(flow_rows(done)[0].rule, Some(R1));
}

#[test]
fn an_engine_without_allowlist_answers_an_empty_listing() {
    let flows = table(16, 2);
    let (mut client, mut server) = view_channel(4);
    client.submit(ViewRequest::allowlist(AllowlistQuery::default(), 10)).unwrap();
    let done = serve_all(&mut server, &mut client, &flows, None);
    assert!(done.complete && matches!(&done.query, ViewQuery::Allowlist { rows, .. } if rows.is_empty()));
}

/// A flow record with source `src` translated to `nat_port`.
fn record(src: u32, nat_port: u16) -> Flow {
    Flow { nat_port, ..flow(src, 6, 443) }
}

#[test]
fn table_scan_resumes_from_its_cursor_and_stops_when_told() {
    let mut t = FlowTable::new(10, 5, Some(SNAT));
    for i in 0..6 {
        t.insert(record(i, 100 + i as u16)).unwrap();
    }
    let removed = t.lookup(&record(2, 102).orig, t.hash(&record(2, 102).orig)).unwrap().0;
    t.remove(removed);
    let (mut seen, mut cursor) = (Vec::new(), 0);
    while cursor < t.capacity() {
        cursor = t.scan(cursor, 3, |f| {
            seen.push(f.nat_port);
            true
        });
    }
    seen.sort_unstable();
    assert_eq!(seen, [100, 101, 103, 104, 105], "every live flow once, the removed one not");
    let mut first = None;
    let next = t.scan(0, 10, |f| {
        first = Some(f.nat_port);
        false
    });
    assert!(first.is_some() && next <= 6, "stopped right after the first live record, at {next}");
    assert_eq!(t.scan(t.capacity(), 3, |_| panic!("nothing past the end")), t.capacity());
}
