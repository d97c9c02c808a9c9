//! Views through the engine: a listing is served from housekeeping, a bounded slice per turn,
//! shows what the packet path created (SNAT port, state, the hostname rule that admitted a
//! flow), and the worker allocates nothing while it serves one.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use sluice_dataplane::counters::Counter;
use sluice_dataplane::engine::{Action, PortId};
use sluice_dataplane::flow::FlowState;
use sluice_dataplane::testing::SYN;
use sluice_dataplane::view::{view_channel, AllowlistQuery, FlowQuery, ViewClient, ViewPoll, ViewQuery, ViewRequest};

/// Counts allocations and frees made by the thread that turned counting on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static EVENTS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = EVENTS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Polls the node (housekeeping only: nothing injected) until the view comes back; returns
/// it, the polls it took, and the allocations the polls made.
fn serve(lab: &mut Lab, client: &mut ViewClient, request: ViewRequest) -> (ViewRequest, u32, u64) {
    client.submit(request).expect("submitted");
    EVENTS.with(|n| n.set(0));
    for polls in 1..=10_000 {
        COUNTING.with(|on| on.set(true));
        lab.node.poll(lab.now);
        COUNTING.with(|on| on.set(false));
        if let ViewPoll::Ready(done) = client.poll() {
            return (done, polls, EVENTS.with(Cell::get));
        }
    }
    panic!("the engine never answered the view")
}

#[test]
fn listings_show_what_the_packet_path_did_without_allocating() {
    let mut lab = Lab::resolved();
    let (mut client, server) = view_channel(256);
    lab.node.engine_mut().attach_views(server);
    let key = lab.learn(CLIENT, "api.example.com", API_IP, 60 * SEC);
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40_000, 443, SYN)), Action::Forward(PortId::External));
    let nat_port = lab.one_out(PortId::External).tcp().sport;
    assert_eq!(lab.send(PortId::Internal, &udp(CLIENT, WEB, 40_001, 53)), Action::Forward(PortId::External));
    lab.drain_all();

    let (done, polls, allocations) = serve(&mut lab, &mut client, ViewRequest::flows(FlowQuery::default(), 10));
    assert_eq!(allocations, 0, "the worker allocated or freed while serving a view");
    let capacity = lab.engine().flows().capacity();
    assert!(polls as usize >= capacity / 256, "{capacity} slots at 256 per turn took only {polls} polls");
    assert!(done.complete);
    let ViewQuery::Flows { rows, .. } = done.query else { panic!("not a flow view") };
    assert_eq!(rows.len(), 2);
    let tcp_row = rows.iter().find(|r| r.orig.proto == 6).expect("the TCP flow");
    assert_eq!((tcp_row.orig.src, tcp_row.orig.dst, tcp_row.orig.sport), (CLIENT, API_IP, 40_000));
    assert_eq!((tcp_row.nat_ip, tcp_row.nat_port, tcp_row.state), (NODE_OUT, nat_port, FlowState::TcpSynSent));
    assert_eq!(tcp_row.rule, Some(key), "admitted by the hostname rule whose entry it pins");
    assert_eq!(tcp_row.generation, lab.engine().policy_generation());

    let filter = FlowQuery { proto: Some(17), ..FlowQuery::default() };
    let (done, ..) = serve(&mut lab, &mut client, ViewRequest::flows(filter, 10));
    let ViewQuery::Flows { rows, .. } = done.query else { panic!("not a flow view") };
    assert!(rows.len() == 1 && rows[0].orig.dst == WEB && rows[0].rule.is_none());

    let (done, _, allocations) =
        serve(&mut lab, &mut client, ViewRequest::allowlist(AllowlistQuery { ip: Some(API_IP), rules: None }, 10));
    assert_eq!(allocations, 0);
    let ViewQuery::Allowlist { rows, .. } = done.query else { panic!("not an allowlist view") };
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].rule, rows[0].pins), (key, 1));
    assert!(rows[0].expires_in_ns > 59 * SEC && rows[0].expires_in_ns <= 60 * SEC);
    assert_eq!(lab.counter(Counter::ViewsServed), 3);
}

#[test]
fn a_busy_engine_serves_a_view_between_its_bursts() {
    let mut lab = Lab::resolved();
    let (mut client, server) = view_channel(64);
    lab.node.engine_mut().attach_views(server);
    let open = |lab: &mut Lab, sport: u16| {
        assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, sport, 443, SYN)), Action::Forward(PortId::External));
        lab.drain_all();
    };
    for sport in 20_000..20_100 {
        open(&mut lab, sport);
    }
    client.submit(ViewRequest::flows(FlowQuery { dst: Some(WEB), ..FlowQuery::default() }, 1000)).unwrap();
    // Every burst opens another flow while the scan is under way: traffic is never held up,
    // and the scan, a slice per burst, still finishes.
    let mut sport = 30_000;
    let done = loop {
        open(&mut lab, sport);
        sport += 1;
        if let ViewPoll::Ready(done) = client.poll() {
            break done;
        }
        assert!(sport < 40_000, "never answered");
    };
    let polls = usize::from(sport - 30_000);
    assert_eq!(polls, lab.engine().flows().capacity().div_ceil(64), "one slice of 64 slots per burst");
    let ViewQuery::Flows { rows, .. } = done.query else { panic!("not a flow view") };
    let mut before: Vec<u16> = rows.iter().map(|r| r.orig.sport).filter(|&p| p < 30_000).collect();
    before.sort_unstable();
    assert_eq!(before, (20_000..20_100).collect::<Vec<_>>(), "every flow that lived throughout is listed");
}
