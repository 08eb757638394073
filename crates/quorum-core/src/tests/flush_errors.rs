//! A flush that fails with an I/O error while another request's data is
//! on its way to the child: Linux reports a failed write-back to one
//! `fsync` of the file, so the flush that comes after it succeeds and says
//! nothing of the data lost. Whoever wrote meanwhile must not count on it.

use super::promises::wait_for;
use super::*;

/// Waits until child `c` has a write stalled (its attempt counted), and a
/// little more: a job queued within `queue::QUICK` of another's start on a
/// quick child waits for that worker rather than wake another, and the
/// stalled write would hold the flush behind it until `child_timeout`.
fn stalled_write(c: &Mem, attempts: u64) {
    wait_for("a stalled write", || {
        c.write_attempts.load(Ordering::SeqCst) > attempts
    });
    thread::sleep(Duration::from_millis(5));
}

/// Fails one flush of every child through the volume, c's with an I/O
/// error (a and b flush, so the volume's flush meets its threshold).
fn fail_a_flush_of(v: &Volume, c: &Mem) {
    c.fail_flush.store(true, Ordering::SeqCst);
    v.flush().expect("a and b flushed");
    c.fail_flush.store(false, Ordering::SeqCst);
}

#[test]
fn a_write_that_a_failed_flush_may_have_lost_leaves_the_child_stale() {
    let s = setup(options(2), 3, 16 * B);
    let c = s.mems[2].clone();
    c.stall(true);
    let v = Arc::new(s.volume);
    let writer = {
        let v = v.clone();
        thread::spawn(move || v.write(4 * B as u64, Bytes::from(vec![7u8; 2 * B])))
    };
    stalled_write(&c, 0);
    fail_a_flush_of(&v, &c);
    c.stall(false);
    writer
        .join()
        .expect("writer")
        .expect("the write met its threshold");
    assert_eq!(
        v.stale_bytes(),
        vec![0, 0, 2 * B as u64],
        "c took the write, but a flush of it failed meanwhile"
    );
}

#[test]
fn a_started_write_that_a_failed_flush_may_have_lost_leaves_the_child_stale() {
    let s = setup(options(2), 3, 16 * B);
    let c = s.mems[2].clone();
    c.stall(true);
    let v = Arc::new(s.volume);
    let (tx, rx) = std::sync::mpsc::channel();
    v.start_write(4 * B as u64, Bytes::from(vec![7u8; 2 * B]), move |done| {
        let _ = tx.send(done);
    })
    .expect("the write started");
    stalled_write(&c, 0);
    fail_a_flush_of(&v, &c);
    c.stall(false);
    let done = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the write completed");
    let Completion::Blocking(rest) = done else {
        panic!("a write a failed flush may have lost is not done at once");
    };
    rest.run().expect("the write met its threshold");
    assert_eq!(v.stale_bytes(), vec![0, 0, 2 * B as u64]);
}

/// A volume of three children whose first four blocks hold 9s, flushed,
/// and c, their copy on child 2, zeroed and marked stale there: the next
/// resync step copies them onto c.
fn c_stale_over_written_blocks() -> (Setup, Arc<Mem>) {
    let s = setup(options(2), 3, 16 * B);
    let c = s.mems[2].clone();
    s.volume
        .write(0, Bytes::from(vec![9u8; 4 * B]))
        .expect("write");
    s.volume.flush().expect("flush");
    c.poke(0, &[0u8; 4 * B]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&(0..4 * B as u64)))
        .expect("mark c");
    (s, c)
}

#[test]
fn a_resync_copy_that_a_failed_flush_may_have_lost_stays_stale() {
    let (s, c) = c_stale_over_written_blocks();
    let attempts = c.write_attempts.load(Ordering::SeqCst);
    c.stall(true);
    let v = Arc::new(s.volume);
    let step = {
        let v = v.clone();
        thread::spawn(move || v.resync_step(1 << 20, 0))
    };
    stalled_write(&c, attempts);
    // The resync holds the volume's reports until its step ends, so the
    // failing flush is waited for on a thread of its own: its job has run
    // once c's count moved.
    c.fail_flush.store(true, Ordering::SeqCst);
    let flusher = {
        let v = v.clone();
        thread::spawn(move || v.flush())
    };
    wait_for("c's failed flush", || v.flush_errors()[2] == 1);
    c.fail_flush.store(false, Ordering::SeqCst);
    c.stall(false);
    let step = step.join().expect("resync");
    flusher.join().expect("flusher").expect("a and b flushed");
    assert!(
        matches!(step, ResyncStep::Failed { ref child, .. } if child == "c"),
        "{step:?}"
    );
    assert_eq!(v.stale_bytes(), vec![0, 0, 4 * B as u64], "still stale");
    // The next step, with no flush failing, copies it for good.
    let again = v.resync_step(1 << 20, 0);
    assert!(matches!(again, ResyncStep::Copied { .. }), "{again:?}");
    assert_eq!(v.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(&c.snapshot()[..4 * B], &[9u8; 4 * B][..]);
}

#[test]
fn writes_with_no_failed_flush_stay_fresh() {
    let s = setup(options(2), 3, 16 * B);
    s.volume
        .write(0, Bytes::from(vec![1u8; 4 * B]))
        .expect("write");
    s.volume.flush().expect("flush");
    s.volume
        .write(0, Bytes::from(vec![2u8; 4 * B]))
        .expect("write");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
}

#[test]
fn a_resync_copy_is_marked_stale_again_when_a_failed_flush_is_counted_after_it() {
    let (s, _) = c_stale_over_written_blocks();
    let step = s.volume.resync_step(1 << 20, 0);
    assert!(matches!(step, ResyncStep::Copied { .. }), "{step:?}");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    // Another flush's fsync took the error of the copy's write-back before
    // the resync's own flush, and its worker counts it only now.
    s.volume.count_a_failed_flush(2);
    s.volume.flush().expect("a and b flushed");
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 4 * B as u64],
        "the copy may have been lost with that write-back"
    );
}

#[test]
fn a_resync_copy_begun_after_a_counted_failed_flush_stays_fresh() {
    let (s, c) = c_stale_over_written_blocks();
    // Counted before the copy begins: the copy cannot be lost with it.
    fail_a_flush_of(&s.volume, &c);
    let step = s.volume.resync_step(1 << 20, 0);
    assert!(matches!(step, ResyncStep::Copied { .. }), "{step:?}");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    s.volume.flush().expect("flush");
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 0],
        "the copy was written and flushed after the failed flush was counted"
    );
    assert_eq!(&c.snapshot()[..4 * B], &[9u8; 4 * B][..]);
}
