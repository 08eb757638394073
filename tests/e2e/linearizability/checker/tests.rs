//! The checker against histories made by hand: each rule it enforces
//! is broken once, and legal histories pass.

use super::*;
use crate::util::Rng;

fn write(id: u64, first: u64, blocks: u64, inv: Time, resp: Time) -> Write {
    Write {
        id,
        client: 0,
        first,
        blocks,
        inv,
        resp,
        outcome: Outcome::Ok,
    }
}

fn failed(id: u64, first: u64, blocks: u64, inv: Time, resp: Time) -> Write {
    Write {
        outcome: Outcome::Failed("503".into()),
        ..write(id, first, blocks, inv, resp)
    }
}

fn read(first: u64, inv: Time, resp: Time, ids: &[u64]) -> Read {
    Read {
        client: 1,
        first,
        inv,
        resp,
        seen: ids
            .iter()
            .enumerate()
            .map(|(k, &id)| match id {
                0 => Seen::Zero,
                id => Seen::Write {
                    id,
                    block: first + k as u64,
                },
            })
            .collect(),
    }
}

#[track_caller]
fn expect(h: &History, rule: Rule) {
    let report = check(h);
    assert!(
        report.counts.get(&rule).copied().unwrap_or(0) > 0,
        "the checker should have found {rule:?}:\n{}",
        report.explain(h)
    );
}

#[test]
fn the_pattern_round_trips_and_detects_mixtures() {
    let a = encode(7, 10, 2);
    assert_eq!(decode(&a[..BLOCK]), Seen::Write { id: 7, block: 10 });
    assert_eq!(decode(&a[BLOCK..]), Seen::Write { id: 7, block: 11 });
    assert_eq!(decode(&[0u8; BLOCK]), Seen::Zero);
    let b = encode(8, 10, 1);
    let mut mixed = a[..BLOCK].to_vec();
    mixed[2048..].copy_from_slice(&b[2048..]);
    assert_eq!(decode(&mixed), Seen::Garbage);
    let mut flipped = a[..BLOCK].to_vec();
    flipped[4000] ^= 1;
    assert_eq!(decode(&flipped), Seen::Garbage);
    let mut half_zero = a[..BLOCK].to_vec();
    half_zero[..2048].fill(0);
    assert_eq!(decode(&half_zero), Seen::Garbage);
}

/// Overlapping writes, reads concurrent with them seeing either side,
/// a failed write seen, another never seen, and atomic multi-block reads.
#[test]
fn a_legal_history_passes() {
    let h = History {
        writes: vec![
            write(1, 0, 4, 0, 10),
            write(2, 2, 4, 20, 40),
            failed(3, 0, 1, 50, 60),
            failed(4, 5, 1, 50, 60),
            write(5, 0, 2, 70, 80),
        ],
        reads: vec![
            read(0, 5, 8, &[0, 0, 0, 0]),
            read(0, 11, 12, &[1, 1, 1, 1, 0, 0]),
            read(2, 25, 35, &[1, 1]),
            read(2, 30, 45, &[2, 2, 2, 2]),
            read(0, 41, 42, &[1, 1, 2, 2, 2, 2]),
            read(0, 61, 62, &[3, 1, 2]),
            read(0, 63, 64, &[3]),
            read(0, 75, 85, &[3, 1]),
            read(0, 76, 86, &[5, 5, 2]),
            read(5, 90, 91, &[2]),
        ],
    };
    let report = check(&h);
    assert!(report.ok(), "{}", report.explain(&h));
    assert_eq!(report.multi_block_reads, 8);
}

#[test]
fn a_stale_read_fails() {
    let h = History {
        writes: vec![write(1, 0, 1, 0, 10), write(2, 0, 1, 20, 30)],
        reads: vec![read(0, 40, 50, &[1])],
    };
    expect(&h, Rule::NotLinearizable);
    // Zero after a completed write is stale too.
    let h = History {
        writes: vec![write(1, 3, 1, 0, 10)],
        reads: vec![read(3, 11, 12, &[0])],
    };
    expect(&h, Rule::NotLinearizable);
}

#[test]
fn reads_that_disagree_on_the_order_fail() {
    // Two concurrent writes; one reader sees 1 then 2, another sees 2 then 1.
    let h = History {
        writes: vec![write(1, 0, 1, 0, 100), write(2, 0, 1, 0, 100)],
        reads: vec![
            read(0, 10, 20, &[1]),
            read(0, 30, 40, &[2]),
            read(0, 50, 60, &[1]),
        ],
    };
    expect(&h, Rule::NotLinearizable);
}

#[test]
fn a_torn_read_fails() {
    // w2 over blocks 0..2 is seen on block 0 only; block 1 shows w1,
    // which completed before w2 began.
    let h = History {
        writes: vec![write(1, 0, 2, 0, 10), write(2, 0, 2, 20, 100)],
        reads: vec![read(0, 30, 90, &[2, 1])],
    };
    let report = check(&h);
    assert!(
        !report.counts.contains_key(&Rule::NotLinearizable),
        "each block alone is linearizable: {}",
        report.explain(&h)
    );
    expect(&h, Rule::Torn);
    // A read that straddles: block 0 older than w2, block 1 a write
    // invoked after w2 completed.
    let h = History {
        writes: vec![write(2, 0, 1, 20, 30), write(3, 1, 1, 40, 50)],
        reads: vec![read(0, 10, 60, &[0, 3])],
    };
    expect(&h, Rule::Torn);
}

#[test]
fn a_made_up_value_fails() {
    let mut r = read(0, 30, 90, &[0, 0]);
    r.seen[1] = Seen::Garbage;
    let h = History {
        writes: vec![write(1, 0, 2, 0, 10)],
        reads: vec![r],
    };
    expect(&h, Rule::MadeUp);
    // A write id nobody issued, and a block in the wrong place.
    let mut r = read(0, 30, 90, &[9, 1]);
    r.seen[1] = Seen::Write { id: 1, block: 0 };
    let h = History {
        writes: vec![write(1, 0, 2, 0, 10)],
        reads: vec![r],
    };
    let report = check(&h);
    assert_eq!(
        report.counts.get(&Rule::MadeUp),
        Some(&2),
        "{}",
        report.explain(&h)
    );
}

#[test]
fn a_value_from_the_future_fails() {
    let h = History {
        writes: vec![write(1, 0, 1, 50, 60)],
        reads: vec![read(0, 10, 20, &[1])],
    };
    expect(&h, Rule::Future);
}

/// Whether one register's history has a linearization, by search: take
/// any operation that no other pending operation wholly precedes; reads
/// must return the current value; failed writes may be left out.
fn brute_force(h: &History) -> bool {
    #[derive(Clone, Copy)]
    struct Op {
        inv: Time,
        resp: Time,
        write: Option<u64>,
        read: Option<u64>,
        optional: bool,
    }
    let mut ops: Vec<Op> = h
        .writes
        .iter()
        .map(|w| Op {
            inv: w.inv,
            resp: w.effect_by(),
            write: Some(w.id),
            read: None,
            optional: !w.acked(),
        })
        .collect();
    ops.extend(h.reads.iter().map(|r| Op {
        inv: r.inv,
        resp: r.resp,
        write: None,
        read: Some(match r.seen[0] {
            Seen::Write { id, .. } => id,
            _ => 0,
        }),
        optional: false,
    }));
    fn search(ops: &[Op], done: u32, value: u64, seen: &mut HashSet<(u32, u64)>) -> bool {
        if (0..ops.len()).all(|i| done & (1 << i) != 0 || ops[i].optional) {
            return true;
        }
        if !seen.insert((done, value)) {
            return false;
        }
        let pending = |i: usize| done & (1 << i) == 0;
        for i in (0..ops.len()).filter(|&i| pending(i)) {
            let blocked = (0..ops.len()).any(|j| pending(j) && ops[j].resp < ops[i].inv);
            if blocked {
                continue;
            }
            let next = match (ops[i].write, ops[i].read) {
                (Some(id), _) => id,
                (None, Some(v)) if v == value => value,
                _ => continue,
            };
            if search(ops, done | (1 << i), next, seen) {
                return true;
            }
        }
        false
    }
    search(&ops, 0, 0, &mut HashSet::new())
}

/// The zone rules (with rule 2) decide linearizability exactly: the
/// same answer as the search on random small histories of one block.
#[test]
fn zones_agree_with_a_brute_force_search() {
    let mut rng = Rng(11);
    let (mut legal, mut illegal) = (0, 0);
    for round in 0..20_000 {
        let n = 1 + rng.below(7) as usize;
        // Distinct times, so ties never decide.
        let mut times: Vec<Time> = (0..2 * n as Time).collect();
        for i in (1..times.len()).rev() {
            times.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut h = History::default();
        let mut reads = Vec::new();
        for k in 0..n {
            let (a, b) = (times[2 * k], times[2 * k + 1]);
            let (inv, resp) = (a.min(b), a.max(b));
            if rng.below(2) == 0 {
                let id = h.writes.len() as u64 + 1;
                h.writes.push(if rng.below(5) == 0 {
                    failed(id, 0, 1, inv, resp)
                } else {
                    write(id, 0, 1, inv, resp)
                });
            } else {
                reads.push((inv, resp));
            }
        }
        for (inv, resp) in reads {
            let value = rng.below(h.writes.len() as u64 + 1);
            h.reads.push(read(0, inv, resp, &[value]));
        }
        let expected = brute_force(&h);
        let report = check(&h);
        assert_eq!(
            report.ok(),
            expected,
            "round {round}: the zones say {}, the search says {expected}:\n{:#?}\n{}",
            report.ok(),
            h,
            report.explain(&h)
        );
        if expected {
            legal += 1;
        } else {
            illegal += 1;
        }
    }
    assert!(
        legal > 2_000 && illegal > 2_000,
        "{legal} legal, {illegal} illegal"
    );
}
