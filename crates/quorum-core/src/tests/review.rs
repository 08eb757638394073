//! A hostile review of the SPEC 8 change (issue 11): each test here shows
//! one finding, each a test that failed before its fix.

use std::io;
use std::path::PathBuf;

use super::promises::{assert_all, wait_for, with_timeout};
use super::*;
use crate::stale::JournalStore;

/// A journal store with a volatile cache: `append` is kept in `pending`
/// until `sync`; `crash` loses what was not synced (a power loss). Appends
/// fail on demand.
#[derive(Clone, Default)]
struct PowerStore {
    state: Arc<Mutex<PowerState>>,
}

#[derive(Default)]
struct PowerState {
    durable: Vec<u8>,
    pending: Vec<u8>,
    fail_appends: bool,
}

impl PowerStore {
    fn crash(&self) {
        self.state.lock().expect("store").pending.clear();
    }
    fn fail_appends(&self, on: bool) {
        self.state.lock().expect("store").fail_appends = on;
    }
    fn boxed(&self) -> Option<(Box<dyn JournalStore>, PathBuf)> {
        Some((Box::new(self.clone()), PathBuf::from("review-journal")))
    }
}

impl JournalStore for PowerStore {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let st = self.state.lock().expect("store");
        let mut all = st.durable.clone();
        all.extend_from_slice(&st.pending);
        Ok(all)
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().expect("store");
        if st.fail_appends {
            return Err(io::Error::from_raw_os_error(28));
        }
        st.pending.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut st = self.state.lock().expect("store");
        let pending = std::mem::take(&mut st.pending);
        st.durable.extend_from_slice(&pending);
        Ok(())
    }
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().expect("store");
        st.durable = bytes.to_vec();
        st.pending.clear();
        Ok(())
    }
}

/// A child over a [`Mem`] whose write of a block starting with byte
/// `hold` blocks until released (one request stuck in the network while
/// later ones go through, as an NFS or S3 call can), that stores in units
/// of `unit` bytes, and whose flush runs a hook first and can fail with an
/// error of either kind.
pub(super) struct Held {
    pub(super) mem: Arc<Mem>,
    unit: u64,
    hold: Mutex<Option<u8>>,
    released: Condvar,
    pub(super) entered: AtomicBool,
    on_flush: Mutex<Option<Hook>>,
    /// 0: flushes work; 1: unreachable (not repairable); 2: EIO.
    pub(super) flush_error: AtomicU64,
}

/// Runs when a [`Held`] child is flushed, before it answers.
pub(super) type Hook = Box<dyn Fn() + Send + Sync>;

impl Held {
    pub(super) fn new(mem: Arc<Mem>, unit: u64) -> Arc<Held> {
        Arc::new(Held {
            mem,
            unit,
            hold: Mutex::new(None),
            released: Condvar::new(),
            entered: AtomicBool::new(false),
            on_flush: Mutex::new(None),
            flush_error: AtomicU64::new(0),
        })
    }
    pub(super) fn hold(&self, value: Option<u8>) {
        *self.hold.lock().expect("hold") = value;
        self.released.notify_all();
    }
    pub(super) fn on_flush(&self, hook: Option<Hook>) {
        *self.on_flush.lock().expect("hook") = hook;
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "held({})", self.mem.name)
    }
}

impl Backend for Held {
    fn kind(&self) -> &'static str {
        "held"
    }
    fn size(&self) -> Result<u64, BackendError> {
        self.mem.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        let mut held = self.hold.lock().expect("hold");
        while held.is_some() && held.as_ref() == buf.first() {
            self.entered.store(true, Ordering::SeqCst);
            held = self.released.wait(held).expect("hold");
        }
        drop(held);
        self.mem.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.mem.write_zeroes(offset, length)
    }
    fn flush(&self) -> Result<(), BackendError> {
        if let Some(hook) = self.on_flush.lock().expect("hook").as_ref() {
            hook();
        }
        match self.flush_error.load(Ordering::SeqCst) {
            1 => Err(BackendError::Unavailable("unreachable".into())),
            2 => Err(BackendError::from_errno(5)),
            _ => self.mem.flush(),
        }
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.mem.block_status(offset, length, limit)
    }
    fn write_unit(&self) -> u64 {
        self.unit
    }
}

fn spec(name: &str, backend: Arc<dyn Backend>) -> ChildSpec {
    ChildSpec::new(name, backend)
}

/// Finding 1. The fence that keeps a late write from landing after a newer
/// one (`Workers::abandoned`) lives in the engine volume's own worker
/// pool. A membership change (`membership::swap`) opens a new `Volume`
/// over the same backends, whose workers start with nothing abandoned: the
/// new volume writes to a child whose abandoned write is still in flight,
/// clears its stale mark, and the late, older write then lands on a child
/// that every later read trusts (SPEC 8.2, and the backend contract that
/// overlapping calls are never issued concurrently).
#[test]
fn a_late_write_abandoned_by_the_old_volume_lands_after_a_newer_write_of_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("vm.jsonl");
    let b = Held::new(Mem::new("b", 16 * B), 1);
    let a = Mem::new("a", 16 * B);
    let children = || vec![spec("b", b.clone()), spec("a", a.clone())];
    let opts = with_timeout(1, Duration::from_millis(200));
    let old = Volume::open_journaled(opts.clone(), children(), Arc::new(NullSink), Some(&journal))
        .expect("open");
    // W1 hangs on b past child_timeout: acknowledged on a, b marked stale.
    b.hold(Some(1));
    old.write(0, Bytes::from(vec![1u8; B])).expect("W1");
    assert!(b.entered.load(Ordering::SeqCst), "W1 is stuck in b");
    assert_eq!(old.stale_bytes(), vec![B as u64, 0]);
    // A membership change reopens the volume over the same backends, as
    // `membership::swap` does: from the old volume's child specs.
    let new = Volume::open_journaled(opts, old.child_specs(), Arc::new(NullSink), Some(&journal))
        .expect("reopen");
    // (The old volume was not closed cleanly, so the new one reconciled
    // W1's write-intent region, and b, which it could not reach, is stale
    // over all of it.)
    assert!(
        new.stale_bytes()[0] >= B as u64,
        "b is stale after the swap"
    );
    // W2 goes to b at once: nothing tells the new volume that b still has
    // W1 in flight. b is refreshed, flushed, and its mark cleared.
    new.write(0, Bytes::from(vec![2u8; B])).expect("W2");
    // The late W1 lands now, over W2.
    b.hold(None);
    wait_for("the late W1", || b.mem.snapshot()[0] == 1);
    let read = new.read(0, B).expect("read");
    assert!(
        new.stale_bytes()[0] > 0 || read[0] == 2,
        "W2 completed, then a read returned W1's {} (b holds the late W1 and is trusted: stale {:?})",
        read[0],
        new.stale_bytes()
    );
}

/// Finding 2. A stale mark that cannot be journaled "holds in memory"
/// (`edit_stale`) and fails the write, but nothing ever journals it later:
/// a flush that succeeds syncs the journal without it, and the next open
/// of the volume (a membership change, a restart, a power loss) replays a
/// journal where the child that missed the write is fresh. Reads that
/// returned the write before return the older data after (SPEC 8.2; and
/// 8.3: the record of who missed it is not durable after an acknowledged
/// flush).
#[test]
fn a_mark_that_failed_to_journal_is_lost_at_reopen_after_a_good_flush() {
    let store = PowerStore::default();
    let (a, b) = (Mem::new("a", 16 * B), Mem::new("b", 16 * B));
    let mems = vec![a.clone(), b.clone()];
    let volume =
        Volume::open_with_store(options(1), specs(&mems), Arc::new(NullSink), store.boxed())
            .expect("open");
    // A first write records the region's write intent.
    volume
        .write(0, Bytes::from(vec![6u8; B]))
        .expect("a write while the journal works");
    a.fail_writes.store(true, Ordering::SeqCst);
    store.fail_appends(true);
    volume
        .write(0, Bytes::from(vec![7u8; B]))
        .expect_err("the mark of a cannot be journaled");
    a.fail_writes.store(false, Ordering::SeqCst);
    store.fail_appends(false);
    assert_all(&volume.read(0, B).expect("read"), 7);
    volume
        .flush()
        .expect("flush (the journal can be written again)");
    store.crash();
    // The volume is opened again (a membership change does this with no
    // crash at all).
    let again =
        Volume::open_with_store(options(1), specs(&mems), Arc::new(NullSink), store.boxed())
            .expect("reopen");
    let read = again.read(0, B).expect("read");
    assert!(
        read[0] == 7,
        "a read returned 7, a flush was acknowledged, and after the reopen a read returns {} (a is trusted: stale {:?})",
        read[0],
        again.stale_bytes()
    );
}

/// Finding 3. Adding a child marks the whole volume stale on it with
/// `mark_stale`, which appends to the journal without syncing it; the
/// server then saves the membership (fsynced) with the child in `syncing`,
/// and nothing at start marks a syncing child stale again. After a power
/// loss the new child is trusted everywhere: it votes, and it makes the
/// `last_copy` check (`sole_copy`) pass where another child holds the only
/// fresh copy of an acknowledged and flushed write (SPEC 8.3, 8.5).
#[test]
fn a_new_childs_stale_mark_is_lost_by_a_power_loss_and_last_copy_is_defeated() {
    let store = PowerStore::default();
    let (a, b, c) = (
        Mem::new("a", 16 * B),
        Mem::new("b", 16 * B),
        Mem::new("c", 16 * B),
    );
    let two = vec![a.clone(), b.clone()];
    let volume =
        Volume::open_with_store(options(1), specs(&two), Arc::new(NullSink), store.boxed())
            .expect("open");
    // W misses a; acknowledged on b and flushed: b holds the only copy.
    a.fail_writes.store(true, Ordering::SeqCst);
    volume.write(0, Bytes::from(vec![5u8; B])).expect("W");
    a.fail_writes.store(false, Ordering::SeqCst);
    volume.flush().expect("flush");
    assert_eq!(volume.sole_copy("b"), Some(0..B as u64));
    // add_child: the new volume over a, b, c; c marked stale everywhere.
    let three = vec![a.clone(), b.clone(), c.clone()];
    let added =
        Volume::open_with_store(options(1), specs(&three), Arc::new(NullSink), store.boxed())
            .expect("add");
    added
        .mark_stale("c", std::slice::from_ref(&(0..16 * B as u64)))
        .expect("mark the new child");
    assert_eq!(
        added.sole_copy("b"),
        Some(0..B as u64),
        "c is stale: b is the last copy"
    );
    // (membership saved, fsynced) ... power loss.
    store.crash();
    let restarted =
        Volume::open_with_store(options(1), specs(&three), Arc::new(NullSink), store.boxed())
            .expect("restart");
    assert_eq!(
        restarted.stale_bytes()[2],
        16 * B as u64,
        "the new child is trusted after a power loss"
    );
    assert_eq!(
        restarted.sole_copy("b"),
        Some(0..B as u64),
        "removing b would lose the acknowledged, flushed W"
    );
}

/// Finding 4. The resync widens a child's stale range to its write units
/// and copies the whole unit in one vote. When another block of that unit,
/// where the child is *not* stale, has no majority (left so by a write that
/// failed its quorum over a stale child), the fallback copies only the
/// blocks before it and answers `Copied` with them, then `next` past the
/// bad block; the next step picks the same stale range, widens it to the
/// same unit, and fails the same way. The child's stale block, which has a
/// majority, is never copied: the resync spins forever, rewriting the
/// fresh prefix of the unit (an S3 PUT each time) and reporting progress.
#[test]
fn the_resync_of_a_unit_with_a_no_majority_block_outside_the_stale_range_never_ends() {
    let a = Mem::new("a", 32 * B);
    let b = Mem::new("b", 32 * B);
    let c = Held::new(Mem::new("c", 32 * B), 16 * B as u64);
    let volume = Volume::open(
        options(2),
        vec![
            spec("a", a.clone()),
            spec("b", b.clone()),
            spec("c", c.clone()),
        ],
        Arc::new(NullSink),
    )
    .expect("open");
    volume
        .write(0, Bytes::from(vec![1u8; 32 * B]))
        .expect("write everywhere");
    // Block 2: b missed a write (stale), and a and c differ there (a later
    // write reached a only and failed its quorum).
    volume
        .mark_stale("b", std::slice::from_ref(&(2 * B as u64..3 * B as u64)))
        .expect("b");
    a.poke(2 * B, &[9u8; B]);
    // Block 8, in c's first unit: c missed a write; a and b agree there.
    volume
        .mark_stale("c", std::slice::from_ref(&(8 * B as u64..9 * B as u64)))
        .expect("c");
    let mut from = 0;
    let mut rewritten = 0;
    for _ in 0..50 {
        match volume.resync_step(1 << 20, from) {
            ResyncStep::Copied { range, next, .. } => {
                rewritten += range.end - range.start;
                from = next;
            }
            ResyncStep::Failed { range, .. } => from = range.end,
            ResyncStep::Idle => break,
        }
        if volume.stale_bytes()[2] == 0 {
            break;
        }
    }
    assert_eq!(
        volume.stale_bytes()[2],
        0,
        "c's stale block 8 (a and b agree on it) was never copied; {rewritten} bytes of c where it was fresh were rewritten meanwhile"
    );
}
