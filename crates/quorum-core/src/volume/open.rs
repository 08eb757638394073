//! Opening a volume: the options and the children are checked, and the
//! journal replayed, before any worker thread starts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex, OnceLock};

use super::child::{Child, HEALTHY};
use super::{ChildSpec, StaleMaps, Unflushed, Volume, VolumeOptions};
use crate::breaker::Breaker;
use crate::buffer::BufferPool;
use crate::error::OpenError;
use crate::event::EventSink;
use crate::intent::Intent;
use crate::ordering::RangeLock;
use crate::stale::{ChildKey, FileStore, Journal, JournalStore, Replayed};
use crate::worker::Workers;

impl Volume {
    /// Checks the options and the children (unique names, equal sizes), then
    /// starts each child's workers. Nothing is started if a check fails.
    /// The stale maps live in memory only; see [`Volume::open_journaled`].
    pub fn open(
        options: VolumeOptions,
        children: Vec<ChildSpec>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Volume, OpenError> {
        Volume::open_journaled(options, children, sink, None)
    }

    /// Like [`Volume::open`], with the children's stale maps kept in the
    /// journal file at `journal` (replayed now, appended to on every change),
    /// so that they survive a crash.
    pub fn open_journaled(
        options: VolumeOptions,
        children: Vec<ChildSpec>,
        sink: Arc<dyn EventSink>,
        journal: Option<&Path>,
    ) -> Result<Volume, OpenError> {
        let store = journal.map(|path| {
            (
                Box::new(FileStore::new(path)) as Box<dyn JournalStore>,
                path.to_owned(),
            )
        });
        Volume::open_with_store(options, children, sink, store)
    }

    /// Like [`Volume::open_journaled`], with the journal in `store` (named
    /// `path` in errors). When the journal holds write-intent regions (the
    /// volume was not closed cleanly), the children are reconciled there
    /// before this returns.
    pub fn open_with_store(
        options: VolumeOptions,
        children: Vec<ChildSpec>,
        sink: Arc<dyn EventSink>,
        store: Option<(Box<dyn JournalStore>, PathBuf)>,
    ) -> Result<Volume, OpenError> {
        Volume::open_inner(options, children, sink, store, true)
    }

    pub(super) fn open_inner(
        options: VolumeOptions,
        children: Vec<ChildSpec>,
        sink: Arc<dyn EventSink>,
        store: Option<(Box<dyn JournalStore>, PathBuf)>,
        reconcile: bool,
    ) -> Result<Volume, OpenError> {
        options.validate(children.len())?;
        let mut names = HashSet::new();
        for c in &children {
            if !names.insert(c.name.as_str()) {
                return Err(OpenError::DuplicateChild {
                    child: c.name.clone(),
                });
            }
        }
        let mut stores: Vec<(String, &str)> = Vec::with_capacity(children.len());
        for c in &children {
            let id = c.backend.identity();
            if let Some((_, other)) = stores.iter().find(|(s, _)| *s == id) {
                return Err(OpenError::SameStorage {
                    child: c.name.clone(),
                    other: (*other).to_owned(),
                });
            }
            stores.push((id, &c.name));
        }
        let mut size = None;
        for c in &children {
            let s = c.backend.size().map_err(|source| OpenError::Size {
                child: c.name.clone(),
                source,
            })?;
            match size {
                None => size = Some((s, c.name.clone())),
                Some((expected, ref first)) if expected != s => {
                    return Err(OpenError::SizeMismatch {
                        child: c.name.clone(),
                        size: s,
                        first: first.clone(),
                        expected,
                    });
                }
                Some(_) => {}
            }
        }
        let size = size.map_or(0, |(s, _)| s);
        let names: Vec<ChildKey> = children
            .iter()
            .map(|c| ChildKey {
                name: c.name.clone(),
                id: c.backend.identity(),
                known: c.backend.identity_known(),
            })
            .collect();
        let (journal, maps) = match store {
            Some((store, path)) => {
                let (j, maps) = Journal::open(store, &names)
                    .map_err(|source| OpenError::Journal { path, source })?;
                (Some(j), maps)
            }
            None => (None, Replayed::new(names.len())),
        };
        let Replayed {
            stale: sets,
            damaged,
            dirty,
        } = maps;
        let any_stale = AtomicBool::new(sets.iter().any(|s| !s.is_empty()));
        let any_damaged = AtomicBool::new(damaged.iter().any(|s| !s.is_empty()));
        let buffers = Arc::new(BufferPool::default());
        let mut started = Vec::with_capacity(children.len());
        for c in children {
            let workers = Workers::spawn(
                &c.name,
                c.backend.clone(),
                buffers.clone(),
                c.late.clone(),
                c.flush_errors.clone(),
            )
            .map_err(|source| OpenError::Spawn {
                child: c.name.clone(),
                source,
            })?;
            started.push(Child {
                name: c.name,
                backend: c.backend,
                workers,
                state: AtomicU8::new(HEALTHY),
                breaker: Breaker::default(),
            });
        }
        let unclean = !dirty.is_empty();
        let unflushed = started
            .iter()
            .map(|c| Unflushed::since(c.workers.flush_errors()))
            .collect();
        let volume = Volume {
            options,
            size,
            children: started,
            ranges: RangeLock::default(),
            buffers,
            stale: Mutex::new(StaleMaps {
                sets,
                damaged,
                journal,
                intent: Intent::with_dirty(dirty),
            }),
            syncing: Mutex::new(HashSet::new()),
            any_stale,
            any_damaged,
            unflushed: Mutex::new(unflushed),
            sink,
            resync_bell: Mutex::new(None),
            watchdog: OnceLock::new(),
        };
        if unclean && reconcile {
            volume.reconcile();
        }
        Ok(volume)
    }
}
