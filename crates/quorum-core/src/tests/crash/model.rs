//! What the volume may hold: every block's writes since the last crash, and
//! the values a read may return now or after a crash.
//!
//! Every 4 KiB block a write puts down encodes the write's id and the
//! block's index, and the rest of it is a stream derived from both, so a
//! read tells exactly which write produced each block (or that none did).

use std::fmt;

use super::sim::BLOCK;

const MAGIC: &[u8; 4] = b"QCRS";

/// What one block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    /// Zeros: never written, or written with zeroes.
    Zero,
    /// Block `block` of write `id`.
    Data { id: u64, block: usize },
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Zero => write!(f, "zero"),
            Value::Data { id, block } => write!(f, "w{id}@{block}"),
        }
    }
}

/// The block `block` of write `id`.
pub(super) fn encode(id: u64, block: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(block as u32).to_le_bytes());
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (block as u64) ^ 0x5bd1_e995;
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Which write produced `bytes` (one block), or `None` when no write did.
pub(super) fn decode(bytes: &[u8]) -> Option<Value> {
    if bytes.iter().all(|&b| b == 0) {
        return Some(Value::Zero);
    }
    if bytes.len() != BLOCK || &bytes[..4] != MAGIC {
        return None;
    }
    let id = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    let block = u32::from_le_bytes(bytes[12..16].try_into().ok()?) as usize;
    (encode(id, block) == bytes).then_some(Value::Data { id, block })
}

/// One write of a block, as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Write {
    value: Value,
    /// Acknowledged; a failed write, or one in flight at the crash, is not.
    acked: bool,
}

/// One block's story since the volume was last opened.
#[derive(Debug, Clone)]
pub(super) struct Block {
    /// What it may hold as the volume opens (what the checker read after
    /// the last crash; all the candidates when that read failed).
    base: Vec<Value>,
    writes: Vec<Write>,
    /// `writes.len()` when the last acknowledged flush began.
    flushed: usize,
}

impl Block {
    fn new() -> Block {
        Block {
            base: vec![Value::Zero],
            writes: Vec::new(),
            flushed: 0,
        }
    }

    /// The values the block may hold if only `writes[..upto]` are known to
    /// have completed: the last acknowledged write among them and every
    /// write after it (the later acknowledged ones may be lost, the failed
    /// ones may have landed), or the base and every write when none was
    /// acknowledged.
    fn candidates(&self, upto: usize) -> Vec<Value> {
        let (mut out, from) = match self.writes[..upto].iter().rposition(|w| w.acked) {
            Some(last) => (Vec::new(), last),
            None => (self.base.clone(), 0),
        };
        for w in &self.writes[from..] {
            if !out.contains(&w.value) {
                out.push(w.value);
            }
        }
        out
    }

    /// What a read may return now: the last acknowledged write, or a
    /// failed write after it.
    pub(super) fn now(&self) -> Vec<Value> {
        self.candidates(self.writes.len())
    }

    /// What a read may return after a crash: the last write acknowledged
    /// before the last acknowledged flush began, or any write after it.
    pub(super) fn after_crash(&self) -> Vec<Value> {
        self.candidates(self.flushed)
    }

    /// The one value a read must return after a crash, when there is one.
    pub(super) fn exact_after_crash(&self) -> Option<Value> {
        match self.after_crash().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    fn history(&self) -> String {
        let mut out = format!(
            "base {}",
            self.base
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("|")
        );
        for (i, w) in self.writes.iter().enumerate() {
            if i == self.flushed {
                out.push_str(" [flush]");
            }
            out.push_str(&format!(
                " {}{}",
                w.value,
                if w.acked { "" } else { "(failed)" }
            ));
        }
        if self.flushed == self.writes.len() && self.flushed > 0 {
            out.push_str(" [flush]");
        }
        out
    }
}

/// Every block's story.
#[derive(Debug, Clone)]
pub(super) struct Model {
    blocks: Vec<Block>,
}

impl Model {
    pub(super) fn new(blocks: usize) -> Model {
        Model {
            blocks: (0..blocks).map(|_| Block::new()).collect(),
        }
    }

    pub(super) fn block(&self, b: usize) -> &Block {
        &self.blocks[b]
    }

    /// Records a write of `values` over blocks `first..`.
    pub(super) fn write(&mut self, first: usize, values: &[Value], acked: bool) {
        for (i, &value) in values.iter().enumerate() {
            self.blocks[first + i].writes.push(Write { value, acked });
        }
    }

    /// Records an acknowledged flush that began when the writes recorded
    /// so far had completed.
    pub(super) fn flushed(&mut self, at: &[usize]) {
        for (b, &n) in self.blocks.iter_mut().zip(at) {
            b.flushed = n;
        }
    }

    /// How many writes each block has recorded: where a flush begins.
    pub(super) fn positions(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.writes.len()).collect()
    }

    /// Starts a new life after a crash: block `b` holds `seen[b]`.
    pub(super) fn reopened(&mut self, seen: Vec<Vec<Value>>) {
        for (b, base) in self.blocks.iter_mut().zip(seen) {
            *b = Block {
                base,
                writes: Vec::new(),
                flushed: 0,
            };
        }
    }

    /// Checks one block a read returned against `allowed`, saying what
    /// broke when it is not among them.
    pub(super) fn check(
        &self,
        what: &str,
        b: usize,
        bytes: &[u8],
        allowed: &[Value],
    ) -> Result<Value, String> {
        let Some(value) = decode(bytes) else {
            return Err(format!(
                "{what}: block {b} holds bytes no write produced (starts {:02x?}); history: {}",
                &bytes[..16],
                self.blocks[b].history()
            ));
        };
        if let Value::Data { block, .. } = value {
            if block != b {
                return Err(format!(
                    "{what}: block {b} holds {value}, written for block {block}; history: {}",
                    self.blocks[b].history()
                ));
            }
        }
        if !allowed.contains(&value) {
            return Err(format!(
                "{what}: block {b} reads {value}, allowed {}; history: {}",
                allowed
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("|"),
                self.blocks[b].history()
            ));
        }
        Ok(value)
    }

    pub(super) fn history(&self, b: usize) -> String {
        self.blocks[b].history()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_model_decodes_what_it_encodes_and_nothing_else() {
        let block = encode(42, 3);
        assert_eq!(decode(&block), Some(Value::Data { id: 42, block: 3 }));
        assert_eq!(decode(&[0; BLOCK]), Some(Value::Zero));
        let mut torn = block.clone();
        torn[2000] ^= 1;
        assert_eq!(decode(&torn), None);
    }

    #[test]
    fn crash_model_candidates_follow_the_last_flush() {
        let mut m = Model::new(1);
        let w = |id| Value::Data { id, block: 0 };
        m.write(0, &[w(1)], true);
        m.write(0, &[w(2)], false);
        assert_eq!(m.block(0).now(), vec![w(1), w(2)]);
        assert_eq!(m.block(0).after_crash(), vec![Value::Zero, w(1), w(2)]);
        let at = m.positions();
        m.flushed(&at);
        assert_eq!(m.block(0).after_crash(), vec![w(1), w(2)]);
        m.write(0, &[w(3)], true);
        assert_eq!(m.block(0).now(), vec![w(3)]);
        assert_eq!(m.block(0).after_crash(), vec![w(1), w(2), w(3)]);
        let at = m.positions();
        m.flushed(&at);
        assert_eq!(m.block(0).exact_after_crash(), Some(w(3)));
    }
}
