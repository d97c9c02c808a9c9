//! In-memory ports: frame rings and a node that wires an [`Engine`] to three of them.
//! Used by tests and benchmarks to run the real engine without any I/O.

use crate::engine::{Action, Engine, PortId};
use crate::packet::{BufPacket, Packet};

/// A bounded FIFO of frames with preallocated buffers.
pub struct FrameRing {
    slots: Vec<BufPacket>,
    head: usize,
    len: usize,
}

impl FrameRing {
    pub fn new(capacity: usize, frame_capacity: usize) -> FrameRing {
        assert!(capacity > 0);
        FrameRing { slots: (0..capacity).map(|_| BufPacket::with_capacity(frame_capacity)).collect(), head: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy a frame in; false (and nothing stored) when the ring is full.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if self.len == self.slots.len() || frame.len() > self.slots[0].capacity() {
            return false;
        }
        let tail = (self.head + self.len) % self.slots.len();
        self.slots[tail].set_frame(frame);
        self.len += 1;
        true
    }

    /// Exchange the oldest frame with `spare` (no copy): `spare` receives the frame and the
    /// ring keeps the old buffer for reuse.
    pub fn pop_swap(&mut self, spare: &mut BufPacket) -> bool {
        if self.len == 0 {
            return false;
        }
        std::mem::swap(&mut self.slots[self.head], spare);
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        true
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let mut spare = BufPacket::with_capacity(self.slots[0].capacity());
        self.pop_swap(&mut spare).then(|| spare.data().to_vec())
    }
}

/// An engine with an in-memory ring on each side: inject frames, `poll`, read what came out.
pub struct RingNode {
    engine: Engine,
    inbound: [FrameRing; 3],
    outbound: [FrameRing; 3],
    burst: Vec<BufPacket>,
    actions: Vec<Action>,
    /// The last burst's actions per port, for tests.
    last_actions: [Vec<Action>; 3],
}

impl RingNode {
    pub fn new(engine: Engine, ring_capacity: usize) -> RingNode {
        let frame_cap = 2048;
        let ring = || FrameRing::new(ring_capacity, frame_cap);
        RingNode {
            engine,
            inbound: [ring(), ring(), ring()],
            outbound: [ring(), ring(), ring()],
            burst: (0..crate::engine::MAX_BURST).map(|_| BufPacket::with_capacity(frame_cap)).collect(),
            actions: vec![Action::Consumed; crate::engine::MAX_BURST],
            last_actions: [Vec::new(), Vec::new(), Vec::new()],
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn inject(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.inbound[port as usize].push(frame)
    }

    /// One burst from each port's inbound ring through the engine, results to the outbound
    /// rings, then the frames the engine originated. Returns frames processed.
    pub fn poll(&mut self, now: u64) -> usize {
        let mut total = 0;
        for port in [PortId::Internal, PortId::External, PortId::Host] {
            let mut n = 0;
            while n < self.burst.len() && self.inbound[port as usize].pop_swap(&mut self.burst[n]) {
                n += 1;
            }
            self.last_actions[port as usize].clear();
            if n == 0 {
                continue;
            }
            self.engine.process_burst(port, &mut self.burst[..n], &mut self.actions[..n], now);
            for i in 0..n {
                let a = self.actions[i];
                self.last_actions[port as usize].push(a);
                if let Action::Forward(out) = a {
                    assert!(self.outbound[out as usize].push(self.burst[i].data()), "outbound ring full");
                }
            }
            total += n;
        }
        if total == 0 {
            self.engine.housekeeping(now);
        }
        let RingNode { engine, outbound, .. } = self;
        engine.drain_generated(|port, frame| {
            assert!(outbound[port as usize].push(frame), "outbound ring full");
        });
        total
    }

    /// Everything transmitted on `port` since the last call.
    pub fn take_output(&mut self, port: PortId) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = self.outbound[port as usize].pop() {
            out.push(f);
        }
        out
    }

    /// The actions of the last burst read from `port`.
    pub fn last_actions(&self, port: PortId) -> &[Action] {
        &self.last_actions[port as usize]
    }
}
