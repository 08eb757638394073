//! Discards and zeroes that stay allocated (SPEC section 10): the write
//! path of write-zeroes, with its stale marks and its atomicity.

use super::*;
use crate::volume::ZERO_JOB;
use crate::worker::ZERO_PIECE;

/// The reports of failed children for `op`: (child, offset, bytes).
fn failed(events: &[Event], op: Op) -> Vec<(String, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ReportBad {
                op: o,
                child,
                offset,
                bytes,
                error: Some(_),
            } if *o == op => Some((child.clone(), *offset, *bytes)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_discard_reads_zero_on_every_child_and_frees_whole_blocks() {
    let size = 16 * B;
    let s = setup(options(2), 3, size);
    let data = Bytes::from(vec![7u8; size]);
    s.volume.write(0, data).expect("write");
    let (offset, length) = (B as u64 + 100, 5 * B as u64);
    s.volume.discard(offset, length).expect("discard");
    let (start, end) = (offset as usize, (offset + length) as usize);
    for m in &s.mems {
        let copy = m.snapshot();
        assert!(copy[..start].iter().all(|&b| b == 7), "{m} before");
        assert!(copy[start..end].iter().all(|&b| b == 0), "{m} discarded");
        assert!(copy[end..].iter().all(|&b| b == 7), "{m} after");
        assert_eq!(m.discards.load(Ordering::SeqCst), 1, "{m} got a discard");
    }
    let read = s.volume.read(0, size).expect("read");
    assert!(read[start..end].iter().all(|&b| b == 0));
    // The whole blocks inside are holes; the partial ones at the edges data.
    let map = s
        .volume
        .block_status(0, size as u64, 100)
        .expect("block status");
    let zero: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e.zero)
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(zero, vec![(2 * B as u64, 4 * B as u64)], "{map:?}");
    assert!(s.sink.events().is_empty(), "{:?}", s.sink.events());
    assert!(matches!(
        s.volume.discard(size as u64 - 10, 11),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.volume.discard(10, u64::MAX),
        Err(VolumeError::OutOfRange { .. })
    ));
    for m in &s.mems {
        assert_eq!(m.discards.load(Ordering::SeqCst), 1, "{m}: nothing sent");
    }
}

#[test]
fn a_child_that_fails_a_discard_goes_stale_and_is_resynced() {
    let size = 16 * B;
    let s = setup(options(2), 3, size);
    s.volume
        .write(0, Bytes::from(vec![3u8; size]))
        .expect("write");
    s.mems[0].fail_discards.store(true, Ordering::SeqCst);
    let (offset, length) = (2 * B as u64, 3 * B as u64 + 7);
    s.volume
        .discard(offset, length)
        .expect("a discard at the threshold");
    assert_eq!(
        failed(&s.sink.take(), Op::Discard),
        vec![("a".to_owned(), offset, length)]
    );
    assert_eq!(s.volume.stale_bytes(), vec![length, 0, 0]);
    // Child a still holds the old bytes, but the read never takes them.
    assert_eq!(s.mems[0].snapshot()[offset as usize], 3);
    let read = s.volume.read(0, size).expect("read");
    let (start, end) = (offset as usize, (offset + length) as usize);
    assert!(read[start..end].iter().all(|&b| b == 0));
    assert!(read[..start].iter().chain(&read[end..]).all(|&b| b == 3));

    s.mems[0].fail_discards.store(false, Ordering::SeqCst);
    let mut from = 0;
    for _ in 0..10 {
        match s.volume.resync_step(1 << 20, from) {
            ResyncStep::Idle => break,
            ResyncStep::Copied { child, next, .. } => {
                assert_eq!(child, "a");
                from = next;
            }
            ResyncStep::Failed { error, .. } => panic!("resync: {error}"),
        }
    }
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_eq!(s.mems[0].snapshot(), s.mems[1].snapshot());
    assert_eq!(s.volume.children()[0].state, ChildState::Healthy);

    // Two of three failing: the discard fails, as a write would.
    s.mems[0].fail_discards.store(true, Ordering::SeqCst);
    s.mems[1].fail_discards.store(true, Ordering::SeqCst);
    let err = s
        .volume
        .discard(0, B as u64)
        .expect_err("below the threshold");
    assert!(matches!(err, VolumeError::Quorum(_)), "{err}");
    let events = s.sink.take();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Failure {
                op: Op::Discard,
                offset: 0,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(failed(&events, Op::Discard).len(), 2, "{events:?}");
}

/// Zeroes that stay allocated are one request however many pieces each
/// child writes them in: a read that races them sees the bytes before or
/// the zeroes, never a mix, and they are written as data (no hole).
#[test]
fn a_read_racing_allocated_zeroes_sees_all_or_nothing() {
    let length = 3 * ZERO_PIECE + B;
    let size = length + 2 * B;
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::jittery(n, size))
        .collect();
    let s = Arc::new(setup_with(options(2), mems));
    let offset = B as u64;
    let done = Arc::new(AtomicBool::new(false));
    let (torn, whole) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, done, torn, whole) = (s.clone(), done.clone(), torn.clone(), whole.clone());
            thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let data = s.volume.read(offset, length).expect("read");
                    let first = data[0];
                    if data.iter().all(|&b| b == first) {
                        whole.fetch_add(1, Ordering::SeqCst);
                    } else {
                        torn.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for round in 1..=4u8 {
        s.volume
            .write(offset, Bytes::from(vec![round; length]))
            .expect("write");
        s.volume
            .write_zeroes_allocated(offset, length as u64)
            .expect("allocated zeroes");
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("reader");
    }
    assert!(whole.load(Ordering::SeqCst) > 0, "no read finished");
    assert_eq!(
        torn.load(Ordering::SeqCst),
        0,
        "a read saw part of the zeroes"
    );
    let map = s
        .volume
        .block_status(offset, length as u64, 100)
        .expect("block status");
    assert!(map.iter().all(|e| !e.zero), "allocated, not holes: {map:?}");
    for m in &s.mems {
        let copy = m.snapshot();
        assert!(copy.iter().all(|&b| b == 0), "{m} holds zeroes");
        assert_eq!(m.discards.load(Ordering::SeqCst), 0);
    }
    assert!(s.sink.events().is_empty(), "{:?}", s.sink.events());
}

/// A zeroing or discard longer than [`ZERO_JOB`] goes to each child in
/// jobs of that size, each with its own `child_timeout`: children that
/// take 150 ms a MiB zero 6 MiB under a `child_timeout` of 400 ms, which
/// one job of the whole length would pass, and none is failed for it.
#[test]
fn a_long_zeroing_is_sent_in_jobs_each_under_child_timeout() {
    let size = 8 * ZERO_JOB as usize;
    let opts = VolumeOptions {
        child_timeout: Duration::from_millis(400),
        ..options(2)
    };
    let s = setup_with(
        opts,
        (0..3).map(|i| Mem::new(&format!("m{i}"), size)).collect(),
    );
    s.volume
        .write(0, Bytes::from(vec![9u8; size]))
        .expect("write");
    for m in &s.mems {
        m.zero_micros.store(150_000, Ordering::SeqCst);
    }
    let length = 6 * ZERO_JOB;
    s.volume
        .discard(ZERO_JOB / 2, length)
        .expect("a long discard");
    s.volume
        .write_zeroes(ZERO_JOB / 2, length)
        .expect("a long write-zeroes");
    let (start, end) = ((ZERO_JOB / 2) as usize, (ZERO_JOB / 2 + length) as usize);
    for m in &s.mems {
        let copy = m.snapshot();
        assert!(copy[start..end].iter().all(|&b| b == 0), "{m} zeroed");
        assert!(
            copy[..start].iter().chain(&copy[end..]).all(|&b| b == 9),
            "{m} outside"
        );
        assert_eq!(
            m.discards.load(Ordering::SeqCst),
            6,
            "{m}: one discard a job"
        );
    }
    assert!(s.sink.events().is_empty(), "{:?}", s.sink.events());
    assert!(s.volume.children().iter().all(|c| c.stale_bytes == 0));
}
