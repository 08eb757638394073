//! Damage as state: recorded on a lost vote and on a failed read, cleared
//! by a write, a repair, a resync copy or a clean scrub, kept in the
//! journal across a reopen, and the journal bounded while it changes.

use std::fs;
use std::ops::Range;

use super::*;

/// The 100 bytes the tests corrupt: 1 MiB + 1000, as an operator would
/// find them on a disk image.
const AT: u64 = (1 << 20) + 1000;
const LEN: u64 = 100;
const SIZE: usize = 2 << 20;

fn damage_of(volume: &Volume, child: &str) -> Vec<Range<u64>> {
    volume.damage(child, 100).expect("a child").ranges
}

fn state_of(volume: &Volume, child: &str) -> ChildState {
    volume
        .children()
        .into_iter()
        .find(|c| c.name == child)
        .expect("a child")
        .state
}

/// The CHILD_STATE_CHANGE events among `events`, as (child, from, to).
fn changes(events: &[Event]) -> Vec<(String, ChildState, ChildState)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildStateChange { child, from, to } => Some((child.clone(), *from, *to)),
            _ => None,
        })
        .collect()
}

fn change(child: &str, from: ChildState, to: ChildState) -> (String, ChildState, ChildState) {
    (child.to_owned(), from, to)
}

/// A volume of three children holding a pattern, with c's copy corrupt on
/// `AT..AT+LEN`.
fn corrupted(opts: VolumeOptions) -> (Setup, Vec<u8>) {
    let s = setup(opts, 3, SIZE);
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 13 % 251) as u8 | 1).collect();
    s.volume.write(0, Bytes::from(data.clone())).expect("write");
    s.mems[2].poke(AT as usize, &[0; LEN as usize]);
    s.sink.take();
    (s, data)
}

#[test]
fn a_lost_vote_is_damage_until_a_write_covers_it() {
    let (s, data) = corrupted(options(2));
    let got = s.volume.read(AT - 5000, 10_000).expect("read");
    assert_eq!(&got[..], &data[(AT - 5000) as usize..(AT + 5000) as usize]);
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
    assert!(damage_of(&s.volume, "a").is_empty() && damage_of(&s.volume, "b").is_empty());
    assert_eq!(s.volume.damaged_bytes(), vec![0, 0, LEN]);
    assert_eq!(state_of(&s.volume, "c"), ChildState::Damaged);
    assert_eq!(state_of(&s.volume, "a"), ChildState::Healthy);
    let events = s.sink.take();
    assert_eq!(
        changes(&events),
        vec![change("c", ChildState::Healthy, ChildState::Damaged)]
    );
    assert!(
        matches!(events.last(), Some(Event::ChildStateChange { .. })),
        "the state change comes after the report: {events:?}"
    );
    let info = s.volume.children();
    assert_eq!(info[2].damaged_bytes, LEN);

    // A second read of the same bytes changes nothing; an agreeing client
    // read does not clear it either.
    s.volume.read(AT, LEN as usize).expect("read again");
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
    assert!(changes(&s.sink.take()).is_empty());

    // A write over part of it clears that part, and only on the children
    // that took it.
    s.mems[2].poke(AT as usize, &data[AT as usize..(AT + 40) as usize]);
    s.volume
        .write(
            AT,
            Bytes::copy_from_slice(&data[AT as usize..(AT + 40) as usize]),
        )
        .expect("write");
    assert_eq!(damage_of(&s.volume, "c"), vec![AT + 40..AT + LEN]);
    assert!(changes(&s.sink.take()).is_empty(), "still damaged");
    s.volume
        .write_zeroes(AT + 20, 200)
        .expect("write zeroes over the rest");
    assert!(damage_of(&s.volume, "c").is_empty());
    assert_eq!(s.volume.damaged_bytes(), vec![0, 0, 0]);
    assert_eq!(state_of(&s.volume, "c"), ChildState::Healthy);
    assert_eq!(
        changes(&s.sink.take()),
        vec![change("c", ChildState::Damaged, ChildState::Healthy)]
    );
    // A write that c missed leaves it stale there, not damaged.
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    s.volume
        .write(0, Bytes::from(vec![5; B]))
        .expect("write at the threshold");
    assert!(damage_of(&s.volume, "c").is_empty());
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, B as u64]);
}

#[test]
fn a_damage_listing_is_bounded_and_says_so() {
    let (s, _) = corrupted(options(2));
    // Blocks 2, 4, ..., 10 of c lose too: six ranges with the first one.
    for block in (2..=10).step_by(2) {
        s.mems[2].poke(block * B + 7, &[0; 3]);
    }
    s.volume.read(0, SIZE).expect("read");
    let all = s.volume.damage("c", 100).expect("c");
    assert_eq!(all.ranges.len(), 6, "{all:?}");
    assert!(!all.truncated);
    assert_eq!(all.bytes, 5 * 3 + LEN);
    let first = s.volume.damage("c", 4).expect("c");
    assert_eq!(first.ranges, all.ranges[..4]);
    assert!(first.truncated);
    assert_eq!(first.bytes, all.bytes, "the bytes are counted in full");
    assert_eq!(s.volume.damage("zz", 4), None, "no such child");
}

#[test]
fn a_failed_read_is_damage_until_a_scrub_finds_it_good() {
    let (s, _) = corrupted(options(2));
    // c's storage fails reads with EIO: the read is served by a and b.
    s.mems[2].fail_reads.store(true, Ordering::SeqCst);
    s.volume.read(4096, 8192).expect("read at the threshold");
    assert_eq!(damage_of(&s.volume, "c"), vec![4096..12_288]);
    assert_eq!(
        state_of(&s.volume, "c"),
        ChildState::Failed,
        "failed comes first"
    );
    assert!(
        changes(&s.sink.take()).is_empty(),
        "failed before and after"
    );
    // Back: the child serves again, and shows what it holds.
    s.mems[2].fail_reads.store(false, Ordering::SeqCst);
    s.volume.read(0, 100).expect("read elsewhere");
    assert_eq!(state_of(&s.volume, "c"), ChildState::Damaged);
    // A scrub without repair of a range where c agrees clears that range.
    let found = s.volume.scrub(4096, 4096, false).expect("scrub");
    assert!(found.lost.is_empty(), "{found:?}");
    assert_eq!(damage_of(&s.volume, "c"), vec![8192..12_288]);
    let found = s.volume.scrub(0, 1 << 20, false).expect("scrub");
    assert!(found.lost.is_empty(), "{found:?}");
    assert!(damage_of(&s.volume, "c").is_empty());
    assert_eq!(
        changes(&s.sink.take()),
        vec![change("c", ChildState::Damaged, ChildState::Healthy)]
    );

    // A child that is unreachable (not an I/O error) is failed, not damaged.
    let down = setup(options(2), 3, 4 * B);
    down.volume
        .write(0, Bytes::from(vec![7; 4 * B]))
        .expect("write");
    down.mems[0].hang_writes.store(true, Ordering::SeqCst);
    down.volume
        .write(0, Bytes::from(vec![8; B]))
        .expect("write at the threshold");
    assert!(damage_of(&down.volume, "a").is_empty());
    assert_eq!(down.volume.stale_bytes(), vec![B as u64, 0, 0]);
}

#[test]
fn a_scrub_records_damage_and_a_repair_clears_it() {
    let (s, data) = corrupted(options(2));
    let found = s.volume.scrub(0, SIZE as u64, false).expect("scrub");
    assert_eq!(found.lost, vec![("c".to_owned(), LEN)]);
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
    // A scrub of another range leaves it alone.
    s.volume
        .scrub(0, 1 << 20, true)
        .expect("scrub the first MiB");
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
    let events = s.sink.take();
    assert_eq!(
        changes(&events),
        vec![change("c", ChildState::Healthy, ChildState::Damaged)]
    );
    let fixed = s
        .volume
        .scrub(1 << 20, 1 << 20, true)
        .expect("scrub with repair");
    assert_eq!(fixed.repaired, LEN);
    assert!(damage_of(&s.volume, "c").is_empty());
    assert_eq!(s.mems[2].snapshot(), data);
    assert_eq!(
        changes(&s.sink.take()),
        vec![change("c", ChildState::Damaged, ChildState::Healthy)]
    );

    // With rewrite_corrupted a read repairs at once: no damage is left and
    // no state flickers.
    let mut opts = options(2);
    opts.rewrite_corrupted = true;
    let (s, data) = corrupted(opts);
    s.volume.read(AT, LEN as usize).expect("read");
    assert!(damage_of(&s.volume, "c").is_empty());
    assert!(changes(&s.sink.take()).is_empty());
    assert_eq!(s.mems[2].snapshot(), data);
    // Unless the repair fails: then the damage stays.
    s.mems[2].poke(AT as usize, &[0; LEN as usize]);
    s.mems[2].fail_writes.store(true, Ordering::SeqCst);
    s.volume.read(AT, LEN as usize).expect("read");
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
}

#[test]
fn a_resync_copy_clears_the_damage_it_covers() {
    let (s, data) = corrupted(options(2));
    s.volume.read(AT, LEN as usize).expect("read");
    assert_eq!(damage_of(&s.volume, "c"), vec![AT..AT + LEN]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&(1 << 20..(1 << 20) + 8192)))
        .expect("mark stale");
    assert_eq!(
        state_of(&s.volume, "c"),
        ChildState::Stale,
        "stale comes before damaged"
    );
    assert_eq!(s.volume.damaged_bytes(), vec![0, 0, LEN]);
    let mut from = 0;
    for _ in 0..100 {
        match s.volume.resync_step(1 << 20, from) {
            ResyncStep::Idle => break,
            ResyncStep::Copied { next, .. } => from = next,
            ResyncStep::Failed { error, .. } => panic!("resync: {error}"),
        }
    }
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    assert!(damage_of(&s.volume, "c").is_empty());
    assert_eq!(state_of(&s.volume, "c"), ChildState::Healthy);
    assert_eq!(s.mems[2].snapshot(), data);
}

#[test]
fn damage_survives_a_reopen_and_its_journal_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("stale/vm.jsonl");
    let mems: Vec<Arc<Mem>> = ["a", "b", "c"].iter().map(|n| Mem::new(n, SIZE)).collect();
    let sink = Arc::new(RecordingSink::default());
    let volume = journaled(&mems, &journal, sink.clone());
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 29 % 251) as u8 | 1).collect();
    volume.write(0, Bytes::from(data.clone())).expect("write");
    mems[1].poke(AT as usize, &[0; LEN as usize]);
    mems[2].poke(5 * B, &[0; 3]);
    volume.read(0, SIZE).expect("read");
    assert_eq!(damage_of(&volume, "b"), vec![AT..AT + LEN]);
    assert_eq!(
        damage_of(&volume, "c"),
        vec![5 * B as u64..5 * B as u64 + 3]
    );
    volume.flush_and_settle().expect("flush");
    assert!(volume.close(Duration::from_secs(5)).is_empty());
    drop(volume);

    let volume = journaled(&mems, &journal, sink.clone());
    assert_eq!(damage_of(&volume, "b"), vec![AT..AT + LEN]);
    assert_eq!(
        damage_of(&volume, "c"),
        vec![5 * B as u64..5 * B as u64 + 3]
    );
    assert_eq!(state_of(&volume, "b"), ChildState::Damaged);
    assert_eq!(volume.damaged_bytes(), vec![0, LEN, 3]);
    // b's cleared by a write, then the volume reopened after a crash (no
    // flush, no settle): the clear was journaled before the write
    // returned, and the reconcile of the region the write dirtied (the
    // whole volume here) repairs c, which clears its damage too.
    volume
        .write(
            AT,
            Bytes::copy_from_slice(&data[AT as usize..(AT + LEN) as usize]),
        )
        .expect("write over b's damage");
    assert!(damage_of(&volume, "b").is_empty());
    drop(volume);
    let volume = journaled(&mems, &journal, sink.clone());
    assert_eq!(volume.damaged_bytes(), vec![0, 0, 0]);
    assert_eq!(mems[2].snapshot(), data);

    // Thousands of marks and clears: the journal stays within its bound.
    let lines = || {
        fs::read_to_string(&journal)
            .expect("read the journal")
            .lines()
            .count()
    };
    let mut most = 0;
    for i in 0..3000u64 {
        let at = (i % 64) * B as u64 + 17;
        mems[0].poke(at as usize, &[0; 9]);
        volume.read(at, 9).expect("read");
        volume
            .write(
                at,
                Bytes::copy_from_slice(&data[at as usize..at as usize + 9]),
            )
            .expect("write");
        if i % 97 == 0 {
            most = most.max(lines());
        }
    }
    assert!(damage_of(&volume, "a").is_empty());
    assert!(
        most <= 2 * 4 + crate::stale::COMPACT_SLACK + 4,
        "the journal grew to {most} lines"
    );
    mems[0].poke(AT as usize + 10, &[0; 2]);
    volume.read(AT, B).expect("read");
    volume.flush_and_settle().expect("flush");
    drop(volume);
    let volume = journaled(&mems, &journal, sink);
    assert_eq!(damage_of(&volume, "a"), vec![AT + 10..AT + 12]);
    assert_eq!(volume.damaged_bytes(), vec![2, 0, 0]);
}
