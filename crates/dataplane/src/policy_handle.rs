//! Publishing compiled policy to workers by pointer swap.
//!
//! The control plane compiles a policy and calls [`PolicyHandle::publish`]; each worker holds
//! a [`PolicyReader`] and loads the current policy once per burst. Loading is a pointer
//! comparison against the reader's cached copy, so a worker never blocks the publisher and
//! the publisher never waits for workers. Each publication gets the next generation number;
//! flows remember the generation they were checked against and are re-checked lazily.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use sluice_policy::CompiledPolicy;

/// A compiled policy together with its generation.
pub struct PublishedPolicy {
    pub generation: u32,
    pub policy: Arc<CompiledPolicy>,
}

#[derive(Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<PublishedPolicy>>,
    next_generation: Arc<AtomicU32>,
}

impl PolicyHandle {
    /// Start with `initial` as generation 1.
    pub fn new(initial: impl Into<Arc<CompiledPolicy>>) -> PolicyHandle {
        let published = Arc::new(PublishedPolicy { generation: 1, policy: initial.into() });
        PolicyHandle { current: Arc::new(ArcSwap::new(published)), next_generation: Arc::new(AtomicU32::new(2)) }
    }

    /// Make `policy` current for every worker at its next burst; returns its generation.
    pub fn publish(&self, policy: impl Into<Arc<CompiledPolicy>>) -> u32 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        assert!(generation != 0, "policy generation wrapped");
        self.current.store(Arc::new(PublishedPolicy { generation, policy: policy.into() }));
        generation
    }

    pub fn current(&self) -> Arc<PublishedPolicy> {
        self.current.load_full()
    }

    pub fn reader(&self) -> PolicyReader {
        PolicyReader { cache: Cache::new(Arc::clone(&self.current)) }
    }
}

/// A worker's view: cheap to load every burst.
pub struct PolicyReader {
    cache: Cache<Arc<ArcSwap<PublishedPolicy>>, Arc<PublishedPolicy>>,
}

impl PolicyReader {
    #[inline]
    pub fn load(&mut self) -> &Arc<PublishedPolicy> {
        self.cache.load()
    }
}
