//! The write-intent log: the regions of a volume that may hold writes not
//! yet flushed on every child, like md's write-intent bitmap or DRBD's
//! activity log.
//!
//! After a power loss, children can hold different unflushed writes of one
//! block with no stale mark to say so; a read would then pick one version,
//! and a later read that cannot reach that child another, which no single
//! disk does (SPEC 8.2). So before a client write lands in a region that is
//! not dirty yet, the region is recorded dirty in the stale-map journal, and
//! synced; a region is recorded clean again once two flushes in a row found
//! it idle. When a volume opens with dirty regions (it was not shut down
//! cleanly), they are reconciled before anything is served: voted, the
//! losers rewritten and the children flushed (see `Volume::reconcile`).
//!
//! Regions are [`GRAIN`] bytes, so a write costs a journal sync only when
//! it is the first in its region since the region was last cleaned.

use std::ops::Range;

use crate::stale::RangeSet;

/// The size of an intent region.
pub(crate) const GRAIN: u64 = 4 << 20;

/// The intent state of one volume; kept beside the stale maps, under the
/// same lock, and journaled with them.
#[derive(Debug, Default)]
pub(crate) struct Intent {
    /// Regions that may hold unflushed writes (as journaled).
    pub(crate) dirty: RangeSet,
    /// Dirty regions that a reconcile could not finish: never cleaned by a
    /// flush, reconciled again later.
    pub(crate) unreconciled: RangeSet,
    /// Regions written since the last flush began.
    current: RangeSet,
    /// Regions written in the flush interval before that.
    previous: RangeSet,
    /// Client writes in flight, by ticket, with their regions.
    in_flight: Vec<(u64, Range<u64>)>,
    next_ticket: u64,
}

/// A write registered with [`Intent::begin`]; give it back to
/// [`Intent::end`].
#[derive(Debug)]
#[must_use = "give it back with Intent::end"]
pub(crate) struct Ticket(u64);

/// What a flush covers, taken when it begins ([`Intent::flush_started`]).
#[derive(Debug)]
pub(crate) struct FlushMark {
    /// Regions written since the flush before began, and `racing`.
    covered: RangeSet,
    /// Regions of the writes in flight when the flush began: they may land
    /// on a child after its flush.
    racing: RangeSet,
}

impl Intent {
    /// The state of a volume that opens with `dirty` regions.
    pub(crate) fn with_dirty(dirty: RangeSet) -> Intent {
        Intent {
            dirty,
            ..Intent::default()
        }
    }

    /// The intent regions that cover `range` of a volume of `size` bytes.
    pub(crate) fn regions(range: &Range<u64>, size: u64) -> Range<u64> {
        let start = range.start - range.start % GRAIN;
        let end = range.end.div_ceil(GRAIN).saturating_mul(GRAIN).min(size);
        start..end
    }

    /// Registers a client write over `regions`. Returns its ticket and the
    /// parts of `regions` that were not dirty yet: they are now, and the
    /// caller journals and syncs them before the write goes out, or gives
    /// them back with [`Intent::unrecorded`] when it cannot.
    pub(crate) fn begin(&mut self, regions: Range<u64>) -> (Ticket, Vec<Range<u64>>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight.push((ticket, regions.clone()));
        self.current.insert(regions.clone());
        let mut fresh = RangeSet::default();
        fresh.insert(regions.clone());
        for r in self.dirty.within(regions.clone()) {
            fresh.remove(r);
        }
        let fresh = fresh.within(regions.clone());
        self.dirty.insert(regions);
        (Ticket(ticket), fresh)
    }

    /// Registers a client write over `regions` when every one of them is
    /// dirty already (no journal record is needed first); `None`, and
    /// nothing changed, when one is not.
    pub(crate) fn try_begin(&mut self, regions: Range<u64>) -> Option<Ticket> {
        if self.dirty.within(regions.clone()) != [regions.clone()] {
            return None;
        }
        let (ticket, fresh) = self.begin(regions);
        debug_assert!(fresh.is_empty());
        Some(ticket)
    }

    /// The `fresh` parts returned by [`Intent::begin`] could not be
    /// journaled: they are not dirty (the next write there tries again).
    pub(crate) fn unrecorded(&mut self, fresh: &[Range<u64>]) {
        for r in fresh {
            self.dirty.remove(r.clone());
        }
    }

    /// Ends a write registered by [`Intent::begin`].
    pub(crate) fn end(&mut self, ticket: Ticket) {
        self.in_flight.retain(|(t, _)| *t != ticket.0);
    }

    /// How many registered writes have not ended.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A flush begins: it covers what was written until now, and the
    /// writes in flight (which may land on a child after its flush).
    pub(crate) fn flush_started(&mut self) -> FlushMark {
        let mut covered = std::mem::take(&mut self.current);
        let mut racing = RangeSet::default();
        for (_, r) in &self.in_flight {
            covered.insert(r.clone());
            racing.insert(r.clone());
        }
        FlushMark { covered, racing }
    }

    /// A flush that began with `mark` ended, on every child (`complete`) or
    /// not. Returns the dirty regions to record clean: written in neither
    /// this interval nor the one before, with no write in flight, and not
    /// waiting for a reconcile. With `settle` (no client write can start:
    /// the volume is closing or being replaced), the regions the flush
    /// covered are clean too, but for those of writes that were in flight.
    pub(crate) fn flush_ended(
        &mut self,
        mark: FlushMark,
        complete: bool,
        settle: bool,
    ) -> Vec<Range<u64>> {
        if !complete {
            for r in mark.covered.within(0..u64::MAX) {
                self.previous.insert(r);
            }
            return Vec::new();
        }
        let mut idle = self.dirty.clone();
        let busy: Vec<&RangeSet> = if settle {
            vec![&self.current, &self.unreconciled, &mark.racing]
        } else {
            vec![
                &self.previous,
                &mark.covered,
                &self.current,
                &self.unreconciled,
            ]
        };
        for set in busy {
            for r in set.within(0..u64::MAX) {
                idle.remove(r);
            }
        }
        for (_, r) in &self.in_flight {
            idle.remove(r.clone());
        }
        self.previous = if settle {
            RangeSet::default()
        } else {
            mark.covered
        };
        let clean = idle.within(0..u64::MAX);
        for r in &clean {
            self.dirty.remove(r.clone());
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_cleaned_after_two_idle_flushes_and_never_while_written() {
        let mut intent = Intent::default();
        let r = Intent::regions(&(100..200), 100 * GRAIN);
        assert_eq!(r, 0..GRAIN);
        let (t, fresh) = intent.begin(r.clone());
        assert_eq!(fresh, vec![r.clone()], "the first write dirties the region");
        let (t2, fresh) = intent.begin(r.clone());
        assert!(fresh.is_empty(), "the second does not");
        intent.end(t2);
        // A flush while t is in flight cleans nothing.
        let mark = intent.flush_started();
        assert!(intent.flush_ended(mark, true, false).is_empty());
        intent.end(t);
        // The next flush: t was in flight when the last began, still dirty.
        let mark = intent.flush_started();
        assert!(intent.flush_ended(mark, true, false).is_empty());
        // A failed flush cleans nothing.
        let mark = intent.flush_started();
        assert!(intent.flush_ended(mark, false, false).is_empty());
        // Idle since the flush before the last: clean.
        let mark = intent.flush_started();
        assert_eq!(intent.flush_ended(mark, true, false), vec![0..GRAIN]);
        assert!(intent.dirty.is_empty());
        // A write that needs no record begins without one; one that does
        // waits for the record (the caller journals it).
        assert!(intent.try_begin(r.clone()).is_none(), "a clean region");
        let (t, _) = intent.begin(r.clone());
        let t2 = intent.try_begin(r.clone()).expect("a dirty region");
        intent.end(t2);
        intent.end(t);
        let mark = intent.flush_started();
        intent.flush_ended(mark, true, false);
        let mark = intent.flush_started();
        intent.flush_ended(mark, true, false);
        // A region a reconcile could not finish is never cleaned by a flush.
        let (t, _) = intent.begin(r.clone());
        intent.end(t);
        intent.unreconciled.insert(r.clone());
        for _ in 0..3 {
            let mark = intent.flush_started();
            assert!(intent.flush_ended(mark, true, true).is_empty());
        }
    }
}
