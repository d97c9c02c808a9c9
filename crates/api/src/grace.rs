//! Readiness that does not flap: a check whose condition is expected to pass for a moment
//! (the dataplane compiling a policy version just stored, a follower a few entries behind a
//! leader's last answer) fails only once the condition has held for longer than its grace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a lagging policy apply or replication is tolerated before readiness fails.
pub const POLICY_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Grace {
    limit: Duration,
    since: Mutex<Option<Instant>>,
}

impl Grace {
    pub const fn new(limit: Duration) -> Grace {
        Grace { limit, since: Mutex::new(None) }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Records whether the condition holds now; `None` when it does not, otherwise for how
    /// long it has held without a break (as far as the calls saw).
    pub fn held(&self, holds: bool) -> Option<Duration> {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if !holds {
            *since = None;
            return None;
        }
        Some(since.get_or_insert_with(Instant::now).elapsed())
    }

    /// Whether the condition (holding now) is past its grace.
    pub fn expired(&self, holds: bool) -> bool {
        self.held(holds).is_some_and(|d| d > self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_fails_only_after_it_held_past_the_grace_and_a_break_resets_it() {
        let grace = Grace::new(Duration::from_millis(50));
        assert!(!grace.expired(false));
        assert!(!grace.expired(true), "just started");
        std::thread::sleep(Duration::from_millis(60));
        assert!(grace.expired(true));
        assert!(!grace.expired(false));
        assert!(!grace.expired(true), "a break starts the count again");
    }
}
