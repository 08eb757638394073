//! One resync copy: the voted data of a range put onto a stale child,
//! piece by piece, then flushed, then cleared from its stale map.

use std::ops::Range;

use bytes::Bytes;

use super::super::Volume;
use super::super::tally::{Tally, Voted};
use super::super::write::lost_to_a_failed_flush;
use crate::backend::{BackendError, Extent};
use crate::error::VolumeError;
use crate::event::Op;
use crate::report::Reports;
use crate::vote;
use crate::worker::{Reply, Request, Zeroing};

/// The most bytes one piece of a copy reads from each source: the pieces of
/// a copy go in a pipeline, the next read from the sources while the stale
/// child writes this one.
const PIECE: u64 = 2 << 20;

/// The most extents of the sources' zero map a copy looks at: past them,
/// the range counts as data (always correct).
const ZERO_EXTENTS: usize = 64;

/// Whether the stale child's own copy votes where it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Own {
    /// It is read and votes where it is not stale.
    Vote,
    /// It is not read: the others' vote gives all of the range.
    Skip,
}

/// A piece of a copy: zero on every source, or data to read and vote.
struct Piece {
    range: Range<u64>,
    zero: bool,
}

impl Volume {
    /// Puts the voted data of `range` onto `child` and clears it from
    /// `child`'s stale map, by a caller that holds `range` exclusively.
    /// Where every other child says the whole range is zero, `child` is
    /// zeroed (unless it reads zero already) rather than copied, so that a
    /// new child of a sparse volume costs no reads. Elsewhere the range
    /// goes in pieces: those that every other child says are zero are
    /// zeroed, the others are read and voted from the other children, and
    /// from `child` itself where it is not stale when `own` says so, the
    /// next piece read while this one is written (uncached when `uncached`
    /// says so, see [`crate::Backend::write_copy`]). Once every piece is
    /// written, `child` is flushed, and only then is the range cleared. A
    /// block where the others have no majority ends the copy there: the
    /// pieces before it may be written, but the range stays stale. Gives
    /// the bytes of `range` that were stale.
    pub(super) fn copy_stale(
        &self,
        child: usize,
        range: Range<u64>,
        own: Own,
        uncached: bool,
        reports: &mut Reports<'_>,
    ) -> Result<Voted<u64>, VolumeError> {
        let (offset, length) = (range.start, range.end - range.start);
        let flush_errors = self.children[child].workers.flush_errors();
        // One extent is enough to tell: the range is zero when the first
        // extent is zero and covers it.
        let all_zero = |map: &[Extent]| matches!(map, [e] if e.zero && e.offset == offset && e.end() == range.end);
        // The sources' zero map; a child alone has none (it counts as data).
        let map = if self.children.len() > 1 {
            self.zero_map(range.clone(), Some(child), ZERO_EXTENTS, reports)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if all_zero(&map) {
            let own = self
                .dispatch(vec![(
                    child,
                    Request::BlockStatus {
                        offset,
                        length,
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
                            length,
                            how: Zeroing::Zeroes,
                        },
                    )])
                    .pop(),
            };
            return self
                .settle_copy(child, range, done, flush_errors, reports)
                .map(Voted::Answer);
        }
        let own_fresh = own == Own::Vote && {
            let maps = self.stale_maps();
            maps.sets[child]
                .within(range.clone())
                .iter()
                .map(|r| r.end - r.start)
                .sum::<u64>()
                < length
        };
        let sources: Vec<usize> = (0..self.children.len())
            .filter(|&i| i != child || own_fresh)
            .collect();
        let pieces = pieces(&range, &map);
        // The write of the piece before, sent with the reads of the next.
        let mut pending: Option<Request> = None;
        let mut next = pieces.iter();
        loop {
            let piece = next.next();
            if piece.is_none() && pending.is_none() {
                break;
            }
            let mut jobs: Vec<(usize, Request)> =
                pending.take().map(|w| (child, w)).into_iter().collect();
            let writing = !jobs.is_empty();
            if let Some(p) = piece.filter(|p| !p.zero) {
                let (offset, length) = (p.range.start, (p.range.end - p.range.start) as usize);
                jobs.extend(
                    sources
                        .iter()
                        .map(|&i| (i, Request::Read { offset, length })),
                );
            }
            let mut answers = self.dispatch(jobs).into_iter();
            if writing {
                if let Some((_, Err(error))) = answers.next() {
                    return self
                        .settle_copy(
                            child,
                            range,
                            Some((child, Err(error))),
                            flush_errors,
                            reports,
                        )
                        .map(Voted::Answer);
                }
            }
            let Some(p) = piece else { break };
            pending = Some(if p.zero {
                Request::WriteZeroes {
                    offset: p.range.start,
                    length: p.range.end - p.range.start,
                    how: Zeroing::Zeroes,
                }
            } else {
                let offset = p.range.start;
                match self.vote_piece(child, own_fresh, p.range.clone(), answers, reports)? {
                    Voted::Answer(data) if uncached => Request::Copy { offset, data },
                    Voted::Answer(data) => Request::Write { offset, data },
                    Voted::NoMajority(none) => return Ok(Voted::NoMajority(none)),
                }
            });
        }
        self.settle_copy(
            child,
            range,
            Some((child, Ok(Reply::Done))),
            flush_errors,
            reports,
        )
        .map(Voted::Answer)
    }

    /// The vote on the sources' `answers` for `range`, a piece of a copy
    /// onto `child` (which answered too when `own_fresh`).
    fn vote_piece(
        &self,
        child: usize,
        own_fresh: bool,
        range: Range<u64>,
        answers: impl ExactSizeIterator<Item = (usize, Result<Reply, BackendError>)>,
        reports: &mut Reports<'_>,
    ) -> Result<Voted<Bytes>, VolumeError> {
        let (offset, length) = (range.start, range.end - range.start);
        let mut tally = self.tally(Op::Read, offset, length, answers.len());
        let mut copies: Vec<Option<Vec<u8>>> = (0..self.children.len()).map(|_| None).collect();
        for (i, result) in answers {
            match result {
                Ok(Reply::Data(data)) => copies[i] = Some(data),
                Ok(_) => {}
                Err(e) => {
                    self.report_failed(reports, Op::Read, i, offset, length, &e);
                    tally.failed(i, e);
                }
            }
        }
        let mut excluded = self.stale_within(range);
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
        Ok(Voted::Answer(data))
    }

    /// After `child` took a resync copy of `range` (`done`): flushes it, then
    /// clears `range` from its stale map, unless a flush of `child` failed
    /// since the copy began (its count was `flush_errors` then): the copy
    /// may have been lost with that write-back, which our flush, coming
    /// after, is not told of. The range is kept among the child's unflushed
    /// ones. Gives the bytes that were stale.
    fn settle_copy(
        &self,
        child: usize,
        range: Range<u64>,
        done: Option<(usize, Result<Reply, BackendError>)>,
        flush_errors: u64,
        reports: &mut Reports<'_>,
    ) -> Result<u64, VolumeError> {
        let (offset, bytes) = (range.start, range.end - range.start);
        let (op, result) = match done {
            Some((_, Ok(_))) => match self.dispatch(vec![(child, Request::Flush)]).pop() {
                Some((_, result)) => (Op::Flush, result),
                None => return Ok(0),
            },
            Some((_, Err(error))) => (Op::Write, Err(error)),
            None => return Ok(0),
        };
        // A flush that failed before ours may be counted only after we
        // look: the copy stays unflushed, so that the next flush of the
        // volume that finds the count moved marks it stale again.
        let result = result.and_then(|reply| {
            if self.children[child].workers.flush_errors() == flush_errors
                && self.note_unflushed_since(child, &range, flush_errors)
            {
                Ok(reply)
            } else {
                Err(lost_to_a_failed_flush())
            }
        });
        match result {
            Ok(_) => {
                // The caller holds the range: no write marks or clears it
                // meanwhile. What was stale is what the copy repaired; the
                // fresh bytes between took the same data again.
                let stale = self.stale_of(child, range.clone());
                self.edit_stale([(child, false, range.clone())])?;
                for r in &stale {
                    reports.rewrite(&self.children[child].name, r.start, r.end - r.start);
                }
                self.edit_damage([(child, false, range)], reports);
                Ok(stale.iter().map(|r| r.end - r.start).sum())
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

/// `range` in the pieces of a copy: the zero extents of `map` (the
/// sources' zero map of a prefix of it) whole, the rest in pieces of
/// [`PIECE`] bytes at most.
fn pieces(range: &Range<u64>, map: &[Extent]) -> Vec<Piece> {
    let mut runs: Vec<Piece> = map
        .iter()
        .map(|e| Piece {
            range: e.offset.max(range.start)..e.end().min(range.end),
            zero: e.zero,
        })
        .filter(|p| !p.range.is_empty())
        .collect();
    let mapped = runs.last().map_or(range.start, |p| p.range.end);
    if mapped < range.end {
        runs.push(Piece {
            range: mapped..range.end,
            zero: false,
        });
    }
    let mut pieces = Vec::new();
    for run in runs {
        if run.zero {
            pieces.push(run);
            continue;
        }
        let mut at = run.range.start;
        while at < run.range.end {
            let end = (at + PIECE).min(run.range.end);
            pieces.push(Piece {
                range: at..end,
                zero: false,
            });
            at = end;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(offset: u64, length: u64, zero: bool) -> Extent {
        Extent {
            offset,
            length,
            zero,
        }
    }

    fn shown(pieces: &[Piece]) -> Vec<(Range<u64>, bool)> {
        pieces.iter().map(|p| (p.range.clone(), p.zero)).collect()
    }

    #[test]
    fn pieces_keep_zero_runs_whole_and_cut_data() {
        let range = 100..100 + 3 * PIECE + 50;
        let map = [
            extent(100, 10, false),
            extent(110, PIECE + 5, true),
            extent(115 + PIECE, PIECE, false),
        ];
        assert_eq!(
            shown(&pieces(&range, &map)),
            vec![
                (100..110, false),
                (110..115 + PIECE, true),
                (115 + PIECE..115 + 2 * PIECE, false),
                // Past the map: data, in pieces.
                (115 + 2 * PIECE..115 + 3 * PIECE, false),
                (115 + 3 * PIECE..range.end, false),
            ]
        );
        assert_eq!(shown(&pieces(&(0..5), &[])), vec![(0..5, false)]);
    }
}
