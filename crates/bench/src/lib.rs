//! Workloads for the engine benchmarks, shared by the `sluice-bench` binary (which prints
//! the `BENCH` figures for `cargo xtask bench engine`) and the criterion benches.
//!
//! Every workload first proves that its packets get the verdict its figure claims (forwarded
//! with SNAT, a new flow and NAT entry created, ...) and panics otherwise: a benchmark that
//! silently measured the drop path would be worse than none.

use sluice_dataplane::allowlist::{allowlist_channel, AllowlistConfig, AllowlistWriter};
use sluice_dataplane::config::{EngineConfig, PortConfig};
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, Engine, PortId};
use sluice_dataplane::packet::{BufPacket, Packet};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::testing::{inspect, FrameBuilder, ACK, SYN};
use sluice_policy::CompiledPolicy;

pub const NODE_INSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NODE_OUTSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xFE];
pub const INSIDE_IP: u32 = 0x0A00_0001; // 10.0.0.1/8
pub const OUTSIDE_IP: u32 = 0xCB00_7102; // 203.0.113.2/24
pub const GATEWAY_IP: u32 = 0xCB00_7101; // 203.0.113.1
/// Bursts handed to the engine, as a DPDK worker would.
pub const BURST: usize = 32;
/// Fake time advanced per burst by default (the engine never reads a clock).
pub const NS_PER_BURST: u64 = 1_000;

/// The policy the figures use: `groups` source groups (10.(g+1).0.0/16) of `rules` rules
/// each; 10 % of the rules are hostname rules; many rules compete for TCP/443 with other
/// destinations, so the flows measured are allowed by the *last* rule of their group.
pub fn realistic_policy_json(groups: usize, rules: usize) -> String {
    assert!(groups <= 250 && rules >= 2);
    let mut out = String::from("{\"default_action\":\"deny\",\"source_groups\":[");
    for g in 0..groups {
        if g > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":\"group-{g}\",\"priority\":{},\"mode\":\"enforce\",\"sources\":{{\"cidrs\":[\"10.{}.0.0/16\"]}},\"default_action\":\"deny\",\"rules\":[",
            g + 1,
            g + 1
        ));
        for r in 0..rules {
            if r > 0 {
                out.push(',');
            }
            let body = if r == rules - 1 {
                "\"action\":\"allow\",\"match\":{\"proto\":\"tcp\",\"dst_ports\":[443,8443],\"dst_cidrs\":[\"198.18.0.0/15\"]}".to_string()
            } else if r % 10 == 3 {
                format!(
                    "\"action\":\"allow\",\"match\":{{\"proto\":\"tcp\",\"dst_ports\":[443],\"hostnames\":[\"svc{r}.g{g}.example.com\",\"*.cdn{r}.example.net\"]}}"
                )
            } else if r % 2 == 0 {
                format!(
                    "\"action\":\"allow\",\"match\":{{\"proto\":\"tcp\",\"dst_ports\":[80,443,\"9000-9100\"],\"dst_cidrs\":[\"100.64.{r}.0/24\",\"100.65.{}.0/24\"]}}",
                    g % 256
                )
            } else {
                format!(
                    "\"action\":\"deny\",\"match\":{{\"proto\":\"udp\",\"dst_ports\":[123,{}],\"dst_cidrs\":[\"192.0.2.0/24\"]}}",
                    1000 + r
                )
            };
            out.push_str(&format!("{{\"id\":\"rule-{r}\",{body}}}"));
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

pub fn realistic_policy() -> CompiledPolicy {
    sluice_policy::compile_json(&realistic_policy_json(200, 20)).expect("benchmark policy compiles")
}

/// Inside hosts in the address plan: 25 per group.
pub const HOSTS: usize = 200 * 25;

/// The inside address, destination and source port of flow `i`: 5 000 hosts spread over all
/// 200 groups, each with many connections (distinct source ports), to 64 K destinations.
pub fn flow_endpoints(i: usize) -> (u32, u32, u16) {
    let src = host_address(i % HOSTS);
    let dst = 0xC612_0000 | (i as u32 % 0x1_0000); // 198.18.0.0/16
    let sport = 1024 + (i / HOSTS) as u16;
    assert!(i / HOSTS < 60_000, "too many flows for the address plan");
    (src, dst, sport)
}

/// Address of inside host `h` (0..HOSTS): group `h % 200`, host number `h / 200`.
pub fn host_address(h: usize) -> u32 {
    let group = (h % 200) as u32;
    let host = (h / 200) as u32 + 2;
    0x0A00_0000 | ((group + 1) << 16) | host
}

pub fn engine_config(capacity: usize) -> EngineConfig {
    let internal = PortConfig { mac: NODE_INSIDE_MAC, ip: INSIDE_IP, prefix_len: 8, vlan: None };
    let external = PortConfig { mac: NODE_OUTSIDE_MAC, ip: OUTSIDE_IP, prefix_len: 24, vlan: None };
    let mut cfg = EngineConfig::new(internal, external, GATEWAY_IP);
    cfg.flow_capacity = capacity;
    cfg.neighbor.capacity = 2 * HOSTS;
    cfg
}

/// An engine with the realistic policy, an (empty) allowlist, and the gateway resolved.
pub struct Bench {
    pub engine: Engine,
    pub now: u64,
    /// Fake time advanced per burst.
    pub ns_per_burst: u64,
    pub policy: PolicyHandle,
    _allowlist_writer: AllowlistWriter,
    burst: Vec<BufPacket>,
    actions: Vec<Action>,
}

impl Bench {
    pub fn new(cfg: EngineConfig, policy: CompiledPolicy) -> Bench {
        let handle = PolicyHandle::new(policy);
        let (writer, mut readers) = allowlist_channel(1, &AllowlistConfig { capacity: 65_536, channel_capacity: 1024 });
        let engine = Engine::new(cfg, handle.reader(), readers.pop()).expect("engine config");
        let mut b = Bench {
            engine,
            now: 1_000_000_000,
            ns_per_burst: NS_PER_BURST,
            policy: handle,
            _allowlist_writer: writer,
            burst: (0..BURST).map(|_| BufPacket::with_capacity(128)).collect(),
            actions: vec![Action::Consumed; BURST],
        };
        let arp = FrameBuilder::arp_reply(GATEWAY_MAC, GATEWAY_IP, NODE_OUTSIDE_MAC, OUTSIDE_IP).build();
        let a = b.run_one(PortId::External, &arp);
        assert_eq!(a, Action::Consumed, "gateway ARP reply not taken");
        b.engine.drain_generated(|_, _| {});
        // Every inside host announces itself, as hosts do when they first ARP for their
        // gateway: replies to them then leave without waiting.
        for h in 0..HOSTS {
            let req = FrameBuilder::arp_request(CLIENT_MAC, host_address(h), INSIDE_IP).build();
            assert_eq!(b.run_one(PortId::Internal, &req), Action::Consumed);
            b.engine.drain_generated(|_, _| {});
        }
        b
    }

    /// Send one frame; return its action and leave the edited frame in `self.last()`.
    pub fn run_one(&mut self, port: PortId, frame: &[u8]) -> Action {
        self.burst[0].set_frame(frame);
        self.engine.process_burst(port, &mut self.burst[..1], &mut self.actions[..1], self.now);
        self.actions[0]
    }

    pub fn last(&self) -> &[u8] {
        self.burst[0].data()
    }

    /// Process `frames` (each `stride` bytes apart in `pool`, starting at frame `first`) as
    /// one burst; returns how many were forwarded.
    #[inline]
    pub fn run_burst(&mut self, port: PortId, pool: &FramePool, first: usize) -> usize {
        // One division per burst, not per frame: the copy is the bench's cost, not the engine's.
        let mut i = first % pool.len();
        for p in self.burst.iter_mut() {
            p.set_frame(pool.frame(i));
            i += 1;
            if i == pool.len() {
                i = 0;
            }
        }
        self.engine.process_burst(port, &mut self.burst, &mut self.actions, self.now);
        self.now += self.ns_per_burst;
        self.actions.iter().filter(|a| matches!(a, Action::Forward(_))).count()
    }

    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
}

/// Frames stored back to back, so building a burst is a copy, not a rebuild.
pub struct FramePool {
    bytes: Vec<u8>,
    lens: Vec<u16>,
    stride: usize,
}

impl FramePool {
    pub fn new(stride: usize) -> FramePool {
        FramePool { bytes: Vec::new(), lens: Vec::new(), stride }
    }

    pub fn push(&mut self, frame: &[u8]) {
        assert!(frame.len() <= self.stride);
        let start = self.bytes.len();
        self.bytes.resize(start + self.stride, 0);
        self.bytes[start..start + frame.len()].copy_from_slice(frame);
        self.lens.push(frame.len() as u16);
    }

    #[inline]
    pub fn frame(&self, i: usize) -> &[u8] {
        let start = i * self.stride;
        &self.bytes[start..start + usize::from(self.lens[i])]
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }
}

fn tcp_frame(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    FrameBuilder::tcp(CLIENT_MAC, NODE_INSIDE_MAC, src, dst, sport, dport).flags(flags).ttl(64).build()
}

/// `n` established flows; returns the bench and a pool of inside->outside ACK segments, one
/// per flow, in a shuffled order so the table is not walked sequentially.
pub fn established(n: usize) -> (Bench, FramePool) {
    let capacity = (n + n / 4).next_power_of_two().max(1024);
    let mut b = Bench::new(engine_config(capacity), realistic_policy());
    let mut pool = FramePool::new(64);
    for i in 0..n {
        let (src, dst, sport) = flow_endpoints(i);
        let a = b.run_one(PortId::Internal, &tcp_frame(src, dst, sport, 443, SYN));
        assert_eq!(a, Action::Forward(PortId::External), "SYN of flow {i} not forwarded");
        let out = inspect(b.last()).expect("forwarded SYN parses");
        assert_eq!(out.ip().src, OUTSIDE_IP, "SYN of flow {i} not source-NATed");
        let nat_port = out.tcp().sport;
        let synack =
            FrameBuilder::tcp(GATEWAY_MAC, NODE_OUTSIDE_MAC, dst, OUTSIDE_IP, 443, nat_port).flags(SYN | ACK).build();
        assert_eq!(b.run_one(PortId::External, &synack), Action::Forward(PortId::Internal), "SYN-ACK {i}");
        let ack = tcp_frame(src, dst, sport, 443, ACK);
        assert_eq!(b.run_one(PortId::Internal, &ack), Action::Forward(PortId::External), "ACK {i}");
    }
    assert_eq!(b.engine.flows().len(), n, "every flow is tracked");
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, 0x5EED);
    for i in order {
        let (src, dst, sport) = flow_endpoints(i);
        pool.push(&tcp_frame(src, dst, sport, 443, ACK));
    }
    // Proof for the figure: a full pass over the pool is forwarded, translated, and opens
    // no new flow.
    let opened = b.engine.counters().get(Counter::FlowsOpened);
    let mut k = 0;
    while k < pool.len() {
        let fwd = b.run_burst(PortId::Internal, &pool, k);
        assert_eq!(fwd, BURST, "established packets must all be forwarded");
        let frame = b.burst[0].data();
        let out = inspect(frame).expect("forwarded frame parses");
        assert_eq!(out.ip().src, OUTSIDE_IP, "forwarded frame is source-NATed");
        assert_eq!(out.dst_mac, GATEWAY_MAC, "forwarded to the gateway");
        k += BURST;
    }
    assert_eq!(b.engine.counters().get(Counter::FlowsOpened), opened, "no new flows");
    (b, pool)
}

/// An engine where every packet is the SYN of a new flow, with short SYN timeouts so that
/// flows expire and the table churns (NAT allocation and expiry included in the figure).
pub fn new_flows(pool_size: usize) -> (Bench, FramePool) {
    let mut cfg = engine_config(1 << 17);
    // Flows live ~500 bursts of fake time (10 us each: flow timestamps have ~1 ms ticks), so
    // the table holds ~16-20 k of them and the sweeper removes as many as are created.
    let ns_per_burst = 10_000;
    cfg.timeouts.tcp_syn = 500 * ns_per_burst;
    let mut b = Bench::new(cfg, realistic_policy());
    b.ns_per_burst = ns_per_burst;
    let mut pool = FramePool::new(64);
    for i in 0..pool_size {
        let (src, dst, sport) = flow_endpoints(i);
        pool.push(&tcp_frame(src, dst, sport, 443, SYN));
    }
    // The pool must span several flow lifetimes so that a reused SYN never meets its own
    // flow still alive (an expired one found by lookup is replaced by a new flow).
    assert!(pool_size / BURST > 3 * 600, "pool too small for the churn");
    (b, pool)
}

/// Run `pool` through `b` once in full and prove every packet opened a flow and was
/// forwarded with SNAT.
pub fn verify_new_flows(b: &mut Bench, pool: &FramePool) {
    let opened = b.engine.counters().get(Counter::FlowsOpened);
    let mut k = 0;
    while k + BURST <= pool.len() {
        assert_eq!(b.run_burst(PortId::Internal, pool, k), BURST, "new-flow SYNs must be forwarded");
        let out = inspect(b.burst[BURST - 1].data()).expect("parses");
        assert_eq!(out.ip().src, OUTSIDE_IP, "SYN is source-NATed");
        k += BURST;
    }
    let opened_now = b.engine.counters().get(Counter::FlowsOpened) - opened;
    assert_eq!(opened_now as usize, k, "each SYN opened a flow");
    assert_eq!(b.engine.counters().dropped(DropReason::FlowTableFull), 0, "table never full");
    assert_eq!(b.engine.counters().dropped(DropReason::NatExhausted), 0, "NAT never exhausted");
}

/// Deterministic Fisher-Yates with a xorshift generator (no rand dependency).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}
