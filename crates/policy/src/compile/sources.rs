//! Source address → candidate groups, in the order they are tried.

use super::intervals::{partition, Cover, ListStore, Span};
use crate::model::SourceGroup;

/// The IPv4 space split at every boundary of every group's source CIDRs; each interval
/// carries the groups containing it, sorted by priority.
#[derive(Debug)]
pub(crate) struct SourceIndex {
    /// First address of each interval, ascending; `starts[0] == 0`.
    starts: Box<[u32]>,
    /// Candidate groups of each interval (parallel to `starts`).
    spans: Box<[Span]>,
    /// Group indices (document order) that the spans point into.
    groups: Box<[u16]>,
}

impl SourceIndex {
    pub(crate) fn build(groups: &[SourceGroup]) -> Self {
        // Partition orders items ascending, so items are priority ranks; mapped back below.
        let mut by_priority: Vec<usize> = (0..groups.len()).collect();
        by_priority.sort_by_key(|&g| groups[g].priority);
        let mut covers = Vec::new();
        for (rank, &g) in by_priority.iter().enumerate() {
            for cidr in &groups[g].sources.cidrs {
                covers.push(Cover { item: rank as u32, first: cidr.first().into(), last: cidr.last().into() });
            }
        }

        let mut store = ListStore::default();
        let mut starts = Vec::new();
        let mut spans = Vec::new();
        for (start, ranks) in partition(covers, u64::from(u32::MAX), |_| {}) {
            let list: Vec<u16> = ranks.iter().map(|&rank| by_priority[rank as usize] as u16).collect();
            // Keys come from u32 addresses, so every interval start fits.
            starts.push(start as u32);
            spans.push(store.intern(&list));
        }
        SourceIndex { starts: starts.into(), spans: spans.into(), groups: store.finish() }
    }

    /// Groups whose sources contain `src`, lowest priority first.
    #[inline]
    pub(crate) fn candidates(&self, src: u32) -> &[u16] {
        // starts[0] == 0, so at least one start is <= src and the index is at least 1.
        let interval = self.starts.partition_point(|&start| start <= src).saturating_sub(1);
        match self.spans.get(interval) {
            Some(span) => span.of(&self.groups),
            None => &[],
        }
    }

    pub(crate) fn interval_count(&self) -> usize {
        self.starts.len()
    }
}
