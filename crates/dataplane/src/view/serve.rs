//! Worker side of views: [`ViewServer`] serves one request at a time, a bounded slice of a
//! table per turn. See the [module documentation](super).

use crossbeam_channel::{Receiver, Sender};

use super::{AllowlistRow, FlowRow, ViewQuery, ViewRequest};
use crate::allowlist::Allowlist;
use crate::flow::{ticks, FlowState, FlowTable, NO_PIN, TICK_SHIFT};

/// The engine's end of a view channel. Owned by the engine and run from its housekeeping.
pub struct ViewServer {
    requests: Receiver<ViewRequest>,
    replies: Sender<ViewRequest>,
    /// The request being served and the next slot of its table to examine.
    current: Option<(ViewRequest, usize)>,
    budget: usize,
    served: u64,
}

impl ViewServer {
    pub(super) fn new(requests: Receiver<ViewRequest>, replies: Sender<ViewRequest>, budget: usize) -> ViewServer {
        ViewServer { requests, replies, current: None, budget: budget.max(1), served: 0 }
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// A request is being served: an idle worker should come back soon rather than sleep.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// One turn: takes a request if none is in progress, examines at most `budget` slots of
    /// its table, and sends it back once its buffer is full or the table is done. `timeouts`
    /// is the idle timeout per flow state in flow ticks (flows past it are gone to lookups,
    /// so they are not listed either). Returns true when a request was answered.
    pub fn serve(
        &mut self,
        flows: &FlowTable,
        allowlist: Option<&Allowlist>,
        timeouts: &[u32; FlowState::ALL.len()],
        now: u64,
    ) -> bool {
        if self.current.is_none() {
            // No allocation or system call: a bounded channel's try_recv with nobody waiting.
            let Ok(request) = self.requests.try_recv() else { return false };
            self.current = Some((request, 0));
        }
        let Some((request, cursor)) = self.current.as_mut() else { return false };
        let limit = request.limit;
        request.turns += 1;
        let start = *cursor;
        let done = match &mut request.query {
            ViewQuery::Flows { filter, rows } => {
                let now_ticks = ticks(now);
                *cursor = flows.scan(start, self.budget, |f| {
                    let idle = now_ticks.wrapping_sub(f.last_seen);
                    let timeout = timeouts[f.state as usize];
                    if rows.len() < limit && idle <= timeout && filter.matches(&f.orig) {
                        rows.push(FlowRow {
                            orig: f.orig,
                            nat_ip: flows.nat_ip(f),
                            nat_port: f.nat_port,
                            state: f.state,
                            origin: f.origin,
                            generation: f.generation,
                            idle_ns: u64::from(idle) << TICK_SHIFT,
                            expires_in_ns: u64::from(timeout - idle) << TICK_SHIFT,
                            rule: if f.pin == NO_PIN { None } else { allowlist.and_then(|a| a.pinned_rule(f.pin)) },
                        });
                    }
                    rows.len() < limit
                });
                rows.len() == limit || *cursor >= flows.capacity()
            }
            ViewQuery::Allowlist { filter, rows } => match allowlist {
                None => true,
                Some(a) => {
                    *cursor = a.scan(start, self.budget, |rule, ip, expires_at, pins| {
                        // Expired and unpinned: the sweep has yet to reach it, lookups ignore it.
                        let holds = expires_at > now || pins > 0;
                        if rows.len() < limit && holds && filter.matches(rule, ip) {
                            rows.push(AllowlistRow { rule, ip, expires_in_ns: expires_at.saturating_sub(now), pins });
                        }
                        rows.len() < limit
                    });
                    rows.len() == limit || *cursor >= a.capacity()
                }
            },
        };
        request.scanned += *cursor - start;
        if !done {
            return false;
        }
        let Some((mut request, cursor)) = self.current.take() else { return false };
        request.complete = match &request.query {
            ViewQuery::Flows { .. } => cursor >= flows.capacity(),
            ViewQuery::Allowlist { .. } => allowlist.is_none_or(|a| cursor >= a.capacity()),
        };
        self.served += 1;
        // Room is certain (one request outstanding, its reply slot empty); if the client is
        // gone the request is dropped here, which happens only when the node stops.
        let _ = self.replies.try_send(request);
        true
    }
}
