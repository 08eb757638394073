//! Damage: the ranges of each child that are known bad and not repaired
//! yet, as ZFS keeps the permanent errors that `zpool status -v` lists.
//!
//! A range is marked damaged on a child when the child lost the vote there
//! (its copy differs from the winner) or its read there failed with an I/O
//! error (a bad sector, a failed object: [`BackendError::is_repairable`]).
//! A child that is unreachable or hung is `failed`, not damaged: nothing
//! is known of its data. A range is cleared only by what makes it good
//! again: a client write or write-zeroes that the child took, a repair that
//! wrote the winning data over it (`rewrite_corrupted`, a scrub with
//! repair, the reconcile after a crash), a resync copy, or a scrub that
//! found the child agreeing there. A client read that finds it agreeing
//! does not clear it: what an operator was told is bad stays so until a
//! scrub says otherwise.
//!
//! The damaged ranges live beside the stale ranges, under the same lock and
//! in the same journal (ops `b` and `g`), replayed when the volume opens
//! and compacted with it; a mark or clear is appended before the request
//! that made it ends, and synced by the next flush. They are kept by the
//! identity of the child's storage, also while it cannot be opened (a
//! remote down at a restart keeps its damage until it is back). A child with damaged
//! ranges is [`ChildState::Damaged`] unless a stronger state holds (see
//! [`ChildState`]); each time a child gains its first damaged range or
//! loses its last, a `CHILD_STATE_CHANGE` says so, when its state changes.
//!
//! The map of one child is bounded: past [`MAX_DAMAGED_RANGES`] ranges its
//! ranges are widened to coarser grains until they fit in half as many, so
//! that it may say too much, never too little.

use std::ops::Range;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::Volume;
use super::child::HEALTHY;
use super::stale_maps::StaleMaps;
#[cfg(doc)]
use crate::backend::BackendError;
use crate::child_state::{ChildState, Conditions};
use crate::event::Event;
use crate::report::Reports;
use crate::stale::RangeSet;
use crate::vote;

/// The damaged ranges of one child, as [`Volume::damage`] lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    /// Bytes damaged in all.
    pub bytes: u64,
    /// The damaged ranges, in order, disjoint and not touching; the first
    /// `limit` of them.
    pub ranges: Vec<Range<u64>>,
    /// Whether there are more ranges than listed.
    pub truncated: bool,
}

/// A change to the damage maps: the child's index, a mark (`true`) or a
/// clear, and the range.
pub(super) type DamageEdit = (usize, bool, Range<u64>);

/// The most ranges one child's damage map holds (see the module docs).
pub(super) const MAX_DAMAGED_RANGES: usize = 1 << 16;

impl Volume {
    /// Bytes each child has damaged, in child order.
    pub fn damaged_bytes(&self) -> Vec<u64> {
        if !self.any_damaged.load(Ordering::Acquire) {
            return vec![0; self.children.len()];
        }
        self.stale_maps()
            .damaged
            .iter()
            .map(RangeSet::bytes)
            .collect()
    }

    /// The damaged ranges of `child`, the first `limit` of them; `None`
    /// when the volume has no such child.
    pub fn damage(&self, child: &str, limit: usize) -> Option<Damage> {
        let i = self.children.iter().position(|c| c.name == child)?;
        let maps = self.stale_maps();
        let set = &maps.damaged[i];
        Some(Damage {
            bytes: set.bytes(),
            ranges: set.iter().take(limit).collect(),
            truncated: set.len() > limit,
        })
    }

    /// Marks and clears damaged ranges, in order, journaling each change
    /// that changes something, and says in `reports` (as the request's
    /// last words) which children's state changed with it. A change that
    /// cannot be journaled holds in memory all the same (the journal is
    /// rewritten whole at its next compaction or sync): damage never fails
    /// the request that found it.
    pub(super) fn edit_damage(
        &self,
        edits: impl IntoIterator<Item = DamageEdit>,
        reports: &mut Reports<'_>,
    ) {
        let mut edits = edits.into_iter().peekable();
        if edits.peek().is_none() {
            return;
        }
        let mut maps = self.stale_maps();
        let before: Vec<bool> = maps.damaged.iter().map(|s| !s.is_empty()).collect();
        {
            let StaleMaps {
                damaged, journal, ..
            } = &mut *maps;
            let mut changed = vec![false; damaged.len()];
            let mut record = |i: usize, mark: bool, range: &Range<u64>| {
                if let Some(j) = journal.as_mut() {
                    if let Err(error) = j.append_damage(mark, i, range) {
                        tracing::error!(volume = %self.options.name, child = %self.children[i].name, %error, "cannot journal a damaged range");
                    }
                }
            };
            for (i, mark, range) in edits {
                let Some(set) = damaged.get_mut(i) else {
                    continue;
                };
                if range.is_empty()
                    || (mark && set.within(range.clone()) == [range.clone()])
                    || (!mark && !set.overlaps(range.clone()))
                {
                    continue;
                }
                if mark {
                    set.insert(range.clone());
                } else {
                    set.remove(range.clone());
                }
                changed[i] = true;
                record(i, mark, &range);
            }
            for (i, set) in damaged.iter_mut().enumerate() {
                if changed[i] {
                    for range in bound(set, MAX_DAMAGED_RANGES, self.size) {
                        record(i, true, &range);
                    }
                }
            }
            self.any_damaged
                .store(damaged.iter().any(|s| !s.is_empty()), Ordering::Release);
        }
        if let Err(error) = maps.catch_up() {
            tracing::error!(volume = %self.options.name, %error, "cannot compact the stale-map journal");
        }
        let flips: Vec<(usize, bool, bool)> = before
            .iter()
            .enumerate()
            .filter_map(|(i, was)| {
                let now = !maps.damaged[i].is_empty();
                (now != *was).then(|| (i, now, !maps.sets[i].is_empty()))
            })
            .collect();
        drop(maps);
        if flips.is_empty() {
            return;
        }
        let syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, damaged, stale) in flips {
            let child = &self.children[i];
            let now = Conditions {
                failed: child.state.load(Ordering::Relaxed) != HEALTHY,
                syncing: syncing.contains(&child.name),
                stale,
                damaged,
            };
            let from = ChildState::of(Conditions {
                damaged: !damaged,
                ..now
            });
            let to = ChildState::of(now);
            if from != to {
                tracing::info!(volume = %self.options.name, child = %child.name, %from, %to, "child state changed");
                reports.push(Event::ChildStateChange {
                    child: child.name.clone(),
                    from,
                    to,
                });
            }
        }
    }

    /// After a client write of `range`: clears it from the damage maps of
    /// the children that took it (`failed[i]` is false).
    pub(super) fn clear_damage_written(&self, range: &Range<u64>, failed: &[bool]) {
        if !self.any_damaged.load(Ordering::Acquire) {
            return;
        }
        let edits = failed
            .iter()
            .enumerate()
            .filter(|(_, f)| !**f)
            .map(|(i, _)| (i, false, range.clone()));
        self.edit_damage(edits, &mut self.reports());
    }
}

/// Keeps `set` within `max` ranges: past it, its ranges are widened to
/// whole grains (64 KiB, then 16 times more each round, within `size`)
/// until at most half of `max` remain, so that a set which keeps growing is
/// not widened again at once. Returns the widened ranges (to be journaled
/// as marks; they cover every range that was there), or nothing when the
/// set was within `max`.
pub(super) fn bound(set: &mut RangeSet, max: usize, size: u64) -> Vec<Range<u64>> {
    if set.len() <= max {
        return Vec::new();
    }
    let mut grain = vote::VOTE_BLOCK;
    while set.len() > (max / 2).max(1) {
        grain = grain.saturating_mul(16);
        let mut wider = RangeSet::default();
        for r in set.iter() {
            let end = r.end.div_ceil(grain).saturating_mul(grain).min(size);
            wider.insert(r.start - r.start % grain..end.max(r.end));
        }
        *set = wider;
    }
    set.iter().collect()
}

/// `range` without the parts in `cuts`, in order.
pub(super) fn outside<'a>(
    range: Range<u64>,
    cuts: impl IntoIterator<Item = &'a Range<u64>>,
) -> Vec<Range<u64>> {
    let mut left = RangeSet::default();
    left.insert(range.clone());
    for cut in cuts {
        left.remove(cut.clone());
    }
    left.within(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_past_its_bound_is_widened_never_narrowed() {
        let size = 1 << 30;
        let mut set = RangeSet::default();
        let mut original = Vec::new();
        for i in 0..1001u64 {
            let r = i * 3 * 4096 + 7..i * 3 * 4096 + 107;
            set.insert(r.clone());
            original.push(r);
        }
        let before = set.clone();
        assert!(bound(&mut set, 1001, size).is_empty(), "within the bound");
        assert_eq!(set, before);
        set.insert(1 << 29..(1 << 29) + 1);
        original.push(1 << 29..(1 << 29) + 1);
        let marks = bound(&mut set, 1001, size);
        assert!(set.len() <= 500, "{} ranges", set.len());
        assert_eq!(marks, set.iter().collect::<Vec<_>>());
        for r in original {
            assert_eq!(
                set.within(r.clone()),
                std::slice::from_ref(&r),
                "{r:?} is still covered"
            );
        }
        // Never past the volume's end.
        let mut tail = RangeSet::default();
        tail.insert(size - 10..size);
        tail.insert(0..1);
        tail.insert(5000..5001);
        bound(&mut tail, 2, size);
        assert_eq!(tail.last().map(|r| r.end), Some(size));
    }

    #[test]
    fn outside_cuts_out_every_part() {
        assert_eq!(
            outside(0..100, &[10..20, 50..60, 90..120]),
            vec![0..10, 20..50, 60..90]
        );
        assert_eq!(outside(0..100, &[]), vec![0..100]);
        assert!(outside(10..20, std::slice::from_ref(&(0..100))).is_empty());
    }
}
