//! Reads: voted (quorum) or first-that-answers (fifo), and the rewrite of
//! the winning data over children that lost the vote or failed.

use std::ops::Range;

use bytes::Bytes;

use super::damage::{DamageEdit, outside};
use super::fanout::Outcomes;
use super::tally::Voted;
use super::{ReadPattern, Scrubbed, Volume};
use crate::error::VolumeError;
use crate::event::{Event, Op};
use crate::gather::Answer;
use crate::report::Reports;
use crate::vote;
use crate::worker::{Reply, Request};

impl Volume {
    /// Reads `length` bytes at `offset`, as the read pattern says.
    ///
    /// # Errors
    /// [`VolumeError::OutOfRange`] outside the volume; [`VolumeError::Quorum`]
    /// when too few children answered or no version won a block;
    /// [`VolumeError::BlkverifyMismatch`] in blkverify mode when the two
    /// children differ.
    pub fn read(&self, offset: u64, length: usize) -> Result<Bytes, VolumeError> {
        self.check_range(offset, length as u64)?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let mut reports = self.reports();
        self.read_locked(offset, length, &mut reports)
    }

    /// Reads `length` bytes at `offset` in pieces of at most `chunk` bytes
    /// and hands each to `each`, in order, until it returns `false`. The
    /// whole range is one read: it is held against overlapping writes from
    /// the first piece to the last, so it sees each of them whole or not at
    /// all, while memory stays bounded by the chunk size. The reports of
    /// all the pieces are coalesced as for one request; they are emitted
    /// before the last piece is handed over.
    ///
    /// # Errors
    /// As [`Volume::read`], for the first piece that fails; the pieces
    /// before it have been handed over.
    pub fn read_chunks(
        &self,
        offset: u64,
        length: u64,
        chunk: usize,
        mut each: impl FnMut(Bytes) -> bool,
    ) -> Result<(), VolumeError> {
        let end = self.check_range(offset, length)?;
        let mut reports = self.reports();
        let _guard = self.ranges.shared(offset, end);
        let mut at = offset;
        while at < end {
            let n = (end - at).min(chunk.max(1) as u64) as usize;
            let piece = self.read_unlocked(at, n, &mut reports)?;
            if at + n as u64 == end {
                // The reports are out before the caller has the last byte.
                reports.emit();
            }
            if !each(piece) {
                break;
            }
            at += n as u64;
        }
        Ok(())
    }

    fn read_locked(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let _guard = self.ranges.shared(offset, offset + length as u64);
        self.read_unlocked(offset, length, reports)
    }

    /// A read as the read pattern says, by a caller that holds the range.
    fn read_unlocked(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        match self.options.read_pattern {
            ReadPattern::Quorum => self.read_quorum(offset, length, reports),
            ReadPattern::Fifo => self.read_fifo(offset, length, reports),
        }
    }

    fn read_quorum(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let results = self.on_all(&Request::Read { offset, length });
        self.quorum_answer(offset, length, results, reports)
    }

    /// The answer of a client's quorum read from the children's `results`
    /// (one per child, in child order): voted, the losers and the failed
    /// children rewritten when the volume says so, a block without a
    /// majority reported as the read's failure.
    pub(super) fn quorum_answer(
        &self,
        offset: u64,
        length: usize,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let repair = self.options.rewrite_corrupted;
        match self.vote_answers(offset, length, results, reports, repair, None)? {
            Voted::Answer(data) => Ok(data),
            Voted::NoMajority(none) => Err(self.fail(reports, none.error)),
        }
    }

    /// A quorum read. With `repair`, the winning data is written back over
    /// the losers and the children whose read failed; `lost`, when given,
    /// adds up the bytes each child lost and the bytes repaired. A block
    /// without a majority is not a failure yet: the caller says whether it
    /// is one (reported, for a client read) or a finding (for a scrub).
    pub(super) fn read_voted(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
        repair: bool,
        lost: Option<&mut Scrubbed>,
    ) -> Result<Voted<Bytes>, VolumeError> {
        let results = self.on_all(&Request::Read { offset, length });
        self.vote_answers(offset, length, results, reports, repair, lost)
    }

    /// [`Volume::read_voted`] of the children's `results`, read already.
    fn vote_answers(
        &self,
        offset: u64,
        length: usize,
        results: Outcomes,
        reports: &mut Reports<'_>,
        repair: bool,
        lost: Option<&mut Scrubbed>,
    ) -> Result<Voted<Bytes>, VolumeError> {
        let bytes = length as u64;
        let end = offset + bytes;
        let mut tally = self.tally(Op::Read, offset, bytes, results.len());
        let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(results.len());
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(Reply::Data(data)) => copies.push(Some(data)),
                Ok(_) => copies.push(None),
                Err(error) => {
                    self.report_failed(reports, Op::Read, i, offset, bytes, &error);
                    tally.failed(i, error);
                    copies.push(None);
                }
            }
        }
        let excluded = self.stale_within(offset..end);
        let unread = |i: usize| excluded.get(i).into_iter().flatten();
        // Where a read failed with an I/O error the child is damaged (not
        // where it is stale: that is the resync's), whatever the vote says.
        let mut damage: Vec<DamageEdit> = tally
            .failures()
            .iter()
            .filter(|(_, e)| e.is_repairable())
            .flat_map(|(i, _)| {
                outside(offset..end, unread(*i))
                    .into_iter()
                    .map(|r| (*i, true, r))
            })
            .collect();
        if self.options.blkverify {
            if let [Some(a), Some(b)] = copies.as_slice() {
                if let Some(at) = vote::first_difference(a, b) {
                    let at = offset + at as u64;
                    tracing::error!(volume = %self.options.name, offset = at, "blkverify: contents mismatch");
                    reports.push(Event::BlkverifyMismatch {
                        offset: at,
                        request_offset: offset,
                        request_bytes: bytes,
                    });
                    self.edit_damage(damage, reports);
                    return Err(VolumeError::BlkverifyMismatch {
                        offset: at,
                        request_offset: offset,
                        request_bytes: bytes,
                    });
                }
            }
        }
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome =
            match vote::vote_masked(offset, &views, self.options.vote_threshold, &excluded) {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.edit_damage(damage, reports);
                    return match self.no_winner(tally, e) {
                        Ok(none) => Ok(Voted::NoMajority(none)),
                        Err(error) => Err(self.fail(reports, error)),
                    };
                }
            };
        for loss in &outcome.losses {
            for r in &loss.ranges {
                tracing::warn!(volume = %self.options.name, child = %self.children[loss.child].name, offset = r.start, bytes = r.end - r.start, "child lost the vote");
                reports.bad(
                    Op::Read,
                    &self.children[loss.child].name,
                    r.start,
                    r.end - r.start,
                    None,
                );
                damage.push((loss.child, true, r.clone()));
            }
        }
        let answered: Vec<bool> = copies.iter().map(Option::is_some).collect();
        let answer = self.buffers.bytes(vote::assemble(&outcome, &mut copies));
        for copy in copies.into_iter().flatten() {
            self.buffers.give(copy);
        }
        let failures = tally.failures();
        let mut found = lost;
        if let Some(t) = found.as_deref_mut() {
            for loss in &outcome.losses {
                let bytes: u64 = loss.ranges.iter().map(|r| r.end - r.start).sum();
                t.add_lost(&self.children[loss.child].name, bytes);
            }
            // A scrub clears what it found good: every child that answered
            // agrees with the winner outside its losses.
            for (i, _) in answered.iter().enumerate().filter(|(_, a)| **a) {
                let losses = outcome.losses.iter().filter(|l| l.child == i);
                let cuts = unread(i).chain(losses.flat_map(|l| &l.ranges));
                damage.extend(
                    outside(offset..end, cuts)
                        .into_iter()
                        .map(|r| (i, false, r)),
                );
            }
        }
        if repair {
            let mut repairs: Vec<(usize, u64, Bytes)> = Vec::new();
            for loss in &outcome.losses {
                for r in &loss.ranges {
                    let rel = (r.start - offset) as usize..(r.end - offset) as usize;
                    repairs.push((loss.child, r.start, answer.slice(rel)));
                }
            }
            for (i, error) in failures {
                let stale = excluded.get(*i).is_some_and(|e| !e.is_empty());
                if error.is_repairable() && !stale {
                    repairs.push((*i, offset, answer.clone()));
                }
            }
            let tried: Vec<usize> = repairs.iter().map(|(c, _, _)| *c).collect();
            let done = self.rewrite(repairs, reports);
            damage.extend(
                done.iter()
                    .filter(|r| r.done)
                    .map(|r| (r.child, false, r.range.clone())),
            );
            if let Some(t) = found {
                t.repaired += done
                    .iter()
                    .filter(|r| r.done)
                    .map(|r| r.range.end - r.range.start)
                    .sum::<u64>();
                for (i, _) in failures.iter().filter(|(i, _)| !tried.contains(i)) {
                    t.add_unreached(&self.children[*i].name);
                }
                for r in done.iter().filter(|r| !r.done) {
                    t.add_unreached(&self.children[r.child].name);
                }
            }
        } else if let Some(t) = found {
            for (i, _) in failures {
                t.add_unreached(&self.children[*i].name);
            }
        }
        self.edit_damage(damage, reports);
        Ok(Voted::Answer(answer))
    }

    fn read_fifo(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        self.fifo_answer(offset, length, None, reports)
    }

    /// A fifo read, the first fresh child's answer given when it was read
    /// already (`first`, with the child's index).
    pub(super) fn fifo_answer(
        &self,
        offset: u64,
        length: usize,
        mut first: Option<(usize, Answer)>,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let bytes = length as u64;
        let stale = self.stale_within(offset..offset + bytes);
        let fresh: Vec<usize> = (0..self.children.len())
            .filter(|&i| stale.get(i).is_none_or(|r| r.is_empty()))
            .collect();
        let mut tally = self.tally(Op::Read, offset, bytes, fresh.len());
        for i in fresh {
            let answer = match first.take().filter(|(child, _)| *child == i) {
                Some(answer) => Some(answer),
                None => self
                    .dispatch(vec![(i, Request::Read { offset, length })])
                    .pop(),
            };
            match answer {
                Some((_, Ok(Reply::Data(data)))) => {
                    let data = self.buffers.bytes(data);
                    let unreadable = tally.failures().iter().filter(|(_, e)| e.is_repairable());
                    let mut damage: Vec<DamageEdit> = unreadable
                        .clone()
                        .map(|(c, _)| (*c, true, offset..offset + bytes))
                        .collect();
                    if self.options.rewrite_corrupted {
                        let repairs = unreadable
                            .map(|(c, _)| (*c, offset, data.clone()))
                            .collect();
                        let done = self.rewrite(repairs, reports);
                        damage.extend(
                            done.into_iter()
                                .filter(|r| r.done)
                                .map(|r| (r.child, false, r.range)),
                        );
                    }
                    self.edit_damage(damage, reports);
                    return Ok(data);
                }
                Some((_, Err(error))) => {
                    self.report_failed(reports, Op::Read, i, offset, bytes, &error);
                    tally.failed(i, error);
                }
                Some((_, Ok(_))) | None => {}
            }
        }
        let unreadable = tally.failures().iter().filter(|(_, e)| e.is_repairable());
        let damage: Vec<DamageEdit> = unreadable
            .map(|(c, _)| (*c, true, offset..offset + bytes))
            .collect();
        self.edit_damage(damage, reports);
        Err(self.fail(reports, self.quorum_error(tally, None)))
    }

    /// Writes good data back over children's bad ranges, in parallel.
    /// Returns what became of each repair, in order.
    pub(super) fn rewrite(
        &self,
        repairs: Vec<(usize, u64, Bytes)>,
        reports: &mut Reports<'_>,
    ) -> Vec<Repair> {
        if repairs.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::with_capacity(repairs.len());
        let spans: Vec<(u64, u64)> = repairs
            .iter()
            .map(|(_, o, d)| (*o, d.len() as u64))
            .collect();
        let jobs = repairs
            .into_iter()
            .map(|(child, offset, data)| (child, Request::Write { offset, data }))
            .collect();
        for ((child, result), (offset, bytes)) in self.dispatch(jobs).into_iter().zip(spans) {
            let ok = match result {
                Ok(_) => {
                    tracing::info!(volume = %self.options.name, child = %self.children[child].name, offset, bytes, "rewrote corrupted range");
                    reports.rewrite(&self.children[child].name, offset, bytes);
                    true
                }
                Err(error) => {
                    self.report_failed(reports, Op::Write, child, offset, bytes, &error);
                    false
                }
            };
            done.push(Repair {
                child,
                range: offset..offset + bytes,
                done: ok,
            });
        }
        done
    }
}

/// One repair that [`Volume::rewrite`] tried.
pub(super) struct Repair {
    /// The child's index.
    pub(super) child: usize,
    /// The bytes written.
    pub(super) range: Range<u64>,
    /// Whether the child took them.
    pub(super) done: bool,
}
