//! Resync: the voted data copied over a child's stale ranges, one step at a
//! time.

mod copy;

use std::ops::Range;

use super::Volume;
use super::tally::{NoMajority, Voted};
use crate::error::VolumeError;
use crate::report::Reports;
use copy::Own;

/// The widest gap between two stale ranges of a child that one step copies
/// over, to copy both at once: copying the gap costs about what its bytes
/// cost to move, a step of its own costs a flush and a round of the
/// children's workers, which on a file child is worth about this much.
const MAX_GAP: u64 = 1 << 20;

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
        /// How many of them were stale: the rest, between stale ranges, was
        /// fresh already and took the same data again.
        refreshed: u64,
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
    /// Copies the voted data over a child's stale ranges, at most `max`
    /// bytes from the first: the first stale range of any child that ends
    /// after `from`, or the first of all when none does (so that a caller
    /// that moves `from` past each range it tried goes round every range
    /// even when one of them cannot be copied yet), with the child's stale
    /// ranges that follow it within `max` bytes across gaps of at most 1 MiB
    /// (copied too).
    ///
    /// The range is locked against client I/O while it is copied: read from
    /// the others in pieces, each voted and written while the next is read,
    /// then flushed, and only then cleared from the stale map. The data
    /// comes through the vote, at the volume's threshold, never from the
    /// child's stale bytes; where every other child says a piece is zero,
    /// the child is zeroed there without reads. A block where the others
    /// have no majority (left so by a write that failed its quorum) is not
    /// copied: the blocks before it are, and it stays stale until a write
    /// covers it. A write-intent region that a reconcile after a crash could
    /// not finish is tried again first.
    ///
    /// The copies go through the children's caches, as client writes do, so
    /// that what a paced resync copied reads as fast as the rest; see
    /// [`Volume::resync_step_uncached`] for a resync that runs flat out.
    pub fn resync_step(&self, max: u64, from: u64) -> ResyncStep {
        self.step(max, from, false)
    }

    /// A [`Volume::resync_step`] whose copies keep out of the children's
    /// caches ([`crate::Backend::write_copy`]): for a resync that runs
    /// faster than clients read, which would otherwise fill the cache with
    /// a copy that nobody reads (evicting what clients do read), and which
    /// onto a new file child copies several times faster so.
    pub fn resync_step_uncached(&self, max: u64, from: u64) -> ResyncStep {
        self.step(max, from, true)
    }

    fn step(&self, max: u64, from: u64, uncached: bool) -> ResyncStep {
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
            last = self.resync_range(child, first, max, uncached);
            if matches!(last, ResyncStep::Copied { .. }) {
                break;
            }
        }
        last
    }

    /// One [`Volume::resync_step`] on `child`, from its stale range `first`:
    /// the stale ranges of `child` that follow it within `max` bytes, with
    /// gaps of at most [`MAX_GAP`] between them, are copied at once, under
    /// one lock, one flush and one journal record, so that a stale map cut
    /// into many ranges by client writes (each write that reaches the child
    /// refreshes its range) still costs few steps.
    fn resync_range(
        &self,
        child: usize,
        first: Range<u64>,
        max: u64,
        uncached: bool,
    ) -> ResyncStep {
        let name = self.children[child].name.clone();
        let reach = first.start..first.start.saturating_add(max.max(1)).min(self.size);
        // A child that stores in units gets whole units, so that a unit it
        // cannot read is rebuilt rather than patched.
        let reach = self.widen(child, reach);
        let window = self.gathered(child, reach.clone()).unwrap_or(reach);
        let _guard = self.ranges.exclusive(window.start, window.end);
        // A write may have refreshed part of it while we waited.
        let Some(span) = self.gathered(child, window.clone()) else {
            return ResyncStep::Copied {
                child: name,
                range: window.start..window.start,
                refreshed: 0,
                next: window.end,
            };
        };
        let stale = self.stale_maps().sets[child].within(span.clone());
        let mut reports = self.reports();
        // The others' vote alone gives the data of the whole span, the gaps
        // between the stale ranges included: the child is fresh there, so
        // the others agree with it but where one of them missed a write too.
        // Where they have no majority, the first range goes alone, with the
        // child's own vote where it is fresh.
        if stale.len() > 1 {
            match self.copy_stale(child, span.clone(), Own::Skip, uncached, &mut reports) {
                Ok(Voted::Answer(refreshed)) => {
                    return ResyncStep::Copied {
                        child: name,
                        next: span.end,
                        range: span,
                        refreshed,
                    };
                }
                Err(error) => {
                    return ResyncStep::Failed {
                        child: name,
                        range: span,
                        error,
                    };
                }
                Ok(Voted::NoMajority(_)) => {}
            }
        }
        let first = stale.first().cloned().unwrap_or(span.start..span.start);
        self.resync_one(child, first, max, window, uncached, &mut reports)
    }

    /// `child`'s stale ranges within `window`, from the first one on while
    /// the gap to the next is at most [`MAX_GAP`], as one range grown to
    /// whole units (see [`Volume::widen`]) within `window`; `None` when it
    /// has none there.
    fn gathered(&self, child: usize, window: Range<u64>) -> Option<Range<u64>> {
        let stale = self.stale_maps().sets[child].within(window.clone());
        let first = stale.first()?;
        let mut end = first.end;
        for r in &stale[1..] {
            if r.start - end > MAX_GAP {
                break;
            }
            end = r.end;
        }
        let w = self.widen(child, first.start..end);
        Some(w.start.max(window.start)..w.end.min(window.end))
    }

    /// A step on `child`'s stale range `first` alone (at most `max` bytes
    /// of it), by a caller that holds `window`, which covers its units:
    /// where the others have no majority over some block, the child's own
    /// copy votes where it is fresh, and the blocks before the one without
    /// a majority are copied.
    fn resync_one(
        &self,
        child: usize,
        first: Range<u64>,
        max: u64,
        window: Range<u64>,
        uncached: bool,
        reports: &mut Reports<'_>,
    ) -> ResyncStep {
        let name = self.children[child].name.clone();
        let range = first.start..first.end.min(first.start + max.max(1));
        let whole = {
            let unit = self.widen(child, range.clone());
            let stale = self.stale_maps().sets[child].within(unit.clone());
            match (stale.first(), stale.last()) {
                (Some(f), Some(l)) => {
                    let w = self.widen(child, f.start..l.end);
                    w.start.max(window.start)..w.end.min(window.end)
                }
                _ => range.clone(),
            }
        };
        // When the units cannot be rebuilt whole (a block without a majority
        // where the child is fresh, a source down), the stale part alone is
        // copied, as for a child that stores in bytes.
        if whole != range {
            if let Ok(Voted::Answer(refreshed)) =
                self.copy_stale(child, whole.clone(), Own::Vote, uncached, reports)
            {
                return ResyncStep::Copied {
                    child: name,
                    next: whole.end,
                    range: whole,
                    refreshed,
                };
            }
        }
        match self.copy_stale(child, range.clone(), Own::Vote, uncached, reports) {
            Ok(Voted::Answer(refreshed)) => ResyncStep::Copied {
                child: name,
                next: range.end,
                range,
                refreshed,
            },
            // The blocks before the one without a majority are copied; the
            // next step starts after it.
            Ok(Voted::NoMajority(none)) if none.block.start > range.start => {
                let before = range.start..none.block.start;
                match self.copy_stale(child, before.clone(), Own::Vote, uncached, reports) {
                    Ok(Voted::Answer(refreshed)) => ResyncStep::Copied {
                        child: name,
                        range: before,
                        refreshed,
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
}
