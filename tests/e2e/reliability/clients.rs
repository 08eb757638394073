//! Many HTTP clients on overlapping blocks: no torn, misplaced or stale
//! block.

use super::*;

// ---------------------------------------------------------------------------
// 3. Concurrency over HTTP
// ---------------------------------------------------------------------------

/// What a block holds: `0` (zeros) or the word of write `id`.
fn word_of(id: u64, block: u64) -> u64 {
    (id << 20) | (block << 1) | 1
}

/// One request of the concurrent load, timed on the client side.
struct Op {
    /// Write id, or 0 for write-zeroes.
    id: u64,
    first: u64,
    blocks: u64,
    t0: Duration,
    t1: Duration,
}

/// One block as a read saw it.
struct Seen {
    block: u64,
    /// 0 for zeros, else the write id.
    id: u64,
    t0: Duration,
    t1: Duration,
}

/// Whether a read during `[r0, r1]` may see `value` (0 = zeros) in `block`
/// given all `ops` on it: some op that wrote `value` (or, for zeros, the
/// initial state) must not have been overwritten by an op that started
/// after it ended and ended before the read started.
fn may_see(ops: &[&Op], value: u64, r0: Duration, r1: Duration) -> bool {
    let superseded = |end: Duration| ops.iter().any(|o| o.t0 > end && o.t1 < r0);
    if value == 0 && !superseded(Duration::ZERO) {
        return true; // the initial zeros
    }
    ops.iter()
        .filter(|o| o.id == value)
        .any(|w| w.t0 < r1 && !superseded(w.t1))
}

/// 8 clients for 2 s on 256 KiB: whole-block writes (every 8 bytes carry
/// the write id and the block index), whole-block write-zeroes, and reads
/// at any 8-byte offset. No read sees a block mixing two writes, a block
/// at the wrong place, or a block older than one acknowledged before the
/// read began; afterwards the child files are byte-identical and nothing
/// was reported. (basic.rs has 3 writers and 1 reader on whole blocks.)
#[test]
fn eight_clients_see_no_torn_misplaced_or_stale_block() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    let region = 256 * KIB;
    let nblocks = region / BLOCK;
    let epoch = Instant::now();
    let until = epoch + Duration::from_secs(2);

    let results: Vec<(Vec<Op>, Vec<Seen>, Vec<String>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let server = &server;
                s.spawn(move || {
                    let client = client();
                    let base = server.url("");
                    let mut rng = Rng(0xBEEF + t);
                    let mut ops = Vec::new();
                    let mut seen = Vec::new();
                    let mut bad = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < until && n < 5000 {
                        n += 1;
                        let id = (t + 1) * 100_000 + n;
                        let roll = rng.below(100);
                        if roll < 60 {
                            let first = rng.below(nblocks);
                            let blocks = (1 + rng.below(8)).min(nblocks - first);
                            let mut data = Vec::with_capacity((blocks * BLOCK) as usize);
                            for b in first..first + blocks {
                                for _ in 0..BLOCK / 8 {
                                    data.extend_from_slice(&word_of(id, b).to_le_bytes());
                                }
                            }
                            let t0 = epoch.elapsed();
                            let r = client
                                .put(format!("{base}{DATA}?offset={}", first * BLOCK))
                                .body(data)
                                .send()
                                .map(|r| r.status().as_u16());
                            let t1 = epoch.elapsed();
                            if !matches!(r, Ok(204)) {
                                bad.push(format!("write {id}: {r:?}"));
                            }
                            ops.push(Op {
                                id,
                                first,
                                blocks,
                                t0,
                                t1,
                            });
                        } else if roll < 70 {
                            let first = rng.below(nblocks);
                            let blocks = (1 + rng.below(4)).min(nblocks - first);
                            let t0 = epoch.elapsed();
                            let r = client
                                .post(format!(
                                    "{base}/v1/volumes/vm/write-zeroes?offset={}&length={}",
                                    first * BLOCK,
                                    blocks * BLOCK
                                ))
                                .send()
                                .map(|r| r.status().as_u16());
                            let t1 = epoch.elapsed();
                            if !matches!(r, Ok(204)) {
                                bad.push(format!("write-zeroes: {r:?}"));
                            }
                            ops.push(Op {
                                id: 0,
                                first,
                                blocks,
                                t0,
                                t1,
                            });
                        } else {
                            let offset = rng.below(region / 8) * 8;
                            let len = ((1 + rng.below(8 * KIB)) * 8).min(region - offset);
                            let t0 = epoch.elapsed();
                            let r = client
                                .get(format!("{base}{DATA}"))
                                .header("range", format!("bytes={offset}-{}", offset + len - 1))
                                .send()
                                .and_then(|r| {
                                    let status = r.status().as_u16();
                                    r.bytes().map(|b| (status, b))
                                });
                            let t1 = epoch.elapsed();
                            let body = match r {
                                Ok((206, body)) if body.len() as u64 == len => body,
                                other => {
                                    bad.push(format!(
                                        "read {len} at {offset}: {:?}",
                                        other.map(|(s, b)| (s, b.len()))
                                    ));
                                    continue;
                                }
                            };
                            // Group the words by volume block.
                            let mut at = offset;
                            while at < offset + len {
                                let block = at / BLOCK;
                                let end = ((block + 1) * BLOCK).min(offset + len);
                                let words: Vec<u64> = body
                                    [(at - offset) as usize..(end - offset) as usize]
                                    .chunks(8)
                                    .map(|w| {
                                        u64::from_le_bytes(w.try_into().expect("8 bytes"))
                                    })
                                    .collect();
                                let w = words[0];
                                if words.iter().any(|x| *x != w) {
                                    bad.push(format!(
                                        "read at {offset}: block {block} mixes writes {:?}",
                                        words.iter().map(|x| x >> 20).collect::<std::collections::BTreeSet<_>>()
                                    ));
                                } else if w != 0 && ((w & 1) == 0 || (w >> 1) & 0x7_FFFF != block) {
                                    bad.push(format!(
                                        "read at {offset}: block {block} holds the word {w:#x} of another place"
                                    ));
                                } else {
                                    seen.push(Seen {
                                        block,
                                        id: w >> 20,
                                        t0,
                                        t1,
                                    });
                                }
                                at = end;
                            }
                        }
                    }
                    (ops, seen, bad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });

    let bad: Vec<&String> = results.iter().flat_map(|r| &r.2).collect();
    assert!(
        bad.is_empty(),
        "{} bad answers: {:?}",
        bad.len(),
        &bad[..bad.len().min(20)]
    );
    let ops: Vec<&Op> = results.iter().flat_map(|r| &r.0).collect();
    let mut per_block: Vec<Vec<&Op>> = vec![Vec::new(); nblocks as usize];
    for o in &ops {
        for b in o.first..o.first + o.blocks {
            per_block[b as usize].push(o);
        }
    }
    let mut seen: Vec<&Seen> = results.iter().flat_map(|r| &r.1).collect();
    let end = epoch.elapsed();
    let last = server.read_volume("vm", 0, region);
    let finals: Vec<Seen> = last
        .chunks(BLOCK as usize)
        .enumerate()
        .map(|(b, block)| {
            let w = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
            assert!(
                block.chunks(8).all(|x| x == &block[..8]),
                "block {b} mixes writes at the end"
            );
            Seen {
                block: b as u64,
                id: w >> 20,
                t0: end,
                t1: epoch.elapsed(),
            }
        })
        .collect();
    seen.extend(finals.iter());
    let mut stale = Vec::new();
    for s in &seen {
        if !may_see(&per_block[s.block as usize], s.id, s.t0, s.t1) {
            stale.push(format!(
                "block {} showed write {} during {:?}..{:?}",
                s.block, s.id, s.t0, s.t1
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{} reads saw a block older than one acknowledged before they began \
         (or a write never sent): {:?}",
        stale.len(),
        &stale[..stale.len().min(20)]
    );

    let a = server.read_file("a.img");
    for f in ["b.img", "c.img"] {
        assert_bytes_eq(&server.read_file(f), &a, &format!("{f} against a.img"));
    }
    let events = server.all_events();
    assert!(
        events.is_empty(),
        "healthy children were reported: {events:?}"
    );
    let writes = ops.iter().filter(|o| o.id != 0).count();
    eprintln!(
        "8 clients: {writes} writes, {} write-zeroes, {} block reads checked in {:?}",
        ops.len() - writes,
        seen.len(),
        end
    );
    assert!(ops.len() >= 80, "too few requests to prove anything");
}
