//! Unit tests of the flow table.

use super::*;

const SNAT: Option<u32> = Some(0xCB00_7102);

fn flow(src: u32, sport: u16, nat_port: u16) -> Flow {
    Flow {
        orig: FlowKey { src, dst: 0xC000_0201, sport, dport: 443, proto: 6 },
        nat_port,
        state: FlowState::TcpSynSent,
        origin: Origin::Internal,
        generation: 1,
        pin: NO_PIN,
        last_seen: 0,
    }
}

#[test]
fn both_keys_find_the_flow_and_removal_frees_them() {
    let mut t = FlowTable::new(8, 7, SNAT);
    let f = flow(0x0A0A_0002, 40000, 1025);
    let idx = t.insert(f).unwrap();
    assert_eq!(t.lookup(&f.orig, t.hash(&f.orig)), Some((idx, Dir::Orig)));
    let r = t.reply_key(&f);
    assert_eq!(r.dst, 0xCB00_7102);
    assert_eq!(r.dport, 1025);
    assert_eq!(t.lookup(&r, t.hash(&r)), Some((idx, Dir::Reply)));
    t.check_invariants().unwrap();
    assert_eq!(t.remove(idx), f);
    assert!(!t.contains_key(&f.orig));
    assert!(!t.contains_key(&r));
    t.check_invariants().unwrap();
}

#[test]
fn full_table_refuses_and_recovers() {
    let mut t = FlowTable::new(4, 1, SNAT);
    let ids: Vec<u32> = (0..4).map(|i| t.insert(flow(i, 1000, 2000 + i as u16)).unwrap()).collect();
    assert_eq!(t.insert(flow(99, 1000, 3000)), Err(TableFull));
    t.remove(ids[2]);
    assert!(t.insert(flow(99, 1000, 3000)).is_ok());
    t.check_invariants().unwrap();
}

#[test]
fn sweep_is_bounded_and_eventually_complete() {
    let mut t = FlowTable::new(100, 3, SNAT);
    for i in 0..100 {
        t.insert(flow(i, 1, i as u16)).unwrap();
    }
    let mut removed = 0;
    assert_eq!(t.sweep(10, |_| true, |_| removed += 1), 10);
    assert_eq!(removed, 10);
    for _ in 0..9 {
        t.sweep(10, |_| true, |_| {});
    }
    assert!(t.is_empty());
    t.check_invariants().unwrap();
}

#[test]
fn record_stays_small() {
    assert_eq!(std::mem::size_of::<Flow>(), 32, "Flow is {} bytes", std::mem::size_of::<Flow>());
    let t = FlowTable::new(1 << 16, 0, SNAT);
    assert!(t.bytes_per_flow() <= 128, "{} bytes per flow", t.bytes_per_flow());
}
