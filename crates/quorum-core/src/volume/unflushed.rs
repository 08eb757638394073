//! The ranges a child took since its last good flush, for the flush that
//! must tell whether a failed write-back of the child may have lost them.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::stale::RangeSet;

/// The unflushed ranges of a child are kept in whole vote blocks, and
/// collapsed into one range past [`UNFLUSHED_RANGES`]: a bounded map that
/// may only say too much.
const UNFLUSHED_GRAIN: u64 = crate::vote::VOTE_BLOCK;

/// See [`UNFLUSHED_GRAIN`].
const UNFLUSHED_RANGES: usize = 1 << 16;

/// The most counts kept apart; past them, a range of another count is
/// kept at the count they began at (which may only say too much).
const UNFLUSHED_COUNTS: usize = 8;

/// The ranges a child took since its last good flush, by its count of
/// flushes failed with an I/O error when each was taken (at least `since`,
/// the count when they began to gather): a flush of the child that failed
/// after a range's count, whoever sent it (a write's stale marks, a
/// resync, a flush abandoned at `child_timeout`, the volume this one
/// succeeded), may have lost it; one counted before may not.
#[derive(Clone, Default)]
pub(super) struct Unflushed {
    since: u64,
    by_count: BTreeMap<u64, RangeSet>,
}

impl Unflushed {
    /// No range yet, gathered from when the child's count was `since`.
    pub(super) fn since(since: u64) -> Unflushed {
        Unflushed {
            since,
            by_count: BTreeMap::new(),
        }
    }

    /// Adds `range`, taken by the child at any count since they began to
    /// gather (a client write, whose own sample of the count decides the
    /// rest).
    pub(super) fn note(&mut self, range: &Range<u64>) {
        self.add(self.since, range);
    }

    /// Adds `range`, which the child took once its count was `count`.
    /// `false` (nothing added) when these ranges began to gather after the
    /// count moved past `count`: a failure counted between would be seen
    /// by no flush.
    pub(super) fn note_at(&mut self, count: u64, range: &Range<u64>) -> bool {
        if count < self.since {
            return false;
        }
        self.add(count, range);
        true
    }

    /// Adds every range of `other` (a flush that could not reach the child
    /// keeps them for the next), each with its own count.
    pub(super) fn keep(&mut self, other: Unflushed) {
        for (count, set) in other.by_count {
            for r in set.iter() {
                self.add(count.max(self.since), &r);
            }
        }
    }

    /// Takes every range out (a flush of the child failed with an I/O
    /// error: it may have lost any of them).
    pub(super) fn take_all(&mut self) -> RangeSet {
        Self::joined(std::mem::take(&mut self.by_count))
    }

    /// Takes out the ranges taken before the count reached `count`, the
    /// count now: a failed flush counted since may have lost them.
    pub(super) fn take_lost(&mut self, count: u64) -> RangeSet {
        let current = self.by_count.remove(&count);
        let lost = std::mem::take(&mut self.by_count);
        if let Some(set) = current {
            self.by_count.insert(count, set);
        }
        Self::joined(lost)
    }

    fn joined(sets: BTreeMap<u64, RangeSet>) -> RangeSet {
        let mut all = RangeSet::default();
        for r in sets.values().flat_map(RangeSet::iter) {
            all.insert(r);
        }
        all
    }

    /// Adds `range` at `count`, widened to whole [`UNFLUSHED_GRAIN`]
    /// blocks; past [`UNFLUSHED_RANGES`] ranges, its set becomes one range.
    fn add(&mut self, count: u64, range: &Range<u64>) {
        let full = self.by_count.len() >= UNFLUSHED_COUNTS && !self.by_count.contains_key(&count);
        let count = if full { self.since } else { count };
        let grain = range.start - range.start % UNFLUSHED_GRAIN
            ..range.end.div_ceil(UNFLUSHED_GRAIN) * UNFLUSHED_GRAIN;
        let set = self.by_count.entry(count).or_default();
        set.insert(grain);
        if set.len() > UNFLUSHED_RANGES {
            if let (Some(first), Some(last)) = (set.first(), set.last()) {
                set.insert(first.start..last.end);
            }
        }
    }
}
