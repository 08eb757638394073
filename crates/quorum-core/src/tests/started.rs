//! Reads and writes started without blocking (`start_read`,
//! `start_write`): the same answers, events and stale marks as the
//! blocking calls, bounded by `child_timeout` with nobody waiting, and
//! ordered against every other request.

use std::sync::mpsc;

use super::promises::{assert_all, wait_for, with_timeout};
use super::*;

/// How long a started request may take to complete in these tests.
const COMPLETES: Duration = Duration::from_secs(10);

/// Starts a request with `start`, which is given the callback, and
/// returns its completion, waited for here.
pub(super) fn started<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(Completion<T>) + Send>) -> Result<(), WouldBlock>,
) -> Result<Completion<T>, WouldBlock> {
    let (tx, rx) = mpsc::channel();
    start(Box::new(move |c| {
        let _ = tx.send(c);
    }))?;
    Ok(rx
        .recv_timeout(COMPLETES)
        .expect("the request did not complete"))
}

/// The result of a completion, running its rest here when it has one.
pub(super) fn finish<T>(c: Completion<T>) -> Result<T, VolumeError> {
    match c {
        Completion::Done(result) => result,
        Completion::Blocking(rest) => rest.run(),
    }
}

pub(super) fn start_read(v: &Arc<Volume>, offset: u64, length: usize) -> Completion<Bytes> {
    started(|done| v.start_read(offset, length, done)).expect("the read started")
}

fn start_write(v: &Arc<Volume>, offset: u64, data: Vec<u8>) -> Completion<()> {
    started(|done| v.start_write(offset, Bytes::from(data), done)).expect("the write started")
}

pub(super) fn open(
    opts: VolumeOptions,
    mems: &[Arc<Mem>],
    sink: Arc<RecordingSink>,
) -> Arc<Volume> {
    Arc::new(Volume::open(opts, specs(mems), sink).expect("open"))
}

pub(super) fn mems(n: usize, size: usize) -> Vec<Arc<Mem>> {
    ["a", "b", "c", "d"][..n]
        .iter()
        .map(|name| Mem::new(name, size))
        .collect()
}

#[test]
fn a_started_write_and_read_on_a_healthy_volume_are_done_on_the_last_answer() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let v = open(options(2), &mems, sink.clone());
    let data: Vec<u8> = (0..3 * B).map(|i| (i % 251) as u8).collect();
    let written = start_write(&v, 100, data.clone());
    assert!(
        matches!(written, Completion::Done(Ok(()))),
        "a write every child took is done at once"
    );
    for m in &mems {
        assert_eq!(
            &m.snapshot()[100..100 + 3 * B],
            &data[..],
            "child {}",
            m.name
        );
    }
    let read = start_read(&v, 100, 3 * B);
    let Completion::Done(Ok(read)) = read else {
        panic!("a read every child answered alike is done at once");
    };
    assert_eq!(&read[..], &data[..]);
    assert_eq!(v.read(100, 3 * B).expect("blocking read"), read);
    assert!(sink.events().is_empty(), "{:?}", sink.events());
}

#[test]
fn a_started_read_of_a_corrupt_child_is_voted_and_repaired_by_its_rest() {
    let mems = mems(3, 16 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        rewrite_corrupted: true,
        ..options(2)
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![5u8; 4 * B])).expect("write");
    mems[1].poke(B, &[9u8; 10]);
    let Completion::Blocking(rest) = start_read(&v, 0, 4 * B) else {
        panic!("a read with a loser is not done on the worker");
    };
    // The range stays held until the rest ran: a write waits for it.
    let writer = {
        let v = v.clone();
        thread::spawn(move || v.write(0, Bytes::from(vec![6u8; B])))
    };
    wait_for("the write to queue behind the read", || {
        v.waiting_for_ranges() == 1
    });
    let read = rest.run().expect("voted read");
    assert_all(&read, 5);
    writer
        .join()
        .expect("writer")
        .expect("the write after the read");
    assert_eq!(
        bad_reads(&sink.take()),
        vec![("b".into(), B as u64, 10, false)],
        "b lost the vote on its corrupt bytes"
    );
    assert_all(&mems[1].snapshot()[B..2 * B], 5);
}

/// A fifo read is the first child's when it reads; when it fails, the
/// rest reads the next child and repairs the first, as the blocking call.
#[test]
fn a_started_fifo_read_goes_on_to_the_next_child_in_its_rest() {
    let mems = mems(3, 4 * B);
    let sink = Arc::new(RecordingSink::default());
    let opts = VolumeOptions {
        read_pattern: ReadPattern::Fifo,
        rewrite_corrupted: true,
        ..options(2)
    };
    let v = open(opts, &mems, sink.clone());
    v.write(0, Bytes::from(vec![3u8; 4 * B])).expect("write");
    let Completion::Done(Ok(read)) = start_read(&v, 0, B) else {
        panic!("a fifo read of a healthy first child is done at once");
    };
    assert_all(&read, 3);
    mems[0].poke(0, &[0; B]);
    mems[0].fail_reads.store(true, Ordering::SeqCst);
    let Completion::Blocking(rest) = start_read(&v, 0, B) else {
        panic!("a fifo read of a failing first child is not done on the worker");
    };
    assert_all(&rest.run().expect("read from b"), 3);
    mems[0].fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(mems[0].snapshot(), mems[1].snapshot(), "a repaired");
    let events = sink.take();
    assert_eq!(bad_reads(&events), vec![("a".into(), 0, B as u64, true)]);
    assert!(events.contains(&Event::Rewrite {
        child: "a".into(),
        offset: 0,
        bytes: B as u64
    }));
}

#[test]
fn a_started_write_a_child_fails_marks_it_stale_even_if_its_rest_is_dropped() {
    let mems = mems(3, 16 * B);
    let v = open(options(2), &mems, Arc::new(RecordingSink::default()));
    mems[2].fail_writes.store(true, Ordering::SeqCst);
    let Completion::Blocking(rest) = start_write(&v, 0, vec![1u8; B]) else {
        panic!("a write a child failed is not done on the worker");
    };
    rest.run().expect("2 of 3 took it");
    assert_eq!(v.stale_bytes(), vec![0, 0, B as u64]);
    // A rest that nobody runs runs when dropped: c is marked stale for
    // the second write too, though nobody ran it.
    let Completion::Blocking(rest) = start_write(&v, 4 * B as u64, vec![2u8; B]) else {
        panic!("a write a child failed is not done on the worker");
    };
    drop(rest);
    assert_eq!(v.stale_bytes(), vec![0, 0, 2 * B as u64]);
    assert_eq!(v.waiting_for_ranges(), 0);
    // Too few children: the rest fails the write, as the blocking call.
    mems[1].fail_writes.store(true, Ordering::SeqCst);
    let Completion::Blocking(rest) = start_write(&v, 8 * B as u64, vec![3u8; B]) else {
        panic!("a failed write is not done on the worker");
    };
    assert!(matches!(rest.run(), Err(VolumeError::Quorum(_))));
}

#[test]
fn a_request_that_would_wait_does_not_start_and_changes_nothing() {
    let mems = mems(3, 16 * B);
    let v = open(options(2), &mems, Arc::new(RecordingSink::default()));
    // A write hangs on c and holds 0..B meanwhile.
    mems[2].stall(true);
    let writer = {
        let v = v.clone();
        thread::spawn(move || v.write(0, Bytes::from(vec![1u8; B])))
    };
    wait_for("the hung write", || {
        mems[2].write_attempts.load(Ordering::SeqCst) == 1
    });
    let refused = |r: Result<Completion<Bytes>, WouldBlock>| matches!(r, Err(WouldBlock));
    assert!(refused(started(|done| v.start_read(0, 2 * B, done))));
    assert!(matches!(
        started(|done| v.start_write(B as u64 - 1, Bytes::from(vec![2u8; 2]), done)),
        Err(WouldBlock)
    ));
    assert_eq!(
        v.waiting_for_ranges(),
        0,
        "a refused request queues nowhere"
    );
    // Beside it, requests start.
    assert!(matches!(
        start_read(&v, B as u64, B),
        Completion::Done(Ok(_))
    ));
    // Requests the blocking calls answer are not started either.
    assert!(refused(started(|done| v.start_read(0, 0, done))));
    assert!(refused(started(|done| v.start_read(
        16 * B as u64,
        1,
        done
    ))));
    mems[2].stall(false);
    writer.join().expect("writer").expect("the hung write");
    assert!(
        mems.iter()
            .all(|m| m.write_attempts.load(Ordering::SeqCst) == 1)
    );
}

#[test]
fn a_started_write_to_a_clean_intent_region_leaves_it_to_the_blocking_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mems = mems(3, 16 * B);
    let v = Arc::new(journaled(
        &mems,
        &dir.path().join("journal"),
        Arc::new(NullSink),
    ));
    // The region's first write needs a synced journal record: not
    // without waiting.
    assert!(matches!(
        started(|done| v.start_write(0, Bytes::from(vec![1u8; B]), done)),
        Err(WouldBlock)
    ));
    v.write(0, Bytes::from(vec![1u8; B]))
        .expect("blocking write");
    // The region is dirty now: the next write there starts.
    assert!(matches!(
        start_write(&v, B as u64, vec![2u8; B]),
        Completion::Done(Ok(()))
    ));
    v.flush().expect("flush");
    assert_all(&mems[0].snapshot()[B..2 * B], 2);
}

/// A started write that completes while someone holds the stale maps'
/// lock (a journal record, a flush's end) gives its write intent back
/// later, in its rest, and never loses it: a lost one stayed "in flight"
/// for good, its region never cleaned and every later write slower.
#[test]
fn a_started_write_completing_under_the_stale_maps_lock_gives_its_intent_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mems = mems(3, 16 * B);
    let v = Arc::new(journaled(
        &mems,
        &dir.path().join("journal"),
        Arc::new(NullSink),
    ));
    v.write(0, Bytes::from(vec![1u8; B]))
        .expect("blocking write");
    assert_eq!(v.intents_in_flight(), 0);
    mems[2].stall(true);
    let (tx, rx) = mpsc::channel();
    v.start_write(B as u64, Bytes::from(vec![2u8; B]), move |c| {
        let _ = tx.send(c);
    })
    .expect("the write started: its region is dirty");
    let completion = {
        let _maps = v.lock_stale_maps();
        mems[2].stall(false);
        rx.recv_timeout(COMPLETES)
            .expect("the write completed with the lock held")
    };
    let Completion::Blocking(rest) = completion else {
        panic!("a write that cannot give its intent back now is not done");
    };
    assert_eq!(v.intents_in_flight(), 1, "its intent is still registered");
    rest.run().expect("every child took it");
    assert_eq!(v.intents_in_flight(), 0, "its intent was given back");
    assert_all(&mems[2].snapshot()[B..2 * B], 2);
}

#[test]
fn a_hung_child_costs_a_started_request_child_timeout_with_nobody_waiting() {
    let mems = mems(3, 16 * B);
    let v = open(
        with_timeout(2, Duration::from_millis(200)),
        &mems,
        Arc::new(RecordingSink::default()),
    );
    let c = &mems[2];
    c.stall(true);
    let begun = Instant::now();
    let Completion::Blocking(rest) = start_write(&v, 0, vec![1u8; B]) else {
        panic!("a write that timed out on c is not done on the worker");
    };
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "the watchdog gave up after {took:?}"
    );
    rest.run().expect("a and b took it");
    assert_eq!(v.stale_bytes(), vec![0, 0, B as u64], "c missed A");
    // c's hung call has not returned: it is not sent the next write.
    let Completion::Blocking(rest) = start_write(&v, 0, vec![2u8; B]) else {
        panic!("a write c was not sent is not done on the worker");
    };
    rest.run().expect("write B");
    assert_eq!(c.write_attempts.load(Ordering::SeqCst), 1);
    c.stall(false);
    wait_for("the late write", || c.snapshot()[0] == 1);
    let read = finish(start_read(&v, 0, B)).expect("read");
    assert_all(&read, 2);
}

/// Started and blocking requests race over a small region of jittery
/// children: no read sees a block mixing two writes, and the children end
/// identical.
#[test]
fn started_and_blocking_requests_stay_ordered() {
    race_started_and_blocking(false);
}

/// [`started_and_blocking_requests_stay_ordered`] with children that
/// answer reads on the caller's thread: the range is held before they
/// read, so they see no block mixing two writes either.
#[test]
fn reads_answered_now_stay_ordered() {
    race_started_and_blocking(true);
}

/// Started and blocking requests of 6 threads over 16 blocks of three
/// jittery children for 1.5 s; `now`: the children answer reads on the
/// caller's thread.
fn race_started_and_blocking(now: bool) {
    const REGION: usize = 16 * B;
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::jittery(n, REGION))
        .collect();
    for m in &mems {
        m.answers_now.store(now, Ordering::SeqCst);
    }
    let sink = Arc::new(RecordingSink::default());
    let v = open(options(2), &mems, sink.clone());
    let next_id = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let counts = Arc::new([const { AtomicU64::new(0) }; 4]);
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (v, next_id, counts) = (v.clone(), next_id.clone(), counts.clone());
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                while Instant::now() < deadline {
                    let first = rng.random_range(0..REGION / B);
                    let count = rng.random_range(1..=(REGION / B - first).min(6));
                    let (offset, len) = ((first * B) as u64, count * B);
                    let start = rng.random_bool(0.7);
                    if rng.random_bool(0.5) {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let mut data = vec![0u8; len];
                        for block in data.chunks_mut(B) {
                            for (i, word) in block.chunks_mut(8).enumerate() {
                                word.copy_from_slice(&(id << 16 | i as u64).to_le_bytes());
                            }
                        }
                        let data = Bytes::from(data);
                        match start.then(|| started(|d| v.start_write(offset, data.clone(), d))) {
                            Some(Ok(c)) => {
                                finish(c).expect("started write");
                                counts[0].fetch_add(1, Ordering::Relaxed);
                            }
                            _ => v.write(offset, data).expect("write"),
                        }
                    } else {
                        let data = match start.then(|| started(|d| v.start_read(offset, len, d))) {
                            Some(Ok(c)) => {
                                counts[1].fetch_add(1, Ordering::Relaxed);
                                finish(c).expect("started read")
                            }
                            _ => v.read(offset, len).expect("read"),
                        };
                        for block in data.chunks(B) {
                            if !is_one_write(block) {
                                counts[2].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    let (writes, reads) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    assert!(
        writes > 20 && reads > 20,
        "{writes} writes and {reads} reads started"
    );
    assert_eq!(
        counts[2].load(Ordering::Relaxed),
        0,
        "reads saw blocks mixing two writes"
    );
    let first = mems[0].snapshot();
    for m in &mems[1..] {
        assert!(m.snapshot() == first, "child {} diverged", m.name);
    }
    assert!(sink.events().is_empty(), "{:?}", sink.events().first());
    let now_reads: u64 = mems
        .iter()
        .map(|m| m.reads_now.load(Ordering::SeqCst))
        .sum();
    if now {
        assert!(now_reads >= 3 * reads, "{now_reads} reads answered now");
    } else {
        assert_eq!(now_reads, 0);
    }
}

/// A slow child's queued jobs each get a worker: requests that arrive
/// together are read in parallel, not one after the other. A quick
/// child's jobs may wait for each other; a slow one's must not.
#[test]
fn a_slow_childs_requests_run_in_parallel() {
    const SLOW: Duration = Duration::from_millis(40);
    let mems = mems(3, 16 * B);
    for m in &mems {
        m.read_micros
            .store(SLOW.as_micros() as u64, Ordering::SeqCst);
    }
    let v = open(options(2), &mems, Arc::new(RecordingSink::default()));
    // The children show themselves slow.
    for _ in 0..4 {
        v.read(0, B).expect("read");
    }
    for round in 0..3 {
        let begun = Instant::now();
        let (tx, rx) = mpsc::channel();
        for i in 0..4u64 {
            let tx = tx.clone();
            v.start_read(i * B as u64, B, move |c| {
                let _ = tx.send(c);
            })
            .expect("started");
        }
        for _ in 0..4 {
            finish(rx.recv_timeout(COMPLETES).expect("a read completed")).expect("read");
        }
        let took = begun.elapsed();
        // One after the other would be 4 x 40 ms; in parallel, 40 ms and
        // what a busy test machine adds.
        if took < 3 * SLOW {
            return;
        }
        eprintln!("round {round}: 4 parallel reads of a slow child took {took:?}");
    }
    panic!("4 reads of a child that takes {SLOW:?} a read were not read in parallel");
}
