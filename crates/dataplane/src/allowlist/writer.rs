//! Control-plane side of the allowlist: [`AllowlistWriter`] fans every update out to every live
//! worker and waits for tickets to be applied. See the [module documentation](super).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use sluice_policy::RuleKey;

use super::{AllowlistSendError, AllowlistUpdate, Message, Ticket, WorkerLink};

struct WriterShared {
    workers: Box<[WorkerLink]>,
    /// Last sequence number handed out. Held while an update is fanned out, so every worker
    /// receives updates in sequence order.
    last_seq: Mutex<u64>,
}

/// Control-plane side: sends every update to every worker. Cheap to clone; all clones share one
/// sequence. Blocking calls wait with a short spin, then yields, then sleeps of at most 1 ms; never
/// call them on a packet path.
#[derive(Clone)]
pub struct AllowlistWriter {
    shared: Arc<WriterShared>,
}

impl fmt::Debug for AllowlistWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowlistWriter")
            .field("workers", &self.shared.workers.len())
            .field("live_workers", &self.live_workers())
            .finish()
    }
}

impl AllowlistWriter {
    /// A writer over `workers` (one link per worker's allowlist) that has sent nothing yet.
    pub(super) fn new(workers: Box<[WorkerLink]>) -> Self {
        AllowlistWriter { shared: Arc::new(WriterShared { workers, last_seq: Mutex::new(0) }) }
    }

    /// Queues `update` to every live worker, waiting up to `timeout` for room, and returns its
    /// ticket. All or nothing: on error no worker received it.
    pub fn send(&self, update: AllowlistUpdate, timeout: Duration) -> Result<Ticket, AllowlistSendError> {
        let deadline = Deadline::after(timeout);
        let mut last_seq = self.lock_seq(deadline)?;
        // Wait until every live worker has room. Only the holder of `last_seq` sends and workers
        // only remove messages, so a channel with room now still has room below.
        let mut backoff = Backoff::default();
        loop {
            let mut live = 0usize;
            let mut full = false;
            for w in self.shared.workers.iter() {
                if !w.shared.alive.load(Ordering::Acquire) {
                    continue;
                }
                live += 1;
                if w.tx.is_full() {
                    full = true;
                    break;
                }
            }
            if live == 0 {
                return Err(AllowlistSendError::Disconnected);
            }
            if !full {
                break;
            }
            if deadline.passed() {
                return Err(AllowlistSendError::Full);
            }
            backoff.wait(deadline);
        }
        let seq = *last_seq + 1;
        let mut delivered = 0usize;
        for w in self.shared.workers.iter() {
            // A worker alive here was alive (and had room) in the loop above: `alive` only falls.
            if !w.shared.alive.load(Ordering::Acquire) {
                continue;
            }
            match w.tx.try_send(Message { seq, update }) {
                Ok(()) => delivered += 1,
                // Dropped its allowlist since the check; it is excluded from tickets.
                Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    unreachable!("allowlist: worker channel filled up while the writer held the lock")
                }
            }
        }
        if delivered == 0 {
            return Err(AllowlistSendError::Disconnected);
        }
        *last_seq = seq;
        Ok(Ticket(seq))
    }

    /// `send(AllowlistUpdate::Learn { rule, ip, expires_at }, timeout)`.
    pub fn learn(
        &self,
        rule: RuleKey,
        ip: u32,
        expires_at: u64,
        timeout: Duration,
    ) -> Result<Ticket, AllowlistSendError> {
        self.send(AllowlistUpdate::Learn { rule, ip, expires_at }, timeout)
    }

    /// True once every live worker has applied the update (and so every update before it).
    /// Workers that dropped their allowlist are ignored; with none left this is true.
    pub fn is_applied(&self, ticket: Ticket) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.shared.applied.load(Ordering::Acquire) >= ticket.0 || !w.shared.alive.load(Ordering::Acquire))
    }

    /// Waits up to `timeout` for [`AllowlistWriter::is_applied`]; returns whether it became true.
    pub fn wait_applied(&self, ticket: Ticket, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        let mut backoff = Backoff::default();
        loop {
            if self.is_applied(ticket) {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            backoff.wait(deadline);
        }
    }

    /// Workers that still hold their allowlist.
    pub fn live_workers(&self) -> usize {
        self.shared.workers.iter().filter(|w| w.shared.alive.load(Ordering::Acquire)).count()
    }

    /// The sequence lock, waited for with the caller's deadline rather than indefinitely (another
    /// sender may be waiting out its own timeout on a full channel).
    fn lock_seq(&self, deadline: Deadline) -> Result<MutexGuard<'_, u64>, AllowlistSendError> {
        let mut backoff = Backoff::default();
        loop {
            match self.shared.last_seq.try_lock() {
                Ok(guard) => return Ok(guard),
                // Only the `unreachable!` in `send` can panic while the lock is held, and the
                // counter is written only after a complete fan-out.
                Err(TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    if deadline.passed() {
                        return Err(AllowlistSendError::Full);
                    }
                    backoff.wait(deadline);
                }
            }
        }
    }
}

/// `None` when the timeout is too large to represent: wait forever.
#[derive(Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Deadline(Instant::now().checked_add(timeout))
    }

    fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    fn clamp(self, step: Duration) -> Duration {
        match self.0 {
            Some(d) => step.min(d.saturating_duration_since(Instant::now())),
            None => step,
        }
    }
}

/// Writer-side waiting: spin briefly, then yield, then sleep in steps growing to 1 ms.
#[derive(Default)]
struct Backoff {
    round: u32,
}

impl Backoff {
    const SPIN_ROUNDS: u32 = 7;
    const YIELD_ROUNDS: u32 = 8;
    const MIN_SLEEP: Duration = Duration::from_micros(20);
    const MAX_SLEEP: Duration = Duration::from_millis(1);

    fn wait(&mut self, deadline: Deadline) {
        if self.round < Self::SPIN_ROUNDS {
            for _ in 0..1u32 << self.round {
                std::hint::spin_loop();
            }
        } else if self.round < Self::SPIN_ROUNDS + Self::YIELD_ROUNDS {
            thread::yield_now();
        } else {
            let doublings = (self.round - Self::SPIN_ROUNDS - Self::YIELD_ROUNDS).min(6);
            let step = (Self::MIN_SLEEP * (1 << doublings)).min(Self::MAX_SLEEP);
            thread::sleep(deadline.clamp(step));
        }
        self.round = self.round.saturating_add(1);
    }
}
