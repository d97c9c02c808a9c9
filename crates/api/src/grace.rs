//! Readiness that does not flap: a check whose condition is expected to fail for a moment
//! (the dataplane compiling a policy version just stored, a follower an entry behind a
//! leader's last answer) passes while it was healthy within its grace, and fails once it has
//! not been for longer, or when it never was (a node that starts behind is not ready).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after it was last in sync a lagging policy apply or replication still passes.
pub const POLICY_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Grace {
    limit: Duration,
    /// The last call that saw the check healthy.
    healthy_at: Mutex<Option<Instant>>,
}

impl Grace {
    pub const fn new(limit: Duration) -> Grace {
        Grace { limit, healthy_at: Mutex::new(None) }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Records whether the check is behind now. `None` when it is not; otherwise how long ago
    /// it was last healthy (`None` inside: never, as far as the calls saw).
    pub fn behind(&self, behind: bool) -> Option<Option<Duration>> {
        let mut healthy_at = self.healthy_at.lock().unwrap_or_else(|p| p.into_inner());
        if !behind {
            *healthy_at = Some(Instant::now());
            return None;
        }
        Some(healthy_at.map(|t| t.elapsed()))
    }

    /// Whether a check that is behind now still passes: it was healthy within the grace.
    pub fn tolerated(&self, since_healthy: Option<Option<Duration>>) -> bool {
        matches!(since_healthy, Some(Some(d)) if d <= self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_passes_only_shortly_after_the_check_was_healthy() {
        // Long enough that a preempted test thread does not outlive it between two lines.
        let grace = Grace::new(Duration::from_millis(1000));
        assert!(!grace.tolerated(grace.behind(true)), "never healthy: a node that starts behind fails");
        assert_eq!(grace.behind(false), None);
        assert!(grace.tolerated(grace.behind(true)), "healthy a moment ago");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!grace.tolerated(grace.behind(true)), "behind for longer than the grace");
        grace.behind(false);
        assert!(grace.tolerated(grace.behind(true)), "in sync again restarts the grace");
    }
}
