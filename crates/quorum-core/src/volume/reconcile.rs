//! Write-intent reconciliation: after a crash, the children are made to
//! agree where writes were in flight.

use std::ops::Range;

use super::{StaleMaps, Volume};
use crate::vote;
use crate::worker::{Reply, Request};

/// How much of a dirty region one reconcile step scrubs.
const RECONCILE_STEP: u64 = 1 << 20;

impl Volume {
    /// Makes the children agree where writes may not have been flushed
    /// everywhere before the volume was last closed (its dirty write-intent
    /// regions): each region is scrubbed with repair (voted, the losers
    /// rewritten), a child that cannot be read or repaired there is marked
    /// stale, and once every child flushed the regions are recorded clean.
    /// Runs when a volume opens after a crash, before it serves anything.
    pub(super) fn reconcile(&self) {
        let regions = self.stale_maps().intent.dirty.within(0..self.size);
        tracing::warn!(volume = %self.options.name, regions = regions.len(), "the volume was not closed cleanly: reconciling the children where writes were in flight");
        self.reconcile_regions(regions);
    }

    /// Reconciles the first region a reconcile could not finish before, if
    /// any (the resync calls it, so that it is tried again while the volume
    /// serves). Says whether one was tried.
    pub(super) fn reconcile_pending(&self) -> bool {
        let pending = self.stale_maps().intent.unreconciled.first();
        match pending {
            Some(region) => {
                self.reconcile_regions(vec![region]);
                true
            }
            None => false,
        }
    }

    /// See [`Volume::reconcile`]. A region that cannot be finished now (the
    /// scrub fails, or marking the children it missed would leave a range
    /// fresh on fewer than `vote_threshold` children) stays dirty and is
    /// listed as unreconciled: no flush cleans it, and the resync tries it
    /// again.
    fn reconcile_regions(&self, regions: Vec<Range<u64>>) {
        let mut done = Vec::new();
        let mut left = Vec::new();
        for region in regions {
            let mut finished = true;
            let mut at = region.start;
            while at < region.end {
                let n = (region.end - at).min(RECONCILE_STEP);
                finished &= self.reconcile_step(at..at + n);
                at += n;
            }
            if finished {
                done.push(region);
            } else {
                left.push(region);
            }
        }
        let flushed = self.on_all(&Request::Flush).iter().all(Result::is_ok);
        if !flushed || self.sync_journal().is_err() {
            left.append(&mut done);
        }
        {
            let mut maps = self.stale_maps();
            let StaleMaps {
                journal, intent, ..
            } = &mut *maps;
            for r in &left {
                intent.unreconciled.insert(r.clone());
            }
            for r in &done {
                intent.unreconciled.remove(r.clone());
                intent.dirty.remove(r.clone());
                if let Some(j) = journal.as_mut() {
                    if let Err(error) = j.append_intent(false, r) {
                        tracing::warn!(volume = %self.options.name, %error, "cannot record a reconciled region clean");
                    }
                }
            }
        }
        if !left.is_empty() {
            tracing::error!(volume = %self.options.name, regions = left.len(), "some regions could not be reconciled; they stay dirty and are tried again");
        }
        if !done.is_empty() {
            if let Err(error) = self.sync_journal() {
                tracing::warn!(volume = %self.options.name, %error, "cannot sync the reconciled regions clean");
            }
        }
    }

    /// Reconciles `step` of a dirty region; says whether it is done.
    fn reconcile_step(&self, step: Range<u64>) -> bool {
        let (at, n) = (step.start, step.end - step.start);
        let mut missed: Vec<usize> = if self.options.blkverify {
            // Two children that must be equal: the tie rule settles them.
            self.settle(step.clone())
        } else {
            match self.scrub(at, n, true) {
                Ok(found) => {
                    let mut missed: Vec<usize> = found
                        .unreached
                        .iter()
                        .filter_map(|c| self.children.iter().position(|x| x.name == *c))
                        .collect();
                    for block in &found.unrecoverable {
                        missed.extend(self.settle(block.clone()));
                    }
                    missed
                }
                Err(error) => {
                    tracing::warn!(volume = %self.options.name, offset = at, bytes = n, %error, "cannot reconcile a region now");
                    return false;
                }
            }
        };
        missed.sort_unstable();
        missed.dedup();
        if missed.is_empty() {
            return true;
        }
        // The children it missed may differ there: stale, unless that would
        // leave the step on fewer than vote_threshold fresh children (then
        // it is tried again later rather than made unreadable).
        let fresh = {
            let maps = self.stale_maps();
            (0..self.children.len())
                .filter(|i| !missed.contains(i) && !maps.sets[*i].overlaps(step.clone()))
                .count()
        };
        if fresh < self.options.vote_threshold {
            return false;
        }
        let marks = missed.into_iter().map(|i| (i, true, step.clone()));
        match self.edit_stale(marks) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(volume = %self.options.name, %error, "cannot mark the children a reconcile missed");
                false
            }
        }
    }

    /// Makes the children agree on `block`, which has no majority after a
    /// crash (each version is a write that was in flight): the version of
    /// the most children wins, ties to the lowest-indexed child, as md's
    /// resync after an unclean shutdown copies one disk's version. Returns
    /// the children that could not be read or written (to be marked stale).
    fn settle(&self, block: Range<u64>) -> Vec<usize> {
        let _guard = self.ranges.exclusive(block.start, block.end);
        let (offset, length) = (block.start, (block.end - block.start) as usize);
        let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(self.children.len());
        let mut missed = Vec::new();
        for (i, result) in self
            .on_all(&Request::Read { offset, length })
            .into_iter()
            .enumerate()
        {
            match result {
                Ok(Reply::Data(data)) => copies.push(Some(data)),
                _ => {
                    missed.push(i);
                    copies.push(None);
                }
            }
        }
        let excluded = self.stale_within(block.clone());
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let Ok(outcome) = vote::vote_masked(offset, &views, 1, &excluded) else {
            return missed;
        };
        let losers: Vec<usize> = outcome.losses.iter().map(|l| l.child).collect();
        let answer = self.buffers.bytes(vote::assemble(&outcome, &mut copies));
        let repairs = losers
            .into_iter()
            .map(|i| (i, offset, answer.clone()))
            .collect();
        let mut reports = self.reports();
        let done = self.rewrite(repairs, &mut reports);
        missed.extend(done.iter().filter(|r| !r.done).map(|r| r.child));
        let repaired = done
            .into_iter()
            .filter(|r| r.done)
            .map(|r| (r.child, false, r.range));
        self.edit_damage(repaired, &mut reports);
        missed
    }
}
