//! Review of 2c44bb6: every started write gives its write-intent ticket
//! back exactly once, whichever way it completes while the stale maps'
//! lock is held (its rest run, dropped unrun, or completed by the
//! watchdog), and under a thread that keeps taking the lock.

use std::sync::mpsc;

use super::started::{finish, mems};
use super::*;

const COMPLETES: Duration = Duration::from_secs(10);

/// A journaled volume over `mems`, with `child_timeout`, whose first
/// intent region is dirty (a blocking write recorded it).
fn journaled(mems: &[Arc<Mem>], dir: &std::path::Path, timeout: Duration) -> Arc<Volume> {
    let v = Arc::new(
        Volume::open_journaled(
            VolumeOptions {
                child_timeout: timeout,
                ..options(2)
            },
            specs(mems),
            Arc::new(NullSink),
            Some(&dir.join("journal")),
        )
        .expect("open"),
    );
    v.write(0, Bytes::from(vec![1u8; B]))
        .expect("blocking write");
    assert_eq!(v.intents_in_flight(), 0);
    v
}

/// Starts a write of `fill` at `offset` and returns its completion, which
/// comes while this thread holds the stale maps' lock: `mem` stalls its
/// writes until the lock is taken.
fn complete_under_the_lock(v: &Arc<Volume>, mem: &Mem, offset: u64, fill: u8) -> Completion<()> {
    mem.stall(true);
    let (tx, rx) = mpsc::channel();
    v.start_write(offset, Bytes::from(vec![fill; B]), move |c| {
        let _ = tx.send(c);
    })
    .expect("the write started: its region is dirty");
    let _maps = v.lock_stale_maps();
    mem.stall(false);
    rx.recv_timeout(COMPLETES)
        .expect("the write completed with the lock held")
}

#[test]
fn a_rest_dropped_unrun_gives_the_intent_back_and_the_range_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mems = mems(3, 16 * B);
    let v = journaled(&mems, dir.path(), VolumeOptions::DEFAULT_CHILD_TIMEOUT);
    let Completion::Blocking(rest) = complete_under_the_lock(&v, &mems[2], B as u64, 2) else {
        panic!("a write that cannot give its intent back now is not done");
    };
    assert_eq!(v.intents_in_flight(), 1);
    drop(rest);
    assert_eq!(
        v.intents_in_flight(),
        0,
        "dropping the rest ends the intent"
    );
    // The range is free: an overlapping blocking write does not wait.
    let writer = {
        let v = v.clone();
        thread::spawn(move || v.write(B as u64, Bytes::from(vec![3u8; B])))
    };
    let deadline = Instant::now() + COMPLETES;
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the range was never released");
        thread::sleep(Duration::from_millis(5));
    }
    writer.join().expect("writer").expect("the write");
    assert_eq!(v.intents_in_flight(), 0);
}

#[test]
fn a_write_completed_by_the_watchdog_under_the_lock_gives_its_intent_back_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mems = mems(3, 16 * B);
    let v = journaled(&mems, dir.path(), Duration::from_millis(300));
    mems[2].stall(true);
    let (tx, rx) = mpsc::channel();
    v.start_write(B as u64, Bytes::from(vec![2u8; B]), move |c| {
        let _ = tx.send(c);
    })
    .expect("the write started");
    let completion = {
        let _maps = v.lock_stale_maps();
        rx.recv_timeout(COMPLETES)
            .expect("the watchdog completed the write with the lock held")
    };
    let Completion::Blocking(rest) = completion else {
        panic!("a write a child missed has stale marks to record");
    };
    assert_eq!(v.intents_in_flight(), 1);
    rest.run().expect("two children took it");
    assert_eq!(v.intents_in_flight(), 0);
    assert_eq!(v.stale_bytes()[2], B as u64, "c missed it");
    mems[2].stall(false);
    v.close(COMPLETES);
}

/// Many started writes complete while another thread keeps taking and
/// releasing the stale maps' lock: whatever each one's completion, no
/// intent is left in flight once they all finished.
#[test]
fn started_writes_racing_the_stale_maps_lock_leave_no_intent_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mems = mems(3, 16 * B);
    let v = journaled(&mems, dir.path(), VolumeOptions::DEFAULT_CHILD_TIMEOUT);
    let stop = Arc::new(AtomicBool::new(false));
    let locker = {
        let (v, stop) = (v.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                {
                    let _maps = v.lock_stale_maps();
                    thread::sleep(Duration::from_micros(50));
                }
                thread::sleep(Duration::from_micros(50));
                n += 1;
            }
            n
        })
    };
    let (mut done, mut blocking) = (0u32, 0u32);
    // Bounded: at most 100,000 tries, until 1,000 writes started.
    for i in 0..100_000u64 {
        if done + blocking >= 1000 {
            break;
        }
        let (tx, rx) = mpsc::channel();
        let started = v.start_write((i % 15 + 1) * B as u64, Bytes::from(vec![i as u8; B]), {
            move |c| {
                let _ = tx.send(c);
            }
        });
        if started.is_err() {
            continue;
        }
        match rx.recv_timeout(COMPLETES).expect("completes") {
            Completion::Done(r) => {
                r.expect("written");
                done += 1;
            }
            c @ Completion::Blocking(_) => {
                finish(c).expect("written");
                blocking += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let locks = locker.join().expect("locker");
    assert_eq!(
        v.intents_in_flight(),
        0,
        "{locks} locks, {done} done, {blocking} blocking"
    );
    assert!(
        locks > 0 && blocking > 0,
        "{locks} locks, {done} done, {blocking} blocking"
    );
}
