//! Stale ranges: what each child missed, like md's write-intent bitmap or
//! ZFS's dirty time log.
//!
//! A write that succeeds at the threshold while failing on some children
//! records its range as stale on those children. A stale range is never
//! served from that child (quorum leaves it out of the vote, fifo skips the
//! child) until a resync has copied the voted data onto it, or a later write
//! has succeeded on it. The maps survive a crash: every change is appended
//! to a journal (one JSON line per mark or clear) before the request that
//! caused it is answered, and the journal is replayed and compacted when the
//! volume opens.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A set of byte ranges, kept merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
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
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
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
            if s < range.start {
                self.ranges.insert(s, range.start);
            }
            if e > range.end {
                self.ranges.insert(range.end, e);
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

    /// The first part of the set at or after `at`.
    pub fn first_from(&self, at: u64) -> Option<Range<u64>> {
        if let Some((s, e)) = self.ranges.range(..=at).next_back() {
            if *e > at {
                return Some(at.max(*s)..*e);
            }
        }
        self.ranges.range(at..).next().map(|(s, e)| *s..*e)
    }

    /// Bytes in the set.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The journal of the stale maps of one volume.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

/// One journal line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    op: char,
    child: String,
    start: u64,
    end: u64,
}

impl Journal {
    /// Replays the journal at `path` (missing means empty) into one set per
    /// child name, rewrites it compacted, and opens it for appending. A torn
    /// last line is skipped.
    pub(crate) fn open(path: &Path, children: &[String]) -> io::Result<(Journal, Vec<RangeSet>)> {
        let mut sets = vec![RangeSet::default(); children.len()];
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line?;
                    let Ok(Entry {
                        op,
                        child,
                        start,
                        end,
                    }) = serde_json::from_str::<Entry>(&line)
                    else {
                        tracing::warn!(file = %path.display(), "skipping an unreadable stale-map line");
                        continue;
                    };
                    let Some(i) = children.iter().position(|c| *c == child) else {
                        continue;
                    };
                    match op {
                        '+' => sets[i].insert(start..end),
                        _ => sets[i].remove(start..end),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut out = io::BufWriter::new(File::create(&tmp)?);
            for (child, set) in children.iter().zip(&sets) {
                for (s, e) in &set.ranges {
                    writeln!(out, "{}", line('+', child, *s, *e))?;
                }
            }
            out.into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_all()?;
        }
        fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((
            Journal {
                path: path.to_owned(),
                file,
            },
            sets,
        ))
    }

    /// Appends a mark (`+`) or clear (`-`) of `range` on `child`.
    pub(crate) fn append(&mut self, op: char, child: &str, range: &Range<u64>) {
        let text = format!("{}\n", line(op, child, range.start, range.end));
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::error!(file = %self.path.display(), error = %e, "cannot record a stale range");
        }
    }
}

fn line(op: char, child: &str, start: u64, end: u64) -> String {
    let entry = Entry {
        op,
        child: child.to_owned(),
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

    #[test]
    fn the_journal_replays_and_compacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stale/vm.jsonl");
        let names = vec!["a".to_string(), "b \"quoted\"".to_string()];
        let (mut j, sets) = Journal::open(&path, &names).expect("open");
        assert!(sets.iter().all(RangeSet::is_empty));
        j.append('+', "a", &(0..100));
        j.append('+', "b \"quoted\"", &(50..60));
        j.append('-', "a", &(10..20));
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).expect("file");
        f.write_all(b"{\"op\":\"+\",\"chi").expect("torn");
        let (_, sets) = Journal::open(&path, &names).expect("reopen");
        assert_eq!(sets[0].within(0..1000), vec![0..10, 20..100]);
        assert_eq!(sets[1].within(0..1000), vec![50..60]);
        let lines = fs::read_to_string(&path).expect("read").lines().count();
        assert_eq!(lines, 3, "compacted");
    }
}
