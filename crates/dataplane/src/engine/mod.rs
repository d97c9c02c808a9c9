//! The packet engine: bursts of frames in, one [`Action`] per frame out, frames edited in
//! place. Pure: no I/O, no clock (callers pass `now` in monotonic nanoseconds), no locks, no
//! allocation after [`Engine::new`].
//!
//! Per burst the engine first does bounded housekeeping (pick up a newly published policy,
//! apply allowlist updates, expire a slice of the flow table and the allowlist, retry ARP),
//! then handles each frame:
//!
//! - from the **internal** port: ARP for the node's inside address; traffic for the node
//!   itself goes up the service lane; everything else is routed out of the external port if
//!   it belongs to a flow, or if policy allows a new one (which is then created with a NAT
//!   mapping);
//! - from the **external** port: ARP for the node's outside address; replies and ICMP errors
//!   that belong to a flow are translated back to the inside (or to the host); nothing else
//!   gets in;
//! - from the **host** (the service lane): the node's own traffic; to the inside it is
//!   routed, to the outside it is tracked and translated like a client flow, without policy
//!   (the node trusts its own stack: this is how the DNS proxy reaches its upstreams).

mod burst;
mod fast;
mod forward;
mod icmp;
mod l2;
mod lead;
mod rewrite;

use std::sync::Arc;

use sluice_policy::{LearnedLookup, RuleKey};

use crate::allowlist::Allowlist;
use crate::config::{ConfigError, EngineConfig, PortConfig};
use crate::counters::{Counter, CounterBlock, Counters, DropReason};
use crate::flow::{ticks, timeout_ticks, Flow, FlowState, FlowTable, NO_PIN};
use crate::neighbor::NeighborCache;
use crate::packet::Packet;
use crate::parse::{self, ParseError, ParsedFrame, L3};
use crate::policy_handle::{PolicyReader, PublishedPolicy};
use crate::view::ViewServer;

pub use rewrite::Endpoint;

/// Where a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PortId {
    Internal = 0,
    External = 1,
    /// The TAP service lane to the node's own host stack.
    Host = 2,
}

/// What the I/O layer does with a frame after the engine saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit the (edited) frame on this port.
    Forward(PortId),
    /// Free the frame; the reason has been counted.
    Drop(DropReason),
    /// The engine took what it needed (ARP handled, or a copy parked until a neighbour
    /// resolves): free the buffer without counting a drop.
    Consumed,
}

/// A burst is processed in chunks of at most this many frames.
pub const MAX_BURST: usize = 64;

/// How many packets behind parsing the flow record is prefetched: by then the index slot
/// read to find it has usually arrived.
const PREFETCH_AHEAD: usize = 8;

/// ICMP error rate limiter: a token bucket refilled from `now`.
struct TokenBucket {
    tokens: u64,
    burst: u64,
    per_sec: u64,
    last: u64,
}

impl TokenBucket {
    fn take(&mut self, now: u64) -> bool {
        if self.per_sec > 0 && now > self.last {
            let earned = (now - self.last).saturating_mul(self.per_sec) / 1_000_000_000;
            if earned > 0 {
                self.tokens = (self.tokens + earned).min(self.burst);
                self.last = now;
            }
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

pub struct Engine {
    cfg: EngineConfig,
    policy: PolicyReader,
    /// The policy of the current burst.
    current: Arc<PublishedPolicy>,
    flows: FlowTable,
    allowlist: Option<Allowlist>,
    neighbors: [NeighborCache; 2],
    generated: l2::Generated,
    counters: Counters,
    published: Arc<CounterBlock>,
    icmp_bucket: TokenBucket,
    icmp_ip_id: u16,
    last_neighbor_poll: u64,
    /// Flows opened since the last expiry slice (sizes the next one).
    opened_since_sweep: usize,
    /// Last resolved next hop per data port (see [`HopCache`]).
    hop_cache: [HopCache; 2],
    /// Idle timeout per flow state, in flow ticks.
    timeout_ticks: [u32; FlowState::ALL.len()],
    /// Engine time of the last counter publication.
    last_publish: u64,
    /// Whether established flows take the fast path (`fast`); off only to compare the two.
    fast_path: bool,
    /// The configuration as the fast path compares against it.
    fast: fast::FastConstants,
    /// Packets the fast path forwarded (for tests: proof that it runs).
    fast_path_packets: u64,
    /// The control plane's read path into the tables (see [`crate::view`]).
    views: Option<ViewServer>,
    /// Stage 1's results for stage 3 of a burst; `None` only while a burst runs.
    scratch: Option<Box<burst::BurstScratch>>,
}

/// Counters are published at most this often (engine time).
pub const PUBLISH_INTERVAL_NS: u64 = 100_000;

/// A one-entry cache in front of a port's neighbour table: nearly every outbound packet
/// goes to the gateway, so this saves a hash lookup per packet. It is cleared whenever the
/// port learns from ARP and trusted for [`HOP_CACHE_NS`] at most, so a changed or expired
/// neighbour is noticed within that time.
#[derive(Clone, Copy, Default)]
struct HopCache {
    ip: u32,
    mac: [u8; 6],
    until: u64,
}

const HOP_CACHE_NS: u64 = 10_000_000;

/// The allowlist as the policy compiler sees it, at one instant.
struct Learned<'a> {
    allowlist: Option<&'a Allowlist>,
    now: u64,
    /// Admitting a new flow: only entries within their TTL count. Re-checking a live flow
    /// after a policy swap, entries its own pin keeps count too.
    new_flow: bool,
}

impl LearnedLookup for Learned<'_> {
    #[inline]
    fn is_learned(&self, rule: RuleKey, dst: u32) -> bool {
        self.allowlist.is_some_and(|a| {
            if self.new_flow {
                a.is_live(rule, dst, self.now)
            } else {
                a.contains(rule, dst, self.now)
            }
        })
    }
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        mut policy: PolicyReader,
        allowlist: Option<Allowlist>,
    ) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let current = Arc::clone(policy.load());
        let slot_len = cfg.neighbor.max_frame_len.max(640);
        Ok(Engine {
            flows: FlowTable::new(cfg.flow_capacity, cfg.hash_seed, cfg.snat.then_some(cfg.external.ip)),
            timeout_ticks: FlowState::ALL.map(|s| timeout_ticks(cfg.timeouts.for_state(s))),
            neighbors: [0x1A7E_4A11u64, 0xE87E_4A11].map(|salt| {
                let mut n = cfg.neighbor.clone();
                n.hash_seed ^= cfg.hash_seed.rotate_left(13) ^ salt;
                NeighborCache::new(n)
            }),
            generated: l2::Generated::new(cfg.max_generated, slot_len),
            counters: Counters::default(),
            published: Arc::new(CounterBlock::default()),
            icmp_bucket: TokenBucket {
                tokens: u64::from(cfg.icmp_error_burst),
                burst: u64::from(cfg.icmp_error_burst),
                per_sec: u64::from(cfg.icmp_errors_per_sec),
                last: 0,
            },
            icmp_ip_id: 1,
            last_neighbor_poll: 0,
            opened_since_sweep: 0,
            hop_cache: [HopCache::default(); 2],
            last_publish: 0,
            fast_path: true,
            fast: fast::FastConstants::new(&cfg),
            fast_path_packets: 0,
            views: None,
            scratch: Some(burst::BurstScratch::new()),
            current,
            policy,
            allowlist,
            cfg,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The lock-free published counters of this engine, for readers on other threads.
    pub fn counter_block(&self) -> Arc<CounterBlock> {
        Arc::clone(&self.published)
    }

    /// This engine's counters as of now (same thread).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub fn allowlist(&self) -> Option<&Allowlist> {
        self.allowlist.as_ref()
    }

    /// Serve view requests from this channel in housekeeping, a bounded slice per turn.
    pub fn attach_views(&mut self, server: ViewServer) {
        self.views = Some(server);
    }

    /// A view request is half served: an idle worker should run housekeeping again soon
    /// rather than sleep its full idle timeout.
    pub fn view_in_progress(&self) -> bool {
        self.views.as_ref().is_some_and(ViewServer::in_progress)
    }

    pub fn neighbor(&self, port: PortId) -> &NeighborCache {
        &self.neighbors[port as usize]
    }

    /// Turn the established-flow fast path on or off. It never changes a verdict, a byte or
    /// a counter, only speed: this exists so tests can compare the engine with and without
    /// it.
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// How many packets the fast path has forwarded.
    #[doc(hidden)]
    pub fn fast_path_packets(&self) -> u64 {
        self.fast_path_packets
    }

    /// The generation of the policy the engine currently enforces.
    pub fn policy_generation(&self) -> u32 {
        self.current.generation
    }

    #[inline]
    fn port(&self, id: PortId) -> &PortConfig {
        match id {
            PortId::Internal => &self.cfg.internal,
            _ => &self.cfg.external,
        }
    }

    fn neighbor_mut(&mut self, id: PortId) -> &mut NeighborCache {
        &mut self.neighbors[id as usize]
    }

    #[inline]
    fn count_tx(&mut self, port: PortId, bytes: usize) {
        let [.., p, b] = burst::port_counters(port);
        self.counters.inc(p);
        self.counters.add(b, bytes as u64);
    }

    /// Bounded periodic work; the I/O layer also calls this when idle so that timers run
    /// without traffic.
    pub fn housekeeping(&mut self, now: u64) {
        let published = self.policy.load();
        if published.generation != self.current.generation {
            self.current = Arc::clone(published);
            self.counters.inc(Counter::PolicySwaps);
        }
        self.counters.set(Counter::PolicyGeneration, u64::from(self.current.generation));
        if let Some(a) = self.allowlist.as_mut() {
            a.drain(now, self.cfg.allowlist_budget);
            if !a.is_empty() {
                a.sweep(now, self.cfg.allowlist_sweep_budget);
            }
            self.counters.set(Counter::AllowlistEntries, a.len() as u64);
            let stats = a.stats();
            self.counters.set(Counter::AllowlistLearned, stats.learned);
            self.counters.set(Counter::AllowlistExpired, stats.expired);
            self.counters.set(Counter::AllowlistFullDrops, stats.full_drops);
        }
        // Expiry keeps pace with creation: a base slice, plus two records examined for every
        // flow opened since the last sweep, so a churning table never fills with dead flows.
        // (Lookups treat expired flows as gone, so a slow sweep only delays reuse of memory.)
        let budget = self.cfg.sweep_budget + 2 * self.opened_since_sweep;
        self.opened_since_sweep = 0;
        if self.expire_flows(now, budget) > 0 {
            // An idle worker expires flows with no burst to follow: refresh the gauges here
            // too, or they would show the flows until the next packet arrives.
            self.set_flow_gauges();
        }
        // After the allowlist drain and the expiry slice, so a view sees what they left.
        if let Some(v) = self.views.as_mut() {
            if v.serve(&self.flows, self.allowlist.as_ref(), &self.timeout_ticks, now) {
                self.counters.set(Counter::ViewsServed, v.served());
            }
        }
        // ARP timers are coarse (seconds): poll them every millisecond at most.
        if now.wrapping_sub(self.last_neighbor_poll) >= 1_000_000 || now < self.last_neighbor_poll {
            self.last_neighbor_poll = now;
            self.poll_neighbors(now);
        }
        self.maybe_publish(now);
    }

    fn finish_burst(&mut self, now: u64) {
        self.set_flow_gauges();
        self.maybe_publish(now);
    }

    #[inline]
    fn set_flow_gauges(&mut self) {
        self.counters.set(Counter::FlowsActive, self.flows.len() as u64);
        if self.cfg.snat {
            self.counters.set(Counter::NatPortsInUse, self.flows.len() as u64);
        }
    }

    /// Copy the counters to the published block at most every [`PUBLISH_INTERVAL_NS`] of
    /// engine time: readers see values at most that old, and a busy worker does not spend a
    /// store per counter on every burst. Idle housekeeping publishes too, so the last values
    /// always become visible.
    #[inline]
    fn maybe_publish(&mut self, now: u64) {
        if now.wrapping_sub(self.last_publish) >= PUBLISH_INTERVAL_NS || now < self.last_publish {
            self.last_publish = now;
            self.published.publish(&self.counters);
        }
    }

    /// Publish the counters now (for callers that need an exact reading, e.g. at shutdown).
    pub fn publish_counters(&mut self) {
        self.published.publish(&self.counters);
    }

    /// Hand every frame the engine originated since the last call to `send`.
    pub fn drain_generated(&mut self, send: impl FnMut(PortId, &[u8])) {
        self.generated.drain(send);
    }

    pub fn generated_pending(&self) -> usize {
        self.generated.len()
    }

    /// Remove expired flows among the next `budget` records.
    fn expire_flows(&mut self, now: u64, budget: usize) -> usize {
        let Engine { flows, allowlist, counters, timeout_ticks, .. } = self;
        let now = ticks(now);
        flows.sweep(
            budget,
            |f| now.wrapping_sub(f.last_seen) > timeout_ticks[f.state as usize],
            |f| {
                release_pin(allowlist, f);
                counters.inc(if matches!(f.state, FlowState::TcpClosing | FlowState::TcpClosed) {
                    Counter::FlowsClosed
                } else {
                    Counter::FlowsExpired
                });
            },
        )
    }

    #[inline]
    fn is_expired(&self, f: &Flow, now: u64) -> bool {
        ticks(now).wrapping_sub(f.last_seen) > self.timeout_ticks[f.state as usize]
    }

    /// Remove one flow, releasing what it holds, and count why.
    fn remove_flow(&mut self, idx: u32, why: Counter) {
        let f = self.flows.remove(idx);
        release_pin(&mut self.allowlist, &f);
        self.counters.inc(why);
    }

    #[inline(always)]
    fn process_one<P: Packet>(
        &mut self,
        from: PortId,
        p: &mut P,
        parsed: &Result<ParsedFrame, ParseError>,
        hash: u32,
        now: u64,
        current: &PublishedPolicy,
    ) -> Action {
        let eth = match parsed {
            Ok(e) => e,
            Err(e) => return Action::Drop((*e).into()),
        };
        let (our_mac, our_vlan) = match from {
            PortId::Host => match self.cfg.host_lane {
                Some(l) => (l.engine_mac, None),
                None => return Action::Drop(DropReason::HostLaneDisabled),
            },
            _ => {
                let port = self.port(from);
                (port.mac, port.vlan)
            }
        };
        if eth.vlan != our_vlan {
            return Action::Drop(DropReason::VlanMismatch);
        }
        let dst_mac = parse::dst_mac(p.data());
        match &eth.l3 {
            L3::Arp(arp) => {
                if dst_mac != our_mac && dst_mac != [0xFF; 6] {
                    return Action::Drop(DropReason::NotForUs);
                }
                self.handle_arp(from, eth, arp, now)
            }
            L3::Ipv4(ip) => {
                if dst_mac != our_mac {
                    return Action::Drop(DropReason::NotForUs);
                }
                match from {
                    PortId::Internal => self.handle_internal(current, p, eth, ip, hash, now),
                    PortId::External => self.handle_external(current, p, eth, ip, hash, now),
                    PortId::Host => self.handle_host(current, p, eth, ip, hash, now),
                }
            }
        }
    }
}

fn release_pin(allowlist: &mut Option<Allowlist>, f: &Flow) {
    if f.pin != NO_PIN {
        if let Some(a) = allowlist.as_mut() {
            a.unpin(crate::allowlist::PinHandle::from_raw(f.pin));
        }
    }
}
