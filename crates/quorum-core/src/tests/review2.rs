//! A second hostile review: the write-intent log (intent.rs, 73a3e99) and
//! the flush-failure bookkeeping (`unflushed`, a07bbc2). Each test shows one
//! finding; each failed before its fix but the one still ignored.

use std::io;
use std::path::PathBuf;

use super::promises::{assert_all, wait_for, with_timeout};
use super::review::Held;
use super::*;
use crate::intent::GRAIN;
use crate::stale::{JournalStore, RangeSet};

/// A journal store with a volatile cache (`crash` loses what was not
/// synced), appends and syncs that fail on demand, and syncs that can be
/// held (a slow fsync).
#[derive(Clone, Default)]
struct Store {
    state: Arc<(Mutex<StoreState>, Condvar)>,
}

#[derive(Default)]
struct StoreState {
    durable: Vec<u8>,
    pending: Vec<u8>,
    fail_appends: bool,
    fail_syncs: bool,
    hold_syncs: bool,
    in_sync: bool,
}

impl Store {
    fn with<T>(&self, f: impl FnOnce(&mut StoreState) -> T) -> T {
        let t = f(&mut self.state.0.lock().expect("store"));
        self.state.1.notify_all();
        t
    }
    fn crash(&self) {
        self.with(|s| s.pending.clear());
    }
    fn boxed(&self) -> Option<(Box<dyn JournalStore>, PathBuf)> {
        Some((Box::new(self.clone()), PathBuf::from("review2-journal")))
    }
    /// The write-intent regions the durable journal says are dirty.
    fn durable_dirty(&self) -> RangeSet {
        replay_dirty(&self.with(|s| s.durable.clone()))
    }
}

fn replay_dirty(bytes: &[u8]) -> RangeSet {
    let mut dirty = RangeSet::default();
    for line in String::from_utf8_lossy(bytes).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(start), Some(end)) = (v["start"].as_u64(), v["end"].as_u64()) else {
            continue;
        };
        match v["op"].as_str() {
            Some("d") => dirty.insert(start..end),
            Some("c") => dirty.remove(start..end),
            _ => {}
        }
    }
    dirty
}

impl JournalStore for Store {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.with(|s| {
            let mut all = s.durable.clone();
            all.extend_from_slice(&s.pending);
            all
        }))
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with(|s| {
            if s.fail_appends {
                return Err(io::Error::from_raw_os_error(28));
            }
            s.pending.extend_from_slice(bytes);
            Ok(())
        })
    }
    fn sync(&mut self) -> io::Result<()> {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().expect("store");
        s.in_sync = true;
        cv.notify_all();
        while s.hold_syncs {
            s = cv.wait(s).expect("store");
        }
        s.in_sync = false;
        if s.fail_syncs {
            return Err(io::Error::from_raw_os_error(5));
        }
        let pending = std::mem::take(&mut s.pending);
        s.durable.extend_from_slice(&pending);
        Ok(())
    }
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with(|s| {
            s.durable = bytes.to_vec();
            s.pending.clear();
        });
        Ok(())
    }
}

/// A [`Held`] child over a new [`Mem`] of `size` bytes.
fn hooked(name: &str, size: usize) -> Arc<Held> {
    Held::new(Mem::new(name, size), 1)
}

fn hooked_specs(children: &[Arc<Held>]) -> Vec<ChildSpec> {
    children
        .iter()
        .map(|c| ChildSpec::new(c.mem.name.clone(), c.clone() as Arc<dyn Backend>))
        .collect()
}

fn open_store(opts: VolumeOptions, specs: Vec<ChildSpec>, store: &Store) -> Volume {
    Volume::open_with_store(opts, specs, Arc::new(NullSink), store.boxed()).expect("open")
}

/// Reads `offset..offset+B` once with every child and once with each
/// child alone reachable (the others failing reads); all must agree.
fn reads_agree(volume: &Volume, mems: &[Arc<Mem>], offset: u64) {
    let all = volume.read(offset, B).expect("read")[0];
    for (i, m) in mems.iter().enumerate() {
        for (j, other) in mems.iter().enumerate() {
            other.fail_reads.store(i != j, Ordering::SeqCst);
        }
        let alone = volume.read(offset, B);
        for other in mems {
            other.fail_reads.store(false, Ordering::SeqCst);
        }
        let alone = alone.expect("read one child")[0];
        assert_eq!(
            alone, all,
            "a read reaching only {} returns {alone}, a read reaching all returned {all}",
            m.name
        );
    }
}

/// Finding 1. `intend` inserts the region into the in-memory dirty set
/// (`Intent::begin`) before journaling it; when the append or the sync
/// fails, it ends the ticket but leaves the region dirty in memory. The
/// next write to that region is then "not fresh": it goes out with no
/// record and no sync, so after a power loss the region is not reconciled
/// and the children keep different versions (SPEC 8.2).
#[test]
fn a_write_after_a_failed_intent_record_is_recorded_before_it_goes_out() {
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, 16 * B)).collect();
    let store = Store::default();
    let volume = open_store(options(1), specs(&mems), &store);
    store.with(|s| s.fail_appends = true);
    volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect_err("no intent, no write");
    store.with(|s| s.fail_appends = false);
    volume
        .write(0, Bytes::from(vec![2u8; B]))
        .expect("the journal works again");
    // Power loss before any flush: the journal keeps what was synced, b
    // keeps what it had flushed (nothing of the write).
    store.crash();
    let dirty = store.durable_dirty();
    drop(volume);
    mems[1].poke(0, &[0u8; B]);
    assert!(
        dirty.overlaps(0..B as u64),
        "an acknowledged write's region is not durably dirty: {dirty:?}"
    );
    let reopened = open_store(options(1), specs(&mems), &store);
    reads_agree(&reopened, &mems, 0);
}

/// Finding 1, second door: the same with a failed journal sync.
#[test]
fn a_write_after_a_failed_intent_sync_is_recorded_before_it_goes_out() {
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, 16 * B)).collect();
    let store = Store::default();
    let volume = open_store(options(1), specs(&mems), &store);
    store.with(|s| s.fail_syncs = true);
    volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect_err("no intent, no write");
    store.with(|s| s.fail_syncs = false);
    volume
        .write(0, Bytes::from(vec![2u8; B]))
        .expect("the journal works again");
    store.crash();
    let dirty = store.durable_dirty();
    assert!(
        dirty.overlaps(0..B as u64),
        "an acknowledged write's region is not durably dirty: {dirty:?}"
    );
}

/// Finding 2. A region is cleaned when the flush that *ends* finds no
/// write in flight there; a write that was in flight while the children
/// flushed, and ended just before `flush_ended`, is not seen (it began two
/// intervals earlier, so it is in neither `previous`, `covered` nor
/// `current`). Its data reached b after b's flush: unflushed, yet the
/// region is journaled clean, and the next journal sync (any write to
/// another region) makes that durable. A power loss then leaves a and b
/// different with nothing to reconcile.
#[test]
fn a_region_is_not_cleaned_while_a_write_there_raced_the_child_flushes() {
    let size = 2 * GRAIN as usize;
    let kids = [hooked("a", size), hooked("b", size)];
    let mems: Vec<Arc<Mem>> = kids.iter().map(|k| k.mem.clone()).collect();
    let store = Store::default();
    let volume = Arc::new(open_store(options(1), hooked_specs(&kids), &store));
    kids[1].hold(Some(7));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (volume, done) = (volume.clone(), done.clone());
        thread::spawn(move || {
            volume
                .write(0, Bytes::from(vec![7u8; B]))
                .expect("slow write");
            done.store(true, Ordering::SeqCst);
        })
    };
    wait_for("b to take the write", || {
        kids[1].entered.load(Ordering::SeqCst)
    });
    // Two flushes while the write hangs on b: the region stays dirty.
    volume.flush().expect("flush 1");
    volume.flush().expect("flush 2");
    // The third: b's flush lets the write through (it lands after b's
    // flush began, so this flush does not cover it); a's flush returns
    // once the write has completed.
    let b = kids[1].clone();
    kids[1].on_flush(Some(Box::new(move || b.hold(None))));
    let d = done.clone();
    kids[0].on_flush(Some(Box::new(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    })));
    volume.flush().expect("flush 3");
    kids[0].on_flush(None);
    kids[1].on_flush(None);
    writer.join().expect("writer");
    // A write elsewhere syncs the journal (its own region is fresh).
    volume
        .write(GRAIN, Bytes::from(vec![1u8; B]))
        .expect("write elsewhere");
    let dirty = store.durable_dirty();
    // Power loss: b loses the write it took after its last flush.
    store.crash();
    drop(volume);
    mems[1].poke(0, &[0u8; B]);
    assert!(
        dirty.overlaps(0..B as u64),
        "the region of an unflushed write is journaled clean: {dirty:?}"
    );
    let reopened = open_store(options(1), hooked_specs(&kids), &store);
    reads_agree(&reopened, &mems, 0);
}

/// Finding 3. `intend` holds the stale-map mutex across the journal's
/// fsync when a region is fresh (and `flush` does in `sync_journal`):
/// every other write, even to a region that is already dirty and needs no
/// sync, waits for that fsync, and so does every read while any child is
/// stale (`stale_within`).
#[test]
#[ignore = "open (for the speed issue): the stale mutex is held across the journal fsync; a write to a dirty region waits for another region's sync (group commit)"]
fn a_write_to_a_dirty_region_does_not_wait_for_another_regions_journal_sync() {
    let size = 2 * GRAIN as usize;
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, size)).collect();
    let store = Store::default();
    let volume = Arc::new(open_store(options(1), specs(&mems), &store));
    volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect("dirty region 0");
    store.with(|s| s.hold_syncs = true);
    let fresh = {
        let volume = volume.clone();
        thread::spawn(move || volume.write(GRAIN, Bytes::from(vec![2u8; B])))
    };
    wait_for("the fresh region's sync", || store.with(|s| s.in_sync));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other = {
        let volume = volume.clone();
        thread::spawn(move || {
            let r = volume.write(B as u64, Bytes::from(vec![3u8; B]));
            let _ = done_tx.send(());
            r
        })
    };
    let finished = done_rx.recv_timeout(Duration::from_secs(2)).is_ok();
    store.with(|s| s.hold_syncs = false);
    fresh.join().expect("fresh").expect("fresh write");
    other.join().expect("other").expect("other write");
    assert!(
        finished,
        "a write to an already dirty region waited for another region's journal sync"
    );
}

/// Finding 4. The ranges a child took since its last good flush
/// (`unflushed`) live in the volume, not in the journal: a membership
/// change (`succeed`) starts the new volume with none. A child that was
/// unreachable at the change's flush (so kept its ranges "for its next
/// flush") and whose next flush fails with EIO is then marked stale over
/// nothing, and the flush is acknowledged with the write on fewer than
/// vote_threshold children (SPEC 8.3).
#[test]
fn a_childs_unflushed_ranges_survive_a_membership_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.jsonl");
    let kids = [
        hooked("a", 16 * B),
        hooked("b", 16 * B),
        hooked("c", 16 * B),
    ];
    let old = Volume::open_journaled(
        options(2),
        hooked_specs(&kids),
        Arc::new(NullSink),
        Some(&path),
    )
    .expect("open");
    old.write(0, Bytes::from(vec![4u8; B])).expect("write");
    // The change's flush cannot reach b: b keeps the write "for its next
    // flush" (in the old volume).
    kids[1].flush_error.store(1, Ordering::SeqCst);
    old.flush_and_settle().expect("flush at threshold");
    let new = old
        .succeed(options(2), old.child_specs(), &path)
        .expect("succeed");
    old.close(Duration::from_secs(1));
    // b is back, and its flush says the write was lost.
    kids[1].flush_error.store(2, Ordering::SeqCst);
    let flushed = new.flush();
    assert!(
        new.stale_bytes()[1] > 0,
        "b lost an acknowledged write and is not stale there (flush: {flushed:?})"
    );
}

/// Finding 5. The reconcile marks a child stale over the whole 1 MiB step
/// when it missed one block (`settle` could not rewrite it). Where
/// vote_threshold equals the number of children (2 of 2), a range stale
/// on one child is fresh on fewer than the threshold: it can neither be
/// read nor resynced (the resync votes at the threshold without the stale
/// child), and every flush of the volume fails (`under_threshold`), for
/// good, although every block but one was identical on both children and
/// the child is healthy again.
#[test]
fn a_transient_error_during_reconcile_does_not_break_a_two_of_two_volume_for_good() {
    let size = 1 << 20;
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, size)).collect();
    let store = Store::default();
    let volume = open_store(options(2), specs(&mems), &store);
    volume
        .write(0, Bytes::from(vec![1u8; size]))
        .expect("write everything");
    volume.flush().expect("flush");
    volume
        .write(0, Bytes::from(vec![2u8; B]))
        .expect("a last write");
    // Power loss with the last write in a's cache only.
    store.crash();
    drop(volume);
    mems[0].poke(0, &[1u8; B]);
    mems[1].poke(0, &[3u8; B]);
    // Writes fail while the volume reopens (a transient error), so the
    // loser of the tie cannot be rewritten, whichever child it is.
    for m in &mems {
        m.fail_writes.store(true, Ordering::SeqCst);
    }
    let reopened = open_store(options(2), specs(&mems), &store);
    for m in &mems {
        m.fail_writes.store(false, Ordering::SeqCst);
    }
    for _ in 0..10 {
        let _ = reopened.resync_step(1 << 20, 0);
    }
    let middle = reopened.read(512 * 1024, B);
    let flushed = reopened.flush();
    assert!(
        middle.is_ok() && flushed.is_ok(),
        "block 128 (never different) reads {:?}, the flush says {:?}, stale bytes {:?}",
        middle.map(|d| d[0]),
        flushed,
        reopened.stale_bytes()
    );
}

/// Finding 6. A region that the reconcile could not scrub (too few
/// children answered at open) stays dirty but is never reconciled: the
/// volume serves it as it is, and the first complete flush records it
/// clean (nothing in `previous`/`current`). A block left without a
/// majority by the crash (three versions in flight) then stays unreadable
/// for good, although the tie rule would have settled it.
#[test]
fn a_region_the_reconcile_could_not_reach_is_reconciled_later() {
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let store = Store::default();
    let volume = open_store(options(2), specs(&mems), &store);
    volume.write(0, Bytes::from(vec![1u8; B])).expect("write");
    store.crash();
    drop(volume);
    // Three versions of block 0 after the power loss.
    mems[1].poke(0, &[2u8; B]);
    mems[2].poke(0, &[3u8; B]);
    // b and c cannot be read while the volume opens.
    mems[1].fail_reads.store(true, Ordering::SeqCst);
    mems[2].fail_reads.store(true, Ordering::SeqCst);
    let reopened = open_store(options(2), specs(&mems), &store);
    mems[1].fail_reads.store(false, Ordering::SeqCst);
    mems[2].fail_reads.store(false, Ordering::SeqCst);
    reopened.flush().expect("flush");
    reopened.flush().expect("flush");
    // Another unclean stop and start: nothing is left to reconcile.
    store.crash();
    drop(reopened);
    let again = open_store(options(2), specs(&mems), &store);
    let read = again.read(0, B);
    assert!(
        read.is_ok(),
        "block 0 is still without a majority: {read:?}"
    );
}

/// Finding 6, blkverify: the reconcile's scrub of a block the crash left
/// different fails with a mismatch (not a no-majority), so the tie rule
/// never runs; every read of the block fails until a write covers it.
#[test]
fn a_blkverify_volume_is_reconciled_after_a_crash() {
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, 16 * B)).collect();
    let store = Store::default();
    let opts = VolumeOptions {
        blkverify: true,
        ..options(2)
    };
    let volume = open_store(opts.clone(), specs(&mems), &store);
    volume.write(0, Bytes::from(vec![1u8; B])).expect("write");
    store.crash();
    drop(volume);
    mems[1].poke(0, &[0u8; B]);
    let reopened = open_store(opts, specs(&mems), &store);
    let read = reopened.read(0, B);
    assert!(read.is_ok(), "the torn block stays unreadable: {read:?}");
}

/// Sound: an intended write that fails its quorum (or panics in a child)
/// ends its ticket, so the region is cleaned once idle; a region with a
/// write in flight (stalled on a child) is never cleaned by any number of
/// flushes.
#[test]
fn failed_and_stalled_writes_keep_the_intent_bookkeeping_right() {
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let store = Store::default();
    let volume = Arc::new(open_store(
        with_timeout(2, Duration::from_secs(20)),
        specs(&mems),
        &store,
    ));
    mems[1].fail_writes.store(true, Ordering::SeqCst);
    mems[2].fail_writes.store(true, Ordering::SeqCst);
    volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect_err("below threshold");
    mems[1].fail_writes.store(false, Ordering::SeqCst);
    mems[2].fail_writes.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        volume.flush().expect("flush");
    }
    volume.sync_journal().expect("sync");
    assert!(
        store.durable_dirty().is_empty(),
        "a failed write kept its region dirty"
    );
    // A stalled write: no flush cleans its region.
    mems[2].stall(true);
    let writer = {
        let volume = volume.clone();
        thread::spawn(move || volume.write(0, Bytes::from(vec![2u8; B])))
    };
    wait_for("the write to stall", || {
        mems[2].write_attempts.load(Ordering::SeqCst) >= 2
    });
    for _ in 0..4 {
        volume.flush().expect("flush");
    }
    volume.sync_journal().expect("sync");
    assert!(store.durable_dirty().overlaps(0..B as u64));
    mems[2].stall(false);
    writer.join().expect("writer").expect("write");
    assert_all(&volume.read(0, B).expect("read"), 2);
}
