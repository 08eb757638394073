//! Each child's stale ranges (the writes it missed), kept in memory and in
//! the journal, and what the rest of the volume asks of them.

use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use super::{ResyncBell, Volume};
use crate::error::VolumeError;
use crate::intent::Intent;
use crate::stale::{Journal, Live, RangeSet};

/// Every child's stale ranges, and their journal.
pub(super) struct StaleMaps {
    pub(super) sets: Vec<RangeSet>,
    /// Every child's damaged ranges (see the `damage` module), kept in the
    /// same journal.
    pub(super) damaged: Vec<RangeSet>,
    pub(super) journal: Option<Journal>,
    /// The write-intent regions (kept only with a journal).
    pub(super) intent: Intent,
}

impl StaleMaps {
    /// The journal, when the volume has one, with a view of the live maps.
    fn journal_and_live(&mut self) -> Option<(&mut Journal, Live<'_>)> {
        let StaleMaps {
            sets,
            damaged,
            journal,
            intent,
        } = self;
        let live = Live {
            stale: sets,
            damaged,
            dirty: &intent.dirty,
        };
        journal.as_mut().map(|j| (j, live))
    }

    /// Compacts the journal if it has grown well past the live maps (see
    /// [`Journal::catch_up`]).
    pub(super) fn catch_up(&mut self) -> io::Result<()> {
        self.journal_and_live()
            .map_or(Ok(()), |(j, live)| j.catch_up(live))
    }

    /// Makes the journal durable as the live maps are now (see
    /// [`Journal::sync`]).
    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.journal_and_live()
            .map_or(Ok(()), |(j, live)| j.sync(live))
    }
}

impl Volume {
    /// Marks `ranges` stale on child `child`, durably (journaled and synced
    /// on return): what a new child must receive before it can be read.
    ///
    /// # Errors
    /// [`VolumeError::Journal`] when the marks cannot be journaled (they
    /// hold in memory all the same).
    pub fn mark_stale(&self, child: &str, ranges: &[Range<u64>]) -> Result<(), VolumeError> {
        let Some(i) = self.children.iter().position(|c| c.name == child) else {
            return Ok(());
        };
        self.edit_stale(ranges.iter().map(|r| (i, true, r.clone())))?;
        self.sync_journal()
    }

    /// Marks (`true`) or clears (`false`) ranges of children's stale maps,
    /// journaling each change that changes something. A mark holds in
    /// memory even when it cannot be journaled (the child is not read
    /// there either way); a clear holds only once journaled.
    ///
    /// # Errors
    /// [`VolumeError::Journal`] for the first change that could not be
    /// journaled; the others are still made.
    pub(super) fn edit_stale(
        &self,
        edits: impl IntoIterator<Item = (usize, bool, Range<u64>)>,
    ) -> Result<(), VolumeError> {
        let mut maps = self.stale_maps();
        let StaleMaps { sets, journal, .. } = &mut *maps;
        let mut failed = None;
        let mut marked = false;
        for (i, stale, range) in edits {
            if stale {
                if sets[i].within(range.clone()) == [range.clone()] {
                    continue;
                }
                sets[i].insert(range.clone());
                marked = true;
            } else if !sets[i].overlaps(range.clone()) {
                continue;
            }
            let journaled = match journal.as_mut() {
                Some(j) => j.append(if stale { '+' } else { '-' }, i, &range),
                None => Ok(()),
            };
            match journaled {
                Ok(()) if !stale => sets[i].remove(range),
                Ok(()) => {}
                Err(error) => {
                    tracing::error!(volume = %self.options.name, child = %self.children[i].name, %error, "cannot journal a stale range");
                    failed.get_or_insert(error);
                }
            }
        }
        self.any_stale
            .store(sets.iter().any(|s| !s.is_empty()), Ordering::Release);
        // The records are in; a compaction that fails is tried again at the
        // next change or flush (which fails if it still cannot).
        if let Err(error) = maps.catch_up() {
            tracing::error!(volume = %self.options.name, %error, "cannot compact the stale-map journal");
        }
        drop(maps);
        if marked {
            self.ring_resync_bell();
        }
        match failed {
            None => Ok(()),
            Some(source) => Err(VolumeError::Journal(source)),
        }
    }

    /// Sets what the volume calls whenever a range is marked stale (`None`
    /// for nothing): the resync worker's wake-up. It is called on the thread
    /// that marked the range, with no lock of the volume held, so it must
    /// be quick and must not call back into the volume.
    pub fn set_resync_bell(&self, bell: Option<ResyncBell>) {
        *self
            .resync_bell
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bell;
    }

    fn ring_resync_bell(&self) {
        let bell = self
            .resync_bell
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(ring) = bell {
            ring();
        }
    }

    /// Whether a write-intent region that a reconcile could not finish waits
    /// for the resync to try it again ([`Volume::resync_step`] does).
    pub fn awaits_reconcile(&self) -> bool {
        !self.stale_maps().intent.unreconciled.is_empty()
    }

    /// Bytes each child has stale, in child order.
    pub fn stale_bytes(&self) -> Vec<u64> {
        if !self.any_stale.load(Ordering::Acquire) {
            return vec![0; self.children.len()];
        }
        self.stale_maps().sets.iter().map(RangeSet::bytes).collect()
    }

    pub(super) fn stale_maps(&self) -> MutexGuard<'_, StaleMaps> {
        self.stale.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each child's stale ranges within `range`, or empty lists when none.
    pub(super) fn stale_within(&self, range: Range<u64>) -> Vec<Vec<Range<u64>>> {
        if !self.any_stale.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.stale_maps()
            .sets
            .iter()
            .map(|s| s.within(range.clone()))
            .collect()
    }

    /// `child`'s stale ranges within `range`, in order.
    pub(super) fn stale_of(&self, child: usize, range: Range<u64>) -> Vec<Range<u64>> {
        if !self.any_stale.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.stale_maps().sets[child].within(range)
    }

    /// Makes the stale maps durable as they are now (see
    /// [`Volume::flush`]).
    ///
    /// # Errors
    /// [`VolumeError::Journal`] when the journal cannot be synced.
    pub fn sync_journal(&self) -> Result<(), VolumeError> {
        self.stale_maps().sync().map_err(VolumeError::Journal)
    }

    /// The first range that is fresh on fewer than `vote_threshold`
    /// children (left so by children whose flush failed): a flush cannot
    /// promise what is there until the resync or a write has made enough
    /// copies again.
    pub(super) fn under_threshold(&self) -> Option<Range<u64>> {
        if !self.any_stale.load(Ordering::Acquire) {
            return None;
        }
        let maps = self.stale_maps();
        let mut cuts: Vec<u64> = maps
            .sets
            .iter()
            .flat_map(|s| s.within(0..self.size))
            .flat_map(|r| [r.start, r.end])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2).map(|w| w[0]..w[1]).find(|r| {
            let fresh = maps.sets.iter().filter(|s| !s.overlaps(r.clone())).count();
            fresh < self.options.vote_threshold
        })
    }
}
