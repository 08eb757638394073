//! The simulated storage of the crash simulation: disks with a volatile
//! write cache and a journal file with an unsynced tail, both losing what
//! a power loss may lose, and failing as the seed says.
//!
//! Every random decision comes from a seeded [`Rng`]: each disk and the
//! journal draw from their own generator, once per call they serve, and the
//! calls each of them serves come in an order fixed by the client's
//! sequence of operations (one client thread, one worker per child), so a
//! seed replays the same run.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::stale::JournalStore;
use crate::{Backend, BackendError, Extent};

/// The unit a disk writes atomically: a torn write keeps some of these and
/// loses others, never part of one.
pub(super) const BLOCK: usize = 4096;

/// The unit a file's unsynced tail survives or is lost in (a disk sector:
/// a page of the page cache can itself be torn into sectors).
const SECTOR: usize = 512;

/// SplitMix64: small, fast, and the same on every platform and version.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// One of `choices`, uniformly.
    pub(super) fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }

    /// `true` with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// An independent generator derived from this one and `salt`.
    pub(super) fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(self.next_u64() ^ salt.wrapping_mul(0xd6e8_feb8_6659_fd93))
    }
}

/// A crash in the middle of an operation: once armed, a component serves
/// that many more calls, then is powered off (every call fails and changes
/// nothing) until the crash is applied.
#[derive(Debug, Default)]
struct Fuse {
    left: Option<u32>,
    blown: bool,
}

impl Fuse {
    /// Whether this call happens.
    fn call(&mut self) -> bool {
        if self.blown {
            return false;
        }
        if let Some(left) = self.left.as_mut() {
            if *left == 0 {
                self.blown = true;
                return false;
            }
            *left -= 1;
        }
        true
    }
}

/// How often a disk fails each kind of call (while faults are on).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DiskFaults {
    pub(super) write: f64,
    pub(super) flush: f64,
    pub(super) read: f64,
}

/// A write in the volatile cache.
#[derive(Debug)]
struct Pending {
    offset: usize,
    bytes: Vec<u8>,
}

/// What a crash did to one disk or journal, for the statistics.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Lost {
    /// Cached writes or unsynced bytes that were pending.
    pub(super) pending: usize,
    /// Of those, lost whole or in part.
    pub(super) lost: usize,
}

struct DiskState {
    /// What survives a power loss.
    durable: Vec<u8>,
    /// What reads see: `durable` with `cache` applied in order.
    current: Vec<u8>,
    cache: Vec<Pending>,
    faults: DiskFaults,
    faults_on: bool,
    /// A broken disk for the self-test: flush says yes and does nothing.
    flush_lies: bool,
    rng: Rng,
    fuse: Fuse,
}

impl DiskState {
    fn take(&mut self, offset: usize, bytes: Vec<u8>) {
        self.current[offset..offset + bytes.len()].copy_from_slice(&bytes);
        self.cache.push(Pending { offset, bytes });
    }

    /// Puts into the cache a random subset of the blocks of a write that
    /// failed part way.
    fn take_torn(&mut self, offset: usize, bytes: &[u8]) {
        for (at, piece) in pieces(offset, bytes) {
            if self.rng.chance(0.5) {
                self.take(at, piece.to_vec());
            }
        }
    }

    fn injected(&mut self, p: f64) -> bool {
        self.faults_on && self.rng.chance(p)
    }
}

/// `bytes` at `offset` cut at the disk's block boundaries.
fn pieces(offset: usize, bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let abs = offset + at;
        let end = ((abs / BLOCK + 1) * BLOCK - offset).min(bytes.len());
        out.push((abs, &bytes[at..end]));
        at = end;
    }
    out
}

fn eio() -> BackendError {
    BackendError::from_errno(5)
}

/// A disk with a volatile write cache: writes land in the cache (and are
/// read back from it); `flush` makes the cache durable; a crash keeps an
/// arbitrary subset of the cached writes, each whole, torn at block
/// boundaries, or lost, applied in their order (so a block ends up with its
/// durable value or any one of the cached writes over it).
pub(super) struct SimDisk {
    name: String,
    state: Mutex<DiskState>,
}

impl SimDisk {
    pub(super) fn new(name: &str, size: usize, faults: DiskFaults, rng: Rng) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            name: name.to_owned(),
            state: Mutex::new(DiskState {
                durable: vec![0; size],
                current: vec![0; size],
                cache: Vec::new(),
                faults,
                faults_on: true,
                flush_lies: false,
                rng,
                fuse: Fuse::default(),
            }),
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns the injected faults on or off (off while the checker reads).
    pub(super) fn set_faults(&self, on: bool) {
        self.state().faults_on = on;
    }

    /// Makes `flush` succeed without making anything durable.
    pub(super) fn lie_about_flushes(&self) {
        self.state().flush_lies = true;
    }

    /// Powers the disk off after `calls` more calls.
    pub(super) fn arm(&self, calls: u32) {
        self.state().fuse.left = Some(calls);
    }

    /// The power loss: keeps a random subset of the cache (all, none, or
    /// each write kept, lost or torn), as `rng` decides.
    pub(super) fn crash(&self, rng: &mut Rng) -> Lost {
        let mut s = self.state();
        let s = &mut *s;
        let cache = std::mem::take(&mut s.cache);
        let mode = rng.below(4);
        let mut lost = Lost {
            pending: cache.len(),
            lost: 0,
        };
        for w in &cache {
            let keep = match mode {
                0 => 2,
                1 => 0,
                _ => rng.below(3),
            };
            match keep {
                2 => s.durable[w.offset..w.offset + w.bytes.len()].copy_from_slice(&w.bytes),
                0 => lost.lost += 1,
                _ => {
                    lost.lost += 1;
                    for (at, piece) in pieces(w.offset, &w.bytes) {
                        if rng.chance(0.5) {
                            s.durable[at..at + piece.len()].copy_from_slice(piece);
                        }
                    }
                }
            }
        }
        s.current = s.durable.clone();
        s.fuse = Fuse::default();
        lost
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), BackendError> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(eio());
        }
        BackendError::check_range(offset, bytes.len() as u64, s.current.len() as u64)?;
        let p = s.faults.write;
        if s.injected(p) {
            if s.rng.chance(0.5) {
                s.take_torn(offset as usize, bytes);
            }
            return Err(eio());
        }
        s.take(offset as usize, bytes.to_vec());
        Ok(())
    }
}

impl fmt::Display for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sim({})", self.name)
    }
}

impl Backend for SimDisk {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.state().current.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(eio());
        }
        BackendError::check_range(offset, buf.len() as u64, s.current.len() as u64)?;
        let p = s.faults.read;
        if s.injected(p) {
            return Err(eio());
        }
        let o = offset as usize;
        buf.copy_from_slice(&s.current[o..o + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.write(offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.write(offset, &vec![0; length as usize])
    }

    fn flush(&self) -> Result<(), BackendError> {
        let mut s = self.state();
        let s = &mut *s;
        if !s.fuse.call() {
            return Err(eio());
        }
        if s.flush_lies {
            return Ok(());
        }
        let p = s.faults.flush;
        if s.injected(p) {
            // The device wrote some of its cache, in order, before the error.
            let done = s.rng.below(s.cache.len() as u64 + 1) as usize;
            for w in s.cache.drain(..done) {
                s.durable[w.offset..w.offset + w.bytes.len()].copy_from_slice(&w.bytes);
            }
            return Err(eio());
        }
        s.durable.copy_from_slice(&s.current);
        s.cache.clear();
        Ok(())
    }

    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(eio());
        }
        BackendError::check_range(offset, length, s.current.len() as u64)?;
        let p = s.faults.read;
        if s.injected(p) {
            return Err(eio());
        }
        let mut out = Vec::new();
        let (start, end) = (offset as usize, (offset + length) as usize);
        for (at, piece) in pieces(start, &s.current[start..end]) {
            Extent::append(
                &mut out,
                Extent {
                    offset: at as u64,
                    length: piece.len() as u64,
                    zero: piece.iter().all(|&b| b == 0),
                },
            );
            if out.len() > limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One worker: the calls a child serves come in the order they were
    /// sent, so a seed replays the same run.
    fn max_in_flight(&self) -> usize {
        1
    }
}

/// How often the journal fails each kind of call (while faults are on).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JournalFaults {
    pub(super) append: f64,
    pub(super) sync: f64,
    /// A failed append leaves part of its bytes, as a short write does.
    pub(super) short_appends: bool,
}

struct JournalState {
    durable: Vec<u8>,
    /// Appended and not synced.
    tail: Vec<u8>,
    faults: JournalFaults,
    faults_on: bool,
    /// A broken journal for the self-test: sync says yes and does nothing.
    sync_lies: bool,
    rng: Rng,
    fuse: Fuse,
}

impl JournalState {
    fn injected(&mut self, p: f64) -> bool {
        self.faults_on && self.rng.chance(p)
    }
}

fn powered_off() -> io::Error {
    io::Error::other("simulated power loss")
}

fn injected() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// The stale journal's file on a simulated disk: appends go to a volatile
/// tail; `sync` makes the tail durable; `replace` is atomic and durable (a
/// rename of a synced file). A crash keeps a prefix of the tail (the size
/// the file system recorded) in which each sector may still read as zeros
/// (its data never reached the disk). A failed append may leave a part of
/// its bytes, as a short write does (when the faults say so).
#[derive(Clone)]
pub(super) struct SimJournal(Arc<Mutex<JournalState>>);

impl SimJournal {
    pub(super) fn new(faults: JournalFaults, rng: Rng) -> SimJournal {
        SimJournal(Arc::new(Mutex::new(JournalState {
            durable: Vec::new(),
            tail: Vec::new(),
            faults,
            faults_on: true,
            sync_lies: false,
            rng,
            fuse: Fuse::default(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, JournalState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_faults(&self, on: bool) {
        self.state().faults_on = on;
    }

    /// Makes `sync` succeed without making anything durable.
    pub(super) fn lie_about_syncs(&self) {
        self.state().sync_lies = true;
    }

    pub(super) fn arm(&self, calls: u32) {
        self.state().fuse.left = Some(calls);
    }

    /// The durable content, for failure messages.
    pub(super) fn durable_text(&self) -> String {
        String::from_utf8_lossy(&self.state().durable).into_owned()
    }

    /// The power loss: keeps all, none, or a prefix of the tail with
    /// random sectors zeroed.
    pub(super) fn crash(&self, rng: &mut Rng) -> Lost {
        let mut s = self.state();
        let s = &mut *s;
        let tail = std::mem::take(&mut s.tail);
        let mut kept = match rng.below(4) {
            0 => tail.clone(),
            1 => Vec::new(),
            _ => {
                let len = rng.below(tail.len() as u64 + 1) as usize;
                let mut kept = tail[..len].to_vec();
                let base = s.durable.len();
                let mut at = 0;
                while at < kept.len() {
                    let end = ((base + at) / SECTOR + 1) * SECTOR - base;
                    let end = end.min(kept.len());
                    if rng.chance(0.3) {
                        kept[at..end].fill(0);
                    }
                    at = end;
                }
                kept
            }
        };
        let lost = Lost {
            pending: tail.len(),
            lost: usize::from(kept != tail),
        };
        s.durable.append(&mut kept);
        s.fuse = Fuse::default();
        lost
    }
}

impl JournalStore for SimJournal {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(powered_off());
        }
        let mut all = s.durable.clone();
        all.extend_from_slice(&s.tail);
        Ok(all)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(powered_off());
        }
        let p = s.faults.append;
        if s.injected(p) {
            let short = s.rng.below(bytes.len() as u64) as usize;
            if s.faults.short_appends {
                s.tail.extend_from_slice(&bytes[..short]);
            }
            return Err(injected());
        }
        s.tail.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state();
        let s = &mut *s;
        if !s.fuse.call() {
            return Err(powered_off());
        }
        if s.sync_lies {
            return Ok(());
        }
        let p = s.faults.sync;
        if s.injected(p) {
            return Err(io::Error::from_raw_os_error(5));
        }
        s.durable.append(&mut s.tail);
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if !s.fuse.call() {
            return Err(powered_off());
        }
        s.durable = bytes.to_vec();
        s.tail.clear();
        Ok(())
    }
}
