//! Dynamic allowlist: `(hostname rule, IPv4 address) -> expiry`, learned by the DNS proxy from
//! allowed DNS answers and consulted by the packet path when a new flow hits a hostname rule.
//!
//! # Why every worker has its own copy
//!
//! A table shared by all workers would need a lock, or atomics plus deferred reclamation
//! (RCU/epochs), on every lookup, and its cache lines would bounce between cores each time the
//! proxy writes. Instead every dataplane worker owns a private [`Allowlist`]: a plain hash table
//! that its packet path reads with no synchronisation at all, sized once at start-up so nothing
//! allocates afterwards. The price is memory (one table per worker, see [`Allowlist`]) and
//! fanning every update out to every worker, which is cheap: updates arrive once per DNS answer,
//! packets arrive millions of times a second. Updates travel over one bounded channel per worker
//! and are applied by the worker itself in [`Allowlist::drain`], between packet batches, with a
//! bounded amount of work per call.
//!
//! # Tickets: "inserted before the answer is released"
//!
//! A client connects as soon as it has the DNS answer, and RSS may steer its first SYN to any
//! worker, so the proxy must not release the answer until *every* worker holds the entry:
//!
//! 1. The proxy calls [`AllowlistWriter::learn`]. Under the writer's mutex the update gets the next
//!    sequence number and is queued to every live worker. It is all or nothing: the writer first
//!    waits until every live worker's channel has room; only the mutex holder sends and workers
//!    only take messages out, so that room is still there when it sends.
//! 2. Each worker applies its updates in sequence order in `drain` and then publishes the highest
//!    sequence number it has applied with a `Release` store to its own `AtomicU64`.
//! 3. The proxy calls [`AllowlistWriter::wait_applied`] with the returned [`Ticket`]; it returns
//!    `true` once every live worker has published a number at or above the ticket (`Acquire`
//!    loads). Only then does the proxy release the answer.
//!
//! A worker publishes only after its table contains the entry, and it handles packets in program
//! order on its own thread, so a SYN the client sends after receiving the answer reaches the
//! worker after the publish and finds the entry, whichever worker it lands on. If
//! `wait_applied` times out the proxy must not treat the name as allowed (answer SERVFAIL, or
//! retry); that choice belongs to the proxy. A worker that has dropped its `Allowlist` (its thread
//! exited or panicked) clears its alive flag and is excluded, so it cannot stall the proxy.
//!
//! A `Learn` can still be refused by a worker whose table is full (counted in
//! [`AllowlistStats::full_drops`]); the ticket is then applied but that worker fails closed:
//! new flows to that address are not allowed by the hostname rule.
//!
//! # Pins
//!
//! A flow admitted through an entry pins it ([`Allowlist::pin`]). A pinned entry is never
//! removed, neither at its TTL nor by `Forget`/`ForgetRule`/`Clear` (those mark it expired), and
//! [`Allowlist::contains`] keeps answering true for it, so re-evaluating that flow after a policy
//! swap still passes. [`Allowlist::is_live`] ignores pins: admitting *new* flows with it lets the
//! TTL alone decide, where `contains` would let any long-lived flow keep admitting new flows to an
//! expired or forgotten address.
//!
//! Time is a `u64` of monotonic nanoseconds supplied by the caller (`now`); this module never
//! reads a clock on the worker side. Entries with `expires_at > now` are live.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crossbeam_channel::Sender;
use sluice_policy::RuleKey;

mod table;
mod writer;

pub use table::{Allowlist, AllowlistStats, PinHandle};
pub use writer::AllowlistWriter;

/// Largest supported [`AllowlistConfig::capacity`]: entry numbers are `u32` (so a raw
/// [`PinHandle`] is never `u32::MAX`) and the index, at most 2^31 slots, must stay addressable by
/// the 32 hash bits kept per entry.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Sizing of every worker's allowlist and update channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowlistConfig {
    /// Entries per worker, `1..=MAX_CAPACITY`. Used exactly; the index is sized to the next power
    /// of two of at least twice this, so its load factor never exceeds 0.5.
    pub capacity: usize,
    /// Updates that may be queued for one worker before [`AllowlistWriter::send`] waits (`>= 1`).
    pub channel_capacity: usize,
}

/// A change to the allowlist, applied by every worker in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistUpdate {
    /// `ip` was answered for a name matching `rule`, valid until `expires_at`. An existing entry's
    /// expiry becomes the later of the two. A `Learn` that has already expired when a worker
    /// applies it is ignored (counted in [`AllowlistStats::stale`]).
    Learn { rule: RuleKey, ip: u32, expires_at: u64 },
    /// Remove one entry; if flows have it pinned, mark it expired and remove it at the last unpin.
    Forget { rule: RuleKey, ip: u32 },
    /// [`AllowlistUpdate::Forget`] every entry of `rule`.
    ForgetRule { rule: RuleKey },
    /// [`AllowlistUpdate::Forget`] every entry.
    Clear,
}

/// Identifies one sent update; see [`AllowlistWriter::is_applied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The update's sequence number (for logs); the first update sent is 1.
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Why [`AllowlistWriter::send`] did not queue an update. Nothing was queued to any worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistSendError {
    /// A live worker's channel stayed full (or another send held the writer) for the whole
    /// timeout: that worker is not draining.
    Full,
    /// Every worker has dropped its allowlist.
    Disconnected,
}

impl fmt::Display for AllowlistSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistSendError::Full => f.write_str(
                "allowlist update not queued: a dataplane worker's update channel stayed full \
                 for the whole timeout (the worker is not draining)",
            ),
            AllowlistSendError::Disconnected => {
                f.write_str("allowlist update not queued: every dataplane worker has dropped its allowlist")
            }
        }
    }
}

impl std::error::Error for AllowlistSendError {}

/// What one worker publishes to the writer. Aligned to its own cache lines: the worker stores
/// `applied` after every drain that changed something and the writer polls it.
#[repr(align(128))]
struct WorkerShared {
    /// Highest sequence number this worker has applied (0: none).
    applied: AtomicU64,
    /// Cleared when the worker drops its `Allowlist`.
    alive: AtomicBool,
}

struct WorkerLink {
    tx: Sender<Message>,
    shared: Arc<WorkerShared>,
}

struct Message {
    seq: u64,
    update: AllowlistUpdate,
}

/// Creates the writer and one [`Allowlist`] per worker, all preallocated.
///
/// Panics if `workers` is 0, `cfg.capacity` is not in `1..=MAX_CAPACITY` or
/// `cfg.channel_capacity` is 0.
pub fn allowlist_channel(workers: usize, cfg: &AllowlistConfig) -> (AllowlistWriter, Vec<Allowlist>) {
    assert!(workers > 0, "allowlist: need at least one worker");
    assert!(
        (1..=MAX_CAPACITY).contains(&cfg.capacity),
        "allowlist: capacity {} not in 1..={MAX_CAPACITY}",
        cfg.capacity
    );
    assert!(cfg.channel_capacity > 0, "allowlist: channel_capacity must be at least 1");
    let mut links = Vec::with_capacity(workers);
    let mut lists = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = crossbeam_channel::bounded(cfg.channel_capacity);
        let shared = Arc::new(WorkerShared { applied: AtomicU64::new(0), alive: AtomicBool::new(true) });
        links.push(WorkerLink { tx, shared: Arc::clone(&shared) });
        lists.push(Allowlist::new(cfg.capacity, rx, shared));
    }
    (AllowlistWriter::new(links.into_boxed_slice()), lists)
}

#[cfg(test)]
mod tests;
