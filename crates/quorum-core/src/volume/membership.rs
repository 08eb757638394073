//! What a membership change needs: the children as they are, which of them
//! are still syncing, which one holds the only copy of a range, and the
//! volume that succeeds this one.

use std::ops::Range;
use std::path::Path;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::child::{FAILED, HEALTHY};
use super::{ChildInfo, ChildSpec, Volume, VolumeOptions};
use crate::child_state::{ChildState, Conditions};
use crate::error::OpenError;
use crate::stale::{FileStore, JournalStore, RangeSet};

impl Volume {
    /// Opens the volume that replaces `self` (a membership change), over
    /// the same journal at `journal`, once `self` serves no request: its
    /// write-intent regions carry over unreconciled (nothing crashed; they
    /// are reconciled if the new volume is not closed cleanly either).
    pub fn succeed(
        &self,
        options: VolumeOptions,
        children: Vec<ChildSpec>,
        journal: &Path,
    ) -> Result<Volume, OpenError> {
        let store = (
            Box::new(FileStore::new(journal)) as Box<dyn JournalStore>,
            journal.to_owned(),
        );
        let next = Volume::open_inner(options, children, self.sink.clone(), Some(store), false)?;
        {
            let old = self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut new = next
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, child) in next.children.iter().enumerate() {
                if let Some(j) = self.children.iter().position(|c| c.name == child.name) {
                    new[i] = old[j].clone();
                }
            }
        }
        Ok(next)
    }

    /// The children, in order.
    pub fn children(&self) -> Vec<ChildInfo> {
        let stale = self.stale_bytes();
        let damaged = self.damaged_bytes();
        let syncing = self
            .syncing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.children
            .iter()
            .enumerate()
            .map(|(i, c)| ChildInfo {
                name: c.name.clone(),
                backend: c.backend.kind(),
                state: ChildState::of(Conditions {
                    failed: c.state.load(Ordering::Relaxed) != HEALTHY,
                    syncing: syncing.contains(&c.name),
                    stale: stale[i] > 0,
                    damaged: damaged[i] > 0,
                }),
                stale_bytes: stale[i],
                damaged_bytes: damaged[i],
            })
            .collect()
    }

    /// The children as [`ChildSpec`]s (their backends shared), to open a
    /// volume with one child more or less.
    pub fn child_specs(&self) -> Vec<ChildSpec> {
        self.children
            .iter()
            .map(|c| ChildSpec {
                name: c.name.clone(),
                backend: c.backend.clone(),
                late: c.workers.late(),
                flush_errors: c.workers.flush_errors_shared(),
            })
            .collect()
    }

    /// The first range where `child` holds the only fresh copy: every other
    /// child is stale there and it is not. Removing `child` would leave that
    /// range with no copy to read or resync from.
    pub fn sole_copy(&self, child: &str) -> Option<Range<u64>> {
        let i = self.children.iter().position(|c| c.name == child)?;
        if self.children.len() < 2 || !self.any_stale.load(Ordering::Acquire) {
            return None;
        }
        let maps = self.stale_maps();
        let others: Vec<&RangeSet> = (0..maps.sets.len())
            .filter(|&j| j != i)
            .map(|j| &maps.sets[j])
            .collect();
        let (first, rest) = others.split_first()?;
        let mut common: Vec<Range<u64>> = first.within(0..self.size);
        for set in rest {
            common = common.into_iter().flat_map(|r| set.within(r)).collect();
        }
        common.into_iter().find_map(|r| {
            let mut fresh = RangeSet::default();
            fresh.insert(r.clone());
            for stale in maps.sets[i].within(r.clone()) {
                fresh.remove(stale);
            }
            fresh.first()
        })
    }

    /// Shows `child` as failed until a request to it succeeds: for a child
    /// whose storage could not be opened, before any request has failed on
    /// it. Says whether the volume has such a child.
    pub fn mark_failed(&self, child: &str) -> bool {
        let found = self.children.iter().find(|c| c.name == child);
        if let Some(c) = found {
            c.state.store(FAILED, Ordering::Relaxed);
        }
        found.is_some()
    }

    /// Says which children are syncing (joined and not yet copied): their
    /// stale ranges show as `syncing` rather than `stale`.
    pub fn set_syncing(&self, children: impl IntoIterator<Item = String>) {
        *self.syncing.lock().unwrap_or_else(PoisonError::into_inner) =
            children.into_iter().collect();
    }

    /// The children still marked as syncing.
    pub fn syncing(&self) -> Vec<String> {
        self.syncing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Ends the syncing of `child` (its copy is complete).
    pub fn done_syncing(&self, child: &str) -> bool {
        self.syncing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(child)
    }
}
