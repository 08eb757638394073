//! A volume: one virtual disk kept on N children, voted on every read.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, Extent};
use crate::breaker::Breaker;
use crate::buffer::BufferPool;
use crate::child_state::ChildState;
use crate::error::{ChildFailure, OpenError, QuorumError, VolumeError};
use crate::event::{Event, EventSink, Op};
use crate::extents::{ZeroMerge, child_page};
use crate::intent::{FlushMark, Intent, Ticket as IntentTicket};
use crate::ordering::RangeLock;
use crate::report::Reports;
use crate::stale::{ChildKey, FileStore, Journal, JournalStore, RangeSet};
use crate::vote::{self, VoteError};
use crate::worker::{Reply, Request, Ticket, Workers};

/// How reads pick their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPattern {
    /// Read every child and vote.
    #[default]
    Quorum,
    /// Read child 0, then the next child on error; no vote.
    Fifo,
}

impl ReadPattern {
    /// The config name: `quorum` or `fifo`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPattern::Quorum => "quorum",
            ReadPattern::Fifo => "fifo",
        }
    }
}

/// A volume's settings, as QEMU's quorum options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    /// The volume's name, used in events.
    pub name: String,
    /// Children that must agree for a read, or succeed for a write.
    pub vote_threshold: usize,
    /// How reads pick their answer.
    pub read_pattern: ReadPattern,
    /// Write the winning data back over children that lost a vote or failed.
    pub rewrite_corrupted: bool,
    /// Two children that must be identical; any difference fails the read
    /// and names the first differing byte.
    pub blkverify: bool,
    /// How long a request waits for one child: past it, the child counts as
    /// failed for that request (and goes stale for a write) and the request
    /// completes with the others' answers.
    pub child_timeout: Duration,
}

impl VolumeOptions {
    /// The default `child_timeout`.
    pub const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(30);
}

impl VolumeOptions {
    /// Checks the options against a number of children, as QEMU does when it
    /// opens a quorum.
    pub fn validate(&self, children: usize) -> Result<(), OpenError> {
        let threshold = self.vote_threshold;
        if children == 0 {
            return Err(OpenError::NoChildren);
        }
        if threshold == 0 || threshold > children {
            return Err(OpenError::Threshold {
                threshold,
                children,
            });
        }
        if self.blkverify && (children != 2 || threshold != 2) {
            return Err(OpenError::Blkverify {
                threshold,
                children,
            });
        }
        if self.blkverify && self.rewrite_corrupted {
            return Err(OpenError::BlkverifyRewrite);
        }
        Ok(())
    }
}

/// One child as given to [`Volume::open`].
pub struct ChildSpec {
    /// Its name in events and metrics.
    pub name: String,
    /// Where its copy lives.
    pub backend: Arc<dyn Backend>,
    /// Its calls abandoned past `child_timeout` that have not returned,
    /// shared by every volume opened over this backend (a membership change
    /// opens a new one), so that none sends it anything meanwhile.
    late: Arc<AtomicUsize>,
}

impl ChildSpec {
    /// A child named `name` over `backend`.
    pub fn new(name: impl Into<String>, backend: Arc<dyn Backend>) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            backend,
            late: Arc::default(),
        }
    }
}

/// A child as the API lists it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Its name.
    pub name: String,
    /// Its backend kind.
    pub backend: &'static str,
    /// Its state.
    pub state: ChildState,
    /// Bytes it has stale (missed writes not yet resynced).
    pub stale_bytes: u64,
}

struct Child {
    name: String,
    backend: Arc<dyn Backend>,
    workers: Workers,
    state: AtomicU8,
    breaker: Breaker,
}

const HEALTHY: u8 = 0;
const FAILED: u8 = 1;

/// One virtual disk on N children.
///
/// Every method blocks the calling thread until the children have answered;
/// the children work in parallel on their own threads. Requests that
/// overlap are ordered (see the `ordering` module); others run concurrently.
pub struct Volume {
    options: VolumeOptions,
    size: u64,
    children: Vec<Child>,
    ranges: RangeLock,
    buffers: Arc<BufferPool>,
    stale: Mutex<StaleMaps>,
    syncing: Mutex<HashSet<String>>,
    /// Whether any child has a stale range: lets requests skip the lock.
    any_stale: AtomicBool,
    /// What each child took since its last good flush (coarsened, see
    /// [`UNFLUSHED_GRAIN`]): where a child whose flush fails may have lost
    /// data, so it is marked stale there.
    unflushed: Mutex<Vec<RangeSet>>,
    sink: Arc<dyn EventSink>,
}

/// The unflushed ranges of a child are kept in whole vote blocks, and
/// collapsed into one range past [`UNFLUSHED_RANGES`]: a bounded map that
/// may only say too much.
const UNFLUSHED_GRAIN: u64 = vote::VOTE_BLOCK;
/// See [`UNFLUSHED_GRAIN`].
const UNFLUSHED_RANGES: usize = 1 << 16;

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

/// How much of a dirty region one reconcile step scrubs.
const RECONCILE_STEP: u64 = 1 << 20;

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

/// What a scrub of a range found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Bytes each child lost votes on, by child name (children with none
    /// are absent).
    pub lost: Vec<(String, u64)>,
    /// Bytes written back over losers and failed children.
    pub repaired: u64,
    /// Blocks where no version reached the threshold: not repaired.
    pub unrecoverable: Vec<Range<u64>>,
    /// Children that could not be read, or (with repair) not repaired: the
    /// range may still differ on them.
    pub unreached: Vec<String>,
}

impl Scrubbed {
    fn add_unreached(&mut self, child: &str) {
        if !self.unreached.iter().any(|c| c == child) {
            self.unreached.push(child.to_owned());
        }
    }

    fn add_lost(&mut self, child: &str, bytes: u64) {
        match self.lost.iter_mut().find(|(c, _)| c == child) {
            Some((_, b)) => *b += bytes,
            None => self.lost.push((child.to_owned(), bytes)),
        }
    }

    /// Adds another range's findings to these.
    pub fn merge(&mut self, other: Scrubbed) {
        for (child, bytes) in other.lost {
            self.add_lost(&child, bytes);
        }
        self.repaired += other.repaired;
        self.unrecoverable.extend(other.unrecoverable);
        for child in other.unreached {
            self.add_unreached(&child);
        }
    }
}

/// Every child's stale ranges, and their journal.
struct StaleMaps {
    sets: Vec<RangeSet>,
    journal: Option<Journal>,
    /// The write-intent regions (kept only with a journal).
    intent: Intent,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("options", &self.options)
            .field("size", &self.size)
            .field(
                "children",
                &self
                    .children
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A child's result within one request.
type Outcomes = Vec<Result<Reply, BackendError>>;

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

    fn open_inner(
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
            })
            .collect();
        let (journal, sets, dirty) = match store {
            Some((store, path)) => {
                let (j, sets, dirty) = Journal::open(store, &names)
                    .map_err(|source| OpenError::Journal { path, source })?;
                (Some(j), sets, dirty)
            }
            None => (
                None,
                vec![RangeSet::default(); names.len()],
                RangeSet::default(),
            ),
        };
        let any_stale = AtomicBool::new(sets.iter().any(|s| !s.is_empty()));
        let n_children = names.len();
        let buffers = Arc::new(BufferPool::default());
        let mut started = Vec::with_capacity(children.len());
        for c in children {
            let workers =
                Workers::spawn(&c.name, c.backend.clone(), buffers.clone(), c.late.clone())
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
        let volume = Volume {
            options,
            size,
            children: started,
            ranges: RangeLock::default(),
            buffers,
            stale: Mutex::new(StaleMaps {
                sets,
                journal,
                intent: Intent::with_dirty(dirty),
            }),
            syncing: Mutex::new(HashSet::new()),
            any_stale,
            unflushed: Mutex::new(vec![RangeSet::default(); n_children]),
            sink,
        };
        if unclean && reconcile {
            volume.reconcile();
        }
        Ok(volume)
    }

    /// The volume's settings.
    pub fn options(&self) -> &VolumeOptions {
        &self.options
    }

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The children, in order.
    pub fn children(&self) -> Vec<ChildInfo> {
        let stale = self.stale_bytes();
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
                state: if c.state.load(Ordering::Relaxed) != HEALTHY {
                    ChildState::Failed
                } else if stale[i] > 0 && syncing.contains(&c.name) {
                    ChildState::Syncing
                } else if stale[i] > 0 {
                    ChildState::Stale
                } else {
                    ChildState::Healthy
                },
                stale_bytes: stale[i],
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
            })
            .collect()
    }

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
    fn edit_stale(
        &self,
        edits: impl IntoIterator<Item = (usize, bool, Range<u64>)>,
    ) -> Result<(), VolumeError> {
        let mut maps = self.stale_maps();
        let StaleMaps {
            sets,
            journal,
            intent,
        } = &mut *maps;
        let mut failed = None;
        for (i, stale, range) in edits {
            if stale {
                if sets[i].within(range.clone()) == [range.clone()] {
                    continue;
                }
                sets[i].insert(range.clone());
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
        if let Some(j) = journal.as_mut() {
            // The records are in; a compaction that fails is tried again at
            // the next change or flush (which fails if it still cannot).
            if let Err(error) = j.catch_up(sets, &intent.dirty) {
                tracing::error!(volume = %self.options.name, %error, "cannot compact the stale-map journal");
            }
        }
        self.any_stale
            .store(sets.iter().any(|s| !s.is_empty()), Ordering::Release);
        match failed {
            None => Ok(()),
            Some(source) => Err(VolumeError::Journal(source)),
        }
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

    /// Bytes each child has stale, in child order.
    pub fn stale_bytes(&self) -> Vec<u64> {
        if !self.any_stale.load(Ordering::Acquire) {
            return vec![0; self.children.len()];
        }
        self.stale_maps().sets.iter().map(RangeSet::bytes).collect()
    }

    fn stale_maps(&self) -> std::sync::MutexGuard<'_, StaleMaps> {
        self.stale.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each child's stale ranges within `range`, or empty lists when none.
    fn stale_within(&self, range: Range<u64>) -> Vec<Vec<Range<u64>>> {
        if !self.any_stale.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.stale_maps()
            .sets
            .iter()
            .map(|s| s.within(range.clone()))
            .collect()
    }

    /// After a write that met its threshold: the children that failed it
    /// missed `range`; those that took it hold it again once their copy is
    /// flushed, so they are flushed before their stale marks are cleared (a
    /// clear must not outlive a power loss that the data did not).
    fn note_write(&self, range: Range<u64>, failed: &[bool]) -> Result<(), VolumeError> {
        {
            let grain = range.start - range.start % UNFLUSHED_GRAIN
                ..range.end.div_ceil(UNFLUSHED_GRAIN) * UNFLUSHED_GRAIN;
            let mut unflushed = self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (set, _) in unflushed.iter_mut().zip(failed).filter(|(_, f)| !**f) {
                set.insert(grain.clone());
                if set.len() > UNFLUSHED_RANGES {
                    if let (Some(first), Some(last)) = (set.first(), set.last()) {
                        set.insert(first.start..last.end);
                    }
                }
            }
        }
        if !failed.contains(&true) && !self.any_stale.load(Ordering::Acquire) {
            return Ok(());
        }
        let refreshed: Vec<usize> = {
            let maps = self.stale_maps();
            (0..failed.len())
                .filter(|&i| !failed[i] && maps.sets[i].overlaps(range.clone()))
                .collect()
        };
        let flushed = self.flush_children(&refreshed);
        self.edit_stale(
            failed
                .iter()
                .enumerate()
                .filter(|&(i, &missed)| missed || flushed.contains(&i))
                .map(|(i, &missed)| (i, missed, range.clone())),
        )
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

    /// Reads `offset..offset+length` through the vote, whatever the read
    /// pattern, and says which children lost votes there; with `repair`, the
    /// winning data is written back over them. A block without a majority
    /// is not repaired: it is listed as unrecoverable, and the blocks around
    /// it are still scrubbed. This is one step of a scrub, which is md's
    /// check/repair or ZFS's scrub with the vote deciding.
    ///
    /// # Errors
    /// When the range cannot be read at all (too few children answer).
    pub fn scrub(&self, offset: u64, length: u64, repair: bool) -> Result<Scrubbed, VolumeError> {
        let end = self.check_range(offset, length)?;
        let mut found = Scrubbed::default();
        let mut reports = self.reports();
        let whole = {
            let _guard = self.ranges.shared(offset, end);
            self.read_voted(
                offset,
                length as usize,
                &mut reports,
                repair,
                Some(&mut found),
            )
        };
        match whole {
            Ok(_) => Ok(found),
            Err(VolumeError::Quorum(q)) if q.no_majority.is_some() => {
                // The blocks are read again one by one: each finding is
                // reported (and each unrecoverable block counted) there.
                reports.discard();
                // Find the blocks without a majority, one block at a time.
                let mut found = Scrubbed::default();
                let mut at = offset;
                while at < end {
                    let next = ((at / vote::VOTE_BLOCK + 1) * vote::VOTE_BLOCK).min(end);
                    let _guard = self.ranges.shared(at, next);
                    match self.read_voted(
                        at,
                        (next - at) as usize,
                        &mut reports,
                        repair,
                        Some(&mut found),
                    ) {
                        Ok(_) => {}
                        Err(VolumeError::Quorum(q)) if q.no_majority.is_some() => {
                            found.unrecoverable.push(at..next)
                        }
                        Err(e) => return Err(e),
                    }
                    at = next;
                }
                Ok(found)
            }
            Err(e) => Err(e),
        }
    }

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
        if whole != range && self.copy_stale(child, whole.clone(), &mut reports).is_ok() {
            return ResyncStep::Copied {
                child: name,
                next: whole.end,
                range: whole,
            };
        }
        match self.copy_stale(child, range.clone(), &mut reports) {
            Ok(()) => ResyncStep::Copied {
                child: name,
                next: range.end,
                range,
            },
            Err(VolumeError::Quorum(QuorumError {
                no_majority: Some(VoteError::NoMajority { offset, length, .. }),
                ..
            })) if offset > range.start => {
                let before = range.start..offset;
                match self.copy_stale(child, before.clone(), &mut reports) {
                    Ok(()) => ResyncStep::Copied {
                        child: name,
                        range: before,
                        next: offset + length,
                    },
                    Err(error) => ResyncStep::Failed {
                        child: name,
                        range: before,
                        error,
                    },
                }
            }
            Err(error) => {
                let skip = match &error {
                    VolumeError::Quorum(QuorumError {
                        no_majority: Some(VoteError::NoMajority { offset, length, .. }),
                        ..
                    }) => *offset..offset + length,
                    _ => range.clone(),
                };
                ResyncStep::Failed {
                    child: name,
                    range: skip,
                    error,
                }
            }
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
    /// is not stale; it is written, flushed, and only then cleared.
    fn copy_stale(
        &self,
        child: usize,
        range: Range<u64>,
        reports: &mut Reports<'_>,
    ) -> Result<(), VolumeError> {
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
                        },
                    )])
                    .pop(),
            };
            return self.settle_copy(child, range, done, reports);
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
        let mut copies: Vec<Option<Vec<u8>>> = (0..self.children.len()).map(|_| None).collect();
        for (i, result) in self.dispatch(others) {
            match result {
                Ok(Reply::Data(data)) => copies[i] = Some(data),
                Ok(_) => {}
                Err(e) => self.report_failed(reports, Op::Read, i, offset, length as u64, &e),
            }
        }
        let mut excluded = self.stale_within(range.clone());
        if !own_fresh {
            if let Some(own) = excluded.get_mut(child) {
                own.clear();
            }
        }
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome = vote::vote_masked(offset, &views, self.options.vote_threshold, &excluded)
            .map_err(|e| {
                VolumeError::Quorum(QuorumError {
                    op: Op::Read,
                    offset,
                    bytes: length as u64,
                    succeeded: copies.iter().filter(|c| c.is_some()).count(),
                    threshold: self.options.vote_threshold,
                    failures: Vec::new(),
                    no_majority: Some(e),
                })
            })?;
        let data = self.buffers.bytes(vote::assemble(&outcome, &mut copies));
        for copy in copies.into_iter().flatten() {
            self.buffers.give(copy);
        }
        let written = self
            .dispatch(vec![(child, Request::Write { offset, data })])
            .pop();
        self.settle_copy(child, range, written, reports)
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
                self.edit_stale([(child, false, range)])?;
                reports.rewrite(&self.children[child].name, offset, bytes);
                Ok(())
            }
            Err(error) => {
                self.report_failed(reports, op, child, offset, bytes, &error);
                Err(VolumeError::Quorum(QuorumError {
                    op,
                    offset,
                    bytes,
                    succeeded: 0,
                    threshold: 1,
                    failures: vec![ChildFailure {
                        child: self.children[child].name.clone(),
                        error,
                    }],
                    no_majority: None,
                }))
            }
        }
    }

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

    /// Writes `data` at `offset` on every child.
    ///
    /// # Errors
    /// [`VolumeError::OutOfRange`] outside the volume (nothing is written);
    /// [`VolumeError::Quorum`] when fewer than `vote_threshold` children
    /// succeeded.
    pub fn write(&self, offset: u64, data: Bytes) -> Result<(), VolumeError> {
        let length = data.len() as u64;
        let end = self.check_range(offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let _guard = self.ranges.exclusive(offset, end);
        let _intent = self.intend(offset..end)?;
        let results = self.on_all(&Request::Write { offset, data });
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        self.require_quorum(Op::Write, offset, length, results, &mut self.reports())?;
        self.note_write(offset..end, &failed)
    }

    /// Makes `length` bytes at `offset` read as zero on every child.
    ///
    /// # Errors
    /// As [`Volume::write`].
    pub fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), VolumeError> {
        let end = self.check_range(offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let _guard = self.ranges.exclusive(offset, end);
        let _intent = self.intend(offset..end)?;
        let results = self.on_all(&Request::WriteZeroes { offset, length });
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        self.require_quorum(
            Op::WriteZeroes,
            offset,
            length,
            results,
            &mut self.reports(),
        )?;
        self.note_write(offset..end, &failed)
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
        let covered: Vec<RangeSet> = std::mem::replace(
            &mut *self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            vec![RangeSet::default(); self.children.len()],
        );
        let results = self.on_all(&Request::Flush);
        let complete = results.iter().all(Result::is_ok);
        // A child that answered its flush with an I/O error may have lost
        // what it took since its last good flush (the kernel may drop what
        // it could not write): it is stale there until resynced. A child
        // that could not be reached keeps those ranges for its next flush.
        let mut lost = Vec::new();
        {
            let mut unflushed = self
                .unflushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, result) in results.iter().enumerate() {
                match result {
                    Err(e) if e.is_repairable() => lost.push(i),
                    Err(_) => {
                        for r in covered[i].within(0..self.size) {
                            unflushed[i].insert(r);
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
        let mut reports = self.reports();
        let marked = self.edit_stale(lost.iter().flat_map(|&i| {
            covered[i]
                .within(0..self.size)
                .into_iter()
                .map(move |r| (i, true, r))
        }));
        self.require_quorum(Op::Flush, 0, 0, results, &mut reports)?;
        marked?;
        if let Some(range) = self.under_threshold() {
            let (offset, bytes) = (range.start, range.end - range.start);
            return Err(self.fail(
                &mut reports,
                Op::Flush,
                offset,
                bytes,
                self.options.vote_threshold - 1,
                Vec::new(),
                None,
            ));
        }
        self.sync_journal()?;
        Ok(complete)
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
                .and_then(|()| j.sync(sets, &intent.dirty));
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

    /// Makes the children agree where writes may not have been flushed
    /// everywhere before the volume was last closed (its dirty write-intent
    /// regions): each region is scrubbed with repair (voted, the losers
    /// rewritten), a child that cannot be read or repaired there is marked
    /// stale, and once every child flushed the regions are recorded clean.
    /// Runs when a volume opens after a crash, before it serves anything.
    fn reconcile(&self) {
        let regions = self.stale_maps().intent.dirty.within(0..self.size);
        tracing::warn!(volume = %self.options.name, regions = regions.len(), "the volume was not closed cleanly: reconciling the children where writes were in flight");
        self.reconcile_regions(regions);
    }

    /// Reconciles the first region a reconcile could not finish before, if
    /// any (the resync calls it, so that it is tried again while the volume
    /// serves). Says whether one was tried.
    fn reconcile_pending(&self) -> bool {
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
        let (_, failed) = self.rewrite(repairs, &mut self.reports());
        missed.extend(failed);
        missed
    }

    /// Makes the stale maps durable as they are now (see
    /// [`Volume::flush`]).
    ///
    /// # Errors
    /// [`VolumeError::Journal`] when the journal cannot be synced.
    pub fn sync_journal(&self) -> Result<(), VolumeError> {
        let mut maps = self.stale_maps();
        let StaleMaps {
            sets,
            journal,
            intent,
        } = &mut *maps;
        match journal.as_mut() {
            Some(j) => j.sync(sets, &intent.dirty).map_err(VolumeError::Journal),
            None => Ok(()),
        }
    }

    /// The first range that is fresh on fewer than `vote_threshold`
    /// children (left so by children whose flush failed): a flush cannot
    /// promise what is there until the resync or a write has made enough
    /// copies again.
    fn under_threshold(&self) -> Option<Range<u64>> {
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

    /// Which parts of `offset..offset+length` read as zero, in at most
    /// `limit` extents (a `limit` of 0 counts as 1): zero only where every
    /// child says so. A child that fails, is not tried (its breaker is open)
    /// or is stale over a part counts as data there: the write it missed
    /// may be zero nowhere else.
    ///
    /// The extents are in order and contiguous from `offset`. When the range
    /// takes more than `limit` extents, the answer covers a prefix of it
    /// that ends where its last extent really ends: ask again from there,
    /// and the pages put end to end are the whole answer. The work is
    /// linear in the extents passed over, and memory is bounded by `limit`
    /// and the children's pages (see the `extents` module), whatever the
    /// number of extents of the volume.
    ///
    /// # Errors
    /// [`VolumeError::OutOfRange`] outside the volume; [`VolumeError::Quorum`]
    /// when fewer than `vote_threshold` children answered.
    pub fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, VolumeError> {
        let end = self.check_range(offset, length)?;
        if length == 0 {
            return Ok(Vec::new());
        }
        let _guard = self.ranges.shared(offset, end);
        self.zero_map(offset..end, None, limit, &mut self.reports())
    }

    /// The zero map of `range` from every child but `except`, in at most
    /// `limit` extents, by a caller that holds the range (see
    /// [`Volume::block_status`]). The children are asked in pages of
    /// [`child_page`] extents, each from where the merge has used up its
    /// last answer; a child that fails counts as data from there on, and the
    /// request fails once fewer than `vote_threshold` of the children asked
    /// have answered.
    fn zero_map(
        &self,
        range: Range<u64>,
        except: Option<usize>,
        limit: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Extent>, VolumeError> {
        let (offset, length) = (range.start, range.end - range.start);
        let asked: Vec<usize> = (0..self.children.len())
            .filter(|&i| Some(i) != except)
            .collect();
        let page = child_page(limit);
        let mut merge = ZeroMerge::new(range.clone(), asked.len(), limit);
        let mut failures: Vec<ChildFailure> = Vec::new();
        while !merge.is_done() {
            let at = merge.at();
            let request = Request::BlockStatus {
                offset: at,
                length: range.end - at,
                limit: page,
            };
            let wanted = merge.wanted();
            let jobs = wanted
                .iter()
                .map(|&k| (asked[k], request.clone()))
                .collect();
            for (&k, (i, result)) in wanted.iter().zip(self.dispatch(jobs)) {
                match result {
                    Ok(Reply::Extents(map)) => merge.feed(k, map, |r| self.stale_of(i, r)),
                    Ok(_) => merge.all_data(k),
                    Err(error) => {
                        self.report_failed(reports, Op::BlockStatus, i, at, range.end - at, &error);
                        failures.push(ChildFailure {
                            child: self.children[i].name.clone(),
                            error,
                        });
                        merge.all_data(k);
                    }
                }
            }
            let succeeded = asked.len() - failures.len();
            if succeeded < self.options.vote_threshold {
                return Err(self.fail(
                    reports,
                    Op::BlockStatus,
                    offset,
                    length,
                    succeeded,
                    failures,
                    None,
                ));
            }
            merge.advance();
        }
        Ok(merge.finish())
    }

    /// `child`'s stale ranges within `range`, in order.
    fn stale_of(&self, child: usize, range: Range<u64>) -> Vec<Range<u64>> {
        if !self.any_stale.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.stale_maps().sets[child].within(range)
    }

    /// Stops every child's workers after the work already queued, waiting
    /// `timeout` at most. Returns the names of children whose workers did
    /// not stop in time (stuck in their backend).
    pub fn close(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        self.children
            .iter()
            .filter(|c| c.workers.stop(deadline) > 0)
            .map(|c| c.name.clone())
            .collect()
    }

    /// How many requests wait for a range held by another.
    #[cfg(test)]
    pub(crate) fn waiting_for_ranges(&self) -> usize {
        self.ranges.waiting()
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<u64, VolumeError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.size => Ok(end),
            _ => Err(VolumeError::OutOfRange {
                offset,
                length,
                size: self.size,
            }),
        }
    }

    fn reports(&self) -> Reports<'_> {
        Reports::new(&self.options.name, &*self.sink)
    }

    /// Sends one request per listed child and waits for all their answers,
    /// returned in the order of `jobs`, for `child_timeout` at most: a child
    /// that has not answered by then fails with [`BackendError::Timeout`].
    /// A child whose breaker is open, or which still has a request abandoned
    /// at an earlier deadline, is not tried (so a late write of it can never
    /// land after a newer one).
    fn dispatch(&self, jobs: Vec<(usize, Request)>) -> Vec<(usize, Result<Reply, BackendError>)> {
        let (tx, rx) = crossbeam_channel::bounded(jobs.len());
        let order: Vec<usize> = jobs.iter().map(|(i, _)| *i).collect();
        // Answers by job, not by child: a child may get several jobs.
        let mut answers: Vec<Option<Result<Reply, BackendError>>> =
            (0..order.len()).map(|_| None).collect();
        let mut tried = vec![false; order.len()];
        let mut tickets: Vec<Option<Arc<Ticket>>> = (0..order.len()).map(|_| None).collect();
        let mut pending = 0;
        for (job, (child, request)) in jobs.into_iter().enumerate() {
            let c = &self.children[child];
            let refusal = c.breaker.refuse().or_else(|| {
                let late = c.workers.abandoned();
                (late > 0).then(|| {
                    BackendError::Unavailable(format!(
                        "not tried: {late} of its requests passed child_timeout and have not returned"
                    ))
                })
            });
            match refusal {
                Some(refusal) => answers[job] = Some(Err(refusal)),
                None => {
                    let ticket = Arc::new(Ticket::default());
                    c.workers.submit(job, request, &tx, ticket.clone());
                    tickets[job] = Some(ticket);
                    tried[job] = true;
                    pending += 1;
                }
            }
        }
        drop(tx);
        let deadline = Instant::now() + self.options.child_timeout;
        while pending > 0 {
            match rx.recv_deadline(deadline) {
                Ok((job, result)) => {
                    answers[job] = Some(result);
                    pending -= 1;
                }
                Err(_) => break,
            }
        }
        for (job, ticket) in tickets.iter().enumerate() {
            let Some(ticket) = ticket else { continue };
            if answers[job].is_some() {
                continue;
            }
            if self.children[order[job]].workers.abandon(ticket) {
                answers[job] = Some(Err(BackendError::Timeout(self.options.child_timeout)));
                continue;
            }
            // Answered as it was abandoned: the answer is on its way.
            while answers[job].is_none() {
                match rx.recv() {
                    Ok((j, result)) => answers[j] = Some(result),
                    Err(_) => break,
                }
            }
        }
        order
            .into_iter()
            .zip(answers)
            .zip(tried)
            .map(|((child, answer), tried)| {
                let result = answer.unwrap_or_else(|| {
                    Err(BackendError::Unavailable(
                        "the child's worker stopped without answering".into(),
                    ))
                });
                let state = if result.is_ok() { HEALTHY } else { FAILED };
                self.children[child].state.store(state, Ordering::Relaxed);
                if tried {
                    self.children[child].breaker.record(&result);
                }
                (child, result)
            })
            .collect()
    }

    fn on_all(&self, request: &Request) -> Outcomes {
        let jobs = (0..self.children.len())
            .map(|i| (i, request.clone()))
            .collect();
        self.dispatch(jobs).into_iter().map(|(_, r)| r).collect()
    }

    /// Reports each failed child and fails the request when fewer than the
    /// threshold succeeded; otherwise returns each child's reply (`None` for
    /// the failed ones).
    fn require_quorum(
        &self,
        op: Op,
        offset: u64,
        bytes: u64,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Option<Reply>>, VolumeError> {
        let all: Vec<usize> = (0..results.len()).collect();
        self.require_quorum_of(&all, op, offset, bytes, results, reports)
    }

    /// [`Volume::require_quorum`] for the children `asked` (in the order of
    /// `results`).
    fn require_quorum_of(
        &self,
        asked: &[usize],
        op: Op,
        offset: u64,
        bytes: u64,
        results: Outcomes,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Option<Reply>>, VolumeError> {
        let mut replies = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for (&i, result) in asked.iter().zip(results) {
            match result {
                Ok(reply) => replies.push(Some(reply)),
                Err(error) => {
                    self.report_failed(reports, op, i, offset, bytes, &error);
                    failures.push(ChildFailure {
                        child: self.children[i].name.clone(),
                        error,
                    });
                    replies.push(None);
                }
            }
        }
        let succeeded = replies.len() - failures.len();
        if succeeded < self.options.vote_threshold {
            return Err(self.fail(reports, op, offset, bytes, succeeded, failures, None));
        }
        Ok(replies)
    }

    fn report_failed(
        &self,
        reports: &mut Reports<'_>,
        op: Op,
        child: usize,
        offset: u64,
        bytes: u64,
        error: &BackendError,
    ) {
        tracing::warn!(volume = %self.options.name, child = %self.children[child].name, %op, offset, bytes, %error, "child failed");
        reports.bad(
            op,
            &self.children[child].name,
            offset,
            bytes,
            Some(error.to_string()),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &self,
        reports: &mut Reports<'_>,
        op: Op,
        offset: u64,
        bytes: u64,
        succeeded: usize,
        failures: Vec<ChildFailure>,
        no_majority: Option<VoteError>,
    ) -> VolumeError {
        reports.push(Event::Failure { op, offset, bytes });
        let error = QuorumError {
            op,
            offset,
            bytes,
            succeeded,
            threshold: self.options.vote_threshold,
            failures,
            no_majority,
        };
        tracing::error!(volume = %self.options.name, %error, "quorum failure");
        VolumeError::Quorum(error)
    }

    fn read_quorum(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let repair = self.options.rewrite_corrupted;
        self.read_voted(offset, length, reports, repair, None)
    }

    /// A quorum read. With `repair`, the winning data is written back over
    /// the losers and the children whose read failed; `lost`, when given,
    /// adds up the bytes each child lost and the bytes repaired.
    fn read_voted(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
        repair: bool,
        lost: Option<&mut Scrubbed>,
    ) -> Result<Bytes, VolumeError> {
        let results = self.on_all(&Request::Read { offset, length });
        let bytes = length as u64;
        let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(Reply::Data(data)) => copies.push(Some(data)),
                Ok(_) => copies.push(None),
                Err(error) => {
                    self.report_failed(reports, Op::Read, i, offset, bytes, &error);
                    failures.push((i, error));
                    copies.push(None);
                }
            }
        }
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
                    return Err(VolumeError::BlkverifyMismatch {
                        offset: at,
                        request_offset: offset,
                        request_bytes: bytes,
                    });
                }
            }
        }
        let excluded = self.stale_within(offset..offset + bytes);
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome =
            match vote::vote_masked(offset, &views, self.options.vote_threshold, &excluded) {
                Ok(outcome) => outcome,
                Err(e) => {
                    let succeeded = copies.iter().filter(|c| c.is_some()).count();
                    let no_majority = matches!(e, VoteError::NoMajority { .. }).then_some(e);
                    let failures = self.named(failures);
                    return Err(self.fail(
                        reports,
                        Op::Read,
                        offset,
                        bytes,
                        succeeded,
                        failures,
                        no_majority,
                    ));
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
            }
        }
        let answer = self.buffers.bytes(vote::assemble(&outcome, &mut copies));
        for copy in copies.into_iter().flatten() {
            self.buffers.give(copy);
        }
        let mut tally = lost;
        if let Some(t) = tally.as_deref_mut() {
            for loss in &outcome.losses {
                let bytes: u64 = loss.ranges.iter().map(|r| r.end - r.start).sum();
                t.add_lost(&self.children[loss.child].name, bytes);
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
            for (i, error) in &failures {
                let stale = excluded.get(*i).is_some_and(|e| !e.is_empty());
                if error.is_repairable() && !stale {
                    repairs.push((*i, offset, answer.clone()));
                }
            }
            let tried: Vec<usize> = repairs.iter().map(|(c, _, _)| *c).collect();
            let (repaired, unrepaired) = self.rewrite(repairs, reports);
            if let Some(t) = tally {
                t.repaired += repaired;
                for (i, _) in failures.iter().filter(|(i, _)| !tried.contains(i)) {
                    t.add_unreached(&self.children[*i].name);
                }
                for i in unrepaired {
                    t.add_unreached(&self.children[i].name);
                }
            }
        } else if let Some(t) = tally {
            for (i, _) in &failures {
                t.add_unreached(&self.children[*i].name);
            }
        }
        Ok(answer)
    }

    fn read_fifo(
        &self,
        offset: u64,
        length: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Bytes, VolumeError> {
        let bytes = length as u64;
        let mut failures = Vec::new();
        let stale = self.stale_within(offset..offset + bytes);
        for i in 0..self.children.len() {
            if stale.get(i).is_some_and(|r| !r.is_empty()) {
                continue;
            }
            let answer = self
                .dispatch(vec![(i, Request::Read { offset, length })])
                .pop();
            match answer {
                Some((_, Ok(Reply::Data(data)))) => {
                    let data = self.buffers.bytes(data);
                    if self.options.rewrite_corrupted {
                        let repairs = failures
                            .iter()
                            .filter(|(_, e): &&(usize, BackendError)| e.is_repairable())
                            .map(|(c, _)| (*c, offset, data.clone()))
                            .collect();
                        let _ = self.rewrite(repairs, reports);
                    }
                    return Ok(data);
                }
                Some((_, Err(error))) => {
                    self.report_failed(reports, Op::Read, i, offset, bytes, &error);
                    failures.push((i, error));
                }
                Some((_, Ok(_))) | None => {}
            }
        }
        let failures = self.named(failures);
        Err(self.fail(reports, Op::Read, offset, bytes, 0, failures, None))
    }

    /// Writes good data back over children's bad ranges, in parallel.
    /// Returns the bytes repaired and the children a repair failed on.
    fn rewrite(
        &self,
        repairs: Vec<(usize, u64, Bytes)>,
        reports: &mut Reports<'_>,
    ) -> (u64, Vec<usize>) {
        if repairs.is_empty() {
            return (0, Vec::new());
        }
        let mut repaired = 0;
        let mut failed = Vec::new();
        let spans: Vec<(u64, u64)> = repairs
            .iter()
            .map(|(_, o, d)| (*o, d.len() as u64))
            .collect();
        let jobs = repairs
            .into_iter()
            .map(|(child, offset, data)| (child, Request::Write { offset, data }))
            .collect();
        for ((child, result), (offset, bytes)) in self.dispatch(jobs).into_iter().zip(spans) {
            match result {
                Ok(_) => {
                    tracing::info!(volume = %self.options.name, child = %self.children[child].name, offset, bytes, "rewrote corrupted range");
                    reports.rewrite(&self.children[child].name, offset, bytes);
                    repaired += bytes;
                }
                Err(error) => {
                    self.report_failed(reports, Op::Write, child, offset, bytes, &error);
                    failed.push(child);
                }
            }
        }
        (repaired, failed)
    }

    fn named(&self, failures: Vec<(usize, BackendError)>) -> Vec<ChildFailure> {
        failures
            .into_iter()
            .map(|(i, error)| ChildFailure {
                child: self.children[i].name.clone(),
                error,
            })
            .collect()
    }
}
