//! One owner per replica: an exclusive `flock` on every file child and on
//! the server's `data_dir`, as QEMU's `file.locking` does for its images,
//! so that a second server cannot open storage that a running one holds.
//!
//! Within one process a file may be opened more than once (a child added
//! back, two names of one file that the caller then refuses by identity):
//! those opens share one lock, counted here, and the file is unlocked when
//! the last of them is dropped. Between processes the lock is exclusive,
//! and the refusal names the holder, found in `/proc/locks`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{LazyLock, Mutex, PoisonError};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

/// A file's device and inode.
type Key = (u64, u64);

/// The locks this process holds: the locked descriptor and how many
/// [`Exclusive`] values share it. One mutex orders taking and releasing,
/// so that a release never races a new lock of the same file.
static HELD: LazyLock<Mutex<HashMap<Key, (File, usize)>>> = LazyLock::new(Mutex::default);

/// Why a file could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error("it is locked by another process{}", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Held {
        /// The holder, when `/proc/locks` names it.
        holder: Option<Holder>,
    },
    /// The lock could not be taken for another reason.
    #[error("cannot lock it: {0}")]
    Io(#[from] io::Error),
}

/// The process that holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Some(command) => write!(f, "pid {}, {command}", self.pid),
            None => write!(f, "pid {}", self.pid),
        }
    }
}

/// This process's share of the exclusive lock of one file; the file is
/// unlocked when the last share is dropped.
#[derive(Debug)]
pub struct Exclusive {
    key: Key,
}

impl Exclusive {
    /// Takes the exclusive lock of `file`'s inode for this process, or a
    /// share of it if this process holds it already. Never waits.
    ///
    /// A filesystem that cannot lock (`ENOLCK`, `EOPNOTSUPP`) leaves the
    /// file unlocked, with a warning, as QEMU's `locking=auto` does.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it.
    pub fn take(file: &File) -> Result<Exclusive, LockError> {
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, shares)) = held.get_mut(&key) {
            *shares += 1;
            return Ok(Exclusive { key });
        }
        // A descriptor of its own, so that the lock outlives the caller's.
        let locked = file.try_clone()?;
        match rustix::fs::flock(&locked, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(LockError::Held {
                    holder: holder(key),
                });
            }
            Err(Errno::NOLCK | Errno::OPNOTSUPP) => {
                tracing::warn!(
                    dev = key.0,
                    inode = key.1,
                    "this filesystem cannot lock files; a second server could open this one too"
                );
            }
            Err(e) => return Err(LockError::Io(e.into())),
        }
        held.insert(key, (locked, 1));
        Ok(Exclusive { key })
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, shares)) = held.get_mut(&self.key) {
            *shares -= 1;
            if *shares == 0 {
                // Closing the only descriptor of its open file releases it.
                held.remove(&self.key);
            }
        }
    }
}

/// The process that holds a `flock` on the inode `key`, from `/proc/locks`.
fn holder(key: Key) -> Option<Holder> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = text.lines().find_map(|line| locked_by(line, key))?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned());
    Some(Holder { pid, command })
}

/// The pid of a `/proc/locks` line that is a granted `FLOCK` on `key`:
/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`, the device as hex
/// `major:minor` (blocked waiters are marked `->` and skipped).
fn locked_by(line: &str, (dev, ino): Key) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, kind, _, _, pid, place, ..] = fields.as_slice() else {
        return None;
    };
    if *kind != "FLOCK" {
        return None;
    }
    let mut parts = place.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    let same = rustix::fs::major(dev) == major && rustix::fs::minor(dev) == minor && inode == ino;
    same.then(|| pid.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_name_the_holder() {
        let dev = rustix::fs::makedev(0xfd, 1);
        let line = "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF";
        assert_eq!(locked_by(line, (dev, 5678)), Some(1234));
        assert_eq!(locked_by(line, (dev, 5679)), None);
        let posix = "2: POSIX  ADVISORY  WRITE 99 fd:01:5678 0 EOF";
        assert_eq!(locked_by(posix, (dev, 5678)), None);
        let waiter = "1: -> FLOCK  ADVISORY  WRITE 77 fd:01:5678 0 EOF";
        assert_eq!(locked_by(waiter, (dev, 5678)), None);
    }

    #[test]
    fn one_process_shares_its_lock_and_releases_it_with_the_last_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let a = File::create(&path).expect("create");
        let b = File::open(&path).expect("open");
        let first = Exclusive::take(&a).expect("lock");
        let second = Exclusive::take(&b).expect("a second share in one process");
        drop(a);
        let other = File::open(&path).expect("open");
        assert!(
            matches!(
                rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive),
                Err(Errno::WOULDBLOCK)
            ),
            "the lock outlives the descriptor it was taken through"
        );
        drop(first);
        assert!(
            rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_err(),
            "still held by the second share"
        );
        drop(second);
        rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive)
            .expect("released with the last share");
    }
}
