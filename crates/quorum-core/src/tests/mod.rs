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
mod hostile;
mod promises;
mod read_now;
mod resync;
mod review;
mod review2;
mod review3;
mod started;

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

#[test]
fn write_then_read_round_trips_unaligned() {
    let s = setup(options(2), 3, 64 * 1024);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.volume
        .write(1234, Bytes::from(data.clone()))
        .expect("write");
    assert_eq!(
        &s.volume.read(1234, data.len()).expect("read")[..],
        &data[..]
    );
    for m in &s.mems {
        assert_eq!(&m.snapshot()[1234..11234], &data[..]);
    }
    assert!(s.sink.take().is_empty());
}

#[test]
fn one_corrupt_child_loses_and_is_reported_exactly() {
    let s = setup(options(2), 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![0x32; 64 * 1024]))
        .expect("write");
    s.mems[2].poke(5000, &[0x42; 300]);
    assert_eq!(
        &s.volume.read(0, 64 * 1024).expect("read")[..],
        &[0x32; 64 * 1024][..]
    );
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![("c".into(), 5000, 300, false)]
    );
    // Not repaired without rewrite_corrupted.
    assert_eq!(s.mems[2].snapshot()[5000], 0x42);
}

#[test]
fn rewrite_corrupted_repairs_losers_and_failed_children() {
    let mut opts = options(2);
    opts.rewrite_corrupted = true;
    let s = setup(opts, 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![7; 64 * 1024]))
        .expect("write");
    s.mems[1].poke(B * 3, &[1; 10]);
    assert_eq!(&s.volume.read(0, 8 * B).expect("read")[..], &[7; 8 * B][..]);
    assert_eq!(s.mems[1].snapshot(), s.mems[0].snapshot());
    let events = s.sink.take();
    assert!(events.contains(&Event::Rewrite {
        child: "b".into(),
        offset: 3 * B as u64,
        bytes: 10
    }));

    // A child whose read failed with an I/O error is rewritten too.
    s.mems[2].poke(0, &[9; 100]);
    s.mems[2].fail_reads.store(true, Ordering::SeqCst);
    s.volume.read(0, B).expect("read");
    s.mems[2].fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(s.mems[2].snapshot(), s.mems[0].snapshot());
    let events = s.sink.take();
    assert_eq!(bad_reads(&events), vec![("c".into(), 0, B as u64, true)]);
    assert!(events.contains(&Event::Rewrite {
        child: "c".into(),
        offset: 0,
        bytes: B as u64
    }));
}

#[test]
fn children_corrupt_in_different_blocks_still_read() {
    let s = setup(options(2), 3, 64 * 1024);
    s.volume
        .write(0, Bytes::from(vec![0x32; 64 * 1024]))
        .expect("write");
    s.mems[1].poke(10, &[0; 100]);
    s.mems[2].poke(5 * B + 7, &[0; 1]);
    assert_eq!(
        &s.volume.read(0, 64 * 1024).expect("read")[..],
        &[0x32; 64 * 1024][..]
    );
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![
            ("b".into(), 10, 100, false),
            ("c".into(), 5 * B as u64 + 7, 1, false)
        ]
    );
}

#[test]
fn no_majority_fails_with_an_event() {
    let s = setup(options(2), 3, 16 * B);
    s.mems[0].poke(0, &[0x41; 16 * B]);
    s.mems[1].poke(0, &[0x42; 16 * B]);
    s.mems[2].poke(0, &[0x32; 16 * B]);
    let err = s.volume.read(0, 16 * B).expect_err("no majority");
    assert!(
        matches!(&err, VolumeError::Quorum(q) if q.no_majority.is_some()),
        "{err}"
    );
    let events = s.sink.take();
    assert_eq!(
        events,
        vec![Event::Failure {
            op: Op::Read,
            offset: 0,
            bytes: 16 * B as u64
        }]
    );
}

#[test]
fn writes_failing_on_two_of_three_fail_and_report_each() {
    let s = setup(options(2), 3, 16 * B);
    s.mems[0].fail_writes.store(true, Ordering::SeqCst);
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    let err = s
        .volume
        .write(100, Bytes::from(vec![1; 50]))
        .expect_err("quorum");
    let VolumeError::Quorum(q) = &err else {
        panic!("{err}")
    };
    assert_eq!((q.succeeded, q.threshold, q.failures.len()), (1, 2, 2));
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let events = s.sink.take();
    let bad: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReportBad {
                op: Op::Write,
                child,
                offset: 100,
                bytes: 50,
                error: Some(_),
            } => Some(child.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bad, vec!["a", "c"]);
    assert!(events.contains(&Event::Failure {
        op: Op::Write,
        offset: 100,
        bytes: 50
    }));
    // One failure of three is fine at threshold 2, and still reported.
    s.mems[2].fail_writes.store(false, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("write at threshold");
    assert_eq!(s.sink.take().len(), 1);
    assert_eq!(s.volume.children()[0].state, ChildState::Failed);
    assert_eq!(s.volume.children()[1].state, ChildState::Healthy);
}

/// A child whose storage could not be opened shows failed before any
/// request, and healthy again once one succeeds on it.
#[test]
fn a_child_marked_failed_shows_failed_until_a_request_succeeds() {
    let s = setup(options(2), 3, 64 * 1024);
    assert!(s.volume.mark_failed("b"));
    assert!(!s.volume.mark_failed("nobody"));
    let states: Vec<ChildState> = s.volume.children().iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [ChildState::Healthy, ChildState::Failed, ChildState::Healthy]
    );
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("a write");
    assert_eq!(s.volume.children()[1].state, ChildState::Healthy);
}

#[test]
fn the_error_vote_names_the_most_common_error() {
    let s = setup(options(3), 3, 4 * B);
    s.mems[0].fail_writes.store(true, Ordering::SeqCst);
    s.mems[1].fail_writes.store(true, Ordering::SeqCst);
    let VolumeError::Quorum(q) = s
        .volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect_err("quorum")
    else {
        panic!("not a quorum error")
    };
    assert!(
        q.prevailing_error()
            .is_some_and(|e| e.contains("No space left"))
    );
}

#[test]
fn errors_mixed_with_corruption_still_vote() {
    let s = setup(options(3), 5, 4 * B);
    s.volume
        .write(0, Bytes::from(vec![5; 4 * B]))
        .expect("write");
    s.mems[0].fail_reads.store(true, Ordering::SeqCst);
    s.mems[1].poke(0, &[6]);
    assert_eq!(&s.volume.read(0, 4 * B).expect("read")[..], &[5; 4 * B][..]);
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![
            ("a".into(), 0, 4 * B as u64, true),
            ("b".into(), 0, 1, false)
        ]
    );
    // Fewer successes than the threshold fails the read.
    s.mems[2].fail_reads.store(true, Ordering::SeqCst);
    s.mems[3].fail_reads.store(true, Ordering::SeqCst);
    let err = s.volume.read(0, B).expect_err("too few");
    assert!(
        matches!(&err, VolumeError::Quorum(q) if q.succeeded == 2 && q.no_majority.is_none()),
        "{err}"
    );
}

#[test]
fn fifo_skips_a_failing_first_child_and_repairs_it() {
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    opts.rewrite_corrupted = true;
    let s = setup(opts, 3, 4 * B);
    s.volume
        .write(0, Bytes::from(vec![3; 4 * B]))
        .expect("write");
    s.mems[0].poke(0, &[0; B]);
    s.mems[0].fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(&s.volume.read(0, B).expect("read")[..], &[3; B][..]);
    s.mems[0].fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(s.mems[0].snapshot(), s.mems[1].snapshot());
    let events = s.sink.take();
    assert_eq!(bad_reads(&events), vec![("a".into(), 0, B as u64, true)]);
    assert!(events.contains(&Event::Rewrite {
        child: "a".into(),
        offset: 0,
        bytes: B as u64
    }));
}

#[test]
fn fifo_reads_child_zero_only_when_it_works() {
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    let s = setup(opts, 3, 4 * B);
    s.mems[1].poke(0, &[1; B]);
    s.mems[2].poke(0, &[2; B]);
    assert_eq!(&s.volume.read(0, B).expect("read")[..], &[0; B][..]);
    assert!(s.sink.take().is_empty());
}

#[test]
fn blkverify_reports_the_first_differing_byte_and_keeps_going() {
    let mut opts = options(2);
    opts.blkverify = true;
    let s = setup(opts, 2, 4 * B);
    s.mems[1].poke(12345 % (4 * B), &[1]);
    let at = (12345 % (4 * B)) as u64;
    let err = s.volume.read(0, 4 * B).expect_err("mismatch");
    assert!(matches!(err, VolumeError::BlkverifyMismatch { offset, .. } if offset == at));
    assert_eq!(
        s.sink.take(),
        vec![Event::BlkverifyMismatch {
            offset: at,
            request_offset: 0,
            request_bytes: 4 * B as u64
        }]
    );
    assert_eq!(
        &s.volume.read(0, 100).expect("equal part")[..],
        &[0; 100][..]
    );
}

#[test]
fn open_refuses_what_qemu_refuses() {
    let open = |opts: VolumeOptions, mems: Vec<Arc<Mem>>| {
        let children = specs(&mems);
        Volume::open(opts, children, Arc::new(NullSink)).map(drop)
    };
    let three = || vec![Mem::new("a", B), Mem::new("b", B), Mem::new("c", B)];
    assert!(matches!(
        open(options(0), three()),
        Err(OpenError::Threshold { .. })
    ));
    assert!(matches!(
        open(options(4), three()),
        Err(OpenError::Threshold { .. })
    ));
    assert!(matches!(
        open(options(1), vec![]),
        Err(OpenError::NoChildren)
    ));
    let mut bv = options(2);
    bv.blkverify = true;
    assert!(matches!(
        open(bv.clone(), three()),
        Err(OpenError::Blkverify { .. })
    ));
    bv.rewrite_corrupted = true;
    assert!(matches!(
        open(bv, vec![Mem::new("a", B), Mem::new("b", B)]),
        Err(OpenError::BlkverifyRewrite)
    ));
    let err = open(options(2), vec![Mem::new("a", B), Mem::new("b", 2 * B)]).expect_err("sizes");
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert!(matches!(
        open(options(1), vec![Mem::new("a", B), Mem::new("a", B)]),
        Err(OpenError::DuplicateChild { .. })
    ));
}

#[test]
fn out_of_range_requests_touch_nothing() {
    let s = setup(options(2), 3, 4 * B);
    for (offset, len) in [
        (4 * B as u64, 1usize),
        (u64::MAX, 1),
        (u64::MAX - 1, 10),
        (1, 4 * B),
    ] {
        assert!(matches!(
            s.volume.write(offset, Bytes::from(vec![1; len])),
            Err(VolumeError::OutOfRange { .. })
        ));
        assert!(matches!(
            s.volume.read(offset, len),
            Err(VolumeError::OutOfRange { .. })
        ));
        assert!(matches!(
            s.volume.write_zeroes(offset, len as u64),
            Err(VolumeError::OutOfRange { .. })
        ));
    }
    for m in &s.mems {
        assert_eq!(m.snapshot(), vec![0; 4 * B]);
    }
}

#[test]
fn block_status_is_zero_only_where_every_child_says_so() {
    let s = setup(options(2), 3, 8 * B);
    s.volume
        .write(B as u64, Bytes::from(vec![1; B]))
        .expect("write");
    s.mems[2].write_at(&[1], 5 * B as u64).expect("poke");
    let map = s.volume.block_status(0, 8 * B as u64, 100).expect("status");
    let b = B as u64;
    assert_eq!(
        map,
        vec![
            Extent {
                offset: 0,
                length: b,
                zero: true
            },
            Extent {
                offset: b,
                length: b,
                zero: false
            },
            Extent {
                offset: 2 * b,
                length: 3 * b,
                zero: true
            },
            Extent {
                offset: 5 * b,
                length: b,
                zero: false
            },
            Extent {
                offset: 6 * b,
                length: 2 * b,
                zero: true
            },
        ]
    );
    s.volume.write_zeroes(b, b).expect("zeroes");
    let map = s.volume.block_status(0, 5 * b, 100).expect("status");
    assert_eq!(
        map,
        vec![Extent {
            offset: 0,
            length: 5 * b,
            zero: true
        }]
    );
}

#[test]
fn flush_runs_on_all_children_and_reports_failures() {
    let s = setup(options(2), 3, B);
    s.mems[1].fail_flush.store(true, Ordering::SeqCst);
    s.volume.flush().expect("flush at threshold");
    assert_eq!(
        s.sink.take(),
        vec![Event::ReportBad {
            op: Op::Flush,
            child: "b".into(),
            offset: 0,
            bytes: 0,
            error: Some(BackendError::from_errno(5).to_string())
        }]
    );
    s.mems[2].fail_flush.store(true, Ordering::SeqCst);
    assert!(s.volume.flush().is_err());
    assert!(s.sink.take().contains(&Event::Failure {
        op: Op::Flush,
        offset: 0,
        bytes: 0
    }));
}

#[test]
fn close_stops_the_workers() {
    let s = setup(options(2), 3, B);
    assert!(s.volume.close(Duration::from_secs(5)).is_empty());
    let err = s
        .volume
        .write(0, Bytes::from(vec![1; 1]))
        .expect_err("closed");
    assert!(matches!(err, VolumeError::Quorum(_)));
}

/// Several threads write and read random overlapping ranges of a small
/// region. Each write fills every block it touches with a pattern unique to
/// it. Afterwards the children are identical and no read saw a block that
/// mixes two writes.
#[test]
fn overlapping_requests_are_ordered() {
    const REGION: usize = 16 * B;
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::jittery(n, REGION))
        .collect();
    let s = Arc::new(setup_with(options(2), mems));
    let next_id = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let torn = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (s, next_id, torn, reads, writes) = (
                s.clone(),
                next_id.clone(),
                torn.clone(),
                reads.clone(),
                writes.clone(),
            );
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                while Instant::now() < deadline {
                    let first = rng.random_range(0..REGION / B);
                    let count = rng.random_range(1..=(REGION / B - first).min(6));
                    let (offset, len) = (first * B, count * B);
                    if rng.random_bool(0.5) {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let mut data = vec![0u8; len];
                        for block in data.chunks_mut(B) {
                            for (i, word) in block.chunks_mut(8).enumerate() {
                                word.copy_from_slice(&(id << 16 | i as u64).to_le_bytes());
                            }
                        }
                        s.volume
                            .write(offset as u64, Bytes::from(data))
                            .expect("write");
                        writes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let data = s.volume.read(offset as u64, len).expect("read");
                        for block in data.chunks(B) {
                            if !is_one_write(block) {
                                torn.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    assert!(reads.load(Ordering::Relaxed) > 50 && writes.load(Ordering::Relaxed) > 50);
    assert_eq!(
        torn.load(Ordering::Relaxed),
        0,
        "reads saw blocks mixing two writes"
    );
    let first = s.mems[0].snapshot();
    for m in &s.mems[1..] {
        assert!(m.snapshot() == first, "child {} diverged", m.name);
    }
    for block in first.chunks(B) {
        assert!(is_one_write(block));
    }
    assert!(
        s.sink.events().is_empty(),
        "no child should lose a vote: {:?}",
        s.sink.events().first()
    );
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

#[test]
fn a_chunked_read_is_one_request_for_reports() {
    let size = 64 * B;
    let s = setup(options(2), 3, size);
    s.volume
        .write(0, Bytes::from(vec![0x32; size]))
        .expect("write");
    s.mems[2].poke(0, &vec![0x42; size]);
    let mut got = Vec::new();
    s.volume
        .read_chunks(0, size as u64, 5 * B + 3, |piece| {
            got.extend_from_slice(&piece);
            true
        })
        .expect("read");
    assert_eq!(got, vec![0x32; size]);
    assert_eq!(
        bad_reads(&s.sink.take()),
        vec![("c".into(), 0, size as u64, false)]
    );
    // Stopping early reads no further.
    let mut pieces = 0;
    s.volume
        .read_chunks(0, size as u64, B, |_| {
            pieces += 1;
            pieces < 3
        })
        .expect("read");
    assert_eq!(pieces, 3);
}

#[test]
fn missed_writes_are_stale_never_read_and_resynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("vm.stale");
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let open = |mems: &[Arc<Mem>]| {
        let children = specs(mems);
        Volume::open_journaled(
            options(2),
            children,
            Arc::new(RecordingSink::default()),
            Some(&journal),
        )
        .expect("open")
    };
    let volume = open(&mems);
    volume
        .write(0, Bytes::from(vec![1; 16 * B]))
        .expect("write");
    mems[0].fail_writes.store(true, Ordering::SeqCst);
    volume
        .write(B as u64, Bytes::from(vec![2; B]))
        .expect("write at threshold");
    volume
        .write(5 * B as u64 + 10, Bytes::from(vec![3; 100]))
        .expect("write at threshold");
    mems[0].fail_writes.store(false, Ordering::SeqCst);
    let missed = B as u64 + 100;
    assert_eq!(volume.stale_bytes(), vec![missed, 0, 0]);
    assert_eq!(volume.children()[0].state, ChildState::Failed);
    volume.read(8 * B as u64, B).expect("a read that a answers");
    assert_eq!(volume.children()[0].state, ChildState::Stale);
    // Make the stale child disagree in a way that would win a fifo read.
    let mut opts = options(2);
    opts.read_pattern = ReadPattern::Fifo;
    drop(volume);

    // The map survives a restart (the journal), and fifo skips child a there.
    let children = specs(&mems);
    let fifo =
        Volume::open_journaled(opts, children, Arc::new(NullSink), Some(&journal)).expect("reopen");
    assert_eq!(fifo.stale_bytes(), vec![missed, 0, 0]);
    assert_eq!(&fifo.read(B as u64, B).expect("fifo read")[..], &[2; B][..]);
    assert_eq!(
        &fifo.read(0, 10).expect("a fresh range from a")[..],
        &[1; 10][..]
    );
    drop(fifo);

    // Quorum reads leave a out of the vote there, and report no loss.
    let volume = open(&mems);
    assert_eq!(&volume.read(0, 8 * B).expect("read")[B..2 * B], &[2; B][..]);
    // Resync refreshes exactly the missed bytes (copying the fresh bytes
    // between them too), then nothing is stale.
    let mut copied = 0;
    let mut from = 0;
    loop {
        match volume.resync_step(1 << 20, from) {
            ResyncStep::Idle => break,
            ResyncStep::Copied {
                child,
                range,
                refreshed,
                next,
            } => {
                assert_eq!(child, "a");
                assert!(refreshed <= range.end - range.start, "{range:?}");
                copied += refreshed;
                from = next;
            }
            ResyncStep::Failed { error, .. } => panic!("resync: {error}"),
        }
    }
    assert_eq!(copied, missed);
    assert_eq!(volume.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(mems[0].snapshot(), mems[1].snapshot());
    assert_eq!(volume.children()[0].state, ChildState::Healthy);
    // A later successful write over a stale range also refreshes it.
    mems[2].fail_writes.store(true, Ordering::SeqCst);
    volume.write(0, Bytes::from(vec![4; 100])).expect("write");
    mems[2].fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(volume.stale_bytes(), vec![0, 0, 100]);
    volume.write(0, Bytes::from(vec![5; 200])).expect("write");
    assert_eq!(volume.stale_bytes(), vec![0, 0, 0]);
}

#[test]
fn scrub_reports_repairs_and_refuses_to_guess() {
    let size = 64 * B;
    let s = setup(options(2), 3, size);
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    s.volume.write(0, Bytes::from(data.clone())).expect("write");
    // b is bad in blocks 1 and 9, c in blocks 4 and 20: never the same block.
    for block in [1usize, 9] {
        s.mems[1].poke(block * B, &[0xee; B]);
    }
    for block in [4usize, 20] {
        s.mems[2].poke(block * B + 100, &[0xdd; 10]);
    }
    let found = s.volume.scrub(0, size as u64, false).expect("scrub");
    let mut lost = found.lost.clone();
    lost.sort();
    assert_eq!(
        lost,
        vec![("b".to_string(), 2 * B as u64), ("c".to_string(), 20)]
    );
    assert_eq!(found.repaired, 0);
    assert!(found.unrecoverable.is_empty());
    assert_ne!(
        s.mems[1].snapshot(),
        data,
        "a scrub without repair writes nothing"
    );
    let fixed = s.volume.scrub(0, size as u64, true).expect("repair");
    assert_eq!(fixed.repaired, 2 * B as u64 + 20);
    for m in &s.mems {
        assert_eq!(m.snapshot(), data);
    }
    // A block bad on two of three has no majority: listed, not "repaired".
    s.mems[0].poke(7 * B, &[1; 8]);
    s.mems[1].poke(7 * B, &[2; 8]);
    s.sink.take();
    let found = s.volume.scrub(0, size as u64, true).expect("scrub");
    assert_eq!(found.unrecoverable, vec![7 * B as u64..8 * B as u64]);
    let failures: Vec<Event> = s
        .sink
        .take()
        .into_iter()
        .filter(|e| matches!(e, Event::Failure { .. }))
        .collect();
    assert_eq!(
        failures,
        vec![Event::Failure {
            op: Op::Read,
            offset: 7 * B as u64,
            bytes: B as u64
        }],
        "the unrecoverable block is announced once"
    );
    assert_eq!(&s.mems[0].snapshot()[7 * B..7 * B + 8], &[1; 8]);
    assert_eq!(&s.mems[1].snapshot()[7 * B..7 * B + 8], &[2; 8]);
    assert_eq!(s.mems[2].snapshot(), data);
}

#[test]
fn a_child_that_timed_out_is_not_tried_again_until_its_backoff_passed() {
    let s = setup(options(2), 3, 4 * B);
    s.mems[2].hang_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![1; 10]))
        .expect("write at threshold");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 1);
    // Refused at once: no second wait for the hung child.
    s.volume
        .write(100, Bytes::from(vec![2; 10]))
        .expect("write at threshold");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 20],
        "both writes are stale on c"
    );
    // After the back-off (its length is `breaker.rs`'s test), the next
    // request tries it again.
    assert!(s.volume.breaker_open(2), "c's breaker opened");
    s.mems[2].hang_writes.store(false, Ordering::SeqCst);
    promises::wait_for("c's back-off to pass", || !s.volume.breaker_open(2));
    s.volume.write(0, Bytes::from(vec![3; 200])).expect("write");
    assert_eq!(s.mems[2].write_attempts.load(Ordering::SeqCst), 2);
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
}

/// The resync bell rings when a missed write marks a range stale (and when
/// a range is marked for a new child), not when a range is cleared, nor
/// once it is unset.
#[test]
fn the_resync_bell_rings_on_every_new_stale_range() {
    let s = setup(options(2), 3, 64 * 1024);
    let rung = Arc::new(AtomicU64::new(0));
    let counter = rung.clone();
    s.volume.set_resync_bell(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    s.volume
        .write(0, Bytes::from(vec![1; B]))
        .expect("a write on every child");
    assert_eq!(rung.load(Ordering::SeqCst), 0);
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![2; B]))
        .expect("a write at the threshold");
    assert_eq!(rung.load(Ordering::SeqCst), 1, "a missed write rings");
    s.mems[2].fail_writes.store(false, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![3; B]))
        .expect("a write that refreshes c");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(rung.load(Ordering::SeqCst), 1, "a clear does not ring");
    s.volume
        .mark_stale("a", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "a mark rings");
    s.volume
        .mark_stale("a", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale again");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "a mark that adds nothing");
    assert!(!s.volume.awaits_reconcile());
    s.volume.set_resync_bell(None);
    s.volume
        .mark_stale("b", std::slice::from_ref(&(0..B as u64)))
        .expect("mark stale");
    assert_eq!(rung.load(Ordering::SeqCst), 2, "an unset bell");
}
