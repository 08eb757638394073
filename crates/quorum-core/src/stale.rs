//! Stale ranges: what each child missed, like md's write-intent bitmap or
//! ZFS's dirty time log.
//!
//! A write that succeeds at the threshold while failing on some children
//! records its range as stale on those children. A stale range is never
//! served from that child (quorum leaves it out of the vote, fifo skips the
//! child) until a resync has copied the voted data onto it, or a later write
//! has succeeded on it. The maps survive a crash: every change is appended
//! to a journal (one JSON line per mark or clear) before the request that
//! caused it is answered, and a volume flush syncs the journal, so a crash
//! of the process loses no record and a power loss none from before the
//! last flush. A mark that cannot be appended fails the write that needed
//! it. A clear is appended only once the child's data that allows it has
//! been flushed, so after a power loss a child never looks fresh where its
//! data is not. The journal is replayed and compacted when the volume opens
//! and compacted again whenever it has grown well past the live state.
//!
//! The same journal keeps each child's damaged ranges (the `damage` module
//! of the volume: ranges it lost a vote on or could not read, not repaired
//! yet) and the write-intent regions, with ops of their own, so that one
//! file, one replay and one compaction serve all three.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A set of byte ranges, kept merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
    /// The bytes in `ranges`, kept as they change: the API and the resync
    /// ask for it on every step, and a sum over a fragmented map there
    /// would make a resync quadratic.
    bytes: u64,
}

impl RangeSet {
    /// Adds `range`, merging it with what it touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.bytes += end - start;
    }

    /// Removes `range`, splitting what it cuts.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let cut: Vec<(u64, u64)> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in cut {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            if s < range.start {
                self.ranges.insert(s, range.start);
                self.bytes += range.start - s;
            }
            if e > range.end {
                self.ranges.insert(range.end, e);
                self.bytes += e - range.end;
            }
        }
    }

    /// The parts of the set within `range`, in order.
    pub fn within(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(s, e)| (*s).max(range.start)..(*e).min(range.end))
            .collect();
        out.reverse();
        out
    }

    /// Whether any of `range` is in the set.
    pub fn overlaps(&self, range: Range<u64>) -> bool {
        self.ranges
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, e)| *e > range.start)
    }

    /// The first range of the set.
    pub fn first(&self) -> Option<Range<u64>> {
        self.ranges.iter().next().map(|(s, e)| *s..*e)
    }

    /// The last range of the set.
    pub fn last(&self) -> Option<Range<u64>> {
        self.ranges.iter().next_back().map(|(s, e)| *s..*e)
    }

    /// The first part of the set at or after `at`.
    pub fn first_from(&self, at: u64) -> Option<Range<u64>> {
        if let Some((s, e)) = self.ranges.range(..=at).next_back() {
            if *e > at {
                return Some(at.max(*s)..*e);
            }
        }
        self.ranges.range(at..).next().map(|(s, e)| *s..*e)
    }

    /// The ranges of the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(s, e)| *s..*e)
    }

    /// Bytes in the set.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many disjoint ranges the set holds.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Where a journal's bytes live: a file ([`FileStore`]), or in the crash
/// simulation a disk that loses what was not synced.
///
/// # Contract
/// `append` may keep the bytes in a volatile cache; `sync` makes every
/// byte appended before it durable; `replace` swaps the whole content for
/// `bytes` atomically and durably (a crash leaves the old content or the
/// new, never a mix).
pub trait JournalStore: Send {
    /// The whole content (empty when there is none).
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Adds `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Replaces the content with `bytes`, atomically and durably.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// A journal in a file: appended with `write`, synced with `fdatasync`,
/// replaced by writing a temporary file, syncing it, renaming it over the
/// journal and syncing the directory. The file is opened for each append
/// and sync (they come only when a stale map changes, and on flushes), so
/// that they always reach the file at the path, even after another volume
/// over the same journal replaced it.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The journal at `path` (created on the first append or replace).
    pub fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_owned(),
        }
    }

    fn file(&self) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
    }
}

impl JournalStore for FileStore {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file()?.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file()?.sync_data()
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            // The new directory's own entry must survive a power loss too.
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut out = File::create(&tmp)?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

/// The journal of the stale maps of one volume: one JSON line per mark
/// (`+`) or clear (`-`) of a child's stale range, per mark (`b`) or clear
/// (`g`) of a child's damaged range, and per write-intent region recorded
/// dirty (`d`) or clean (`c`), replayed in order.
///
/// It is compacted (rewritten from the live maps) when it opens and
/// whenever the lines appended since the last compaction outnumber the
/// live ranges by [`COMPACT_SLACK`], so its size stays bounded by the live
/// state, not by the number of requests served.
pub(crate) struct Journal {
    store: Box<dyn JournalStore>,
    children: Vec<ChildKey>,
    /// Lines appended since the last compaction.
    appended: usize,
    /// The last append failed and may have left part of a line: the next
    /// one starts on a line of its own.
    torn: bool,
    /// An append or a compaction failed: the live maps hold a change the
    /// journal may not, so the next catch-up or sync rewrites it whole.
    behind: bool,
}

/// Lines a journal may gain beyond twice its live ranges before it is
/// compacted.
pub(crate) const COMPACT_SLACK: usize = 1024;

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("children", &self.children)
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

/// The journal op that records a write-intent region dirty.
const DIRTY: char = 'd';
/// The journal op that records a write-intent region clean.
const CLEAN: char = 'c';
/// The journal op that marks a child's range stale.
const STALE: char = '+';
/// The journal op that marks a child's range damaged.
const DAMAGED: char = 'b';
/// The journal op that clears a child's damaged range.
const REPAIRED: char = 'g';

/// The live maps a journal mirrors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live<'a> {
    /// Each child's stale ranges.
    pub(crate) stale: &'a [RangeSet],
    /// Each child's damaged ranges.
    pub(crate) damaged: &'a [RangeSet],
    /// The dirty write-intent regions.
    pub(crate) dirty: &'a RangeSet,
}

impl Live<'_> {
    /// How many ranges the live maps hold.
    fn len(&self) -> usize {
        self.stale
            .iter()
            .chain(self.damaged)
            .map(RangeSet::len)
            .sum::<usize>()
            + self.dirty.len()
    }
}

/// What a journal replays to: the maps it mirrors, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Each child's stale ranges.
    pub(crate) stale: Vec<RangeSet>,
    /// Each child's damaged ranges.
    pub(crate) damaged: Vec<RangeSet>,
    /// The dirty write-intent regions.
    pub(crate) dirty: RangeSet,
}

impl Replayed {
    pub(crate) fn new(children: usize) -> Replayed {
        Replayed {
            stale: vec![RangeSet::default(); children],
            damaged: vec![RangeSet::default(); children],
            dirty: RangeSet::default(),
        }
    }

    /// A view of the maps for [`Journal::sync`] and [`Journal::catch_up`].
    pub(crate) fn live(&self) -> Live<'_> {
        Live {
            stale: &self.stale,
            damaged: &self.damaged,
            dirty: &self.dirty,
        }
    }
}

/// How the journal knows a child: its name, and the identity of its
/// storage ([`crate::Backend::identity`]), which stays with the storage
/// when names change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildKey {
    /// The child's name.
    pub(crate) name: String,
    /// Its storage's identity.
    pub(crate) id: String,
    /// Whether `id` names the storage ([`crate::Backend::identity_known`]);
    /// if not, the journal takes the identity its lines give the name.
    pub(crate) known: bool,
}

/// One journal line. `id` is absent in journals written before children
/// had one; such lines are matched by name.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    op: char,
    child: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    start: u64,
    end: u64,
}

impl Journal {
    /// Replays the journal in `store` (empty means nothing is stale or
    /// damaged) into the maps of `children`, and rewrites it compacted. A
    /// line belongs to the child whose storage has its `id`; a stale mark
    /// also goes to the child that now has its name, if that is another (a
    /// renamed or replaced child is then resynced where it may be behind: a
    /// mark too many costs a copy, a mark too few could serve old data).
    /// Damage stays with the storage only: new storage under an old name
    /// holds none of the old bad ranges. A child whose storage is not known
    /// (not opened yet) is known by the identity of the last line of its
    /// name that no other child's storage has, so that its damage is kept
    /// for it, not dropped. A torn or unreadable line is skipped.
    pub(crate) fn open(
        mut store: Box<dyn JournalStore>,
        children: &[ChildKey],
    ) -> io::Result<(Journal, Replayed)> {
        let mut maps = Replayed::new(children.len());
        let bytes = store.read_all()?;
        let entries: Vec<Entry> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|line| {
                let entry = serde_json::from_slice::<Entry>(line).ok();
                if entry.is_none() {
                    tracing::warn!("skipping an unreadable stale-map line");
                }
                entry
            })
            .collect();
        let children = recorded_identities(children, &entries);
        for Entry {
            op,
            child,
            id,
            start,
            end,
        } in entries
        {
            match op {
                DIRTY => {
                    maps.dirty.insert(start..end);
                    continue;
                }
                CLEAN => {
                    maps.dirty.remove(start..end);
                    continue;
                }
                _ => {}
            }
            let by_name = children.iter().position(|c| c.name == child);
            let by_id = if id.is_empty() {
                by_name
            } else {
                children.iter().position(|c| c.id == id)
            };
            match op {
                STALE => {
                    for i in [by_id, by_name].into_iter().flatten() {
                        maps.stale[i].insert(start..end);
                    }
                }
                DAMAGED => {
                    if let Some(i) = by_id {
                        maps.damaged[i].insert(start..end);
                    }
                }
                REPAIRED => {
                    if let Some(i) = by_id {
                        maps.damaged[i].remove(start..end);
                    }
                }
                _ => {
                    if let Some(i) = by_id {
                        maps.stale[i].remove(start..end);
                    }
                }
            }
        }
        let mut journal = Journal {
            store,
            children,
            appended: 0,
            torn: false,
            behind: false,
        };
        journal.compact(maps.live())?;
        Ok((journal, maps))
    }

    /// Appends a mark (`+`) or clear (`-`) of `range` on child `child`.
    /// The line may sit in a volatile cache until [`Journal::sync`].
    pub(crate) fn append(&mut self, op: char, child: usize, range: &Range<u64>) -> io::Result<()> {
        self.append_line(line(op, &self.children[child], range.start, range.end))
    }

    fn append_line(&mut self, entry: String) -> io::Result<()> {
        let mut text = if self.torn {
            String::from("\n")
        } else {
            String::new()
        };
        text.push_str(&entry);
        text.push('\n');
        if let Err(e) = self.store.append(text.as_bytes()) {
            self.torn = true;
            self.behind = true;
            return Err(e);
        }
        self.torn = false;
        self.appended += 1;
        Ok(())
    }

    /// Appends a mark (`true`) or clear of damaged `range` on child
    /// `child`. The line may sit in a volatile cache until
    /// [`Journal::sync`].
    pub(crate) fn append_damage(
        &mut self,
        damaged: bool,
        child: usize,
        range: &Range<u64>,
    ) -> io::Result<()> {
        let op = if damaged { DAMAGED } else { REPAIRED };
        self.append_line(line(op, &self.children[child], range.start, range.end))
    }

    /// Records the write-intent region `range` dirty (`true`) or clean.
    /// The line may sit in a volatile cache until [`Journal::sync`].
    pub(crate) fn append_intent(&mut self, dirty: bool, range: &Range<u64>) -> io::Result<()> {
        let key = ChildKey {
            name: String::new(),
            id: String::new(),
            known: true,
        };
        let op = if dirty { DIRTY } else { CLEAN };
        self.append_line(line(op, &key, range.start, range.end))
    }

    /// Makes the journal say what `live` says, durably: a sync of what was
    /// appended, or a rewrite when an append or a compaction failed since
    /// the last one.
    pub(crate) fn sync(&mut self, live: Live<'_>) -> io::Result<()> {
        if self.behind {
            return self.compact(live);
        }
        // After a failed sync the appended lines may be lost (the kernel
        // may drop what it could not write): the next sync rewrites them.
        self.store.sync().inspect_err(|_| self.behind = true)
    }

    /// Compacts the journal from `live` when an append or a compaction
    /// failed before, or when the lines appended since the last compaction
    /// outnumber twice the live ranges by [`COMPACT_SLACK`].
    pub(crate) fn catch_up(&mut self, live: Live<'_>) -> io::Result<()> {
        if self.behind || self.appended > 2 * live.len() + COMPACT_SLACK {
            self.compact(live)?;
        }
        Ok(())
    }

    /// Rewrites the journal as the marks of `live`, durably.
    fn compact(&mut self, live: Live<'_>) -> io::Result<()> {
        self.behind = true;
        let mut out = String::new();
        for (op, sets) in [(STALE, live.stale), (DAMAGED, live.damaged)] {
            for (child, set) in self.children.iter().zip(sets) {
                for (s, e) in &set.ranges {
                    out.push_str(&line(op, child, *s, *e));
                    out.push('\n');
                }
            }
        }
        let intent = ChildKey {
            name: String::new(),
            id: String::new(),
            known: true,
        };
        for (s, e) in &live.dirty.ranges {
            out.push_str(&line(DIRTY, &intent, *s, *e));
            out.push('\n');
        }
        self.store.replace(out.as_bytes())?;
        self.appended = 0;
        self.torn = false;
        self.behind = false;
        Ok(())
    }

    /// Lines appended since the last compaction.
    #[cfg(test)]
    pub(crate) fn appended(&self) -> usize {
        self.appended
    }
}

/// `children`, each whose identity is not known taking the one the last
/// of `entries` of its name gives, if no known child has that one.
fn recorded_identities(children: &[ChildKey], entries: &[Entry]) -> Vec<ChildKey> {
    let mut children = children.to_vec();
    let known: Vec<String> = children
        .iter()
        .filter(|c| c.known)
        .map(|c| c.id.clone())
        .collect();
    for c in children.iter_mut().filter(|c| !c.known) {
        let recorded = entries
            .iter()
            .rev()
            .find(|e| e.child == c.name && !e.id.is_empty() && ![DIRTY, CLEAN].contains(&e.op));
        if let Some(e) = recorded.filter(|e| !known.contains(&e.id)) {
            c.id = e.id.clone();
        }
    }
    children
}

fn line(op: char, child: &ChildKey, start: u64, end: u64) -> String {
    let entry = Entry {
        op,
        child: child.name.clone(),
        id: child.id.clone(),
        start,
        end,
    };
    serde_json::to_string(&entry).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[Range<u64>]) -> RangeSet {
        let mut s = RangeSet::default();
        for r in ranges {
            s.insert(r.clone());
        }
        s
    }

    #[test]
    fn the_byte_count_follows_random_edits() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(8);
        let mut s = RangeSet::default();
        let mut naive = vec![false; 2000];
        for _ in 0..5000 {
            let a = rng.random_range(0..2000u64);
            let b = rng.random_range(a..=(a + 80).min(2000));
            let add = rng.random_bool(0.5);
            if add {
                s.insert(a..b);
            } else {
                s.remove(a..b);
            }
            naive[a as usize..b as usize].fill(add);
            let want = naive.iter().filter(|&&x| x).count() as u64;
            assert_eq!(s.bytes(), want);
            let listed: u64 = s.within(0..2000).iter().map(|r| r.end - r.start).sum();
            assert_eq!(listed, want);
        }
    }

    #[test]
    fn ranges_merge_and_split() {
        let mut s = set(&[0..10, 20..30, 10..15]);
        assert_eq!(s.within(0..100), vec![0..15, 20..30]);
        s.insert(14..21);
        assert_eq!(s.within(0..100), vec![0..30]);
        s.remove(5..8);
        assert_eq!(s.within(0..100), vec![0..5, 8..30]);
        assert_eq!(s.bytes(), 27);
        assert!(s.overlaps(4..5) && !s.overlaps(5..8) && s.overlaps(7..9));
        assert_eq!(s.within(3..9), vec![3..5, 8..9]);
        s.remove(0..100);
        assert!(s.is_empty());
    }

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
        let (mut j, mut maps) =
            Journal::open(Box::new(FileStore::new(&path)), &names).expect("open");
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
        let (mut j, mut maps) =
            Journal::open(Box::new(FileStore::new(&path)), &names).expect("reopen");
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
}
