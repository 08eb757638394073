//! A set of byte ranges, kept merged: what each child missed, what it has
//! damaged, which write-intent regions are dirty.

use std::collections::BTreeMap;
use std::ops::Range;

/// A set of byte ranges, kept merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
    /// The bytes in `ranges`, kept as they change: the API and the resync
    /// ask for it on every step, and a sum over a fragmented map there
    /// would make a resync quadratic.
    bytes: u64,
}

impl RangeSet {
    /// Adds `range`, merging it with what it touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.bytes += end - start;
    }

    /// Removes `range`, splitting what it cuts.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let cut: Vec<(u64, u64)> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in cut {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            if s < range.start {
                self.ranges.insert(s, range.start);
                self.bytes += range.start - s;
            }
            if e > range.end {
                self.ranges.insert(range.end, e);
                self.bytes += e - range.end;
            }
        }
    }

    /// The parts of the set within `range`, in order.
    pub fn within(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(s, e)| (*s).max(range.start)..(*e).min(range.end))
            .collect();
        out.reverse();
        out
    }

    /// Whether any of `range` is in the set.
    pub fn overlaps(&self, range: Range<u64>) -> bool {
        self.ranges
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, e)| *e > range.start)
    }

    /// The first range of the set.
    pub fn first(&self) -> Option<Range<u64>> {
        self.ranges.iter().next().map(|(s, e)| *s..*e)
    }

    /// The last range of the set.
    pub fn last(&self) -> Option<Range<u64>> {
        self.ranges.iter().next_back().map(|(s, e)| *s..*e)
    }

    /// The first part of the set at or after `at`.
    pub fn first_from(&self, at: u64) -> Option<Range<u64>> {
        if let Some((s, e)) = self.ranges.range(..=at).next_back() {
            if *e > at {
                return Some(at.max(*s)..*e);
            }
        }
        self.ranges.range(at..).next().map(|(s, e)| *s..*e)
    }

    /// The ranges of the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(s, e)| *s..*e)
    }

    /// Bytes in the set.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many disjoint ranges the set holds.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[Range<u64>]) -> RangeSet {
        let mut s = RangeSet::default();
        for r in ranges {
            s.insert(r.clone());
        }
        s
    }

    #[test]
    fn the_byte_count_follows_random_edits() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(8);
        let mut s = RangeSet::default();
        let mut naive = vec![false; 2000];
        for _ in 0..5000 {
            let a = rng.random_range(0..2000u64);
            let b = rng.random_range(a..=(a + 80).min(2000));
            let add = rng.random_bool(0.5);
            if add {
                s.insert(a..b);
            } else {
                s.remove(a..b);
            }
            naive[a as usize..b as usize].fill(add);
            let want = naive.iter().filter(|&&x| x).count() as u64;
            assert_eq!(s.bytes(), want);
            let listed: u64 = s.within(0..2000).iter().map(|r| r.end - r.start).sum();
            assert_eq!(listed, want);
        }
    }

    #[test]
    fn ranges_merge_and_split() {
        let mut s = set(&[0..10, 20..30, 10..15]);
        assert_eq!(s.within(0..100), vec![0..15, 20..30]);
        s.insert(14..21);
        assert_eq!(s.within(0..100), vec![0..30]);
        s.remove(5..8);
        assert_eq!(s.within(0..100), vec![0..5, 8..30]);
        assert_eq!(s.bytes(), 27);
        assert!(s.overlaps(4..5) && !s.overlaps(5..8) && s.overlaps(7..9));
        assert_eq!(s.within(3..9), vec![3..5, 8..9]);
        s.remove(0..100);
        assert!(s.is_empty());
    }
}
