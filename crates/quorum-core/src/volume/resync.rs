//! Resync: the voted data copied over a child's stale ranges, one step at a
//! time.

use std::ops::Range;

use super::Volume;
use super::tally::{NoMajority, Tally, Voted};
use crate::backend::{BackendError, Extent};
use crate::error::VolumeError;
use crate::event::Op;
use crate::report::Reports;
use crate::vote;
use crate::worker::{Reply, Request, Zeroing};

/// What one [`Volume::resync_step`] did.
#[derive(Debug)]
pub enum ResyncStep {
    /// No child has a stale range.
    Idle,
    /// `range` was copied onto `child` (it may be empty when a write had
    /// refreshed it meanwhile).
    Copied {
        /// The child.
        child: String,
        /// The bytes copied.
        range: Range<u64>,
        /// Where the next step should start looking.
        next: u64,
    },
    /// `range` of `child` could not be copied now; it stays stale.
    Failed {
        /// The child.
        child: String,
        /// The range tried (move past it before the next step).
        range: Range<u64>,
        /// Why.
        error: VolumeError,
    },
}

impl Volume {
    /// Copies the voted data over a child's stale range (at most `max`
    /// bytes of it): the first stale range of any child that ends after
    /// `from`, or the first of all when none does, so that a caller that
    /// moves `from` past each range it tried goes round every range even
    /// when one of them cannot be copied yet.
    ///
    /// The range is locked against client I/O while it is copied; the data
    /// comes from the other children through the vote, at the volume's
    /// threshold, never from the stale child. A block where the others have
    /// no majority (left so by a write that failed its quorum) is not
    /// copied: the blocks before it are, and it stays stale until a write
    /// covers it. A write-intent region that a reconcile after a crash could
    /// not finish is tried again first.
    pub fn resync_step(&self, max: u64, from: u64) -> ResyncStep {
        // A region a reconcile after a crash could not finish is tried first.
        self.reconcile_pending();
        // Every child with a stale range at the first stale offset from
        // `from`, so that one whose copy keeps failing does not hold up the
        // others stale at the same place.
        let picked: Vec<(usize, Range<u64>)> = {
            let maps = self.stale_maps();
            let next = |from: u64| {
                let firsts: Vec<(usize, Range<u64>)> = maps
                    .sets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.first_from(from).map(|r| (i, r)))
                    .collect();
                let start = firsts.iter().map(|(_, r)| r.start).min();
                firsts
                    .into_iter()
                    .filter(|(_, r)| Some(r.start) == start)
                    .collect::<Vec<_>>()
            };
            let here = next(from);
            if here.is_empty() { next(0) } else { here }
        };
        let mut last = ResyncStep::Idle;
        for (child, first) in picked {
            last = self.resync_range(child, first, max);
            if matches!(last, ResyncStep::Copied { .. }) {
                break;
            }
        }
        last
    }

    /// One [`Volume::resync_step`] on `child`'s stale range `first`.
    fn resync_range(&self, child: usize, first: Range<u64>, max: u64) -> ResyncStep {
        let name = self.children[child].name.clone();
        let range = first.start..first.end.min(first.start + max.max(1));
        // A child that stores in units gets whole units, so that a unit it
        // cannot read is rebuilt rather than patched.
        let window = self.widen(child, range.clone());
        let _guard = self.ranges.exclusive(window.start, window.end);
        // A write may have refreshed part of it while we waited.
        let stale = self.stale_maps().sets[child].within(window.clone());
        let (Some(first), Some(last)) = (stale.first(), stale.last()) else {
            return ResyncStep::Copied {
                child: name,
                range: range.start..range.start,
                next: range.end,
            };
        };
        let whole = {
            let w = self.widen(child, first.start..last.end);
            w.start.max(window.start)..w.end.min(window.end)
        };
        let mut reports = self.reports();
        let range = first.start..first.end.min(first.start + max.max(1));
        // When the units cannot be rebuilt whole (a block without a majority
        // where the child is fresh, a source down), the stale part alone is
        // copied, as for a child that stores in bytes.
        if whole != range
            && matches!(
                self.copy_stale(child, whole.clone(), &mut reports),
                Ok(Voted::Answer(()))
            )
        {
            return ResyncStep::Copied {
                child: name,
                next: whole.end,
                range: whole,
            };
        }
        match self.copy_stale(child, range.clone(), &mut reports) {
            Ok(Voted::Answer(())) => ResyncStep::Copied {
                child: name,
                next: range.end,
                range,
            },
            // The blocks before the one without a majority are copied; the
            // next step starts after it.
            Ok(Voted::NoMajority(none)) if none.block.start > range.start => {
                let before = range.start..none.block.start;
                match self.copy_stale(child, before.clone(), &mut reports) {
                    Ok(Voted::Answer(())) => ResyncStep::Copied {
                        child: name,
                        range: before,
                        next: none.block.end,
                    },
                    Ok(Voted::NoMajority(NoMajority { error, .. })) => ResyncStep::Failed {
                        child: name,
                        range: before,
                        error: error.into(),
                    },
                    Err(error) => ResyncStep::Failed {
                        child: name,
                        range: before,
                        error,
                    },
                }
            }
            Ok(Voted::NoMajority(none)) => ResyncStep::Failed {
                child: name,
                range: none.block,
                error: none.error.into(),
            },
            Err(error) => ResyncStep::Failed {
                child: name,
                range,
                error,
            },
        }
    }

    /// `range` grown to whole write units of `child`, within the volume.
    fn widen(&self, child: usize, range: Range<u64>) -> Range<u64> {
        let unit = self.children[child].backend.write_unit().max(1);
        let start = range.start - range.start % unit;
        let end = range.end.div_ceil(unit).saturating_mul(unit).min(self.size);
        start..end
    }

    /// Puts the voted data of `range` onto `child` and clears it from
    /// `child`'s stale map, by a caller that holds `range` exclusively.
    /// Where every other child says the range is zero, `child` is zeroed
    /// (unless it reads zero already) rather than copied, so that a new
    /// child of a sparse volume costs no reads. Elsewhere the data is read
    /// and voted from the other children, and from `child` itself where it
    /// is not stale; it is written, flushed, and only then cleared. A block
    /// where the others have no majority leaves `child` as it was.
    fn copy_stale(
        &self,
        child: usize,
        range: Range<u64>,
        reports: &mut Reports<'_>,
    ) -> Result<Voted<()>, VolumeError> {
        let (offset, length) = (range.start, (range.end - range.start) as usize);
        // One extent is enough to tell: the range is zero when the first
        // extent is zero and covers it.
        let all_zero = |map: &[Extent]| matches!(map, [e] if e.zero && e.offset == offset && e.end() == range.end);
        if self.children.len() > 1
            && self
                .zero_map(range.clone(), Some(child), 1, reports)
                .is_ok_and(|m| all_zero(&m))
        {
            let own = self
                .dispatch(vec![(
                    child,
                    Request::BlockStatus {
                        offset,
                        length: length as u64,
                        limit: 1,
                    },
                )])
                .pop();
            let done = match own {
                Some((_, Ok(Reply::Extents(m)))) if all_zero(&m) => Some((child, Ok(Reply::Done))),
                _ => self
                    .dispatch(vec![(
                        child,
                        Request::WriteZeroes {
                            offset,
                            length: length as u64,
                            how: Zeroing::Zeroes,
                        },
                    )])
                    .pop(),
            };
            return self
                .settle_copy(child, range, done, reports)
                .map(Voted::Answer);
        }
        let own_fresh = {
            let maps = self.stale_maps();
            maps.sets[child]
                .within(range.clone())
                .iter()
                .map(|r| r.end - r.start)
                .sum::<u64>()
                < length as u64
        };
        let others: Vec<(usize, Request)> = (0..self.children.len())
            .filter(|&i| i != child || own_fresh)
            .map(|i| (i, Request::Read { offset, length }))
            .collect();
        let mut tally = self.tally(Op::Read, offset, length as u64, others.len());
        let mut copies: Vec<Option<Vec<u8>>> = (0..self.children.len()).map(|_| None).collect();
        for (i, result) in self.dispatch(others) {
            match result {
                Ok(Reply::Data(data)) => copies[i] = Some(data),
                Ok(_) => {}
                Err(e) => {
                    self.report_failed(reports, Op::Read, i, offset, length as u64, &e);
                    tally.failed(i, e);
                }
            }
        }
        let mut excluded = self.stale_within(range.clone());
        if !own_fresh {
            if let Some(own) = excluded.get_mut(child) {
                own.clear();
            }
        }
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome =
            match vote::vote_masked(offset, &views, self.options.vote_threshold, &excluded) {
                Ok(outcome) => outcome,
                Err(e) => return Ok(Voted::NoMajority(self.no_winner(tally, e)?)),
            };
        let data = self.buffers.bytes(vote::assemble(&outcome, &mut copies));
        for copy in copies.into_iter().flatten() {
            self.buffers.give(copy);
        }
        let written = self
            .dispatch(vec![(child, Request::Write { offset, data })])
            .pop();
        self.settle_copy(child, range, written, reports)
            .map(Voted::Answer)
    }

    /// After `child` took a resync copy of `range` (`done`): flushes it, then
    /// clears `range` from its stale map.
    fn settle_copy(
        &self,
        child: usize,
        range: Range<u64>,
        done: Option<(usize, Result<Reply, BackendError>)>,
        reports: &mut Reports<'_>,
    ) -> Result<(), VolumeError> {
        let (offset, bytes) = (range.start, range.end - range.start);
        let (op, result) = match done {
            Some((_, Ok(_))) => match self.dispatch(vec![(child, Request::Flush)]).pop() {
                Some((_, result)) => (Op::Flush, result),
                None => return Ok(()),
            },
            Some((_, Err(error))) => (Op::Write, Err(error)),
            None => return Ok(()),
        };
        match result {
            Ok(_) => {
                self.edit_stale([(child, false, range.clone())])?;
                reports.rewrite(&self.children[child].name, offset, bytes);
                self.edit_damage([(child, false, range)], reports);
                Ok(())
            }
            Err(error) => {
                self.report_failed(reports, op, child, offset, bytes, &error);
                let mut tally = Tally::new(op, offset, bytes, 1, 1);
                tally.failed(child, error);
                Err(self.quorum_error(tally, None).into())
            }
        }
    }
}
