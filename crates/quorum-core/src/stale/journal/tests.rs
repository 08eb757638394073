use std::fs::{self, OpenOptions};
use std::io::Write;

use super::*;
use crate::stale::FileStore;

fn keys(pairs: &[(&str, &str)]) -> Vec<ChildKey> {
    pairs
        .iter()
        .map(|(name, id)| ChildKey {
            name: (*name).to_owned(),
            id: (*id).to_owned(),
            known: true,
        })
        .collect()
}

#[test]
fn marks_follow_the_storage_when_names_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.jsonl");
    let (mut j, _) = Journal::open(
        Box::new(FileStore::new(&path)),
        &keys(&[("a", "file:1"), ("b", "file:2")]),
    )
    .expect("open");
    j.append('+', 0, &(0..100)).expect("mark a");
    j.append('+', 1, &(500..600)).expect("mark b");
    j.append('-', 1, &(500..550)).expect("clear part of b");
    drop(j);
    // The operator swapped the two names in the config: the marks stay
    // with the storage, and each name's old marks go along too (a mark
    // too many costs a copy; a mark too few could serve old data).
    let (_, Replayed { stale: sets, .. }) = Journal::open(
        Box::new(FileStore::new(&path)),
        &keys(&[("b", "file:1"), ("a", "file:2")]),
    )
    .expect("reopen");
    // "b" now: the storage of a's marks, and b's old marks by name (the
    // clear of 500..550 belonged to the other storage).
    assert_eq!(sets[0].within(0..1000), vec![0..100, 500..600]);
    // "a" now: b's storage with its clear, and a's old marks by name.
    assert_eq!(sets[1].within(0..1000), vec![0..100, 550..600]);
    // Lines written before children had ids are matched by name.
    let legacy = dir.path().join("old.jsonl");
    fs::write(
        &legacy,
        "{\"op\":\"+\",\"child\":\"a\",\"start\":0,\"end\":10}\n{\"op\":\"-\",\"child\":\"a\",\"start\":0,\"end\":5}\n",
    )
    .expect("legacy journal");
    let (_, Replayed { stale: sets, .. }) =
        Journal::open(Box::new(FileStore::new(&legacy)), &keys(&[("a", "file:9")]))
            .expect("legacy");
    assert_eq!(sets[0].within(0..100), vec![5..10]);
}

#[test]
fn damage_waits_for_a_child_whose_storage_is_not_known_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.jsonl");
    let open = |children: &[ChildKey]| {
        Journal::open(Box::new(FileStore::new(&path)), children).expect("open")
    };
    let (mut j, _) = open(&keys(&[("a", "file:1"), ("r", "http:r")]));
    j.append_damage(true, 1, &(1000..1100)).expect("damage r");
    j.append_damage(true, 0, &(0..10)).expect("damage a");
    drop(j);
    // r cannot be opened at this start: its damage is kept for it, and
    // what it misses meanwhile is journaled under its storage.
    let mut down = keys(&[("a", "file:1"), ("r", "unopened:r")]);
    down[1].known = false;
    let (mut j, maps) = open(&down);
    assert_eq!(maps.damaged[1].within(0..1 << 20), vec![1000..1100]);
    j.append('+', 1, &(5000..6000)).expect("r misses a write");
    drop(j);
    let (_, maps) = open(&down);
    assert_eq!(maps.damaged[1].within(0..1 << 20), vec![1000..1100]);
    // It opens on the same storage: everything is still there.
    let (_, maps) = open(&keys(&[("a", "file:1"), ("r", "http:r")]));
    assert_eq!(maps.damaged[1].within(0..1 << 20), vec![1000..1100]);
    assert_eq!(maps.stale[1].within(0..1 << 20), vec![5000..6000]);
    assert_eq!(maps.damaged[0].within(0..1 << 20), vec![0..10]);
    // An unknown child never takes a known child's storage.
    let mut renamed = keys(&[("r", "file:1"), ("a", "unopened:a")]);
    renamed[1].known = false;
    let (_, maps) = open(&renamed);
    assert_eq!(maps.damaged[0].within(0..1 << 20), vec![0..10]);
    assert!(maps.damaged[1].is_empty(), "{maps:?}");
}

#[test]
fn the_journal_replays_and_compacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale/vm.jsonl");
    let names = keys(&[("a", "id-a"), ("b \"quoted\"", "id-b")]);
    let (mut j, maps) = Journal::open(Box::new(FileStore::new(&path)), &names).expect("open");
    assert_eq!(maps, Replayed::new(2));
    j.append('+', 0, &(0..100)).expect("append");
    j.append('+', 1, &(50..60)).expect("append");
    j.append('-', 0, &(10..20)).expect("append");
    drop(j);
    let mut f = OpenOptions::new().append(true).open(&path).expect("file");
    f.write_all(b"{\"op\":\"+\",\"chi").expect("torn");
    let (_, Replayed { stale: sets, .. }) =
        Journal::open(Box::new(FileStore::new(&path)), &names).expect("reopen");
    assert_eq!(sets[0].within(0..1000), vec![0..10, 20..100]);
    assert_eq!(sets[1].within(0..1000), vec![50..60]);
    let lines = fs::read_to_string(&path).expect("read").lines().count();
    assert_eq!(lines, 3, "compacted");
}

#[test]
fn the_journal_stays_bounded_while_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.jsonl");
    let names = keys(&[("a", "id-a")]);
    let (mut j, mut maps) = Journal::open(Box::new(FileStore::new(&path)), &names).expect("open");
    let mut most = 0;
    for i in 0..20_000u64 {
        let range = (i % 7) * 4096..(i % 7 + 1) * 4096;
        let op = if i % 2 == 0 { '+' } else { '-' };
        if op == '+' {
            maps.stale[0].insert(range.clone());
        } else {
            maps.stale[0].remove(range.clone());
        }
        j.append(op, 0, &range).expect("append");
        j.catch_up(maps.live()).expect("compact");
        if i % 499 == 0 {
            most = most.max(fs::read_to_string(&path).expect("read").lines().count());
        }
        most = most.max(j.appended());
    }
    assert!(
        most <= 2 * 7 + COMPACT_SLACK + 2,
        "the journal grew to {most} lines"
    );
    assert!(j.appended() <= 2 * 7 + COMPACT_SLACK + 1);
    drop(j);
    let (_, replayed) = Journal::open(Box::new(FileStore::new(&path)), &names).expect("reopen");
    assert_eq!(
        replayed, maps,
        "the compacted journal replays to the live maps"
    );
}

#[test]
fn damage_stays_with_the_storage_and_its_journal_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.jsonl");
    let (mut j, _) = Journal::open(
        Box::new(FileStore::new(&path)),
        &keys(&[("a", "file:1"), ("b", "file:2")]),
    )
    .expect("open");
    j.append_damage(true, 0, &(1000..1100)).expect("damage a");
    j.append_damage(true, 1, &(0..4096)).expect("damage b");
    j.append_damage(false, 1, &(0..2048))
        .expect("repair part of b");
    j.append('+', 0, &(0..10)).expect("a stale mark");
    drop(j);
    // Names swapped, and b's storage replaced: damage follows the
    // storage only, never a name.
    let names = keys(&[("b", "file:1"), ("a", "file:3")]);
    let (mut j, mut maps) = Journal::open(Box::new(FileStore::new(&path)), &names).expect("reopen");
    assert_eq!(maps.damaged[0].within(0..1 << 20), vec![1000..1100]);
    assert!(maps.damaged[1].is_empty(), "{maps:?}");
    assert_eq!(maps.stale[0].within(0..100), vec![0..10]);
    assert_eq!(maps.stale[1].within(0..100), vec![0..10], "by name");

    // Marks and clears of damage compact as stale marks do.
    let mut most = 0;
    for i in 0..20_000u64 {
        let range = (i % 5) * 4096..(i % 5) * 4096 + 100;
        let damaged = i % 3 != 0;
        if damaged {
            maps.damaged[1].insert(range.clone());
        } else {
            maps.damaged[1].remove(range.clone());
        }
        j.append_damage(damaged, 1, &range).expect("append");
        j.catch_up(maps.live()).expect("compact");
        most = most.max(j.appended());
    }
    assert!(most <= 2 * 8 + COMPACT_SLACK + 1, "{most} lines");
    let lines = fs::read_to_string(&path).expect("read").lines().count();
    assert!(lines <= 2 * 8 + COMPACT_SLACK + 8, "{lines} lines");
    drop(j);
    let (_, replayed) = Journal::open(Box::new(FileStore::new(&path)), &names).expect("replay");
    assert_eq!(replayed, maps);
}
