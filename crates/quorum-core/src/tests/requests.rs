//! What every request gets: what open refuses, ranges outside the volume,
//! block status, flush, close, and the ordering of overlapping requests.

use super::*;

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
