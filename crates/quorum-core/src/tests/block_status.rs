//! Block status through the volume: paged answers against a naive
//! reference, and the cost of a volume of 262,144 extents (issue 12).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

/// Walks block status of `offset..offset+length` page by page with
/// `limit`, checking each page, and returns the pages put end to end,
/// unjoined.
fn walk(volume: &Volume, offset: u64, length: u64, limit: usize) -> Vec<Extent> {
    let end = offset + length;
    let mut all: Vec<Extent> = Vec::new();
    let mut at = offset;
    while at < end {
        let page = volume
            .block_status(at, end - at, limit)
            .expect("block status");
        assert!(
            !page.is_empty() && page.len() <= limit,
            "a page of {} extents for a limit of {limit}",
            page.len()
        );
        assert_eq!(page[0].offset, at, "a page starts where it was asked");
        for w in page.windows(2) {
            assert_eq!(w[0].end(), w[1].offset, "a page is contiguous: {page:?}");
        }
        let next = page.last().map_or(end, Extent::end);
        assert!(
            next == end || page.len() == limit,
            "a page cut short holds the limit"
        );
        at = next;
        all.extend(page);
    }
    all
}

/// The rule, block by block: zero only where every child says zero; a
/// failed or stale child counts as data. Returned as joined extents of
/// `offset..end`.
fn reference(
    offset: u64,
    end: u64,
    zero: &[Vec<bool>],
    failed: &[bool],
    stale: &[Vec<bool>],
) -> Vec<Extent> {
    let b = B as u64;
    let mut out: Vec<Extent> = Vec::new();
    let mut at = offset;
    while at < end {
        let block = (at / b) as usize;
        let next = ((at / b + 1) * b).min(end);
        let is_zero = (0..zero.len()).all(|c| !failed[c] && !stale[c][block] && zero[c][block]);
        match out.last_mut() {
            Some(e) if e.zero == is_zero => e.length += next - at,
            _ => out.push(Extent {
                offset: at,
                length: next - at,
                zero: is_zero,
            }),
        }
        at = next;
    }
    out
}

#[test]
fn paged_block_status_matches_a_naive_reference() {
    const BLOCKS: usize = 64;
    let mut rng = StdRng::seed_from_u64(4);
    for round in 0..150 {
        let n = rng.random_range(1..=4);
        let mems: Vec<Arc<Mem>> = ["a", "b", "c", "d"][..n]
            .iter()
            .map(|name| Mem::new(name, BLOCKS * B))
            .collect();
        let zero: Vec<Vec<bool>> = (0..n)
            .map(|_| {
                let p = rng.random_range(0.2..0.95);
                (0..BLOCKS).map(|_| rng.random_bool(p)).collect()
            })
            .collect();
        for (m, z) in mems.iter().zip(&zero) {
            *m.zero.lock().expect("zero") = z.clone();
        }
        let s = setup_with(options(1), mems);
        let mut stale = vec![vec![false; BLOCKS]; n];
        for (c, name) in ["a", "b", "c", "d"][..n].iter().enumerate() {
            if rng.random_bool(0.3) {
                let first = rng.random_range(0..BLOCKS);
                let last = rng.random_range(first..BLOCKS.min(first + 6));
                let range = (first * B) as u64..((last + 1) * B) as u64;
                s.volume.mark_stale(name, &[range]).expect("mark stale");
                stale[c][first..=last].fill(true);
            }
        }
        // At most n - 1 children fail (threshold 1): each counts as data.
        let failed: Vec<bool> = (0..n).map(|c| c > 0 && rng.random_bool(0.15)).collect();
        for (m, &f) in s.mems.iter().zip(&failed) {
            m.fail_reads.store(f, Ordering::SeqCst);
        }
        let size = (BLOCKS * B) as u64;
        let offset = rng.random_range(0..size);
        let length = rng.random_range(1..=size - offset);
        let want = reference(offset, offset + length, &zero, &failed, &stale);
        let whole = walk(&s.volume, offset, length, usize::MAX);
        assert_eq!(whole, want, "round {round}: the whole answer");
        let limit = rng.random_range(1..=4);
        assert_eq!(
            walk(&s.volume, offset, length, limit),
            want,
            "round {round}: pages of {limit}"
        );
    }
}

/// A child of `size` bytes that holds `data` bytes at the start of every
/// `stride` and holes elsewhere, computed rather than stored, so that a
/// volume of any number of extents costs no memory. It counts the extents
/// it returns.
struct Striped {
    name: String,
    size: u64,
    stride: u64,
    data: u64,
    returned: AtomicUsize,
}

impl std::fmt::Display for Striped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "striped({})", self.name)
    }
}

impl Backend for Striped {
    fn kind(&self) -> &'static str {
        "striped"
    }
    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.size)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = u8::from((offset + i as u64) % self.stride < self.data);
        }
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), BackendError> {
        Err(BackendError::Refused("read-only".into()))
    }
    fn write_zeroes(&self, _offset: u64, _length: u64) -> Result<(), BackendError> {
        Err(BackendError::Refused("read-only".into()))
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        BackendError::check_range(offset, length, self.size)?;
        let end = offset + length;
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end && out.len() <= limit {
            let base = at - at % self.stride;
            let (stop, zero) = if at - base < self.data {
                (base + self.data, false)
            } else {
                (base + self.stride, true)
            };
            let next = stop.min(end);
            Extent::append(
                &mut out,
                Extent {
                    offset: at,
                    length: next - at,
                    zero,
                },
            );
            at = next;
        }
        out.truncate(limit);
        self.returned.fetch_add(out.len(), Ordering::Relaxed);
        Ok(out)
    }
}

/// 1 GiB, one 4 KiB block of data every 8 KiB: 262,144 extents.
#[test]
fn block_status_of_262144_extents_is_linear_and_bounded() {
    const SIZE: u64 = 1 << 30;
    const STRIDE: u64 = 8 << 10;
    const DATA: u64 = 4 << 10;
    const EXTENTS: usize = (2 * SIZE / STRIDE) as usize;
    let children: Vec<Arc<Striped>> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            Arc::new(Striped {
                name: (*name).into(),
                size: SIZE,
                stride: STRIDE,
                data: DATA,
                returned: AtomicUsize::new(0),
            })
        })
        .collect();
    let specs = children
        .iter()
        .map(|c| ChildSpec::new(c.name.clone(), c.clone() as Arc<dyn Backend>))
        .collect();
    let volume = Volume::open(options(2), specs, Arc::new(NullSink)).expect("open");
    let returned = || {
        children
            .iter()
            .map(|c| c.returned.load(Ordering::Relaxed))
            .sum::<usize>()
    };

    // The whole volume in one call, then in pages of the API's default.
    let started = Instant::now();
    let whole = volume
        .block_status(0, SIZE, usize::MAX)
        .expect("block status");
    let one_call = started.elapsed();
    let started = Instant::now();
    let paged = walk(&volume, 0, SIZE, 65_536);
    let in_pages = started.elapsed();
    let started = Instant::now();
    let small = walk(&volume, 0, SIZE, 1000);
    let in_small_pages = started.elapsed();
    println!(
        "block status of {EXTENTS} extents on 3 children: one call {one_call:?}, \
         pages of 65536 {in_pages:?}, pages of 1000 {in_small_pages:?}"
    );
    assert_eq!(whole.len(), EXTENTS);
    for (i, e) in whole.iter().enumerate() {
        let want = Extent {
            offset: i as u64 * DATA,
            length: DATA,
            zero: i % 2 == 1,
        };
        assert_eq!(*e, want, "extent {i}");
    }
    assert_eq!(paged, whole, "pages of 65536");
    assert_eq!(small, whole, "pages of 1000");
    // Generous for a debug build; a release build takes a few tens of ms.
    assert!(
        one_call.as_secs_f64() < 10.0,
        "block status took {one_call:?}: quadratic again?"
    );

    // A page of 10 extents makes no child list more than one page of its
    // own (a thousand extents), not the 262,144 of the volume.
    let before = returned();
    let page = volume.block_status(0, SIZE, 10).expect("block status");
    assert_eq!(page.len(), 10);
    assert_eq!(page[9].end(), 10 * DATA);
    let asked = returned() - before;
    assert!(
        asked <= 3 * 1024,
        "the children listed {asked} extents for 10"
    );
}
