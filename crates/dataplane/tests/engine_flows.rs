//! Flow lifecycle through the engine: TCP close, idle expiry, admission control when the
//! table is full, and NAT port exhaustion.

mod common;

use common::*;
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, PortId};
use sluice_dataplane::flow::{FlowState, TICK_SHIFT};

/// Flow timestamps have this granularity: timeouts are honoured to within two ticks.
const TICK: u64 = 1 << TICK_SHIFT;
use sluice_dataplane::testing::{inspect, ACK, FIN, RST, SYN};

/// Open an established TCP flow and return its translated port.
fn establish(lab: &mut Lab, src: u32, sport: u16) -> u16 {
    assert_eq!(lab.send(PortId::Internal, &tcp(src, WEB, sport, 443, SYN)), Action::Forward(PortId::External));
    let nat = inspect(&lab.out(PortId::External)[0]).unwrap().tcp().sport;
    assert_eq!(lab.send(PortId::External, &tcp_in(WEB, nat, 443, SYN | ACK)), Action::Forward(PortId::Internal));
    assert_eq!(lab.send(PortId::Internal, &tcp(src, WEB, sport, 443, ACK)), Action::Forward(PortId::External));
    lab.drain_all();
    nat
}

fn only_flow_state(lab: &Lab) -> FlowState {
    let flows: Vec<_> = lab.engine().flows().iter().map(|(_, f)| f.state).collect();
    assert_eq!(flows.len(), 1);
    flows[0]
}

#[test]
fn orderly_close_ends_the_flow_after_the_linger() {
    let mut lab = Lab::resolved();
    let nat = establish(&mut lab, CLIENT, 40000);
    assert_eq!(only_flow_state(&lab), FlowState::TcpEstablished);
    lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, FIN | ACK));
    assert_eq!(only_flow_state(&lab), FlowState::TcpFinOrig);
    lab.send(PortId::External, &tcp_in(WEB, nat, 443, FIN | ACK));
    assert_eq!(only_flow_state(&lab), FlowState::TcpClosing);
    // The last ACK still passes during the linger.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, ACK)), Action::Forward(PortId::External));
    let linger = lab.engine().config().timeouts.tcp_linger;
    lab.advance(linger + TICK);
    lab.sweep_all();
    assert_eq!(lab.engine().flows().len(), 0);
    assert_eq!(lab.counter(Counter::FlowsClosed), 1);
    // Gone: a late segment from outside no longer gets in.
    assert_eq!(lab.send(PortId::External, &tcp_in(WEB, nat, 443, ACK)), Action::Drop(DropReason::InboundNoFlow));
}

#[test]
fn reset_closes_and_a_new_syn_on_the_same_port_starts_over() {
    let mut lab = Lab::resolved();
    let nat = establish(&mut lab, CLIENT, 40000);
    lab.send(PortId::External, &tcp_in(WEB, nat, 443, RST));
    assert_eq!(only_flow_state(&lab), FlowState::TcpClosed);
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, SYN)), Action::Forward(PortId::External));
    assert_eq!(only_flow_state(&lab), FlowState::TcpSynSent);
    assert_eq!(lab.counter(Counter::FlowsOpened), 2);
    assert_eq!(lab.counter(Counter::FlowsClosed), 1);
}

#[test]
fn idle_flows_expire_incrementally() {
    let mut lab = Lab::resolved();
    lab.send(PortId::Internal, &udp(CLIENT, WEB, 5353, 53));
    let nat = inspect(&lab.out(PortId::External)[0]).unwrap().udp().sport;
    assert_eq!(lab.engine().flows().len(), 1);
    let timeout = lab.engine().config().timeouts.udp_new;
    // Just before the timeout it is alive; the reply refreshes it.
    lab.advance(timeout - TICK);
    lab.sweep_all();
    assert_eq!(lab.send(PortId::External, &udp_in(WEB, 53, nat)), Action::Forward(PortId::Internal));
    assert_eq!(only_flow_state(&lab), FlowState::UdpReplied);
    let timeout = lab.engine().config().timeouts.udp_replied;
    lab.advance(timeout + 2 * TICK);
    // Even before the sweeper gets to it, an expired flow is not used.
    assert_eq!(lab.send(PortId::External, &udp_in(WEB, 53, nat)), Action::Drop(DropReason::InboundNoFlow));
    assert_eq!(lab.engine().flows().len(), 0);
    assert_eq!(lab.counter(Counter::FlowsExpired), 1);
}

#[test]
fn idle_expiry_updates_the_active_flow_gauges() {
    let mut lab = Lab::resolved();
    lab.send(PortId::Internal, &udp(CLIENT, WEB, 5353, 53));
    lab.drain_all();
    lab.sweep_all();
    assert_eq!((lab.counter(Counter::FlowsActive), lab.counter(Counter::NatPortsInUse)), (1, 1));
    // No packet follows: only idle housekeeping sees the flow go.
    lab.advance(lab.engine().config().timeouts.udp_new + 2 * TICK);
    lab.sweep_all();
    assert_eq!(lab.engine().flows().len(), 0);
    assert_eq!(lab.counter(Counter::FlowsExpired), 1);
    assert_eq!((lab.counter(Counter::FlowsActive), lab.counter(Counter::NatPortsInUse)), (0, 0));
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_old_ones() {
    let mut cfg = config();
    cfg.flow_capacity = 4;
    let mut lab = Lab::with(cfg, POLICY);
    lab.resolve();
    let nats: Vec<u16> = (0..4).map(|i| establish(&mut lab, CLIENT, 41000 + i)).collect();
    for i in 0..20 {
        let a = lab.send(PortId::Internal, &tcp(CLIENT2, WEB, 50000 + i, 443, SYN));
        assert_eq!(a, Action::Drop(DropReason::FlowTableFull));
    }
    assert_eq!(lab.dropped(DropReason::FlowTableFull), 20);
    assert_eq!(lab.engine().flows().len(), 4);
    for (i, nat) in nats.iter().enumerate() {
        let sport = 41000 + i as u16;
        assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, sport, 443, ACK)), Action::Forward(PortId::External));
        assert_eq!(lab.send(PortId::External, &tcp_in(WEB, *nat, 443, ACK)), Action::Forward(PortId::Internal));
    }
}

#[test]
fn nat_port_exhaustion_is_counted() {
    let mut cfg = config();
    cfg.nat_port_min = 2000;
    cfg.nat_port_max = 2001;
    cfg.nat_attempts = 8;
    let mut lab = Lab::with(cfg, POLICY);
    lab.resolve();
    // Two translated ports for one remote endpoint: the third flow to it cannot be mapped.
    let mut ports = Vec::new();
    for sport in [40000u16, 40001] {
        assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, sport, 443, SYN)), Action::Forward(PortId::External));
        ports.push(inspect(&lab.out(PortId::External)[0]).unwrap().tcp().sport);
    }
    ports.sort();
    assert_eq!(ports, vec![2000, 2001]);
    let a = lab.send(PortId::Internal, &tcp(CLIENT2, WEB, 40002, 443, SYN));
    assert_eq!(a, Action::Drop(DropReason::NatExhausted));
    assert_eq!(lab.dropped(DropReason::NatExhausted), 1);
    // Another remote endpoint has its own port space.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT2, WEB, 40002, 80, SYN)), Action::Forward(PortId::External));
}
