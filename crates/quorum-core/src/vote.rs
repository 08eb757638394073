//! The vote: which version of a read every client gets, and who lost.
//!
//! A pure function of the children's answers and the threshold; it does no
//! I/O. When every successful copy is identical (the common case) one
//! `memcmp` per child decides it. Otherwise the request is cut into vote
//! blocks of [`VOTE_BLOCK`] bytes, aligned to the volume, and each block is
//! voted on its own: the version held by the most children wins, ties go to
//! the version of the lowest-indexed child, and a block whose winner has
//! fewer than `threshold` votes fails the read. Versions are told apart by
//! comparing bytes against one representative per version, so two copies
//! are the same version only if they are byte-identical (no hashing, no
//! collisions).
//!
//! QEMU votes on the whole request instead, so two children corrupt in
//! different sectors of one request fail it although every sector has a
//! majority; per-block voting serves that read.

use std::ops::Range;

/// The size of one vote block in bytes.
pub const VOTE_BLOCK: u64 = 4096;

/// A decided vote: how to build the answer and who lost which bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The child whose copy becomes the answer once `patches` are applied.
    pub base: usize,
    /// Parts of the answer (relative to the request) where `base` lost the
    /// vote, each to be copied from the copy of child `from`.
    pub patches: Vec<Patch>,
    /// Every child that lost at least one block, in child order.
    pub losses: Vec<Loss>,
}

/// A part of the answer taken from another child's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Byte range relative to the start of the request.
    pub range: Range<usize>,
    /// The child whose copy holds the winning bytes.
    pub from: usize,
}

/// The bytes on which one child lost the vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The child.
    pub child: usize,
    /// Volume byte ranges, in order, disjoint and not adjacent. Each run of
    /// consecutive lost blocks is one range, trimmed to start at its first
    /// differing byte and end after its last.
    pub ranges: Vec<Range<u64>>,
}

impl Outcome {
    /// Whether every successful copy agreed.
    pub fn is_unanimous(&self) -> bool {
        self.losses.is_empty()
    }
}

/// Why a vote found no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// Fewer children answered than the threshold.
    #[error("only {copies} of the children answered, {threshold} needed")]
    TooFewCopies {
        /// Children that answered.
        copies: usize,
        /// The vote threshold.
        threshold: usize,
    },
    /// In the block at `offset`, no version reached the threshold.
    #[error("no version of bytes {offset}..{} reached {threshold} votes (best had {votes})", offset + length)]
    NoMajority {
        /// Volume offset of the first block without a majority.
        offset: u64,
        /// Length of that block within the request.
        length: u64,
        /// Votes of the best version there.
        votes: usize,
        /// The vote threshold.
        threshold: usize,
    },
}

/// Votes on the copies that the children returned for the read of
/// `copies[i].len()` bytes at volume offset `offset`.
///
/// `copies[i]` is `None` when child `i` failed; every present copy has the
/// same length.
pub fn vote(offset: u64, copies: &[Option<&[u8]>], threshold: usize) -> Result<Outcome, VoteError> {
    vote_masked(offset, copies, threshold, &[])
}

/// Like [`vote`], with parts of some copies left out: `excluded[i]` are the
/// volume byte ranges of child `i` that must not vote (its stale ranges),
/// in order and disjoint.
/// A block where a child is excluded is voted on by the others only, and the
/// excluded child is not reported as a loser there.
pub fn vote_masked(
    offset: u64,
    copies: &[Option<&[u8]>],
    threshold: usize,
    excluded: &[Vec<Range<u64>>],
) -> Result<Outcome, VoteError> {
    let answered: Vec<(usize, &[u8])> = copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    if answered.len() < threshold.max(1) {
        return Err(VoteError::TooFewCopies {
            copies: answered.len(),
            threshold,
        });
    }
    let masked = excluded.iter().any(|e| !e.is_empty());
    if masked {
        return vote_blocks(offset, &answered, threshold, excluded);
    }
    let (base, first) = answered[0];
    if answered[1..].iter().all(|(_, c)| *c == first) {
        return Ok(Outcome {
            base,
            patches: Vec::new(),
            losses: Vec::new(),
        });
    }
    vote_blocks(offset, &answered, threshold, excluded)
}

/// Marks a copy that does not vote in a block.
const ABSENT: usize = usize::MAX;

/// The slow path: one vote per block.
fn vote_blocks(
    offset: u64,
    answered: &[(usize, &[u8])],
    threshold: usize,
    excluded: &[Vec<Range<u64>>],
) -> Result<Outcome, VoteError> {
    // Per child, the first excluded range that a block may still meet:
    // blocks come in order, so each list is walked once, not once a block.
    let mut next_excluded = vec![0usize; excluded.len()];
    let mut left_out = |child: usize, block: &Range<usize>| {
        let (s, e) = (offset + block.start as u64, offset + block.end as u64);
        let (Some(ranges), Some(at)) = (excluded.get(child), next_excluded.get_mut(child)) else {
            return false;
        };
        while ranges.get(*at).is_some_and(|r| r.end <= s) {
            *at += 1;
        }
        ranges.get(*at).is_some_and(|r| r.start < e)
    };
    let base = answered[0].0;
    let len = answered[0].1.len();
    let mut patches: Vec<Patch> = Vec::new();
    // Per answered copy: its lost runs, as (first lost block start, trimmed range).
    let mut lost: Vec<Vec<Range<u64>>> = vec![Vec::new(); answered.len()];
    let mut lost_prev_block: Vec<bool> = vec![false; answered.len()];
    // version[k] = index into `reps` of answered[k]'s version in this block.
    let mut version = vec![0usize; answered.len()];
    let mut reps: Vec<(usize, usize)> = Vec::with_capacity(answered.len()); // (answered idx, votes)

    for block in blocks(offset, len) {
        reps.clear();
        for (k, (child, copy)) in answered.iter().enumerate() {
            if left_out(*child, &block) {
                version[k] = ABSENT;
                continue;
            }
            let bytes = &copy[block.clone()];
            match reps
                .iter()
                .position(|&(r, _)| &answered[r].1[block.clone()] == bytes)
            {
                Some(v) => {
                    reps[v].1 += 1;
                    version[k] = v;
                }
                None => {
                    version[k] = reps.len();
                    reps.push((k, 1));
                }
            }
        }
        // Versions appear in child order, so the first maximum is the
        // lowest-indexed child's version: ties go to it.
        let mut winner = 0;
        for (v, &(_, votes)) in reps.iter().enumerate() {
            if votes > reps[winner].1 {
                winner = v;
            }
        }
        let (winner_rep, votes) = reps.get(winner).copied().unwrap_or((0, 0));
        if votes < threshold.max(1) {
            return Err(VoteError::NoMajority {
                offset: offset + block.start as u64,
                length: block.len() as u64,
                votes,
                threshold,
            });
        }
        let good = &answered[winner_rep].1[block.clone()];
        if version[0] != winner {
            let from = answered[winner_rep].0;
            match patches.last_mut() {
                Some(p) if p.from == from && p.range.end == block.start => p.range.end = block.end,
                _ => patches.push(Patch {
                    range: block.clone(),
                    from,
                }),
            }
        }
        for (k, (_, copy)) in answered.iter().enumerate() {
            if version[k] == winner || version[k] == ABSENT {
                lost_prev_block[k] = false;
                continue;
            }
            let bad = &copy[block.clone()];
            let (first, last) = differing_span(bad, good);
            let start = offset + (block.start + first) as u64;
            let end = offset + (block.start + last) as u64;
            match lost[k].last_mut() {
                Some(r) if lost_prev_block[k] => r.end = end,
                _ => lost[k].push(start..end),
            }
            lost_prev_block[k] = true;
        }
    }
    let losses = answered
        .iter()
        .zip(lost)
        .filter(|(_, ranges)| !ranges.is_empty())
        .map(|(&(child, _), ranges)| Loss { child, ranges })
        .collect();
    Ok(Outcome {
        base,
        patches,
        losses,
    })
}

/// The vote blocks of a request of `len` bytes at volume offset `offset`,
/// as ranges relative to the request: aligned to the volume, so the first
/// and last may be short.
fn blocks(offset: u64, len: usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let abs = offset + start as u64;
        let to_boundary = (VOTE_BLOCK - abs % VOTE_BLOCK) as usize;
        let end = (start + to_boundary).min(len);
        let block = start..end;
        start = end;
        Some(block)
    })
}

/// The span from the first to just past the last differing byte of two
/// slices of equal length that differ somewhere.
fn differing_span(a: &[u8], b: &[u8]) -> (usize, usize) {
    let first = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
    let last = a
        .iter()
        .zip(b)
        .rposition(|(x, y)| x != y)
        .map_or(a.len(), |i| i + 1);
    (first, last)
}

/// The index of the first byte where two copies differ, for blkverify.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(Some(a.len().min(b.len())))
}

/// Builds the answer from the copies: `base`'s copy with the patches applied.
pub fn assemble(outcome: &Outcome, copies: &mut [Option<Vec<u8>>]) -> Vec<u8> {
    let mut answer = copies[outcome.base].take().unwrap_or_default();
    for patch in &outcome.patches {
        if let Some(src) = &copies[patch.from] {
            answer[patch.range.clone()].copy_from_slice(&src[patch.range.clone()]);
        }
    }
    answer
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const B: usize = VOTE_BLOCK as usize;

    fn run(
        offset: u64,
        copies: &[Option<Vec<u8>>],
        threshold: usize,
    ) -> Result<(Vec<u8>, Vec<Loss>), VoteError> {
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome = vote(offset, &views, threshold)?;
        let losses = outcome.losses.clone();
        let mut owned = copies.to_vec();
        Ok((assemble(&outcome, &mut owned), losses))
    }

    fn filled(len: usize, byte: u8) -> Vec<u8> {
        vec![byte; len]
    }

    #[test]
    fn all_agree_is_unanimous() {
        let c = Some(filled(3 * B, 7));
        let views = [c.as_deref(), c.as_deref(), c.as_deref()];
        let outcome = vote(0, &views, 2).expect("vote");
        assert!(outcome.is_unanimous());
        assert_eq!(outcome.base, 0);
        assert!(outcome.patches.is_empty());
    }

    #[test]
    fn one_of_three_corrupt_loses_exact_range() {
        let good = filled(4 * B, 0x32);
        let mut bad = good.clone();
        bad[B + 10..B + 20].fill(0x42);
        let (answer, losses) =
            run(0, &[Some(good.clone()), Some(bad), Some(good.clone())], 2).expect("vote");
        assert_eq!(answer, good);
        assert_eq!(
            losses,
            vec![Loss {
                child: 1,
                ranges: vec![(B as u64 + 10)..(B as u64 + 20)]
            }]
        );
    }

    #[test]
    fn whole_copy_corrupt_reports_whole_request() {
        let good = filled(10 * B, 0x32);
        let bad = filled(10 * B, 0x42);
        let (answer, losses) =
            run(0, &[Some(good.clone()), Some(good.clone()), Some(bad)], 2).expect("vote");
        assert_eq!(answer, good);
        assert_eq!(
            losses,
            vec![Loss {
                child: 2,
                ranges: vec![0..10 * B as u64]
            }]
        );
    }

    #[test]
    fn corrupt_base_is_patched_from_winner() {
        let good = filled(2 * B, 1);
        let mut bad = good.clone();
        bad[B] = 9;
        let (answer, losses) =
            run(0, &[Some(bad), Some(good.clone()), Some(good.clone())], 2).expect("vote");
        assert_eq!(answer, good);
        assert_eq!(losses[0].child, 0);
        assert_eq!(losses[0].ranges, vec![B as u64..B as u64 + 1]);
    }

    #[test]
    fn two_children_corrupt_in_different_blocks_succeeds() {
        let good = filled(16 * B, 0x32);
        let mut b = good.clone();
        b[10..110].fill(0);
        let mut c = good.clone();
        c[5 * B + 7] = 0xff;
        let (answer, losses) = run(0, &[Some(good.clone()), Some(b), Some(c)], 2).expect("vote");
        assert_eq!(answer, good);
        assert_eq!(
            losses,
            vec![
                Loss {
                    child: 1,
                    ranges: vec![10..110]
                },
                Loss {
                    child: 2,
                    ranges: vec![(5 * B as u64 + 7)..(5 * B as u64 + 8)]
                },
            ]
        );
    }

    #[test]
    fn no_majority_fails_at_the_block() {
        let a = filled(2 * B, 0x41);
        let mut b = a.clone();
        b[B..].fill(0x42);
        let mut c = a.clone();
        c[B..].fill(0x32);
        let err = run(8192, &[Some(a), Some(b), Some(c)], 2).expect_err("no majority");
        assert_eq!(
            err,
            VoteError::NoMajority {
                offset: 8192 + B as u64,
                length: B as u64,
                votes: 1,
                threshold: 2
            }
        );
    }

    #[test]
    fn threshold_one_tie_goes_to_child_zero() {
        let a = filled(B, 1);
        let b = filled(B, 2);
        let (answer, losses) = run(0, &[Some(a.clone()), Some(b)], 1).expect("vote");
        assert_eq!(answer, a);
        assert_eq!(
            losses,
            vec![Loss {
                child: 1,
                ranges: vec![0..B as u64]
            }]
        );
    }

    #[test]
    fn tie_goes_to_lowest_indexed_version_not_first_block_winner() {
        // Children 1 and 2 agree with each other against 0 and 3: a 2-2 tie
        // that child 0's version wins.
        let a = filled(B, 1);
        let b = filled(B, 2);
        let (answer, losses) = run(
            0,
            &[Some(a.clone()), Some(b.clone()), Some(b), Some(a.clone())],
            2,
        )
        .expect("vote");
        assert_eq!(answer, a);
        assert_eq!(
            losses.iter().map(|l| l.child).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn errors_mixed_with_corruption() {
        let good = filled(2 * B, 5);
        let mut bad = good.clone();
        bad[0] = 6;
        let copies = [
            None,
            Some(bad),
            Some(good.clone()),
            Some(good.clone()),
            Some(good.clone()),
        ];
        let (answer, losses) = run(0, &copies, 3).expect("vote");
        assert_eq!(answer, good);
        assert_eq!(
            losses,
            vec![Loss {
                child: 1,
                ranges: vec![0..1]
            }]
        );
        // Child 0 failed: the base is the first child that answered, patched
        // where it lost.
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let outcome = vote(0, &views, 3).expect("vote");
        assert_eq!(outcome.base, 1);
        assert_eq!(
            outcome.patches,
            vec![Patch {
                range: 0..B,
                from: 2
            }]
        );
    }

    #[test]
    fn fewer_successes_than_threshold_fails() {
        let good = filled(B, 5);
        let err = run(0, &[None, Some(good.clone()), None], 2).expect_err("too few");
        assert_eq!(
            err,
            VoteError::TooFewCopies {
                copies: 1,
                threshold: 2
            }
        );
        let err = run(0, &[None, None], 1).expect_err("none");
        assert_eq!(
            err,
            VoteError::TooFewCopies {
                copies: 0,
                threshold: 1
            }
        );
    }

    #[test]
    fn unaligned_request_votes_on_volume_aligned_blocks() {
        // A read of 4 KiB at 4000 spans blocks 0 and 1 of the volume.
        let good = filled(B, 3);
        let mut bad = good.clone();
        bad[95] = 0; // volume byte 4095, block 0
        bad[97] = 0; // volume byte 4097, block 1
        let (_, losses) = run(
            4000,
            &[Some(good.clone()), Some(good.clone()), Some(bad)],
            2,
        )
        .expect("vote");
        assert_eq!(
            losses,
            vec![Loss {
                child: 2,
                ranges: vec![4095..4098]
            }]
        );
        let mut only_second = good.clone();
        only_second[97] = 0;
        let mut only_first = good.clone();
        only_first[95] = 0;
        // Each block has a majority although no two copies are equal overall.
        let (answer, _) = run(
            4000,
            &[Some(good.clone()), Some(only_first), Some(only_second)],
            2,
        )
        .expect("vote");
        assert_eq!(answer, good);
    }

    #[test]
    fn non_adjacent_lost_blocks_are_separate_ranges() {
        let good = filled(4 * B, 3);
        let mut bad = good.clone();
        bad[0] = 0;
        bad[2 * B] = 0;
        bad[3 * B + 5] = 0;
        let (_, losses) =
            run(0, &[Some(good.clone()), Some(bad), Some(good.clone())], 2).expect("vote");
        let b = B as u64;
        assert_eq!(losses[0].ranges, vec![0..1, 2 * b..3 * b + 6]);
    }

    #[test]
    fn excluded_blocks_do_not_vote_and_do_not_lose() {
        let good = filled(4 * B, 1);
        let mut stale = good.clone();
        stale[B..2 * B].fill(9);
        let copies = [Some(stale), Some(good.clone()), Some(good.clone())];
        let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
        let b = B as u64;
        let excluded = vec![vec![b..2 * b], vec![], vec![]];
        let outcome = vote_masked(0, &views, 2, &excluded).expect("vote");
        assert!(outcome.losses.is_empty(), "{:?}", outcome.losses);
        assert_eq!(
            outcome.patches,
            vec![Patch {
                range: B..2 * B,
                from: 1
            }]
        );
        // With two children left out of a block, threshold 2 cannot be met there.
        let excluded = vec![vec![b..2 * b], vec![b..b + 1], vec![]];
        let err = vote_masked(0, &views, 2, &excluded).expect_err("too few in block 1");
        assert!(matches!(err, VoteError::NoMajority { offset, votes: 1, .. } if offset == b));
    }

    #[test]
    fn first_difference_finds_the_byte() {
        let a = filled(100, 1);
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[42] = 0;
        b[77] = 0;
        assert_eq!(first_difference(&a, &b), Some(42));
    }

    /// The vote as SPEC section 5 words it, written apart from the code and
    /// for clarity only. First every block is decided: among the copies that
    /// answered and are not left out of the block, the version held by the
    /// most children wins, ties going to the version of the lowest-indexed
    /// child; a winner below the threshold fails the read. The answer is the
    /// winners put together. Only then are the losses derived from the
    /// answer: per child, each run of consecutive blocks it lost is one
    /// range, from its first byte that differs from the answer to just past
    /// its last.
    fn reference(
        offset: u64,
        copies: &[Option<Vec<u8>>],
        threshold: usize,
        excluded: &[Vec<Range<u64>>],
    ) -> Option<(Vec<u8>, Vec<Loss>)> {
        let answered: Vec<usize> = (0..copies.len()).filter(|&i| copies[i].is_some()).collect();
        if answered.len() < threshold.max(1) {
            return None;
        }
        let copy = |i: usize| copies[i].as_deref().unwrap_or_default();
        let len = copy(answered[0]).len();
        // Block boundaries, relative to the request: 0, every multiple of
        // the block size of the volume inside the request, and len.
        let mut bounds = vec![0];
        bounds.extend((1..len).filter(|&p| (offset + p as u64) % VOTE_BLOCK == 0));
        bounds.push(len);
        let blocks = bounds.len() - 1;
        let mut answer = vec![0u8; len];
        let mut lost = vec![vec![false; blocks]; copies.len()];
        for b in 0..blocks {
            let (s, e) = (bounds[b], bounds[b + 1]);
            let voters: Vec<usize> = answered
                .iter()
                .copied()
                .filter(|&i| {
                    let (vs, ve) = (offset + s as u64, offset + e as u64);
                    !excluded
                        .get(i)
                        .is_some_and(|r| r.iter().any(|r| r.start < ve && vs < r.end))
                })
                .collect();
            let votes = |i: usize| {
                voters
                    .iter()
                    .filter(|&&j| copy(j)[s..e] == copy(i)[s..e])
                    .count()
            };
            let most = voters.iter().map(|&i| votes(i)).max().unwrap_or(0);
            if most < threshold.max(1) {
                return None;
            }
            // The lowest-indexed child among those holding a most-voted version.
            let winner = voters
                .iter()
                .copied()
                .find(|&i| votes(i) == most)
                .unwrap_or_default();
            answer[s..e].copy_from_slice(&copy(winner)[s..e]);
            for &i in &voters {
                lost[i][b] = copy(i)[s..e] != copy(winner)[s..e];
            }
        }
        let mut losses = Vec::new();
        for &i in &answered {
            let mut ranges = Vec::new();
            let mut b = 0;
            while b < blocks {
                if !lost[i][b] {
                    b += 1;
                    continue;
                }
                let first = b;
                while b < blocks && lost[i][b] {
                    b += 1;
                }
                let differing: Vec<usize> = (bounds[first]..bounds[b])
                    .filter(|&p| copy(i)[p] != answer[p])
                    .collect();
                let (Some(&lo), Some(&hi)) = (differing.first(), differing.last()) else {
                    panic!("child {i} lost blocks {first}..{b} without a differing byte");
                };
                ranges.push(offset + lo as u64..offset + hi as u64 + 1);
            }
            if !ranges.is_empty() {
                losses.push(Loss { child: i, ranges });
            }
        }
        Some((answer, losses))
    }

    #[test]
    fn matches_naive_reference_on_random_inputs() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for round in 0..3000 {
            let children = rng.random_range(1..=5);
            let threshold = rng.random_range(1..=children);
            let offset = rng.random_range(0..3 * VOTE_BLOCK);
            let len = rng.random_range(1..5 * B);
            let truth: Vec<u8> = (0..len).map(|_| rng.random_range(0..4)).collect();
            let masked = round % 3 == 0;
            let copies: Vec<Option<Vec<u8>>> = (0..children)
                .map(|_| {
                    if rng.random_bool(0.15) {
                        return None;
                    }
                    let mut c = truth.clone();
                    for _ in 0..rng.random_range(0..4) {
                        let at = rng.random_range(0..len);
                        let n = rng.random_range(1..=(len - at).min(2 * B));
                        let byte = rng.random_range(0..3);
                        c[at..at + n].fill(byte);
                    }
                    Some(c)
                })
                .collect();
            // A third of the rounds leave some children out of some ranges
            // (their stale ranges), which also skips the unanimous shortcut.
            let excluded: Vec<Vec<Range<u64>>> = (0..children)
                .map(|_| {
                    if !masked || rng.random_bool(0.5) {
                        return Vec::new();
                    }
                    // One to three ranges, in order and disjoint.
                    let mut ranges = Vec::new();
                    let mut at = offset + rng.random_range(0..len) as u64;
                    for _ in 0..rng.random_range(1..=3) {
                        let n = rng.random_range(1..=2 * VOTE_BLOCK);
                        ranges.push(at..at + n);
                        at += n + rng.random_range(1..=2 * VOTE_BLOCK);
                    }
                    ranges
                })
                .collect();
            let views: Vec<Option<&[u8]>> = copies.iter().map(|c| c.as_deref()).collect();
            let got = vote_masked(offset, &views, threshold, &excluded)
                .ok()
                .map(|outcome| {
                    let losses = outcome.losses.clone();
                    (assemble(&outcome, &mut copies.clone()), losses)
                });
            let want = reference(offset, &copies, threshold, &excluded);
            assert_eq!(
                got, want,
                "round {round}: offset {offset} len {len} threshold {threshold} excluded {excluded:?}"
            );
        }
    }
}
