//! The resync's steps: stale ranges gathered over narrow gaps, zero runs
//! zeroed without reads, copies in pieces, and a resync racing client
//! writes that fail on the stale child now and then (SPEC 8.2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

/// Bytes whose every 8-byte word says `id` and where it is.
fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for block in data.chunks_mut(B) {
        for (i, word) in block.chunks_mut(8).enumerate() {
            word.copy_from_slice(&(id << 16 | i as u64).to_le_bytes());
        }
    }
    data
}

/// Panics with the first differing offset when `child` differs from `from`.
fn assert_same(child: &Mem, from: &Mem) {
    let (got, want) = (child.snapshot(), from.snapshot());
    if let Some(at) = got.iter().zip(&want).position(|(x, y)| x != y) {
        panic!(
            "child {} differs from {} at byte {at} (block {})",
            child.name,
            from.name,
            at / B
        );
    }
}

/// Runs the resync until nothing is stale, `max` bytes a step; returns the
/// steps' `Copied` (range, refreshed) pairs.
fn resync_all(volume: &Volume, max: u64) -> Vec<(std::ops::Range<u64>, u64)> {
    let mut copied = Vec::new();
    let mut from = 0;
    for _ in 0..1000 {
        match volume.resync_step(max, from) {
            ResyncStep::Idle => return copied,
            ResyncStep::Copied {
                range,
                refreshed,
                next,
                ..
            } => {
                copied.push((range, refreshed));
                from = next;
            }
            ResyncStep::Failed { error, .. } => panic!("resync: {error}"),
        }
    }
    panic!("the resync did not end in 1000 steps");
}

/// Stale ranges with gaps of up to 1 MiB between them are one step, the
/// gaps copied too; a wider gap starts another step.
#[test]
fn one_step_copies_the_stale_ranges_across_narrow_gaps() {
    let size = 4 << 20;
    let s = setup(options(2), 3, size);
    s.volume
        .write(0, Bytes::from(pattern(1, size)))
        .expect("write");
    let c = &s.mems[2];
    let stale = [
        0..B as u64,
        2 * B as u64..3 * B as u64,
        3 << 20..(3 << 20) + 100,
    ];
    for r in &stale {
        c.poke(r.start as usize, &vec![9u8; (r.end - r.start) as usize]);
    }
    s.volume.mark_stale("c", &stale).expect("mark");
    let steps = resync_all(&s.volume, 16 << 20);
    assert_eq!(
        steps,
        vec![
            (0..3 * B as u64, 2 * B as u64),
            (3 << 20..(3 << 20) + 100, 100)
        ]
    );
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_same(c, &s.mems[0]);
}

/// Where every source reads zero, the stale child is zeroed; only the
/// data between is read from the sources.
#[test]
fn a_step_zeroes_the_sources_zero_runs_without_reading_them() {
    let size = 256 * B;
    let s = setup(options(2), 3, size);
    for block in [0, 100] {
        s.volume
            .write((block * B) as u64, Bytes::from(vec![7u8; B]))
            .expect("write");
    }
    let c = &s.mems[2];
    c.poke(0, &vec![9u8; size]);
    c.zero
        .lock()
        .expect("zero")
        .iter_mut()
        .for_each(|z| *z = false);
    s.volume
        .mark_stale("c", std::slice::from_ref(&(0..size as u64)))
        .expect("mark");
    for m in &s.mems {
        m.read_bytes.store(0, Ordering::SeqCst);
    }
    let steps = resync_all(&s.volume, size as u64);
    assert_eq!(steps, vec![(0..size as u64, size as u64)]);
    assert_same(c, &s.mems[0]);
    for m in &s.mems[..2] {
        assert_eq!(
            m.read_bytes.load(Ordering::SeqCst),
            2 * B as u64,
            "{m} was read beyond its two data blocks"
        );
    }
    assert_eq!(
        c.read_bytes.load(Ordering::SeqCst),
        0,
        "the stale child was read"
    );
}

/// A step larger than a piece is copied in pieces, one flush for all; a
/// failed write leaves the whole step stale. An uncached step writes
/// copies ([`Backend::write_copy`]), a plain one writes as clients do.
#[test]
fn a_large_step_goes_in_pieces_and_stays_stale_when_a_write_fails() {
    let size = 8 << 20;
    let s = setup(options(2), 3, size);
    s.volume
        .write(0, Bytes::from(pattern(1, size)))
        .expect("write");
    let c = &s.mems[2];
    let all = 0..size as u64;
    c.poke(0, &vec![9u8; size]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&all))
        .expect("mark");
    c.fail_writes.store(true, Ordering::SeqCst);
    assert!(matches!(
        s.volume.resync_step(size as u64, 0),
        ResyncStep::Failed { .. }
    ));
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, size as u64]);
    c.fail_writes.store(false, Ordering::SeqCst);
    // The breaker may refuse c for a moment after the failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    let steps = loop {
        match s.volume.resync_step_uncached(size as u64, 0) {
            ResyncStep::Copied {
                range, refreshed, ..
            } => break vec![(range, refreshed)],
            ResyncStep::Failed { .. } if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(steps, vec![(all.clone(), size as u64)]);
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_same(c, &s.mems[0]);
    assert_eq!(c.copied_bytes.load(Ordering::SeqCst), size as u64);
    // Again, through the cache.
    c.poke(0, &vec![9u8; size]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&all))
        .expect("mark");
    assert_eq!(resync_all(&s.volume, size as u64), vec![(all, size as u64)]);
    assert_same(c, &s.mems[0]);
    assert_eq!(
        c.copied_bytes.load(Ordering::SeqCst),
        size as u64,
        "a plain step wrote copies"
    );
}

/// Client writes race the resync of child c, and now and then fail on c
/// (which marks them stale there again) while the resync copies steps of
/// random sizes over ranges that the writes cut into pieces. Once the
/// writes stop and the resync ends, every child holds, in every block, the
/// last write acknowledged there: no step left c older than an
/// acknowledged write (SPEC 8.2). Each writer has stripes of its own, so
/// that the last write acknowledged over a block is known.
#[test]
fn a_resync_racing_client_writes_never_leaves_the_synced_child_older() {
    const BLOCKS: usize = 1024;
    const STRIPE: usize = 8;
    const WRITERS: usize = 4;
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::jittery(n, BLOCKS * B))
        .collect();
    let s = Arc::new(setup_with(options(2), mems));
    s.volume
        .write(0, Bytes::from(pattern(1, BLOCKS * B)))
        .expect("write");
    let c = s.mems[2].clone();
    c.poke(0, &vec![9u8; BLOCKS * B]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&(0..(BLOCKS * B) as u64)))
        .expect("mark");
    // The last acknowledged write of each block.
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..BLOCKS).map(|_| AtomicU64::new(1)).collect());
    let next_id = Arc::new(AtomicU64::new(2));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (s, last, next_id) = (s.clone(), last.clone(), next_id.clone());
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t as u64);
                let mut acked = 0;
                while Instant::now() < deadline {
                    let stripe = rng.random_range(0..BLOCKS / STRIPE / WRITERS) * WRITERS + t;
                    let first = stripe * STRIPE + rng.random_range(0..STRIPE);
                    let count = rng.random_range(1..=(stripe + 1) * STRIPE - first);
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let data = Bytes::from(pattern(id, count * B));
                    s.volume
                        .write((first * B) as u64, data)
                        .expect("a write at the threshold");
                    for b in &last[first..first + count] {
                        b.store(id, Ordering::SeqCst);
                    }
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let faults = {
        let c = c.clone();
        thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(99);
            while Instant::now() < deadline {
                c.fail_writes.store(rng.random_bool(0.3), Ordering::SeqCst);
                thread::sleep(Duration::from_micros(rng.random_range(500..3000)));
            }
            c.fail_writes.store(false, Ordering::SeqCst);
        })
    };
    let racing = Arc::new(AtomicBool::new(true));
    let resync = {
        let (s, racing) = (s.clone(), racing.clone());
        thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(7);
            let (mut from, mut copied, mut across_gaps) = (0, 0u64, 0u64);
            while racing.load(Ordering::SeqCst) {
                let max = rng.random_range(1..=64) * B as u64;
                let step = if rng.random_bool(0.5) {
                    s.volume.resync_step_uncached(max, from)
                } else {
                    s.volume.resync_step(max, from)
                };
                match step {
                    ResyncStep::Copied {
                        range,
                        refreshed,
                        next,
                        ..
                    } => {
                        copied += refreshed;
                        across_gaps += u64::from(refreshed < range.end - range.start);
                        from = next;
                    }
                    ResyncStep::Failed { range, .. } => from = range.end,
                    ResyncStep::Idle => from = 0,
                }
            }
            (copied, across_gaps)
        })
    };
    let acked: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    faults.join().expect("faults");
    racing.store(false, Ordering::SeqCst);
    let (copied, across_gaps) = resync.join().expect("resync");
    assert!(acked > 100, "only {acked} writes");
    assert!(copied > 0, "the resync copied nothing while writes ran");
    assert!(across_gaps > 0, "no step copied across a gap");
    // The rest of the resync, once c's breaker lets it be tried again.
    let end = Instant::now() + Duration::from_secs(20);
    let mut from = 0;
    while s.volume.stale_bytes() != vec![0, 0, 0] {
        assert!(
            Instant::now() < end,
            "stale left: {:?}",
            s.volume.stale_bytes()
        );
        match s.volume.resync_step(64 * B as u64, from) {
            ResyncStep::Copied { next, .. } => from = next,
            ResyncStep::Failed { range, .. } => {
                from = range.end;
                thread::sleep(Duration::from_millis(5));
            }
            ResyncStep::Idle => from = 0,
        }
    }
    for m in &s.mems {
        let data = m.snapshot();
        for (b, block) in data.chunks(B).enumerate() {
            let want = last[b].load(Ordering::SeqCst);
            let got = u64::from_le_bytes(block[..8].try_into().expect("8 bytes")) >> 16;
            assert!(
                got == want && block == pattern(want, B).as_slice(),
                "child {} block {b} holds write {got}, not {want}, the last acknowledged",
                m.name
            );
        }
    }
}
