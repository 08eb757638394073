//! Engine tests over in-memory children.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::*;

const B: usize = 4096;

/// A child in memory whose writes land one 4 KiB block at a time with a
/// pause between blocks, so that unordered concurrent requests would be
/// caught interleaving.
struct Mem {
    name: String,
    data: Mutex<Vec<u8>>,
    zero: Mutex<Vec<bool>>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_flush: AtomicBool,
    /// Fail discards (alone: writes and write-zeroes still work).
    fail_discards: AtomicBool,
    /// Discards that reached this child.
    discards: AtomicU64,
    /// Bytes read from this child.
    read_bytes: AtomicU64,
    /// Bytes written as copies ([`Backend::write_copy`]).
    copied_bytes: AtomicU64,
    /// Time out every write, counting the attempts.
    hang_writes: AtomicBool,
    write_attempts: AtomicU64,
    /// While set, writes block (a hung replica) until it is cleared.
    stall_writes: (Mutex<bool>, Condvar),
    /// How long each read takes, in microseconds (a slow replica).
    read_micros: AtomicU64,
    /// How long each started MiB of write-zeroes and discard takes, in
    /// microseconds (an object store zeroing chunk by chunk).
    zero_micros: AtomicU64,
    jitter: bool,
    seed: AtomicU64,
    /// Answer reads on the caller's thread ([`Backend::read_now`]) while
    /// the child is neither failing nor slow, counting them.
    answers_now: AtomicBool,
    reads_now: AtomicU64,
}

impl Mem {
    fn new(name: &str, size: usize) -> Arc<Mem> {
        Arc::new(Mem {
            name: name.into(),
            data: Mutex::new(vec![0; size]),
            zero: Mutex::new(vec![true; size.div_ceil(B)]),
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            fail_discards: AtomicBool::new(false),
            discards: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            hang_writes: AtomicBool::new(false),
            write_attempts: AtomicU64::new(0),
            stall_writes: (Mutex::new(false), Condvar::new()),
            read_micros: AtomicU64::new(0),
            zero_micros: AtomicU64::new(0),
            jitter: false,
            seed: AtomicU64::new(1),
            answers_now: AtomicBool::new(false),
            reads_now: AtomicU64::new(0),
        })
    }

    fn jittery(name: &str, size: usize) -> Arc<Mem> {
        let mut m = Arc::into_inner(Mem::new(name, size)).expect("fresh");
        m.jitter = true;
        Arc::new(m)
    }

    fn pause(&self) {
        if self.jitter {
            let s = self.seed.fetch_add(0x9e37_79b9, Ordering::Relaxed);
            thread::sleep(Duration::from_micros(s % 97));
        }
    }

    fn stall(&self, on: bool) {
        *self.stall_writes.0.lock().expect("stall") = on;
        self.stall_writes.1.notify_all();
    }

    fn poke(&self, offset: usize, bytes: &[u8]) {
        self.data.lock().expect("data")[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.data.lock().expect("data").clone()
    }
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mem({})", self.name)
    }
}

impl Backend for Mem {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.data.lock().expect("data").len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(BackendError::from_errno(5));
        }
        self.pause();
        let slow = self.read_micros.load(Ordering::SeqCst);
        if slow > 0 {
            thread::sleep(Duration::from_micros(slow));
        }
        self.read_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        let o = offset as usize;
        buf.copy_from_slice(&self.data.lock().expect("data")[o..o + buf.len()]);
        Ok(())
    }
    fn read_now(&self, buf: &mut [u8], offset: u64) -> bool {
        if !self.answers_now.load(Ordering::SeqCst)
            || self.fail_reads.load(Ordering::SeqCst)
            || self.read_micros.load(Ordering::SeqCst) > 0
        {
            return false;
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.data.lock().expect("data")[o..o + buf.len()]);
        self.reads_now.fetch_add(1, Ordering::SeqCst);
        true
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.write_attempts.fetch_add(1, Ordering::SeqCst);
        if self.hang_writes.load(Ordering::SeqCst) {
            return Err(BackendError::Timeout(Duration::from_secs(2)));
        }
        let mut stalled = self.stall_writes.0.lock().expect("stall");
        while *stalled {
            stalled = self.stall_writes.1.wait(stalled).expect("stall");
        }
        drop(stalled);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BackendError::from_errno(28));
        }
        let mut at = offset as usize;
        for piece in buf.chunks(B) {
            self.pause();
            self.data.lock().expect("data")[at..at + piece.len()].copy_from_slice(piece);
            let mut zero = self.zero.lock().expect("zero");
            for b in at / B..(at + piece.len()).div_ceil(B) {
                zero[b] = false;
            }
            at += piece.len();
        }
        Ok(())
    }
    fn write_copy(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.write_at(buf, offset)?;
        self.copied_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        let per_mib = self.zero_micros.load(Ordering::SeqCst);
        thread::sleep(Duration::from_micros(per_mib * length.div_ceil(1 << 20)));
        self.write_at(&vec![0; length as usize], offset)?;
        let mut zero = self.zero.lock().expect("zero");
        let (s, e) = (offset as usize, (offset + length) as usize);
        for b in s.div_ceil(B)..e / B {
            zero[b] = true;
        }
        Ok(())
    }
    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        if self.fail_discards.load(Ordering::SeqCst) {
            return Err(BackendError::from_errno(5));
        }
        self.discards.fetch_add(1, Ordering::SeqCst);
        self.write_zeroes(offset, length)
    }
    fn flush(&self) -> Result<(), BackendError> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(BackendError::from_errno(5));
        }
        Ok(())
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("down".into()));
        }
        let zero = self.zero.lock().expect("zero");
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        let end = offset + length;
        while at < end && out.len() <= limit {
            let b = at as usize / B;
            let next = ((b as u64 + 1) * B as u64).min(end);
            Extent::append(
                &mut out,
                Extent {
                    offset: at,
                    length: next - at,
                    zero: zero[b],
                },
            );
            at = next;
        }
        out.truncate(limit);
        Ok(out)
    }
}

struct Setup {
    volume: Volume,
    mems: Vec<Arc<Mem>>,
    sink: Arc<RecordingSink>,
}

fn options(threshold: usize) -> VolumeOptions {
    VolumeOptions {
        name: "vm".into(),
        vote_threshold: threshold,
        read_pattern: ReadPattern::Quorum,
        rewrite_corrupted: false,
        blkverify: false,
        child_timeout: VolumeOptions::DEFAULT_CHILD_TIMEOUT,
    }
}

/// The children of a volume over `mems`.
fn specs(mems: &[Arc<Mem>]) -> Vec<ChildSpec> {
    mems.iter()
        .map(|m| ChildSpec::new(m.name.clone(), m.clone()))
        .collect()
}

fn setup_with(opts: VolumeOptions, mems: Vec<Arc<Mem>>) -> Setup {
    let sink = Arc::new(RecordingSink::default());
    let children = specs(&mems);
    let volume = Volume::open(opts, children, sink.clone()).expect("open");
    Setup { volume, mems, sink }
}

fn setup(opts: VolumeOptions, n: usize, size: usize) -> Setup {
    let names = ["a", "b", "c", "d", "e"];
    setup_with(opts, (0..n).map(|i| Mem::new(names[i], size)).collect())
}

mod block_status;
mod crash;
mod damage;
mod discard;
mod flush_errors;
mod hostile;
mod promises;
mod read_now;
mod recovery;
mod requests;
mod resync;
mod review;
mod review2;
mod review3;
mod review5;
mod review6;
mod started;
mod votes;

/// Volume of `mems`, threshold 2, with its stale-map journal at `journal`.
fn journaled(mems: &[Arc<Mem>], journal: &std::path::Path, sink: Arc<dyn EventSink>) -> Volume {
    Volume::open_journaled(options(2), specs(mems), sink, Some(journal)).expect("open")
}

fn bad_reads(events: &[Event]) -> Vec<(String, u64, u64, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ReportBad {
                op: Op::Read,
                child,
                offset,
                bytes,
                error,
            } => Some((child.clone(), *offset, *bytes, error.is_some())),
            _ => None,
        })
        .collect()
}

/// Whether a 4 KiB block holds one write's pattern (or was never written).
fn is_one_write(block: &[u8]) -> bool {
    let word = |i: usize| u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let id = word(0) >> 16;
    (0..block.len() / 8).all(|i| word(i) == (id << 16 | i as u64))
}
