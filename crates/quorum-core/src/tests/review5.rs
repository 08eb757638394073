//! Review of the count of failed flushes: writes that a failed flush may
//! have lost, but that no sample of the count saw, must not stay fresh.
//! Every test here failed before its fix: the first four before each
//! child's unflushed ranges kept the count they began at, the last two
//! before a child whose flush failed meanwhile counted as failing the write.

use super::promises::wait_for;
use super::*;

/// A child over `inner` whose flushes, while `held`, wait until released
/// and then fail with an I/O error (a write-back that fails while the
/// flush is in the kernel, reported to that one `fsync` only).
struct Gated {
    inner: Arc<Mem>,
    held: AtomicBool,
    gate: (Mutex<(usize, bool)>, Condvar),
}

impl Gated {
    fn new(inner: Arc<Mem>) -> Arc<Gated> {
        Arc::new(Gated {
            inner,
            held: AtomicBool::new(false),
            gate: (Mutex::new((0, false)), Condvar::new()),
        })
    }

    /// Flushes that start from now on wait in the backend.
    fn hold(&self) {
        *self.gate.0.lock().expect("gate") = (0, false);
        self.held.store(true, Ordering::SeqCst);
    }

    /// Waits until a held flush is in the backend.
    fn entered(&self) {
        wait_for("a held flush", || self.gate.0.lock().expect("gate").0 > 0);
    }

    /// Lets the held flushes fail; later ones succeed.
    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.gate.0.lock().expect("gate").1 = true;
        self.gate.1.notify_all();
    }
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gated({})", self.inner)
    }
}

impl Backend for Gated {
    fn kind(&self) -> &'static str {
        "gated"
    }
    fn size(&self) -> Result<u64, BackendError> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.inner.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.inner.write_zeroes(offset, length)
    }
    fn flush(&self) -> Result<(), BackendError> {
        if !self.held.load(Ordering::SeqCst) {
            return self.inner.flush();
        }
        let mut g = self.gate.0.lock().expect("gate");
        g.0 += 1;
        self.gate.1.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.1 && Instant::now() < deadline {
            g = self
                .gate
                .1
                .wait_timeout(g, Duration::from_millis(10))
                .expect("gate")
                .0;
        }
        Err(BackendError::from_errno(5))
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.inner.block_status(offset, length, limit)
    }
}

/// A volume, threshold 2, over a, b and a gated c.
fn gated(opts: VolumeOptions) -> (Arc<Volume>, Arc<Gated>) {
    let size = 16 * B;
    let c = Gated::new(Mem::new("c", size));
    let children = vec![
        ChildSpec::new("a", Mem::new("a", size)),
        ChildSpec::new("b", Mem::new("b", size)),
        ChildSpec::new("c", c.clone()),
    ];
    let v = Volume::open(opts, children, Arc::new(RecordingSink::default())).expect("open");
    (Arc::new(v), c)
}

/// A volume with a `child_timeout` of 100 ms (its options given back) after
/// a write every child took and a flush that c holds past the timeout:
/// a and b flushed, c's flush is abandoned and still in its call.
fn a_flush_of_c_abandoned_after_a_write() -> (Arc<Volume>, Arc<Gated>, VolumeOptions) {
    let mut opts = options(2);
    opts.child_timeout = Duration::from_millis(100);
    let (v, c) = gated(opts.clone());
    v.write(0, Bytes::from(vec![7u8; 4 * B])).expect("write");
    c.hold();
    v.flush().expect("a and b flushed; c timed out");
    c.entered();
    (v, c, opts)
}

/// A write c took (acknowledged fresh, its count unchanged when it was
/// answered) while c's flush was in the kernel; the flush then fails, so
/// the write may have been lost with that write-back, and c's next flush
/// succeeds. Before the fix c stayed fresh there: the write's range was
/// not among those the failing flush covered, and its sample had not moved.
#[test]
fn a_write_taken_during_a_flush_that_then_fails_is_stale() {
    let (v, c) = gated(options(2));
    c.hold();
    let flusher = {
        let v = v.clone();
        thread::spawn(move || v.flush())
    };
    c.entered();
    // Past the quick queue's window, so that a worker wakes for the write.
    thread::sleep(Duration::from_millis(5));
    v.write(0, Bytes::from(vec![7u8; 4 * B])).expect("write");
    assert_eq!(v.stale_bytes(), vec![0, 0, 0], "nothing failed yet");
    c.release();
    flusher.join().expect("flusher").expect("a and b flushed");
    v.flush().expect("every child flushed");
    assert_eq!(
        v.stale_bytes(),
        vec![0, 0, 4 * B as u64],
        "c's flush failed after it took the write"
    );
}

/// A write acknowledged fresh, then a flush of c sent by another write's
/// stale marks (not by `Volume::flush`) fails: the first write's range was
/// still unflushed on c. Before the fix only the second write's range was
/// stale, and the next flush, which succeeds, cleared the first.
#[test]
fn an_unflushed_write_stays_stale_after_a_refresh_flush_fails() {
    let s = setup(options(2), 3, 16 * B);
    let c = s.mems[2].clone();
    s.volume
        .write(0, Bytes::from(vec![1u8; 4 * B]))
        .expect("write");
    s.volume
        .mark_stale("c", std::slice::from_ref(&(8 * B as u64..12 * B as u64)))
        .expect("mark c");
    c.fail_flush.store(true, Ordering::SeqCst);
    s.volume
        .write(8 * B as u64, Bytes::from(vec![2u8; 4 * B]))
        .expect("write");
    c.fail_flush.store(false, Ordering::SeqCst);
    s.volume.flush().expect("flush");
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 8 * B as u64],
        "both writes were unflushed on c when its flush failed"
    );
}

/// A flush of c abandoned at `child_timeout` that fails after: what c took
/// before it went back to c's unflushed ranges, and the next flush, which
/// succeeds, cleared them before the fix.
#[test]
fn an_abandoned_flush_that_fails_later_leaves_its_writes_stale() {
    let (v, c, _) = a_flush_of_c_abandoned_after_a_write();
    c.release();
    wait_for("c's failed flush counted", || v.flush_errors()[2] == 1);
    v.flush().expect("every child flushed");
    assert_eq!(v.stale_bytes(), vec![0, 0, 4 * B as u64]);
}

/// The same after a membership change: the old volume's abandoned flush
/// fails once the new volume over the same backend holds c's unflushed
/// ranges.
#[test]
fn a_flush_abandoned_before_a_membership_change_that_fails_after_it() {
    let (v, c, opts) = a_flush_of_c_abandoned_after_a_write();
    let dir = tempfile::tempdir().expect("tempdir");
    let next = v
        .succeed(opts, v.child_specs(), &dir.path().join("journal"))
        .expect("succeed");
    c.release();
    wait_for("c's failed flush counted", || next.flush_errors()[2] == 1);
    next.flush().expect("every child flushed");
    assert_eq!(next.stale_bytes(), vec![0, 0, 4 * B as u64]);
}

/// A write every child took, but b's and c's flushes failed while it was
/// on its way: only a may still hold it, fewer than the threshold, as if
/// b and c had failed the write. Before the fix the write was answered
/// done, with the range then under its threshold.
#[test]
fn a_write_two_failed_flushes_may_have_lost_has_no_quorum() {
    let s = setup(options(2), 3, 16 * B);
    let (b, c) = (s.mems[1].clone(), s.mems[2].clone());
    b.stall(true);
    c.stall(true);
    let v = Arc::new(s.volume);
    let writer = {
        let v = v.clone();
        thread::spawn(move || v.write(4 * B as u64, Bytes::from(vec![7u8; 2 * B])))
    };
    wait_for("stalled writes", || {
        b.write_attempts.load(Ordering::SeqCst) > 0 && c.write_attempts.load(Ordering::SeqCst) > 0
    });
    thread::sleep(Duration::from_millis(5));
    b.fail_flush.store(true, Ordering::SeqCst);
    c.fail_flush.store(true, Ordering::SeqCst);
    assert!(v.flush().is_err(), "only a flushed");
    b.fail_flush.store(false, Ordering::SeqCst);
    c.fail_flush.store(false, Ordering::SeqCst);
    b.stall(false);
    c.stall(false);
    let written = writer.join().expect("writer");
    assert!(
        matches!(written, Err(VolumeError::Quorum(_))),
        "{written:?}, stale {:?}",
        v.stale_bytes()
    );
}

/// The same through a started write.
#[test]
fn a_started_write_two_failed_flushes_may_have_lost_has_no_quorum() {
    let s = setup(options(2), 3, 16 * B);
    let (b, c) = (s.mems[1].clone(), s.mems[2].clone());
    b.stall(true);
    c.stall(true);
    let v = Arc::new(s.volume);
    let (tx, rx) = std::sync::mpsc::channel();
    v.start_write(4 * B as u64, Bytes::from(vec![7u8; 2 * B]), move |done| {
        let _ = tx.send(done);
    })
    .expect("the write started");
    wait_for("stalled writes", || {
        b.write_attempts.load(Ordering::SeqCst) > 0 && c.write_attempts.load(Ordering::SeqCst) > 0
    });
    thread::sleep(Duration::from_millis(5));
    b.fail_flush.store(true, Ordering::SeqCst);
    c.fail_flush.store(true, Ordering::SeqCst);
    assert!(v.flush().is_err(), "only a flushed");
    b.fail_flush.store(false, Ordering::SeqCst);
    c.fail_flush.store(false, Ordering::SeqCst);
    b.stall(false);
    c.stall(false);
    let done = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the write completed");
    let written = match done {
        Completion::Done(result) => result,
        Completion::Blocking(rest) => rest.run(),
    };
    assert!(
        matches!(written, Err(VolumeError::Quorum(_))),
        "{written:?}, stale {:?}",
        v.stale_bytes()
    );
}
