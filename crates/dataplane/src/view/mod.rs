//! Views: the control plane's read path into a worker's flow table and allowlist.
//!
//! A worker owns its tables and never shares them, so the control plane cannot read them
//! directly. It sends a [`ViewRequest`] (a filter, a limit and a buffer it allocated with room
//! for `limit` rows) over a bounded channel; the worker's [`ViewServer`], run from the
//! engine's housekeeping between bursts, scans at most `budget` table slots per turn from a
//! cursor, appends the rows that match the filter, and continues at the next turn until the
//! buffer is full or the table has been scanned. It then sends the request, buffer and all,
//! back on a second bounded channel. The worker never allocates or frees (rows are pushed
//! within the capacity it was handed, and everything it received travels back), never waits
//! and never makes a system call: nobody blocks on the reply channel, the control plane polls
//! it ([`ViewClient::poll`]).
//!
//! One request is outstanding per worker at a time ([`ViewClient::submit`] refuses a second
//! one until the first came back), so both channels hold at most one message and the worker's
//! send always finds room. A view is live, not a snapshot: flows opened or closed while the
//! scan runs may or may not be in it, but no slot is visited twice.

mod serve;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use sluice_policy::RuleKey;

use crate::flow::{FlowKey, FlowState, Origin};

pub use serve::ViewServer;

/// Table slots a worker examines per turn for a view: a few microseconds of work, so a
/// million-flow table is listed over a few hundred turns without stalling any of them.
pub const DEFAULT_SCAN_BUDGET: usize = 4096;

/// A flow state's name in listings (the API's `state` field).
pub fn state_name(state: FlowState) -> &'static str {
    match state {
        FlowState::TcpSynSent => "tcp_syn_sent",
        FlowState::TcpSynReceived => "tcp_syn_received",
        FlowState::TcpEstablished => "tcp_established",
        FlowState::TcpFinOrig => "tcp_fin_orig",
        FlowState::TcpFinReply => "tcp_fin_reply",
        FlowState::TcpClosing => "tcp_closing",
        FlowState::TcpClosed => "tcp_closed",
        FlowState::UdpNew => "udp_new",
        FlowState::UdpReplied => "udp_replied",
        FlowState::IcmpEcho => "icmp_echo",
    }
}

/// A flow origin's name in listings (the API's `origin` field).
pub fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Internal => "internal",
        Origin::Host => "host",
    }
}

/// Which flows a view returns; `None` matches anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowQuery {
    /// Inside source address.
    pub src: Option<u32>,
    pub dst: Option<u32>,
    /// IP protocol number.
    pub proto: Option<u8>,
    pub dst_port: Option<u16>,
}

impl FlowQuery {
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.src.is_none_or(|a| a == k.src)
            && self.dst.is_none_or(|a| a == k.dst)
            && self.proto.is_none_or(|p| p == k.proto)
            && self.dst_port.is_none_or(|p| p == k.dport)
    }
}

/// Which allowlist entries a view returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowlistQuery {
    pub ip: Option<u32>,
    /// Only entries of these rules, sorted (the control plane turns group and rule names into
    /// keys with the policy; the worker only knows keys). `None`: every rule.
    pub rules: Option<Vec<RuleKey>>,
}

impl AllowlistQuery {
    #[inline]
    pub fn matches(&self, rule: RuleKey, ip: u32) -> bool {
        self.ip.is_none_or(|a| a == ip) && self.rules.as_ref().is_none_or(|keys| keys.binary_search(&rule).is_ok())
    }
}

/// One live flow as the worker saw it at the turn that listed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRow {
    /// The inside tuple (before source NAT).
    pub orig: FlowKey,
    /// The translated source address and port.
    pub nat_ip: u32,
    pub nat_port: u16,
    pub state: FlowState,
    pub origin: Origin,
    /// The policy generation the flow was last checked against.
    pub generation: u32,
    /// Since its last packet, in nanoseconds (flow-tick resolution, ~1 ms).
    pub idle_ns: u64,
    /// Until its idle timeout removes it, if no packet comes.
    pub expires_in_ns: u64,
    /// The hostname rule whose allowlist entry admitted it (the entry it pins), if any.
    pub rule: Option<RuleKey>,
}

/// One allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowlistRow {
    pub rule: RuleKey,
    pub ip: u32,
    /// Until its TTL ends; 0 when it is past it (kept only by a flow's pin).
    pub expires_in_ns: u64,
    /// Live flows holding it.
    pub pins: u32,
}

/// What a request asks for, with the buffer its rows go to.
#[derive(Debug)]
pub enum ViewQuery {
    Flows { filter: FlowQuery, rows: Vec<FlowRow> },
    Allowlist { filter: AllowlistQuery, rows: Vec<AllowlistRow> },
}

/// A view request and, once served, its answer. Built by the control plane (which allocates
/// the buffer), filled by the worker, handed back whole.
#[derive(Debug)]
pub struct ViewRequest {
    pub query: ViewQuery,
    limit: usize,
    /// Table slots the worker examined.
    pub scanned: usize,
    /// Housekeeping turns it took.
    pub turns: u32,
    /// The whole table was scanned (otherwise the buffer filled first).
    pub complete: bool,
}

impl ViewRequest {
    /// Up to `limit` flows matching `filter` (the buffer is allocated here, by the caller).
    pub fn flows(filter: FlowQuery, limit: usize) -> ViewRequest {
        ViewRequest::new(ViewQuery::Flows { filter, rows: Vec::with_capacity(limit) }, limit)
    }

    /// Up to `limit` allowlist entries matching `filter`.
    pub fn allowlist(filter: AllowlistQuery, limit: usize) -> ViewRequest {
        ViewRequest::new(ViewQuery::Allowlist { filter, rows: Vec::with_capacity(limit) }, limit)
    }

    fn new(query: ViewQuery, limit: usize) -> ViewRequest {
        ViewRequest { query, limit, scanned: 0, turns: 0, complete: false }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Why [`ViewClient::submit`] did not send a request; it is handed back.
#[derive(Debug)]
pub enum SubmitError {
    /// An earlier request has not come back yet.
    Busy(ViewRequest),
    /// The worker dropped its server (its engine is gone).
    Disconnected(ViewRequest),
}

/// The state of the outstanding request.
#[derive(Debug)]
pub enum ViewPoll {
    /// Served.
    Ready(ViewRequest),
    /// Still with the worker (or nothing outstanding).
    Pending,
    /// The worker dropped its server.
    Disconnected,
}

/// Control-plane end of one worker's view channel. Not `Clone`: one owner keeps track of
/// the outstanding request (the runtime puts it behind a mutex).
#[derive(Debug)]
pub struct ViewClient {
    requests: Sender<ViewRequest>,
    replies: Receiver<ViewRequest>,
    outstanding: bool,
}

impl ViewClient {
    /// Sends `request` to the worker unless one is outstanding. Never blocks.
    pub fn submit(&mut self, request: ViewRequest) -> Result<(), SubmitError> {
        if self.outstanding {
            return Err(SubmitError::Busy(request));
        }
        match self.requests.try_send(request) {
            Ok(()) => {
                self.outstanding = true;
                Ok(())
            }
            // The channel holds one request and none is outstanding, so it is never full.
            Err(e) => Err(SubmitError::Disconnected(e.into_inner())),
        }
    }

    /// Takes the outstanding request back if the worker has served it. Never blocks.
    pub fn poll(&mut self) -> ViewPoll {
        match self.replies.try_recv() {
            Ok(done) => {
                self.outstanding = false;
                ViewPoll::Ready(done)
            }
            Err(TryRecvError::Empty) => ViewPoll::Pending,
            Err(TryRecvError::Disconnected) => ViewPoll::Disconnected,
        }
    }

    /// A request is with the worker (a caller that gave up waiting left it there; the next
    /// caller collects it with [`ViewClient::poll`] before submitting).
    pub fn outstanding(&self) -> bool {
        self.outstanding
    }
}

/// One worker's view channel: the client for the control plane, the server for the engine
/// ([`crate::engine::Engine::attach_views`]), which examines at most `budget` slots per turn.
pub fn view_channel(budget: usize) -> (ViewClient, ViewServer) {
    let (requests, requests_rx) = crossbeam_channel::bounded(1);
    let (replies_tx, replies) = crossbeam_channel::bounded(1);
    (ViewClient { requests, replies, outstanding: false }, ViewServer::new(requests_rx, replies_tx, budget))
}

#[cfg(test)]
mod tests;
