//! The engine between two DPDK ports.

use std::ptr::NonNull;
use std::sync::Arc;

use sluice_dataplane::engine::{Action, Engine, PortId};
use sluice_dataplane::packet::Packet;

use super::mbuf::{Burst, Mbuf, Mempool};
use super::port::DpdkPort;
use super::MAX_BURST;

/// What a node did, for its owner's counters (the engine counts everything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub rx: u64,
    pub tx: u64,
    /// Frames the engine dropped or consumed, freed.
    pub freed: u64,
    /// Frames for the host lane handed to the host callback.
    pub to_host: u64,
    /// Engine-generated frames lost because the mempool was empty.
    pub alloc_failures: u64,
}

/// An [`Engine`] between an internal and an external [`DpdkPort`], driven by
/// [`poll`](DpdkNode::poll) from one thread.
pub struct DpdkNode {
    engine: Engine,
    ports: [DpdkPort; 2],
    pool: Arc<Mempool>,
    rx: Burst,
    tx: [Burst; 2],
    actions: [Action; MAX_BURST],
    stats: NodeStats,
}

fn port_index(p: PortId) -> Option<usize> {
    match p {
        PortId::Internal => Some(0),
        PortId::External => Some(1),
        PortId::Host => None,
    }
}

impl DpdkNode {
    /// `pool` supplies mbufs for frames the engine originates (ARP, ICMP errors).
    pub fn new(engine: Engine, internal: DpdkPort, external: DpdkPort, pool: Arc<Mempool>) -> DpdkNode {
        DpdkNode {
            engine,
            ports: [internal, external],
            pool,
            rx: Burst::new(),
            tx: [Burst::new(), Burst::new()],
            actions: [Action::Consumed; MAX_BURST],
            stats: NodeStats::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn port(&self, p: PortId) -> Option<&DpdkPort> {
        port_index(p).map(|i| &self.ports[i])
    }

    /// The port itself, e.g. to read its stats, or in tests to act as the wire on a
    /// loopback port (`net_ring`).
    pub fn port_mut(&mut self, p: PortId) -> Option<&mut DpdkPort> {
        port_index(p).map(|i| &mut self.ports[i])
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// One round: a burst from each port through the engine; forwarded frames are
    /// transmitted, dropped and consumed ones freed, frames for the host lane passed to
    /// `host` (and freed). Idle rounds run the engine's housekeeping. Frames the engine
    /// originated are sent last. Returns the number of frames received.
    pub fn poll(&mut self, now: u64, host: &mut dyn FnMut(&[u8])) -> usize {
        let total = self.poll_port(PortId::Internal, now, host) + self.poll_port(PortId::External, now, host);
        if total == 0 {
            self.engine.housekeeping(now);
        }
        self.send_generated(host);
        total
    }

    /// One burst from one data port through the engine, with its frames transmitted, freed
    /// or handed to `host` as in [`poll`](DpdkNode::poll), but without housekeeping and
    /// without sending engine-generated frames. Returns the number of frames received
    /// (0 for [`PortId::Host`], which is not a DPDK port).
    pub fn poll_port(&mut self, from: PortId, now: u64, host: &mut dyn FnMut(&[u8])) -> usize {
        let Some(i) = port_index(from) else { return 0 };
        let n = self.ports[i].rx_burst(&mut self.rx);
        if n == 0 {
            return 0;
        }
        self.stats.rx += n as u64;
        self.engine.process_burst(from, self.rx.as_mut_slice(), &mut self.actions[..n], now);
        self.dispatch(n, host);
        self.flush();
        n
    }

    /// Runs frames that did not come from a DPDK port (the service lane's, from the host)
    /// through the engine as received on `from`. Frames forwarded to a data port are copied
    /// into mbufs and transmitted (a frame is lost, and counted in `alloc_failures`, when the
    /// pool is empty); frames for the host go to `host`. Returns the number of frames.
    pub fn inject<P: Packet>(
        &mut self,
        from: PortId,
        frames: &mut [P],
        now: u64,
        host: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let n = frames.len().min(MAX_BURST);
        if n == 0 {
            return 0;
        }
        self.engine.process_burst(from, &mut frames[..n], &mut self.actions[..n], now);
        for (frame, action) in frames[..n].iter().zip(&self.actions[..n]) {
            let out = match *action {
                Action::Forward(out) => out,
                Action::Drop(_) | Action::Consumed => continue,
            };
            let Some(t) = port_index(out) else {
                host(frame.data());
                self.stats.to_host += 1;
                continue;
            };
            let Some(m) = self.pool.alloc_frame(frame.data()) else {
                self.stats.alloc_failures += 1;
                continue;
            };
            if self.tx[t].is_full() {
                self.stats.tx += self.ports[t].tx_burst(&mut self.tx[t]) as u64;
            }
            self.tx[t].push(m).expect("burst has room");
        }
        self.flush();
        n
    }

    fn dispatch(&mut self, n: usize, host: &mut dyn FnMut(&[u8])) {
        let mut free = Burst::new();
        for k in 0..n {
            match self.actions[k] {
                Action::Forward(PortId::Host) => {
                    let p = self.rx.take_raw(k);
                    // SAFETY: slot k held an owned, non-null mbuf, now moved out of the burst.
                    let m = unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) };
                    host(m.data());
                    self.stats.to_host += 1;
                    free.push(m).expect("free burst has room");
                }
                Action::Forward(out) => {
                    let t = port_index(out).expect("data port");
                    let p = self.rx.take_raw(k);
                    self.tx[t].push_raw(p);
                }
                Action::Drop(_) | Action::Consumed => {
                    self.stats.freed += 1;
                    free.push_raw(self.rx.take_raw(k));
                }
            }
        }
        self.rx.forget_all();
        // `free` drops here, returning its mbufs to the pool in one bulk call.
    }

    fn flush(&mut self) {
        for (port, burst) in self.ports.iter_mut().zip(self.tx.iter_mut()) {
            self.stats.tx += port.tx_burst(burst) as u64;
        }
    }

    /// Transmits the frames the engine originated (ARP, ICMP errors), copied into mbufs;
    /// those for the host lane go to `host`.
    pub fn send_generated(&mut self, host: &mut dyn FnMut(&[u8])) {
        if self.engine.generated_pending() == 0 {
            return;
        }
        let DpdkNode { engine, ports, pool, tx, stats, .. } = self;
        engine.drain_generated(|to, frame| {
            let Some(t) = port_index(to) else {
                host(frame);
                stats.to_host += 1;
                return;
            };
            let Some(m) = pool.alloc_frame(frame) else {
                stats.alloc_failures += 1;
                return;
            };
            if tx[t].is_full() {
                stats.tx += ports[t].tx_burst(&mut tx[t]) as u64;
            }
            tx[t].push(m).expect("burst has room");
        });
        self.flush();
    }
}
