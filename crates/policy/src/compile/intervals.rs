//! Splitting a key space (addresses, ports) into disjoint intervals, each carrying the
//! ordered list of items that cover it. This is what turns "which groups contain this
//! source?" and "which rules could match this port?" into one binary search.

use std::collections::{BTreeSet, HashMap};

/// Item `item` covers keys `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cover {
    pub item: u32,
    pub first: u64,
    pub last: u64,
}

/// Splits the key space `0..=space_last` at every boundary of every cover and returns, for each
/// resulting interval, its first key and the items covering it in ascending order (after
/// `trim`, which may shorten a list). Adjacent intervals whose lists are equal are merged,
/// so the result has as few intervals as the covers allow. The first interval starts at 0.
/// Covers must lie within the space.
pub(crate) fn partition(
    mut covers: Vec<Cover>,
    space_last: u64,
    mut trim: impl FnMut(&mut Vec<u32>),
) -> Vec<(u64, Vec<u32>)> {
    merge_per_item(&mut covers);

    // After merging, one item's ranges neither overlap nor touch, so an item never starts
    // and ends at the same key and the events at one key can be applied in any order.
    let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(covers.len() * 2);
    for cover in &covers {
        events.push((cover.first, true, cover.item));
        // A cover reaching the top of the space never ends inside it.
        if cover.last < space_last {
            events.push((cover.last + 1, false, cover.item));
        }
    }
    events.sort_unstable();

    let mut intervals: Vec<(u64, Vec<u32>)> = Vec::new();
    let mut active: BTreeSet<u32> = BTreeSet::new();
    let mut next_event = 0;
    let mut key = 0;
    loop {
        while let Some(&(at, starts, item)) = events.get(next_event) {
            if at != key {
                break;
            }
            if starts {
                active.insert(item);
            } else {
                active.remove(&item);
            }
            next_event += 1;
        }
        let mut list: Vec<u32> = active.iter().copied().collect();
        trim(&mut list);
        if intervals.last().is_none_or(|(_, previous)| *previous != list) {
            intervals.push((key, list));
        }
        match events.get(next_event) {
            Some(&(at, _, _)) => key = at,
            None => break,
        }
    }
    intervals
}

/// Sorts covers by item and merges each item's overlapping or touching ranges.
fn merge_per_item(covers: &mut Vec<Cover>) {
    covers.sort_unstable();
    let mut merged: Vec<Cover> = Vec::with_capacity(covers.len());
    for &cover in covers.iter() {
        if let Some(last) = merged.last_mut() {
            if last.item == cover.item && cover.first <= last.last.saturating_add(1) {
                last.last = last.last.max(cover.last);
                continue;
            }
        }
        merged.push(cover);
    }
    *covers = merged;
}

/// A range into a flat list store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    pub(crate) fn of<T>(self, store: &[T]) -> &[T] {
        // Spans are only made by `ListStore::intern` over the same store, so this is in
        // bounds; `get` keeps a logic error from becoming a panic on the hot path.
        store.get(self.start as usize..self.end as usize).unwrap_or(&[])
    }
}

/// Many intervals share the same list (every port outside a rule's ports, say), so lists
/// are stored once in one flat vector and intervals refer to them by [`Span`].
#[derive(Debug, Default)]
pub(crate) struct ListStore {
    flat: Vec<u16>,
    seen: HashMap<Vec<u16>, Span>,
}

impl ListStore {
    pub(crate) fn intern(&mut self, list: &[u16]) -> Span {
        if let Some(&span) = self.seen.get(list) {
            return span;
        }
        let start = self.flat.len() as u32;
        self.flat.extend_from_slice(list);
        let span = Span { start, end: self.flat.len() as u32 };
        self.seen.insert(list.to_vec(), span);
        span
    }

    pub(crate) fn finish(self) -> Box<[u16]> {
        self.flat.into_boxed_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: u64 = u16::MAX as u64;

    fn cover(item: u32, first: u64, last: u64) -> Cover {
        Cover { item, first, last }
    }

    #[test]
    fn splits_at_every_boundary_and_keeps_items_ordered() {
        let intervals = partition(vec![cover(1, 10, 20), cover(0, 15, 30), cover(2, 0, PORTS)], PORTS, |_| {});
        assert_eq!(
            intervals,
            vec![(0, vec![2]), (10, vec![1, 2]), (15, vec![0, 1, 2]), (21, vec![0, 2]), (31, vec![2]),]
        );
    }

    #[test]
    fn merges_an_items_own_overlaps_and_equal_neighbours() {
        let intervals = partition(vec![cover(0, 10, 20), cover(0, 21, 25), cover(0, 15, 18)], PORTS, |_| {});
        assert_eq!(intervals, vec![(0, vec![]), (10, vec![0]), (26, vec![])]);
    }

    #[test]
    fn trim_can_make_neighbours_equal() {
        // Item 0 covers everything and hides later items once the trim keeps only the first.
        let intervals = partition(vec![cover(0, 0, 100), cover(1, 50, 60)], PORTS, |list| list.truncate(1));
        assert_eq!(intervals, vec![(0, vec![0]), (101, vec![])]);
    }

    #[test]
    fn handles_the_top_of_the_space() {
        let top = u64::from(u32::MAX);
        let intervals = partition(vec![cover(0, top, top), cover(1, 0, top)], top, |_| {});
        assert_eq!(intervals, vec![(0, vec![1]), (top, vec![0, 1])]);
    }

    #[test]
    fn store_interns_equal_lists() {
        let mut store = ListStore::default();
        let a = store.intern(&[1, 2, 3]);
        let b = store.intern(&[4]);
        let c = store.intern(&[1, 2, 3]);
        assert_eq!(a, c);
        let flat = store.finish();
        assert_eq!(a.of(&flat), &[1, 2, 3]);
        assert_eq!(b.of(&flat), &[4]);
    }
}
