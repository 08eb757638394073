//! The behaviour every backend must show: run [`run`] on a fresh, zeroed
//! child of [`SIZE`] bytes of each kind (the end-to-end tests run it on
//! remote children too). It panics at the first difference.

use std::ops::Range;
use std::thread;

use quorum_core::{Backend, BackendError, Extent};

/// The size of the child the suite expects: 4 MiB, all zeros.
pub const SIZE: u64 = 4 << 20;

/// The range the suite discards, unaligned, within data it wrote first:
/// a test of a backend that frees space can check that the space within
/// it is gone (an S3 child's whole chunks there).
pub const DISCARDED: Range<u64> = (3 << 20) + 1000..(3 << 20) + 701_000;

/// Runs every check on a fresh, zeroed child of [`SIZE`] bytes.
pub fn run(b: &(dyn Backend + 'static)) {
    assert_eq!(b.size().expect("size"), SIZE);
    fresh_child_reads_zeros(b);
    unaligned_writes_round_trip(b);
    copies_round_trip(b);
    write_zeroes_reads_zero(b);
    discard_reads_zero(b);
    block_status_covers_the_range(b);
    out_of_range_is_refused(b);
    parallel_disjoint_writes(b);
    b.flush().expect("flush");
}

fn fresh_child_reads_zeros(b: &dyn Backend) {
    let mut buf = vec![1u8; 70_000];
    b.read_at(&mut buf, SIZE - 70_000).expect("read");
    assert!(buf.iter().all(|&x| x == 0));
}

fn unaligned_writes_round_trip(b: &dyn Backend) {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 253) as u8 + 1).collect();
    b.write_at(&data, 4093).expect("write");
    let mut back = vec![0u8; data.len() + 6];
    b.read_at(&mut back, 4090).expect("read");
    assert_eq!(&back[..3], &[0, 0, 0]);
    assert_eq!(&back[3..3 + data.len()], &data[..]);
    assert_eq!(&back[3 + data.len()..], &[0, 0, 0]);
}

/// A copy ([`Backend::write_copy`]) reads back as a write does, unaligned
/// and across several pieces of a file child's.
fn copies_round_trip(b: &dyn Backend) {
    let at = (2 << 20) - 3;
    let data: Vec<u8> = (0..(1u32 << 20) + 5000)
        .map(|i| (i * 13 % 251) as u8 + 1)
        .collect();
    b.write_copy(&data, at).expect("copy");
    let mut back = vec![0u8; data.len() + 2];
    b.read_at(&mut back, at - 1).expect("read");
    assert_eq!(back[0], 0);
    assert_eq!(&back[1..=data.len()], &data[..]);
    assert_eq!(back[data.len() + 1], 0);
    b.write_zeroes(at, data.len() as u64)
        .expect("zero it again");
}

fn write_zeroes_reads_zero(b: &dyn Backend) {
    b.write_at(&vec![9u8; 1 << 20], 1 << 20).expect("fill");
    b.write_zeroes((1 << 20) + 100, 600_000).expect("zeroes");
    let mut buf = vec![0u8; 1 << 20];
    b.read_at(&mut buf, 1 << 20).expect("read");
    assert!(buf[..100].iter().all(|&x| x == 9));
    assert!(buf[100..600_100].iter().all(|&x| x == 0));
    assert!(buf[600_100..].iter().all(|&x| x == 9));
}

/// A discard reads as zero afterwards and leaves its neighbours alone.
fn discard_reads_zero(b: &dyn Backend) {
    let region = 3u64 << 20;
    b.write_at(&vec![0x5a; 1 << 20], region).expect("fill");
    b.discard(DISCARDED.start, DISCARDED.end - DISCARDED.start)
        .expect("discard");
    let mut buf = vec![0u8; 1 << 20];
    b.read_at(&mut buf, region).expect("read");
    let (start, end) = (
        (DISCARDED.start - region) as usize,
        (DISCARDED.end - region) as usize,
    );
    assert!(
        buf[..start].iter().all(|&x| x == 0x5a),
        "before the discard"
    );
    assert!(
        buf[start..end].iter().all(|&x| x == 0),
        "the discarded bytes"
    );
    assert!(buf[end..].iter().all(|&x| x == 0x5a), "after the discard");
    b.discard(region, 0).expect("an empty discard");
}

fn block_status_covers_the_range(b: &dyn Backend) {
    let (offset, length) = (12_345, SIZE - 20_000);
    let map = b.block_status(offset, length, usize::MAX).expect("status");
    let mut at = offset;
    for e in &map {
        assert_eq!(e.offset, at, "extents must be contiguous: {map:?}");
        assert!(e.length > 0);
        if e.zero {
            let mut buf = vec![1u8; e.length as usize];
            b.read_at(&mut buf, e.offset).expect("read");
            assert!(
                buf.iter().all(|&x| x == 0),
                "extent {e:?} says zero but holds data"
            );
        }
        at += e.length;
    }
    assert_eq!(at, offset + length);
    block_status_is_paged(b, offset, length, &map);
    // Data that was written is never reported as zero.
    let map = b.block_status(1 << 20, 100, usize::MAX).expect("status");
    assert!(map.iter().all(|e| !e.zero), "{map:?}");
}

/// Pages of `limit` extents, each asked for from where the one before
/// ends, put end to end (unjoined) are the whole answer: a page cut short
/// ends where its last extent really ends.
fn block_status_is_paged(b: &dyn Backend, offset: u64, length: u64, whole: &[Extent]) {
    let mut joined: Vec<Extent> = Vec::new();
    for e in whole {
        Extent::append(&mut joined, *e);
    }
    let end = offset + length;
    for limit in [1, 2, 3] {
        let mut pages: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end {
            let page = b.block_status(at, end - at, limit).expect("status");
            assert!(
                !page.is_empty() && page.len() <= limit,
                "a page of {} extents for a limit of {limit}: {page:?}",
                page.len()
            );
            assert_eq!(page[0].offset, at, "a page starts where it was asked");
            at = page.last().map_or(end, Extent::end);
            assert!(
                at == end || page.len() == limit,
                "a page cut short holds the limit: {page:?}"
            );
            pages.extend(page);
        }
        assert_eq!(pages, joined, "pages of {limit}");
    }
}

fn out_of_range_is_refused(b: &dyn Backend) {
    let mut buf = [0u8; 10];
    assert!(matches!(
        b.read_at(&mut buf, SIZE - 5),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.write_at(&buf, SIZE - 5),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.write_at(&buf, u64::MAX - 5),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.write_copy(&buf, SIZE - 5),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.write_zeroes(SIZE, 1),
        Err(BackendError::OutOfRange { .. })
    ));
    for (offset, length) in [(SIZE, 1), (SIZE - 5, 10), (u64::MAX - 5, 10), (5, u64::MAX)] {
        assert!(
            matches!(
                b.discard(offset, length),
                Err(BackendError::OutOfRange { .. })
            ),
            "a discard of {length} bytes at {offset}"
        );
    }
    // Nothing of a refused discard was applied (`discard_reads_zero`
    // filled the end of the child).
    let mut tail = [0u8; 5];
    b.read_at(&mut tail, SIZE - 5).expect("read");
    assert_eq!(tail, [0x5a; 5]);
}

fn parallel_disjoint_writes(b: &(dyn Backend + 'static)) {
    let base = 2u64 << 20;
    thread::scope(|s| {
        for t in 0..8u8 {
            s.spawn(move || {
                let data = vec![t + 1; 33_333];
                b.write_at(&data, base + u64::from(t) * 33_333)
                    .expect("write");
            });
        }
    });
    for t in 0..8u8 {
        let mut buf = vec![0u8; 33_333];
        b.read_at(&mut buf, base + u64::from(t) * 33_333)
            .expect("read");
        assert!(buf.iter().all(|&x| x == t + 1), "writer {t} lost its bytes");
    }
}
