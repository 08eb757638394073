//! The config file's file children whose files hold nothing known of the
//! volume at start: missing (deleted, or a disk not mounted, so the path
//! fell on an empty directory) or without the volume's mark (replaced,
//! restored from a `cp` copy, another volume's).
//!
//! On a first start every file is new and that is how children are made.
//! Once the server has the volume's journal, such a file served as it is
//! reads zeroes or other data where the volume holds data: a `fifo` volume
//! reads it alone, and two such files agree with each other and outvote
//! the one that holds the data. So while another child's file carries the
//! mark, each is marked stale over the whole volume and copied before it
//! is read; and when fewer than `vote_threshold` children would be left to
//! copy from, the start is refused before anything is created. Such a file
//! is marked as the volume's only once it is journaled stale: a start that
//! failed in between would otherwise have left it "ours" for the next.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use quorum_backends::{ChildSource, FileOrigin};
use quorum_core::{ChildState, Event, EventSink, Volume};

/// The stale-map journal of `volume` under `data_dir`: the server wrote to
/// the volume when it exists.
pub fn journal_path(data_dir: &Path, volume: &str) -> PathBuf {
    data_dir.join("stale").join(format!("{volume}.jsonl"))
}

/// What the start learned of the config file's children's files.
#[derive(Debug, Default)]
pub struct Origins {
    /// The children whose files are missing or not the volume's.
    unknown: Vec<(String, FileOrigin)>,
    /// How many children's files carry the volume's mark.
    ours: usize,
    /// How many children may hold the data though nothing can be told of
    /// them: remotes, devices, files where no extended attribute is kept.
    opaque: usize,
}

impl Origins {
    /// Notes where the file of `child` comes from; call it before the child
    /// is opened (which creates a missing file). A child added at run time
    /// (not `from_config`) is never created again, and its file is refused
    /// unless empty or the volume's: only an empty one, which it would take
    /// as new, is noted.
    pub fn survey(&mut self, child: &str, source: &ChildSource<'_>, from_config: bool) {
        match source.file_origin() {
            FileOrigin::Missing | FileOrigin::Foreign if !from_config => {}
            FileOrigin::Ours => self.ours += 1,
            origin @ (FileOrigin::Missing | FileOrigin::Empty | FileOrigin::Foreign) => {
                self.unknown.push((child.to_owned(), origin));
            }
            FileOrigin::Unknown => self.opaque += 1,
        }
    }

    /// Whether the children noted must be copied before they are read:
    /// the server wrote to the volume before (`known`: it has its journal)
    /// and another child holds the data, its file carrying the mark or
    /// nothing being told of it (a remote). When no child's file carries
    /// the mark and none is opaque, the volume was renamed, or its files
    /// were made before marks: they are taken as they are.
    fn apply(&self, known: bool) -> bool {
        known && self.ours + self.opaque > 0 && !self.unknown.is_empty()
    }

    /// Whether every file noted is missing or empty: none holds anything
    /// (a file without the mark may, when the volume was renamed or its
    /// files made before marks).
    fn lost(&self) -> bool {
        self.unknown
            .iter()
            .all(|(_, o)| matches!(o, FileOrigin::Missing | FileOrigin::Empty))
    }

    /// Whether the file of `child` is to be opened unmarked
    /// ([`quorum_backends::open_unmarked`]) and marked once [`Origins::mark`]
    /// has journaled it stale.
    pub fn defers_mark(&self, child: &str, known: bool) -> bool {
        self.apply(known) && self.unknown.iter().any(|(c, _)| c == child)
    }

    /// Refuses the start when fewer than `threshold` of the `children`
    /// would be left to copy from, or none: every file missing or empty on
    /// a server that wrote to the volume (its journal is `journal`).
    ///
    /// # Errors
    /// One line naming the children and what to do.
    pub fn check(
        &self,
        volume: &str,
        journal: &Path,
        children: usize,
        threshold: usize,
    ) -> anyhow::Result<()> {
        let known = journal.exists();
        let left = children - self.unknown.len();
        let lost = known && !self.unknown.is_empty() && self.lost();
        if !(self.apply(known) || lost) || left >= threshold {
            return Ok(());
        }
        let names: Vec<&str> = self.unknown.iter().map(|(c, _)| c.as_str()).collect();
        let names = names.join(", ");
        if left == 0 {
            return Err(anyhow!(
                "volume {volume:?}: the files of children {names} are missing or empty, and no child is left holding its data: mount the disk that holds them, or restore them; to start the volume empty instead, delete {}",
                journal.display()
            ));
        }
        Err(anyhow!(
            "volume {volume:?}: the files of children {names} are missing, empty or not this volume's (replaced or restored from a copy), so only {left} of {children} children hold its data, fewer than vote_threshold {threshold}: restore their files, or lower vote_threshold to copy from the others"
        ))
    }

    /// Marks each child noted stale over the whole `volume`, with a warning
    /// and `CHILD_STATE_CHANGE` healthy to stale.
    ///
    /// # Errors
    /// A stale mark that cannot be journaled.
    pub fn mark(&self, volume: &Volume, known: bool, sink: &dyn EventSink) -> anyhow::Result<()> {
        if !self.apply(known) {
            return Ok(());
        }
        let name = volume.name();
        for (child, origin) in &self.unknown {
            let why = match origin {
                FileOrigin::Missing => "the child's file was missing and was created empty",
                FileOrigin::Empty => "the child's file was empty",
                _ => {
                    "the child's file does not carry this volume's mark (replaced, restored from a copy, or another volume's)"
                }
            };
            tracing::warn!(volume = %name, child = %child, "{why}: it is stale over the whole volume until the resync has copied it");
            let everything = 0..volume.size();
            volume
                .mark_stale(child, std::slice::from_ref(&everything))
                .map_err(|e| {
                    anyhow!("volume {name:?}, child {child:?}: cannot mark it stale: {e}")
                })?;
            sink.emit(
                name,
                Event::ChildStateChange {
                    child: child.clone(),
                    from: ChildState::Healthy,
                    to: ChildState::Stale,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Surveys the config file children `files` (name, file or none) of a
    /// volume whose journal is there.
    fn surveyed(dir: &Path, files: &[(&str, Option<&[u8]>)]) -> Origins {
        let options = BTreeMap::new();
        let mut found = Origins::default();
        for (name, bytes) in files {
            let uri = format!("{name}.img");
            if let Some(bytes) = bytes {
                std::fs::write(dir.join(&uri), bytes).expect("write a child file");
            }
            let source = ChildSource {
                uri: &uri,
                options: &options,
                base_dir: dir,
                size: Some(4096),
                faults: &[],
                mark: "vm@1",
                confine: None,
                create: true,
            };
            found.survey(name, &source, true);
        }
        found
    }

    #[test]
    fn every_file_gone_is_refused_but_unmarked_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("vm.jsonl");
        std::fs::write(&journal, b"").expect("journal");
        let gone = surveyed(dir.path(), &[("a", None), ("b", Some(b""))]);
        let err = gone.check("vm", &journal, 2, 1).expect_err("nothing left");
        let err = err.to_string();
        assert!(
            err.contains("children a, b are missing or empty")
                && err.contains(&journal.display().to_string()),
            "{err}"
        );
        // A file without the mark may hold the data (a renamed volume, a
        // file made before marks): taken as it is.
        let unmarked = surveyed(dir.path(), &[("c", None), ("d", Some(&[7u8; 4096]))]);
        unmarked
            .check("vm", &journal, 2, 2)
            .expect("nothing to tell");
        assert!(!unmarked.defers_mark("c", true));
        // No journal: a first start.
        let first = surveyed(dir.path(), &[("e", None), ("f", None)]);
        first
            .check("vm", &dir.path().join("none.jsonl"), 2, 1)
            .expect("a first start");
    }
}
