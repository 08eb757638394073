//! Where a stale-map journal's bytes live.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
