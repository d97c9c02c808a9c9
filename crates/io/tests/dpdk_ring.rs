//! The engine on real DPDK ports: two `net_ring` vdevs in a no-hugepage EAL.
//!
//! The EAL initialises once per process, so everything DPDK is asserted in one test.
//!
//! A `net_ring` port created by `--vdev=net_ringN` is a loopback: its rx queue and tx queue
//! share one ring, so what is transmitted on the port is received on the same port. The test
//! uses that to play the wire: it transmits a frame on a port for the node to receive, and
//! after a node poll reads what the node transmitted on a port from that port's rx queue
//! (before the node polls again).

use std::sync::Arc;

use sluice_dataplane::config::{EngineConfig, PortConfig as EnginePort};
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Engine, PortId};
use sluice_dataplane::packet::Packet;
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::testing::{inspect, verify_checksums, FrameBuilder, Inspected, SYN};
use sluice_io::dpdk::{Burst, DpdkNode, DpdkPort, Eal, Mempool, MempoolConfig, PortConfig, MAX_BURST};

const NODE_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
const NODE_OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 2];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 3, 1];

const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

const NODE_IN: u32 = ip(10, 10, 0, 1);
const NODE_OUT: u32 = ip(203, 0, 113, 2);
const GW: u32 = ip(203, 0, 113, 1);
const CLIENT: u32 = ip(10, 10, 0, 2);
const WEB: u32 = ip(198, 51, 100, 10);
const BLOCKED: u32 = ip(192, 0, 2, 99);

const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [443], "dst_cidrs": ["198.51.100.0/24"] } }
      ],
      "default_action": "deny" }
  ]
}"#;

const NOW: u64 = 10_000_000_000;

/// The EAL arguments: no hugepages, no PCI scan, no shared config files, two ring ports, and
/// lcore 0 allowed on every CPU this process may use (so the test is not pinned to one).
fn eal_args() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .expect("Cpus_allowed_list in /proc/self/status");
    [
        format!("--lcores=0@({cpus})"),
        "--no-huge".into(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        "--log-level=lib.eal:warning".into(),
        "--vdev=net_ring0".into(),
        "--vdev=net_ring1".into(),
        "--vdev=net_null0".into(),
    ]
    .into()
}

fn engine() -> (Engine, PolicyHandle) {
    let internal = EnginePort { mac: NODE_IN_MAC, ip: NODE_IN, prefix_len: 24, vlan: None };
    let external = EnginePort { mac: NODE_OUT_MAC, ip: NODE_OUT, prefix_len: 24, vlan: None };
    let mut cfg = EngineConfig::new(internal, external, GW);
    cfg.flow_capacity = 1024;
    let policy = PolicyHandle::new(sluice_policy::compile_json(POLICY).expect("test policy"));
    let engine = Engine::new(cfg, policy.reader(), None).expect("engine");
    (engine, policy)
}

fn syn(dst: u32, sport: u16) -> Vec<u8> {
    FrameBuilder::tcp(CLIENT_MAC, NODE_IN_MAC, CLIENT, dst, sport, 443).flags(SYN).ttl(64).payload(b"hello").build()
}

/// Put frames on the wire of `port`: the node receives them at its next poll.
fn inject(node: &mut DpdkNode, pool: &Mempool, port: PortId, frames: &[&[u8]]) {
    let mut burst = Burst::new();
    for f in frames {
        burst.push(pool.alloc_frame(f).expect("mbuf for injected frame")).expect("burst room");
    }
    let sent = node.port_mut(port).expect("data port").tx_burst(&mut burst);
    assert_eq!(sent, frames.len(), "net_ring took every injected frame");
}

/// Everything the node transmitted on `port` since the last look, checked and parsed.
fn wire(node: &mut DpdkNode, port: PortId) -> Vec<Inspected> {
    let mut burst = Burst::new();
    node.port_mut(port).expect("data port").rx_burst(&mut burst);
    let out = burst
        .as_slice()
        .iter()
        .map(|m| {
            verify_checksums(m.data()).unwrap_or_else(|e| panic!("checksums of a frame sent on {port:?}: {e}"));
            inspect(m.data()).unwrap_or_else(|e| panic!("frame sent on {port:?} parses: {e}"))
        })
        .collect();
    burst.clear();
    out
}

fn stat(stats: &[(&'static str, u64)], name: &str) -> u64 {
    stats.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no stat {name} in {stats:?}")).1
}

fn no_host(frame: &[u8]) {
    panic!("no frame should go to the host lane, got {} bytes", frame.len());
}

#[test]
fn engine_forwards_and_snats_over_dpdk_ring_ports() {
    let args = eal_args();
    let eal = Eal::init(&args).unwrap_or_else(|e| {
        panic!(
            "DPDK EAL failed to start with {args:?}: {e}\n\
             The net_ring and mempool drivers come from libdpdk-dev's dependencies \
             (apt-get install libdpdk-dev pkg-config libclang-dev)."
        )
    });
    let again = Eal::init(&args).expect_err("a second EAL init must fail");
    assert!(again.to_string().contains("once per process"), "{again}");

    let pool = Arc::new(
        Mempool::new(&eal, "sluice_test", &MempoolConfig { mbufs: 1023, cache: 0, ..Default::default() })
            .expect("mempool"),
    );

    // The mbuf as a Packet: the data DPDK's macros see, headroom for a VLAN tag, trimming.
    {
        let frame = syn(WEB, 40000);
        let mut m = pool.alloc_frame(&frame).expect("mbuf");
        assert_eq!(m.data(), &frame[..]);
        assert_eq!(m.mtod(), m.data().as_ptr(), "rte_pktmbuf_mtod agrees with the field layout");
        assert_eq!(m.dpdk_data_len(), frame.len());
        let headroom = m.headroom();
        assert_eq!(headroom, 128, "RTE_PKTMBUF_HEADROOM");
        assert!(m.push_front(4));
        assert_eq!(m.data().len(), frame.len() + 4);
        assert_eq!(&m.data()[4..], &frame[..]);
        assert!(m.pull_front(4));
        assert_eq!(m.data(), &frame[..]);
        assert!(!m.push_front(headroom + 1), "no more than the headroom");
        assert!(!m.pull_front(frame.len() + 1), "no more than the frame");
        assert_eq!(m.data(), &frame[..]);
        assert_eq!(pool.in_use(), 1);
    }
    assert_eq!(pool.in_use(), 0, "dropped Mbuf returned to its pool");

    let missing = DpdkPort::open(&eal, "net_nonexistent0", Arc::clone(&pool), &PortConfig::default())
        .expect_err("no such driver");
    assert!(missing.to_string().contains("net_nonexistent0"), "{missing}");
    let internal =
        DpdkPort::open(&eal, "net_ring0", Arc::clone(&pool), &PortConfig::default()).expect("open net_ring0");
    let external =
        DpdkPort::open(&eal, "net_ring1", Arc::clone(&pool), &PortConfig::default()).expect("open net_ring1");
    assert_ne!(internal.id(), external.id());
    for port in [&internal, &external] {
        let link = port.link().expect("link status");
        assert!(link.up, "{} link is up after start: {link:?}", port.name());
    }
    let (engine, _policy) = engine();
    let mut node = DpdkNode::new(engine, internal, external, Arc::clone(&pool));

    // A net_ring port is a loopback: a frame sent on it comes back on its own rx queue.
    let probe = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build();
    inject(&mut node, &pool, PortId::External, &[&probe]);
    let back = wire(&mut node, PortId::External);
    assert_eq!(back.len(), 1, "net_ring1 loops back what it sends");
    assert!(wire(&mut node, PortId::Internal).is_empty(), "ports are not cross-connected");

    // The client asks for the node's MAC: answered on the internal port.
    let arp = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build();
    inject(&mut node, &pool, PortId::Internal, &[&arp]);
    assert_eq!(node.poll(NOW, &mut no_host), 1);
    let reply = wire(&mut node, PortId::Internal);
    assert_eq!(reply.len(), 1, "one ARP reply");
    let a = reply[0].arp.as_ref().expect("ARP reply");
    assert_eq!((a.op, a.sender_mac, a.sender_ip, a.target_ip), (2, NODE_IN_MAC, NODE_IN, CLIENT));

    // A SYN to an allowed server while the gateway is unknown: parked, the node ARPs for it.
    inject(&mut node, &pool, PortId::Internal, &[&syn(WEB, 40000)]);
    assert_eq!(node.poll(NOW, &mut no_host), 1);
    let who_has = wire(&mut node, PortId::External);
    assert_eq!(who_has.len(), 1, "one ARP request on the external port");
    let a = who_has[0].arp.as_ref().expect("ARP request");
    assert_eq!((a.op, a.sender_ip, a.target_ip), (1, NODE_OUT, GW));

    // The gateway answers; the parked SYN leaves source-NATed (an engine-generated mbuf).
    let gw_reply = FrameBuilder::arp_reply(GW_MAC, GW, NODE_OUT_MAC, NODE_OUT).build();
    inject(&mut node, &pool, PortId::External, &[&gw_reply]);
    assert_eq!(node.poll(NOW, &mut no_host), 1);
    let out = wire(&mut node, PortId::External);
    assert_eq!(out.len(), 1, "the released SYN");
    let check_snat = |f: &Inspected| {
        assert_eq!((f.src_mac, f.dst_mac), (NODE_OUT_MAC, GW_MAC));
        assert_eq!((f.ip().src, f.ip().dst, f.ip().ttl), (NODE_OUT, WEB, 63));
        assert_eq!(f.tcp().flags, SYN);
        assert_eq!(f.tcp().dport, 443);
        assert_eq!(f.tcp().payload, b"hello");
    };
    check_snat(&out[0]);

    // Two more allowed SYNs and a denied one in one burst: the allowed ones are edited in
    // their mbufs and transmitted with tx_burst, the denied one is freed and counted.
    let (a, b, denied) = (syn(WEB, 40001), syn(WEB, 40002), syn(BLOCKED, 40003));
    // (Only the internal port is polled: a full poll would read the loopback of the external
    // port next and receive the node's own output back.)
    inject(&mut node, &pool, PortId::Internal, &[&a, &denied, &b]);
    assert_eq!(node.poll_port(PortId::Internal, NOW, &mut no_host), 3);
    let out = wire(&mut node, PortId::External);
    assert_eq!(out.len(), 2, "the two allowed SYNs, not the denied one");
    for f in &out {
        check_snat(f);
    }
    assert!(wire(&mut node, PortId::Internal).is_empty(), "nothing sent back inside");

    node.engine_mut().publish_counters();
    let c = node.engine().counters();
    assert_eq!(c.dropped(DropReason::PolicyDenied), 1, "the denied SYN is counted");
    assert_eq!(c.get(Counter::FlowsOpened), 3);
    let ns = node.stats();
    assert_eq!(ns.rx, 6, "frames the node received: {ns:?}");
    assert_eq!(ns.tx, 5, "frames the node transmitted: {ns:?}");
    assert_eq!(ns.alloc_failures, 0);

    // Port stats count both directions of the loopback: the test's and the node's.
    let int_stats = node.port(PortId::Internal).expect("port").stats().expect("stats");
    let ext_stats = node.port(PortId::External).expect("port").stats().expect("stats");
    // Internal: the test sent 5 (ARP, SYN, 3 SYNs), the node sent 1 (ARP reply); all were read.
    assert_eq!(stat(&int_stats, "tx_packets"), 6, "{int_stats:?}");
    assert_eq!(stat(&int_stats, "rx_packets"), 6, "{int_stats:?}");
    // External: the test sent 2 (probe, gateway ARP reply), the node 4 (ARP, 3 SYNs).
    assert_eq!(stat(&ext_stats, "tx_packets"), 6, "{ext_stats:?}");
    assert_eq!(stat(&ext_stats, "rx_packets"), 6, "{ext_stats:?}");
    assert_eq!(stat(&ext_stats, "tx_full_drops"), 0);
    let xstats = node.port(PortId::External).expect("port").xstats().expect("xstats");
    let x = |name: &str| xstats.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
    assert_eq!(x("rx_good_packets"), Some(6), "{xstats:?}");
    assert_eq!(x("tx_good_packets"), Some(6), "{xstats:?}");

    drop(node);
    assert_eq!(pool.in_use(), 0, "every mbuf went back to the pool");

    // net_null is a sink that frees what it transmits, and an endless source: every rx
    // burst is filled with frames allocated from the port's mempool.
    let mut null =
        DpdkPort::open(&eal, "net_null0", Arc::clone(&pool), &PortConfig::default()).expect("open net_null0");
    let mut burst = Burst::new();
    burst.push(pool.alloc_frame(&syn(WEB, 1)).expect("mbuf")).expect("room");
    assert_eq!(null.tx_burst(&mut burst), 1);
    assert_eq!(pool.in_use(), 0, "net_null freed the transmitted mbuf");
    assert_eq!(null.rx_burst(&mut burst), MAX_BURST, "net_null fills every rx burst");
    // Its frames are 64 bytes (the `size` devarg) whose contents net_null does not write.
    assert!(burst.as_slice().iter().all(|m| m.data().len() == 64));
    assert_eq!(pool.in_use() as usize, MAX_BURST);
    burst.clear();
    let stats = null.stats().expect("stats");
    assert_eq!((stat(&stats, "tx_packets"), stat(&stats, "rx_packets")), (1, MAX_BURST as u64), "{stats:?}");
    drop(null);
    assert_eq!(pool.in_use(), 0);

    // A port the EAL was not told about is probed from its devargs (hotplug).
    let mut probed =
        DpdkPort::open(&eal, "net_null1,size=128", Arc::clone(&pool), &PortConfig::default()).expect("probe net_null1");
    assert_eq!(probed.name(), "net_null1");
    assert_eq!(probed.rx_burst(&mut burst), MAX_BURST);
    assert!(burst.as_slice().iter().all(|m| m.data().len() == 128), "devargs applied");
    burst.clear();
    drop(probed);
    assert_eq!(pool.in_use(), 0);
}
