//! The checker: a recorded history of block reads and writes against the
//! promises of SPEC 8.1 (atomic reads) and 8.2 (linearizable blocks).
//!
//! It is pure: it takes the history (who did what, when, and what each read
//! returned) and answers with the violations, each with the operations that
//! prove it. Nothing here does I/O, so the unit tests at the bottom feed it
//! hand-made histories (a legal one, a stale read, a torn read, a made-up
//! value) and compare it on thousands of random small histories with a
//! brute-force search for a linearization.
//!
//! # The model
//!
//! Every write has a unique id and fills each 4 KiB block it covers with a
//! pattern that names the write and the block ([`encode`]), so each block of
//! a read decodes ([`decode`]) to exactly one write, to zero (never
//! written), or to garbage. Times are nanoseconds of one monotonic clock,
//! taken by the client just before it sends a request and just after it has
//! the whole answer, so a request's interval holds the server's.
//!
//! A write that was acknowledged took effect at one point within its
//! interval. A write that failed (5xx, or no answer) may have taken effect
//! at any point after its invocation, or never: its response time counts as
//! [`NEVER`]. The zeros the volume starts with are a write at [`BEGINNING`].
//! Reads that failed promise nothing and are not checked.
//!
//! # Rules
//!
//! 1. **Produced bytes** (8.2, "never returns bytes no write produced").
//!    Every block of a successful read decodes to zero or to a write of the
//!    history that covers that very block, with the pattern of that block.
//! 2. **Not from the future.** A read that returns write `w` on a block
//!    did not complete before `w` was invoked.
//! 3. **Linearizable blocks** (8.2). Each block is a register with unique
//!    values, and for those the check is exact (Gibbons and Korach, "Testing
//!    shared memories", SIAM J. Comput. 1997): group each write with the reads
//!    that returned it (a *cluster*; the zeros are the cluster of the
//!    initial write). Let `min_res` be the earliest response and `max_inv`
//!    the latest invocation of the cluster's operations. If
//!    `min_res < max_inv` the value must have been the block's value
//!    throughout `(min_res, max_inv)`: a *forward zone*. Otherwise the whole
//!    cluster fits at one instant of `[max_inv, min_res]`: a *backward
//!    zone*. Together with rule 2 the block's history is linearizable iff
//!    no two forward zones overlap and no backward zone lies inside a
//!    forward zone. So a read never returns a value older than a write that
//!    completed before it began (that value's forward zone would hold the
//!    newer write's zone), and two reads never disagree about the order of
//!    two writes (two forward zones would overlap). Comparisons are
//!    strict: on equal times the history is given the benefit of the doubt.
//!    The unit test `zones_agree_with_a_brute_force_search` checks this
//!    claim on random histories, failed writes included.
//! 4. **Atomic reads** (8.1). A read of several blocks happened at one
//!    instant `t` of its interval, when every write was either applied
//!    whole or not at all. If a block `b` of the read shows a value that is
//!    definitely older than an acknowledged write `W` covering `b` (zero,
//!    or a write that completed before `W` was invoked), then the read's
//!    instant precedes `W`: so no block of the read may show `W` itself
//!    (`W` seen in part: a torn write), and no block may show a write
//!    invoked after `W` completed (the read straddles `W`). This holds for
//!    any multi-block read and any writes, whatever their sizes.
//!
//! Rules 3 and 4 together are not a full check of the whole volume as one
//! object (that problem is NP-complete in general); they are the exact
//! per-block check plus the cross-block consequences of one read instant.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// A time, in nanoseconds since the start of the run.
pub type Time = i64;
/// Before every operation: when the initial zeros were written.
pub const BEGINNING: Time = i64::MIN;
/// The response of a write that failed: it may take effect at any time
/// after its invocation, or never.
pub const NEVER: Time = i64::MAX;

/// The block size of the model, the vote block of SPEC 5.
pub const BLOCK: usize = 4096;
/// A block's pattern repeats one unit: magic, write id, block, a check.
const UNIT: usize = 32;
const MAGIC: u64 = 0x5155_4f52_554d_4c49;
const CHECK: u64 = 0x9e37_79b9_7f4a_7c15;

/// Fills `out` (one block) with the pattern of block `block` of write `id`.
pub fn encode_block(id: u64, block: u64, out: &mut [u8]) {
    let unit = unit(id, block);
    for chunk in out.chunks_mut(UNIT) {
        chunk.copy_from_slice(&unit[..chunk.len()]);
    }
}

/// The body of write `id` over `blocks` blocks from block `first`.
pub fn encode(id: u64, first: u64, blocks: u64) -> Vec<u8> {
    let mut out = vec![0u8; blocks as usize * BLOCK];
    for (i, block) in out.chunks_mut(BLOCK).enumerate() {
        encode_block(id, first + i as u64, block);
    }
    out
}

fn unit(id: u64, block: u64) -> [u8; UNIT] {
    let mut unit = [0u8; UNIT];
    unit[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    unit[8..16].copy_from_slice(&id.to_le_bytes());
    unit[16..24].copy_from_slice(&block.to_le_bytes());
    unit[24..32].copy_from_slice(&(id.wrapping_mul(CHECK) ^ block ^ MAGIC).to_le_bytes());
    unit
}

/// What one block of a read held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    /// All zero: never written.
    Zero,
    /// The whole pattern of block `block` of write `id`.
    Write { id: u64, block: u64 },
    /// Anything else: bytes no write of this model produced.
    Garbage,
}

/// Decodes one block of a read.
pub fn decode(bytes: &[u8]) -> Seen {
    if bytes.len() != BLOCK {
        return Seen::Garbage;
    }
    if bytes.iter().all(|&b| b == 0) {
        return Seen::Zero;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    let (id, block) = (word(1), word(2));
    let expected = unit(id, block);
    if bytes.chunks(UNIT).all(|c| c == expected) {
        Seen::Write { id, block }
    } else {
        Seen::Garbage
    }
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (204).
    Ok,
    /// Failed or unanswered: it may or may not have taken effect.
    Failed(String),
}

/// One write of the history.
#[derive(Clone, Debug)]
pub struct Write {
    /// Its unique id (never 0), as written in its blocks.
    pub id: u64,
    pub client: usize,
    /// Its first block and number of blocks.
    pub first: u64,
    pub blocks: u64,
    /// Invocation and response, as measured by the client.
    pub inv: Time,
    pub resp: Time,
    pub outcome: Outcome,
}

impl Write {
    fn acked(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// The latest time it may take effect.
    fn effect_by(&self) -> Time {
        if self.acked() { self.resp } else { NEVER }
    }

    fn covers(&self, block: u64) -> bool {
        self.first <= block && block < self.first + self.blocks
    }
}

/// One successful read of the history.
#[derive(Clone, Debug)]
pub struct Read {
    pub client: usize,
    pub first: u64,
    pub inv: Time,
    pub resp: Time,
    /// What each block held, from `first` on.
    pub seen: Vec<Seen>,
}

/// Everything that happened.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
}

/// The rule a violation breaks (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Rule 1: bytes no write produced.
    MadeUp,
    /// Rule 2: a value read before its write began.
    Future,
    /// Rule 3: no order of the writes explains a block's reads.
    NotLinearizable,
    /// Rule 4: a read that is not one instant.
    Torn,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::MadeUp => "bytes no write produced (SPEC 8.2)",
            Rule::Future => "a value read before its write was invoked (SPEC 8.2)",
            Rule::NotLinearizable => "a block not linearizable (SPEC 8.2)",
            Rule::Torn => "a read that is not atomic (SPEC 8.1)",
        }
    }
}

/// An operation of the history, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpRef {
    /// The initial zeros.
    Initial,
    Write(usize),
    Read(usize),
}

/// One broken rule, with the operations that show it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: Rule,
    /// What is wrong, in words.
    pub what: String,
    pub ops: Vec<OpRef>,
}

/// The checker's answer.
#[derive(Debug, Default)]
pub struct Report {
    /// The first violations of each rule (at most [`KEEP`] each).
    pub violations: Vec<Violation>,
    /// How many violations of each rule there were in all.
    pub counts: HashMap<Rule, usize>,
    /// Block-level observations checked (a read of n blocks counts n).
    pub block_reads: usize,
    /// Multi-block reads checked for atomicity.
    pub multi_block_reads: usize,
}

/// Violations kept per rule for the message.
pub const KEEP: usize = 4;

impl Report {
    /// Whether every rule held.
    pub fn ok(&self) -> bool {
        self.counts.values().all(|&n| n == 0)
    }

    fn add(&mut self, v: Violation) {
        let n = self.counts.entry(v.rule).or_default();
        *n += 1;
        if *n <= KEEP {
            self.violations.push(v);
        }
    }

    /// Counts by rule, e.g. `torn: 12, stale: 1`.
    pub fn summary(&self) -> String {
        let mut rules: Vec<_> = self.counts.iter().filter(|(_, n)| **n > 0).collect();
        rules.sort();
        rules
            .iter()
            .map(|(r, n)| format!("{n} x {}", r.name()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The summary, then each kept violation with its history excerpt.
    pub fn explain(&self, h: &History) -> String {
        let mut s = format!("{}\n", self.summary());
        for (i, v) in self.violations.iter().enumerate() {
            let _ = writeln!(s, "\n#{} {}: {}", i + 1, v.rule.name(), v.what);
            let mut seen = Vec::new();
            for op in &v.ops {
                if !seen.contains(op) {
                    seen.push(*op);
                    let _ = writeln!(s, "    {}", describe(h, *op));
                }
            }
        }
        s
    }
}

fn ms(t: Time) -> String {
    match t {
        BEGINNING => "-inf".into(),
        NEVER => "never".into(),
        t => format!("{:.3}ms", t as f64 / 1e6),
    }
}

/// One operation on one line; a read's blocks as runs of equal values.
pub fn describe(h: &History, op: OpRef) -> String {
    match op {
        OpRef::Initial => "the initial zeros".into(),
        OpRef::Write(i) => {
            let w = &h.writes[i];
            let outcome = match &w.outcome {
                Outcome::Ok => "ok".to_string(),
                Outcome::Failed(why) => format!("FAILED ({why}): may or may not have happened"),
            };
            format!(
                "w{} client {} write blocks {}..{} [{} .. {}] {outcome}",
                w.id,
                w.client,
                w.first,
                w.first + w.blocks,
                ms(w.inv),
                ms(w.resp)
            )
        }
        OpRef::Read(i) => {
            let r = &h.reads[i];
            format!(
                "read client {} blocks {}..{} [{} .. {}] returned {}",
                r.client,
                r.first,
                r.first + r.seen.len() as u64,
                ms(r.inv),
                ms(r.resp),
                runs(r)
            )
        }
    }
}

fn label(s: &Seen) -> String {
    match s {
        Seen::Zero => "zero".to_string(),
        Seen::Write { id, .. } => format!("w{id}"),
        Seen::Garbage => "GARBAGE".to_string(),
    }
}

/// The blocks of a read as runs: `0..3: zero, 3..9: w12, ...` (cut after
/// a dozen runs).
fn runs(r: &Read) -> String {
    runs_within(r, r.first, r.first + r.seen.len() as u64)
}

/// [`runs`] of the blocks `from..to` of a read only.
fn runs_within(r: &Read, from: u64, to: u64) -> String {
    let lo = from.saturating_sub(r.first).min(r.seen.len() as u64) as usize;
    let hi = to.saturating_sub(r.first).min(r.seen.len() as u64) as usize;
    let mut out: Vec<String> = Vec::new();
    let mut start = lo;
    for i in lo + 1..=hi {
        if i == hi || label(&r.seen[i]) != label(&r.seen[start]) {
            let (a, b) = (r.first + start as u64, r.first + i as u64);
            out.push(format!("{a}..{b}: {}", label(&r.seen[start])));
            start = i;
        }
    }
    if out.len() > 12 {
        let n = out.len();
        out.truncate(12);
        out.push(format!("... ({n} runs)"));
    }
    out.join(", ")
}

/// One cluster: a value of one block, its write and the reads that saw it.
struct Cluster {
    value: Option<u64>,
    /// The earliest response, and whose.
    min_res: (Time, OpRef),
    /// The latest invocation, and whose.
    max_inv: (Time, OpRef),
}

impl Cluster {
    fn new(value: Option<u64>, inv: Time, resp: Time, op: OpRef) -> Cluster {
        Cluster {
            value,
            min_res: (resp, op),
            max_inv: (inv, op),
        }
    }

    fn add(&mut self, inv: Time, resp: Time, op: OpRef) {
        if resp < self.min_res.0 {
            self.min_res = (resp, op);
        }
        if inv > self.max_inv.0 {
            self.max_inv = (inv, op);
        }
    }

    fn forward(&self) -> bool {
        self.min_res.0 < self.max_inv.0
    }

    fn ops(&self) -> Vec<OpRef> {
        vec![self.min_res.1, self.max_inv.1]
    }

    fn name(&self) -> String {
        match self.value {
            None => "zero".into(),
            Some(id) => format!("w{id}"),
        }
    }
}

/// Checks every rule over the whole history.
pub fn check(h: &History) -> Report {
    let mut report = Report::default();
    let by_id: HashMap<u64, usize> = h
        .writes
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id, i))
        .collect();
    check_blocks(h, &by_id, &mut report);
    check_atomic_reads(h, &by_id, &mut report);
    report
}

/// Rules 1 to 3.
fn check_blocks(h: &History, by_id: &HashMap<u64, usize>, report: &mut Report) {
    // (block, value) -> cluster; value None is zero.
    let mut clusters: HashMap<(u64, Option<u64>), Cluster> = HashMap::new();
    for (i, w) in h.writes.iter().enumerate() {
        for block in w.first..w.first + w.blocks {
            clusters
                .entry((block, Some(w.id)))
                .or_insert_with(|| Cluster::new(Some(w.id), w.inv, w.effect_by(), OpRef::Write(i)));
        }
    }
    for (ri, r) in h.reads.iter().enumerate() {
        for (k, seen) in r.seen.iter().enumerate() {
            let block = r.first + k as u64;
            report.block_reads += 1;
            let value = match *seen {
                Seen::Zero => None,
                Seen::Garbage => {
                    report.add(Violation {
                        rule: Rule::MadeUp,
                        what: format!("block {block} holds bytes that decode to no write"),
                        ops: vec![OpRef::Read(ri)],
                    });
                    continue;
                }
                Seen::Write { id, block: named } => {
                    let Some(&wi) = by_id.get(&id) else {
                        report.add(Violation {
                            rule: Rule::MadeUp,
                            what: format!("block {block} holds w{id}, a write never issued"),
                            ops: vec![OpRef::Read(ri)],
                        });
                        continue;
                    };
                    let w = &h.writes[wi];
                    if named != block || !w.covers(block) {
                        report.add(Violation {
                            rule: Rule::MadeUp,
                            what: format!(
                                "block {block} holds the pattern of block {named} of w{id}, \
                                 which does not belong there"
                            ),
                            ops: vec![OpRef::Read(ri), OpRef::Write(wi)],
                        });
                        continue;
                    }
                    if r.resp < w.inv {
                        report.add(Violation {
                            rule: Rule::Future,
                            what: format!(
                                "block {block}: the read completed at {} but w{id} was only \
                                 invoked at {}",
                                ms(r.resp),
                                ms(w.inv)
                            ),
                            ops: vec![OpRef::Read(ri), OpRef::Write(wi)],
                        });
                    }
                    Some(id)
                }
            };
            clusters
                .entry((block, value))
                .or_insert_with(|| Cluster::new(None, BEGINNING, BEGINNING, OpRef::Initial))
                .add(r.inv, r.resp, OpRef::Read(ri));
        }
    }
    let mut per_block: HashMap<u64, Vec<Cluster>> = HashMap::new();
    for ((block, _), c) in clusters {
        per_block.entry(block).or_default().push(c);
    }
    let mut blocks: Vec<_> = per_block.into_iter().collect();
    blocks.sort_by_key(|(b, _)| *b);
    for (block, cs) in blocks {
        check_register(block, &cs, report);
    }
}

/// Rule 3 for one block: forward zones disjoint, no backward zone inside a
/// forward zone.
fn check_register(block: u64, clusters: &[Cluster], report: &mut Report) {
    let mut forward: Vec<&Cluster> = clusters.iter().filter(|c| c.forward()).collect();
    forward.sort_by_key(|c| c.min_res.0);
    // Two forward zones overlap: each value was current throughout its zone.
    let mut widest: Option<&Cluster> = None;
    for c in &forward {
        if let Some(w) = widest {
            if c.min_res.0 < w.max_inv.0 {
                report.add(Violation {
                    rule: Rule::NotLinearizable,
                    what: format!(
                        "block {block}: {} was the value from {} (a completion) to {} (a later \
                         invocation that still saw it), and {} from {} to {}: two values \
                         cannot both be current in the overlap",
                        w.name(),
                        ms(w.min_res.0),
                        ms(w.max_inv.0),
                        c.name(),
                        ms(c.min_res.0),
                        ms(c.max_inv.0)
                    ),
                    ops: [w.ops(), c.ops()].concat(),
                });
            }
        }
        if widest.is_none_or(|w| c.max_inv.0 > w.max_inv.0) {
            widest = Some(c);
        }
    }
    // A backward zone inside a forward zone: the cluster had to happen
    // entirely while another value was current.
    let starts: Vec<Time> = forward.iter().map(|c| c.min_res.0).collect();
    let mut reach: Vec<&Cluster> = Vec::with_capacity(forward.len());
    for c in &forward {
        let best = match reach.last() {
            Some(w) if w.max_inv.0 >= c.max_inv.0 => *w,
            _ => *c,
        };
        reach.push(best);
    }
    for b in clusters.iter().filter(|c| !c.forward()) {
        let (x, y) = (b.max_inv.0, b.min_res.0);
        let n = starts.partition_point(|&s| s < x);
        if n == 0 {
            continue;
        }
        let f = reach[n - 1];
        if y < f.max_inv.0 {
            report.add(Violation {
                rule: Rule::NotLinearizable,
                what: format!(
                    "block {block}: {} took effect within [{}, {}], but all that time {} was \
                     the value (it completed by {} and was still read by an operation \
                     invoked at {}): a read returned a value older than a write that \
                     completed before the read began",
                    b.name(),
                    ms(x),
                    ms(y),
                    f.name(),
                    ms(f.min_res.0),
                    ms(f.max_inv.0)
                ),
                ops: [f.ops(), b.ops()].concat(),
            });
        }
    }
}

/// Rule 4, for every read of two blocks or more.
fn check_atomic_reads(h: &History, by_id: &HashMap<u64, usize>, report: &mut Report) {
    let mut order: Vec<usize> = (0..h.writes.len())
        .filter(|&i| h.writes[i].acked())
        .collect();
    order.sort_by_key(|&i| h.writes[i].inv);
    let longest = order
        .iter()
        .map(|&i| h.writes[i].resp - h.writes[i].inv)
        .max()
        .unwrap_or(0);
    let invs: Vec<Time> = order.iter().map(|&i| h.writes[i].inv).collect();
    for (ri, r) in h.reads.iter().enumerate() {
        let n = r.seen.len() as u64;
        if n < 2 {
            continue;
        }
        report.multi_block_reads += 1;
        let end = r.first + n;
        let mut shown: HashSet<u64> = HashSet::new();
        // The shown write invoked last, and on which block.
        let mut latest: Option<(Time, usize, u64)> = None;
        for (k, s) in r.seen.iter().enumerate() {
            if let Seen::Write { id, .. } = s {
                if let Some(&wi) = by_id.get(id) {
                    shown.insert(*id);
                    let inv = h.writes[wi].inv;
                    if latest.is_none_or(|(t, _, _)| inv > t) {
                        latest = Some((inv, wi, r.first + k as u64));
                    }
                }
            }
        }
        // Acknowledged writes that may be concurrent with the read; a
        // write wholly before it is rule 3's business.
        let lo = invs.partition_point(|&t| t < r.inv.saturating_sub(longest));
        let hi = invs.partition_point(|&t| t <= r.resp);
        for &wi in &order[lo..hi] {
            let w = &h.writes[wi];
            if w.resp < r.inv || w.first >= end || w.first + w.blocks <= r.first {
                continue;
            }
            // A block of the read that shows a value definitely older than w.
            let older = (w.first.max(r.first)..(w.first + w.blocks).min(end)).find(|&b| {
                match r.seen[(b - r.first) as usize] {
                    Seen::Zero => true,
                    Seen::Write { id, .. } => {
                        id != w.id
                            && by_id
                                .get(&id)
                                .is_some_and(|&x| h.writes[x].effect_by() < w.inv)
                    }
                    Seen::Garbage => false,
                }
            });
            let Some(older) = older else { continue };
            let older_value = label(&r.seen[(older - r.first) as usize]);
            let within = runs_within(r, w.first, w.first + w.blocks);
            if shown.contains(&w.id) {
                let on = (w.first.max(r.first)..(w.first + w.blocks).min(end))
                    .find(|&b| {
                        matches!(r.seen[(b - r.first) as usize], Seen::Write { id, .. } if id == w.id)
                    })
                    .unwrap_or(older);
                report.add(Violation {
                    rule: Rule::Torn,
                    what: format!(
                        "the read shows w{} on block {on} but on block {older} {older_value}, \
                         older than w{}: it saw the write in part (over w{}'s blocks it \
                         returned {within})",
                        w.id, w.id, w.id
                    ),
                    ops: vec![OpRef::Read(ri), OpRef::Write(wi)],
                });
            } else if let Some((t, ai, ab)) = latest.filter(|(t, _, _)| *t > w.resp) {
                report.add(Violation {
                    rule: Rule::Torn,
                    what: format!(
                        "on block {older} the read shows {older_value}, older than w{}, so it \
                         happened before w{}; yet on block {ab} it shows w{}, invoked at {} \
                         after w{} completed (over w{}'s blocks it returned {within})",
                        w.id,
                        w.id,
                        h.writes[ai].id,
                        ms(t),
                        w.id,
                        w.id
                    ),
                    ops: vec![OpRef::Read(ri), OpRef::Write(wi), OpRef::Write(ai)],
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
