//! The promises of SPEC section 8, each where it is hard: a read racing a
//! write, a hung child, a child missing from block status, a journal that
//! cannot be written.

use std::io;
use std::path::PathBuf;

use super::*;
use crate::stale::JournalStore;

pub(super) fn with_timeout(threshold: usize, timeout: Duration) -> VolumeOptions {
    VolumeOptions {
        child_timeout: timeout,
        ..options(threshold)
    }
}

/// Waits (bounded) until `cond` holds.
pub(super) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

#[test]
fn a_read_in_pieces_sees_a_racing_write_whole_or_not_at_all() {
    let s = Arc::new(setup(options(2), 3, 64 * B));
    s.volume
        .write(0, Bytes::from(vec![1u8; 64 * B]))
        .expect("first write");
    let writer_done = Arc::new(AtomicBool::new(false));
    let mut writer = None;
    let mut pieces = Vec::new();
    s.volume
        .read_chunks(0, 64 * B as u64, 8 * B, |piece| {
            if writer.is_none() {
                let (s2, done) = (s.clone(), writer_done.clone());
                writer = Some(thread::spawn(move || {
                    s2.volume
                        .write(0, Bytes::from(vec![2u8; 64 * B]))
                        .expect("racing write");
                    done.store(true, Ordering::SeqCst);
                }));
                // The write is either queued behind this read or (were the
                // read not atomic) done.
                wait_for("the racing write", || {
                    s.volume.waiting_for_ranges() > 0 || writer_done.load(Ordering::SeqCst)
                });
            }
            pieces.push(piece);
            true
        })
        .expect("read");
    writer.expect("writer").join().expect("writer thread");
    let read: Vec<u8> = pieces.concat();
    assert_eq!(read.len(), 64 * B);
    let first = read[0];
    assert!(
        read.iter().all(|&b| b == first),
        "a read of 64 blocks saw two writes: byte 0 is {first}, byte {} is {}",
        read.iter().position(|&b| b != first).unwrap_or(0),
        read[read.iter().position(|&b| b != first).unwrap_or(0)]
    );
    assert_eq!(s.volume.read(0, 64 * B).expect("read after")[0], 2);
}

#[test]
fn a_hung_child_costs_child_timeout_and_its_late_write_never_lands_over_a_newer_one() {
    let s = setup(with_timeout(2, Duration::from_millis(200)), 3, 16 * B);
    let c = &s.mems[2];
    c.stall(true);
    let started = Instant::now();
    s.volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect("write A with c hung");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the write waited {took:?}");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, B as u64], "c missed A");
    // c's hung call has not returned: c gets nothing more meanwhile, so B
    // cannot race the late A on c.
    s.volume
        .write(0, Bytes::from(vec![2u8; B]))
        .expect("write B");
    let attempts = c.write_attempts.load(Ordering::SeqCst);
    assert_eq!(attempts, 1, "c was sent a write while its last one hung");
    assert_eq!(s.volume.stale_bytes()[2], B as u64, "c missed B too");
    // The late A lands now; c stays stale, reads never return it.
    c.stall(false);
    wait_for("the late write", || c.snapshot()[0] == 1);
    assert_all(&s.volume.read(0, B).expect("read"), 2);
    // The resync copies B onto c once its breaker lets it be tried.
    wait_for("the breaker", || {
        matches!(s.volume.resync_step(1 << 20, 0), ResyncStep::Copied { .. })
    });
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert_all(&c.snapshot()[..B], 2);
}

pub(super) fn assert_all(bytes: &[u8], value: u8) {
    if let Some(at) = bytes.iter().position(|&b| b != value) {
        panic!("byte {at} is {}, not {value}", bytes[at]);
    }
}

#[test]
fn block_status_counts_a_failed_or_stale_child_as_data() {
    // Threshold 1 of 2: a write that fails on b leaves it stale there; then
    // a cannot be reached. Only b answers block status, and b reads zero
    // where it missed the write: that must not be called zero.
    let s = setup(options(1), 2, 16 * B);
    let (a, b) = (&s.mems[0], &s.mems[1]);
    b.fail_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(4 * B as u64, Bytes::from(vec![7u8; B]))
        .expect("write on a only");
    b.fail_writes.store(false, Ordering::SeqCst);
    a.fail_reads.store(true, Ordering::SeqCst);
    let map = s
        .volume
        .block_status(0, 16 * B as u64, 100)
        .expect("status");
    let at = |o: u64| {
        map.iter()
            .find(|e| e.offset <= o && o < e.offset + e.length)
    };
    assert!(
        at(4 * B as u64).is_some_and(|e| !e.zero),
        "the acknowledged write was called zero: {map:?}"
    );
    // a is down everywhere: nothing is known to be zero.
    assert!(map.iter().all(|e| !e.zero), "{map:?}");
    // a is back (once its breaker lets it be tried): only b's stale block
    // is data.
    a.fail_reads.store(false, Ordering::SeqCst);
    let zero = || {
        let map = s
            .volume
            .block_status(0, 16 * B as u64, 100)
            .expect("status");
        map.iter().filter(|e| e.zero).map(|e| e.length).sum::<u64>()
    };
    wait_for("a to be tried again", || zero() > 0);
    assert_eq!(zero(), 15 * B as u64, "only the written block is data");
}

#[test]
fn a_new_child_is_stale_everywhere_and_the_resync_zeroes_it_without_reads() {
    // Child c joins a volume whose data lives on a and b; it holds garbage.
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 32 * B))
        .collect();
    let s = setup_with(options(2), mems);
    s.volume
        .write(8 * B as u64, Bytes::from(vec![3u8; 2 * B]))
        .expect("write");
    let c = &s.mems[2];
    c.poke(0, &[9u8; 32 * B]);
    {
        let mut zero = c.zero.lock().expect("zero");
        zero.iter_mut().for_each(|z| *z = false);
    }
    let all = 0..32 * B as u64;
    s.volume
        .mark_stale("c", std::slice::from_ref(&all))
        .expect("mark");
    // Stale c counts as data: nothing is zero.
    let map = s
        .volume
        .block_status(0, 32 * B as u64, 100)
        .expect("status");
    assert!(map.iter().all(|e| !e.zero), "{map:?}");
    let reads_before = s.mems[0].write_attempts.load(Ordering::SeqCst);
    let mut from = 0;
    for _ in 0..100 {
        match s.volume.resync_step(4 * B as u64, from) {
            ResyncStep::Copied { next, .. } => from = next,
            ResyncStep::Idle => break,
            ResyncStep::Failed { error, .. } => panic!("resync failed: {error}"),
        }
    }
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    let copy = c.snapshot();
    assert_all(&copy[..8 * B], 0);
    assert_all(&copy[8 * B..10 * B], 3);
    assert_all(&copy[10 * B..], 0);
    assert_eq!(
        s.mems[0].write_attempts.load(Ordering::SeqCst),
        reads_before,
        "the resync wrote to a source child"
    );
}

/// A journal store whose appends fail on demand and that counts syncs.
#[derive(Clone, Default)]
struct TestStore {
    state: Arc<Mutex<StoreState>>,
}

#[derive(Default)]
struct StoreState {
    bytes: Vec<u8>,
    fail: bool,
    syncs: usize,
}

impl JournalStore for TestStore {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.state.lock().expect("store").bytes.clone())
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().expect("store");
        if st.fail {
            return Err(io::Error::from_raw_os_error(28));
        }
        st.bytes.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.state.lock().expect("store").syncs += 1;
        Ok(())
    }
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.state.lock().expect("store").bytes = bytes.to_vec();
        Ok(())
    }
}

#[test]
fn a_stale_mark_that_cannot_be_journaled_fails_the_write_and_a_flush_syncs_the_journal() {
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let store = TestStore::default();
    let volume = Volume::open_with_store(
        options(2),
        specs(&mems),
        Arc::new(NullSink),
        Some((Box::new(store.clone()), PathBuf::from("test-journal"))),
    )
    .expect("open");
    // A first write records the region's write intent.
    volume
        .write(0, Bytes::from(vec![9u8; B]))
        .expect("a write while the journal works");
    mems[2].fail_writes.store(true, Ordering::SeqCst);
    store.state.lock().expect("store").fail = true;
    let err = volume
        .write(0, Bytes::from(vec![1u8; B]))
        .expect_err("a write whose stale mark cannot be recorded must fail");
    assert!(matches!(err, VolumeError::Journal(_)), "{err}");
    // The mark holds in memory all the same: c is not read there.
    assert_eq!(volume.stale_bytes()[2], B as u64);
    store.state.lock().expect("store").fail = false;
    let syncs = store.state.lock().expect("store").syncs;
    volume.flush().expect("flush");
    assert_eq!(
        store.state.lock().expect("store").syncs,
        syncs + 1,
        "the flush synced the journal"
    );
}

fn journaled(store: &TestStore) -> String {
    String::from_utf8_lossy(&store.state.lock().expect("store").bytes).into_owned()
}

fn open_on(store: &TestStore, mems: &[Arc<Mem>], threshold: usize) -> Volume {
    Volume::open_with_store(
        options(threshold),
        specs(mems),
        Arc::new(NullSink),
        Some((Box::new(store.clone()), PathBuf::from("test-journal"))),
    )
    .expect("open")
}

#[test]
fn children_that_diverged_before_a_crash_agree_after_the_reopen() {
    let mems: Vec<Arc<Mem>> = ["a", "b"].iter().map(|n| Mem::new(n, 16 * B)).collect();
    let store = TestStore::default();
    let volume = open_on(&store, &mems, 1);
    volume
        .write(3 * B as u64, Bytes::from(vec![1u8; B]))
        .expect("write");
    assert!(
        journaled(&store).contains("\"op\":\"d\""),
        "the write's region is recorded dirty before the write: {}",
        journaled(&store)
    );
    // A crash with the write in b's cache only: the children differ, and
    // nothing marks either stale.
    drop(volume);
    mems[1].poke(3 * B, &[2u8; B]);
    let reopened = open_on(&store, &mems, 1);
    assert_eq!(
        mems[0].snapshot()[3 * B..4 * B],
        mems[1].snapshot()[3 * B..4 * B],
        "the reopen reconciled the children"
    );
    // Whichever child a read reaches, it returns the same value.
    let first = reopened.read(3 * B as u64, B).expect("read")[0];
    mems[0].fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(reopened.read(3 * B as u64, B).expect("read b")[0], first);
    mems[0].fail_reads.store(false, Ordering::SeqCst);
    // A settled close leaves nothing to reconcile.
    reopened.flush_and_settle().expect("settle");
    let text = journaled(&store);
    let dirty = text.matches("\"op\":\"d\"").count();
    let clean = text.matches("\"op\":\"c\"").count();
    assert!(dirty <= clean, "dirty regions left after settling: {text}");
}

#[test]
fn a_write_whose_intent_cannot_be_recorded_fails_and_writes_nothing() {
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"]
        .iter()
        .map(|n| Mem::new(n, 16 * B))
        .collect();
    let store = TestStore::default();
    let volume = open_on(&store, &mems, 2);
    store.state.lock().expect("store").fail = true;
    let err = volume
        .write(0, Bytes::from(vec![5u8; B]))
        .expect_err("no intent, no write");
    assert!(matches!(err, VolumeError::Journal(_)), "{err}");
    for m in &mems {
        assert_eq!(
            m.write_attempts.load(Ordering::SeqCst),
            0,
            "{} was written",
            m.name
        );
    }
}
