//! Writes, write zeroes, discards and flushes: the write-intent log before a write
//! goes out, the stale marks after it, and what a flush can promise.

use std::ops::Range;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::fanout::Outcomes;
use super::{StaleMaps, Unflushed, Volume};
use crate::backend::BackendError;
use crate::error::VolumeError;
use crate::event::Op;
use crate::intent::{FlushMark, Intent, Ticket as IntentTicket};
use crate::stale::{Live, RangeSet};
use crate::worker::{Request, Zeroing};

/// The most a child is asked to zero or discard in one job: a zeroing of
/// up to 4 GiB (NBD allows it) is sent in jobs of this size, each with its
/// own `child_timeout`, so that a child that takes its time over a large
/// one (an object store deleting or writing chunk by chunk) is not failed
/// for its length.
#[cfg(not(test))]
pub(crate) const ZERO_JOB: u64 = 64 << 20;

/// [`ZERO_JOB`] in the engine's tests, which need several jobs of small
/// children.
#[cfg(test)]
pub(crate) const ZERO_JOB: u64 = 1 << 20;

/// A client write registered with the write-intent log; ends it on drop.
struct Intending<'a> {
    volume: &'a Volume,
    ticket: Option<IntentTicket>,
}

impl Drop for Intending<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.volume.stale_maps().intent.end(ticket);
        }
    }
}

/// The error of a child that took a write or copy while a flush of it
/// failed: the write-back that failed may have held it.
pub(super) fn lost_to_a_failed_flush() -> BackendError {
    BackendError::Io(std::io::Error::other(
        "a flush of the child failed while the write was on its way: it may be lost",
    ))
}

impl Volume {
    /// Writes `data` at `offset` on every child.
    ///
    /// # Errors
    /// [`VolumeError::OutOfRange`] outside the volume (nothing is written);
    /// [`VolumeError::Quorum`] when fewer than `vote_threshold` children
    /// succeeded.
    pub fn write(&self, offset: u64, data: Bytes) -> Result<(), VolumeError> {
        let length = data.len() as u64;
        self.write_request(Op::Write, offset, length, length, |offset, _| {
            Request::Write {
                offset,
                data: data.clone(),
            }
        })
    }

    /// Makes `length` bytes at `offset` read as zero on every child, each
    /// deallocating them where its storage allows it.
    ///
    /// # Errors
    /// As [`Volume::write`].
    pub fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), VolumeError> {
        self.zero(Op::WriteZeroes, Zeroing::Zeroes, offset, length)
    }

    /// Makes `length` bytes at `offset` read as zero on every child and
    /// keeps them allocated (NBD's `NO_HOLE`): each child writes zeroes as
    /// data, in pieces, all within this one request, so that a read sees
    /// all of it or none of it.
    ///
    /// # Errors
    /// As [`Volume::write`].
    pub fn write_zeroes_allocated(&self, offset: u64, length: u64) -> Result<(), VolumeError> {
        self.zero(Op::WriteZeroes, Zeroing::Allocated, offset, length)
    }

    /// Discards `length` bytes at `offset` (SPEC section 10): the range
    /// reads as zero on every child afterwards, so no vote is lost, and
    /// each child frees the space where it can ([`crate::Backend::discard`]).
    /// A write in every other way: a child that fails it is stale there.
    ///
    /// # Errors
    /// As [`Volume::write`].
    pub fn discard(&self, offset: u64, length: u64) -> Result<(), VolumeError> {
        self.zero(Op::Discard, Zeroing::Discard, offset, length)
    }

    /// The write of zeroes that `how` says, counted as `op`: one request,
    /// sent to the children in jobs of at most [`ZERO_JOB`] bytes.
    fn zero(&self, op: Op, how: Zeroing, offset: u64, length: u64) -> Result<(), VolumeError> {
        self.write_request(op, offset, length, ZERO_JOB, |offset, length| {
            Request::WriteZeroes {
                offset,
                length,
                how,
            }
        })
    }

    /// The path of every client write of `length` bytes at `offset`: the
    /// range checked, held against overlapping requests and journaled as
    /// intended, then sent to every child in jobs of at most `job` bytes
    /// (`request` makes the job of a piece: its offset and length), one
    /// after the other under the one hold, so that a read sees all of the
    /// write or none of it and each job has its own `child_timeout`. The
    /// threshold decides each job, and the children that failed one are
    /// stale there; the first job without a quorum ends the write.
    fn write_request(
        &self,
        op: Op,
        offset: u64,
        length: u64,
        job: u64,
        request: impl Fn(u64, u64) -> Request,
    ) -> Result<(), VolumeError> {
        let end = self.check_range(offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let _guard = self.ranges.exclusive(offset, end);
        let _intent = self.intend(offset..end)?;
        let mut at = offset;
        while at < end {
            let n = (end - at).min(job.max(1));
            let before = self.flush_errors();
            let results = self.on_all(&request(at, n));
            self.write_answered(op, at, n, results, &before)?;
            at += n;
        }
        Ok(())
    }

    /// What a client write does once the children answered it (`results`,
    /// one per child, in child order; each child's count of failed flushes
    /// was `before` when it went out): a child a flush of which failed
    /// meanwhile may have lost it, as if it had failed it; the threshold
    /// decides, and the children that failed are stale there.
    pub(super) fn write_answered(
        &self,
        op: Op,
        offset: u64,
        length: u64,
        results: Outcomes,
        before: &[u64],
    ) -> Result<(), VolumeError> {
        let mut results = results;
        for (i, result) in results.iter_mut().enumerate() {
            if result.is_ok() && self.flush_failed_since(i, before) {
                *result = Err(lost_to_a_failed_flush());
            }
        }
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        self.require_quorum(op, offset, length, results, &mut self.reports())?;
        self.note_write(offset..offset + length, &failed, before)
    }

    /// Each child's count of flushes failed with an I/O error (see
    /// `Workers::flush_errors`), to take before a write goes out.
    pub(crate) fn flush_errors(&self) -> Vec<u64> {
        self.children
            .iter()
            .map(|c| c.workers.flush_errors())
            .collect()
    }

    /// Whether a flush of child `i` failed since its count was `before`.
    pub(super) fn flush_failed_since(&self, i: usize, before: &[u64]) -> bool {
        before
            .get(i)
            .is_some_and(|&b| self.children[i].workers.flush_errors() != b)
    }

    /// Registers a client write of `range` with the write-intent log: when
    /// its regions were not dirty yet, they are journaled dirty and synced
    /// before the write goes out. The write ends when the guard drops.
    ///
    /// # Errors
    /// [`VolumeError::Journal`] when the regions cannot be recorded; the
    /// write must not go out then.
    fn intend(&self, range: Range<u64>) -> Result<Intending<'_>, VolumeError> {
        let mut maps = self.stale_maps();
        let StaleMaps {
            sets,
            damaged,
            journal,
            intent,
        } = &mut *maps;
        let Some(j) = journal.as_mut() else {
            return Ok(Intending {
                volume: self,
                ticket: None,
            });
        };
        let regions = Intent::regions(&range, self.size);
        let (ticket, fresh) = intent.begin(regions);
        if !fresh.is_empty() {
            let recorded = fresh
                .iter()
                .try_for_each(|r| j.append_intent(true, r))
                .and_then(|()| {
                    j.sync(Live {
                        stale: sets,
                        damaged,
                        dirty: &intent.dirty,
                    })
                });
            if let Err(error) = recorded {
                intent.unrecorded(&fresh);
                intent.end(ticket);
                tracing::error!(volume = %self.options.name, %error, "cannot record a write intent");
                return Err(VolumeError::Journal(error));
            }
        }
        Ok(Intending {
            volume: self,
            ticket: Some(ticket),
        })
    }

    /// After a write that met its threshold: the children that failed it
    /// missed `range`; those that took it hold it again once their copy is
    /// flushed, so they are flushed before their stale marks are cleared (a
    /// clear must not outlive a power loss that the data did not). Their
    /// damage there is cleared at once: were the write lost with a power
    /// loss, the write-intent log has the region reconciled (scrubbed with
    /// repair) at the next open.
    fn note_write(
        &self,
        range: Range<u64>,
        failed: &[bool],
        before: &[u64],
    ) -> Result<(), VolumeError> {
        self.clear_damage_written(&range, failed);
        self.note_unflushed(&range, failed);
        if !failed.contains(&true)
            && !self.any_stale.load(Ordering::Acquire)
            && !(0..failed.len()).any(|i| self.flush_failed_since(i, before))
        {
            return Ok(());
        }
        self.note_stale_written(range, failed, before)
    }

    /// Records `range` as unflushed on each child that took it (not
    /// `failed`). Never waits for I/O.
    pub(super) fn note_unflushed(&self, range: &Range<u64>, failed: &[bool]) {
        let mut unflushed = self
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (u, _) in unflushed.iter_mut().zip(failed).filter(|(_, f)| !**f) {
            u.note(range);
        }
    }

    /// Records `range` as unflushed on `child`, which took it while its
    /// count of failed flushes was `since`: a later flush that finds the
    /// count moved marks it stale, even when the worker of a flush that
    /// failed before ours counted its failure only after we looked. `false`
    /// (nothing recorded) when the ranges now gathered began after the
    /// count moved past `since`: a flush of the child failed meanwhile. A
    /// failure counted before `since` does not mark it.
    pub(super) fn note_unflushed_since(
        &self,
        child: usize,
        range: &Range<u64>,
        since: u64,
    ) -> bool {
        let mut unflushed = self
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unflushed
            .get_mut(child)
            .is_some_and(|u| u.note_at(since, range))
    }

    /// The stale marks of a write of `range` when a child `failed` it, some
    /// child is stale, or a flush of a child failed since the write went
    /// out (the counts were `before`): the failed children are marked, so
    /// are those whose flush failed meanwhile (the write may be lost with
    /// that write-back, and Linux tells one `fsync` only), and those that
    /// took it are flushed before their marks there are cleared.
    pub(super) fn note_stale_written(
        &self,
        range: Range<u64>,
        failed: &[bool],
        before: &[u64],
    ) -> Result<(), VolumeError> {
        let refreshed: Vec<usize> = {
            let maps = self.stale_maps();
            (0..failed.len())
                .filter(|&i| !failed[i] && maps.sets[i].overlaps(range.clone()))
                .collect()
        };
        let flushed = self.flush_children(&refreshed);
        self.edit_stale((0..failed.len()).filter_map(|i| {
            let missed = failed[i] || self.flush_failed_since(i, before);
            (missed || flushed.contains(&i)).then(|| (i, missed, range.clone()))
        }))
    }

    /// Flushes `children` in parallel; returns those that flushed.
    fn flush_children(&self, children: &[usize]) -> Vec<usize> {
        if children.is_empty() {
            return Vec::new();
        }
        let jobs = children.iter().map(|&i| (i, Request::Flush)).collect();
        let mut reports = self.reports();
        self.dispatch(jobs)
            .into_iter()
            .filter_map(|(i, result)| match result {
                Ok(_) => Some(i),
                Err(error) => {
                    self.report_failed(&mut reports, Op::Flush, i, 0, 0, &error);
                    None
                }
            })
            .collect()
    }

    /// Flushes every child in parallel, then syncs the stale-map journal:
    /// once this returns, every write acknowledged before it began is on
    /// `vote_threshold` children and the record of who missed it survives a
    /// power loss.
    ///
    /// # Errors
    /// [`VolumeError::Quorum`] when fewer than `vote_threshold` children
    /// flushed; [`VolumeError::Journal`] when the journal cannot be synced.
    pub fn flush(&self) -> Result<(), VolumeError> {
        let mark = self.stale_maps().intent.flush_started();
        let result = self.flush_children_and_journal();
        self.flush_ended(mark, matches!(result, Ok(true)), false);
        result.map(drop)
    }

    /// Flushes, and when every child flushed, records every write-intent
    /// region clean (synced) but those of writes that raced the flush, so
    /// that the next open over the same journal has nothing to reconcile.
    /// For a volume that is being closed or replaced (a membership change),
    /// after its requests ended.
    ///
    /// # Errors
    /// As [`Volume::flush`].
    pub fn flush_and_settle(&self) -> Result<(), VolumeError> {
        let mark = self.stale_maps().intent.flush_started();
        let result = self.flush_children_and_journal();
        if self.flush_ended(mark, matches!(result, Ok(true)), true) {
            self.sync_journal()?;
        }
        result.map(drop)
    }

    /// Journals clean the regions a flush that began with `mark` found idle
    /// (see `Intent::flush_ended`), in the same critical section that takes
    /// them out of the dirty set, so that no newer dirty record of theirs
    /// can come before. Not synced: a clean record lost in a crash only
    /// makes the next open reconcile the region again. Says whether any
    /// region was cleaned.
    fn flush_ended(&self, mark: FlushMark, complete: bool, settle: bool) -> bool {
        let mut maps = self.stale_maps();
        let StaleMaps {
            journal, intent, ..
        } = &mut *maps;
        let clean = intent.flush_ended(mark, complete, settle);
        if let Some(j) = journal.as_mut() {
            for r in &clean {
                if let Err(error) = j.append_intent(false, r) {
                    tracing::warn!(volume = %self.options.name, %error, "cannot record a clean write-intent region");
                }
            }
        }
        !clean.is_empty()
    }

    /// The work of [`Volume::flush`]; says whether every child flushed.
    fn flush_children_and_journal(&self) -> Result<bool, VolumeError> {
        let mut covered: Vec<Unflushed> = {
            let mut unflushed = self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let next = self
                .children
                .iter()
                .map(|c| Unflushed::since(c.workers.flush_errors()))
                .collect();
            std::mem::replace(&mut *unflushed, next)
        };
        let results = self.on_all(&Request::Flush);
        let complete = results.iter().all(Result::is_ok);
        // A child that answered its flush with an I/O error may have lost
        // what it took since its last good flush (the kernel may drop what
        // it could not write): it is stale there until resynced. So is a
        // child of which any other flush failed since it took those ranges
        // (Linux reports a failed write-back to one `fsync` only). A child
        // that could not be reached keeps those ranges for its next flush.
        let lost: Vec<(usize, RangeSet)> = {
            let mut unflushed = self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            results
                .iter()
                .zip(covered.iter_mut())
                .enumerate()
                .map(|(i, (result, taken))| {
                    let count = self.children[i].workers.flush_errors();
                    let lost = match result {
                        Err(e) if e.is_repairable() => taken.take_all(),
                        Ok(_) => taken.take_lost(count),
                        Err(_) => {
                            let lost = taken.take_lost(count);
                            unflushed[i].keep(std::mem::take(taken));
                            lost
                        }
                    };
                    (i, lost)
                })
                .collect()
        };
        let mut reports = self.reports();
        let marked = self.edit_stale(lost.iter().flat_map(|(i, set)| {
            set.within(0..self.size)
                .into_iter()
                .map(move |r| (*i, true, r))
        }));
        self.require_quorum(Op::Flush, 0, 0, results, &mut reports)?;
        marked?;
        if let Some(range) = self.under_threshold() {
            // Too few fresh copies there: as if too few children flushed it.
            let (offset, bytes) = (range.start, range.end - range.start);
            let short = self.tally(Op::Flush, offset, bytes, self.options.vote_threshold - 1);
            return Err(self.fail(&mut reports, self.quorum_error(short, None)));
        }
        self.sync_journal()?;
        Ok(complete)
    }
}
