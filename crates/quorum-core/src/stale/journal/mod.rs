//! The journal of a volume's stale maps, damaged ranges and write-intent
//! regions: one JSON line per change, replayed and compacted.

use std::fmt;
use std::io;
use std::ops::Range;

use super::{JournalStore, RangeSet};

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
                for r in set.iter() {
                    out.push_str(&line(op, child, r.start, r.end));
                    out.push('\n');
                }
            }
        }
        let intent = ChildKey {
            name: String::new(),
            id: String::new(),
            known: true,
        };
        for r in live.dirty.iter() {
            out.push_str(&line(DIRTY, &intent, r.start, r.end));
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
mod tests;
