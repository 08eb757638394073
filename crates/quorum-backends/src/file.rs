//! `file`: a child kept in a local file (or block device).
//!
//! Positional I/O only (`pread`/`pwrite`: no shared seek position, so
//! requests run in parallel), sparse creation, `fdatasync` on flush, hole
//! punching for write-zeroes and discard, block status from
//! `SEEK_DATA`/`SEEK_HOLE`, and uncached writes (`RWF_DONTCACHE`) for a
//! resync's copies.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use quorum_core::{Backend, BackendError, Extent};
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::{Errno, ReadWriteFlags, preadv2};

use crate::OpenError;
use crate::lock::Exclusive;

/// Write-zeroes and discard fall back to writing zeros in pieces of this
/// size where the filesystem cannot punch holes.
const ZERO_CHUNK: usize = 1 << 20;

/// A copy ([`Backend::write_copy`]) is written in pieces of this size, so
/// that the write-out of one overlaps the copying of the next, and a client
/// write of the same file waits for one piece at most (a write holds the
/// file's lock).
const COPY_PIECE: usize = 1 << 20;

/// `RWF_DONTCACHE` (Linux 6.14, `include/uapi/linux/fs.h`): a write through
/// the page cache whose write-out starts at once and whose pages are
/// dropped once written out. Not in rustix yet.
const RWF_DONTCACHE: u32 = 0x80;

/// A child in a local file.
#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
    file: File,
    size: u64,
    /// Whether it is a block device (a disk or a partition named in the
    /// config): it has no holes to find, and its identity is the device.
    device: bool,
    /// Whether the file system reads without blocking when asked
    /// (`RWF_NOWAIT`); cleared at its first refusal (tmpfs, for one).
    nowait: AtomicBool,
    /// Whether copies go uncached: cleared for good the first time the
    /// kernel or the file system says it cannot.
    uncached: AtomicBool,
    /// This server's exclusive hold on the file (see [`crate::lock`]).
    _lock: Exclusive,
}

impl FileBackend {
    /// Opens `path` read-write. A file that does not exist is created sparse
    /// with `size` bytes; an existing one must have `size` bytes when a size
    /// is given.
    pub fn open(path: &Path, size: Option<u64>) -> Result<FileBackend, OpenError> {
        let at = |source| OpenError::File {
            path: path.to_owned(),
            source,
        };
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let size = size.ok_or_else(|| OpenError::NoSize {
                    path: path.to_owned(),
                })?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(at)?;
                file.set_len(size).map_err(at)?;
                file
            }
            Err(e) => return Err(at(e)),
        };
        let lock = take_lock(&file, path)?;
        let device = file.metadata().map_err(at)?.file_type().is_block_device();
        // A block device's metadata says 0 bytes; its end says its size.
        let actual = rustix::fs::seek(&file, SeekFrom::End(0)).map_err(|e| at(e.into()))?;
        if let Some(expected) = size {
            if actual != expected {
                return Err(OpenError::SizeMismatch {
                    path: path.to_owned(),
                    actual,
                    expected,
                });
            }
        }
        Ok(FileBackend {
            path: path.to_owned(),
            file,
            size: actual,
            device,
            nowait: AtomicBool::new(true),
            uncached: AtomicBool::new(true),
            _lock: lock,
        })
    }

    /// Opens a child the config file names (trusted) as [`FileBackend::open`]
    /// does, and marks it as this volume's (`mark`), so that it can be added
    /// back at run time after a removal. The mark is best effort: a
    /// filesystem without user extended attributes, or a device node, keeps
    /// none.
    pub fn open_marked(
        path: &Path,
        size: Option<u64>,
        mark: &str,
    ) -> Result<FileBackend, OpenError> {
        let backend = FileBackend::open(path, size)?;
        if read_mark(&backend.file).as_deref() != Some(mark) {
            let _ = set_mark(&backend.file, mark);
        }
        Ok(backend)
    }

    /// Opens a child added at run time: `relative` beneath the directory
    /// `root` (see [`crate::Confinement::file_path`]), resolved by the kernel
    /// without leaving the root and without following any symlink on the
    /// way (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so that
    /// no race between a check and the open can lead elsewhere. A missing
    /// file is created sparse with `size` and marked when `create` is set;
    /// an existing one is used only if it is a regular file that is empty
    /// (it is then sized and marked) or carries `mark`, and then only at the
    /// volume's size. No error says how large a file is.
    pub fn open_confined(
        root: &Path,
        relative: &Path,
        size: Option<u64>,
        mark: &str,
        create: bool,
    ) -> Result<FileBackend, OpenError> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let path = root.join(relative);
        let at = |source| OpenError::File {
            path: path.clone(),
            source,
        };
        let forbidden = |why: &str| OpenError::Forbidden(format!("{}: {why}", path.display()));
        let size = size.ok_or_else(|| OpenError::NoSize { path: path.clone() })?;
        let dir = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| at(e.into()))?;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let open = |flags: OFlags| {
            // A mode is given only with O_CREAT (openat2 refuses one otherwise).
            let mode = if flags.contains(OFlags::CREATE) {
                Mode::from(0o644)
            } else {
                Mode::empty()
            };
            rustix::fs::openat2(
                &dir,
                relative,
                flags | OFlags::RDWR | OFlags::CLOEXEC,
                mode,
                resolve,
            )
        };
        let refused = |e: Errno| match e {
            Errno::LOOP | Errno::XDEV => forbidden("a symbolic link or a path out of the root"),
            Errno::NOSYS => {
                forbidden("this kernel cannot open a file beneath a directory safely (openat2)")
            }
            Errno::NOENT | Errno::NOTDIR => forbidden("no such directory under the root"),
            e => at(e.into()),
        };
        let (file, lock) = match open(OFlags::empty()) {
            Ok(fd) => {
                let file = File::from(fd);
                let lock = take_lock(&file, &path)?;
                let meta = file.metadata().map_err(at)?;
                let ours = read_mark(&file).as_deref() == Some(mark);
                if !meta.is_file() || (meta.len() != 0 && !ours) {
                    use std::os::unix::fs::MetadataExt;
                    return Err(OpenError::NotOurs {
                        place: path.display().to_string(),
                        identity: file_identity(meta.dev(), meta.ino()),
                    });
                }
                if meta.len() == 0 {
                    use std::os::unix::fs::MetadataExt;
                    if meta.nlink() != 1 {
                        return Err(forbidden("an empty file with other names (hard links)"));
                    }
                    set_mark(&file, mark).map_err(at)?;
                    file.set_len(size).map_err(at)?;
                } else if meta.len() != size {
                    return Err(OpenError::WrongSize {
                        place: path.display().to_string(),
                    });
                }
                (file, lock)
            }
            Err(Errno::NOENT) if create => {
                let file = File::from(open(OFlags::CREATE | OFlags::EXCL).map_err(refused)?);
                let lock = take_lock(&file, &path)?;
                let made = set_mark(&file, mark).and_then(|()| file.set_len(size));
                if let Err(e) = made {
                    let _ = rustix::fs::unlinkat(&dir, relative, rustix::fs::AtFlags::empty());
                    return Err(at(e));
                }
                (file, lock)
            }
            Err(Errno::NOENT) => {
                return Err(forbidden(
                    "missing (a child added at run time is not created again at start)",
                ));
            }
            Err(e) => return Err(refused(e)),
        };
        Ok(FileBackend {
            path,
            file,
            size,
            device: false,
            nowait: AtomicBool::new(true),
            uncached: AtomicBool::new(true),
            _lock: lock,
        })
    }

    fn check(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        BackendError::check_range(offset, length, self.size)
    }

    /// Makes the range read as zero by punching a hole
    /// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`), which frees its
    /// blocks; writes zeroes where the file system cannot punch.
    fn punch_hole(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.check(offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, punch, offset, length) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                self.write_zeroes_by_hand(offset, length)
            }
            Err(e) => Err(BackendError::Io(e.into())),
        }
    }

    fn write_zeroes_by_hand(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        let zeros = vec![0u8; ZERO_CHUNK.min(length as usize)];
        let mut at = offset;
        let end = offset + length;
        while at < end {
            let n = ((end - at) as usize).min(zeros.len());
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Writes `buf` at `offset` with `RWF_DONTCACHE`; `Ok(false)` when the
    /// kernel or the file system cannot (nothing was written then).
    fn write_uncached(&self, mut buf: &[u8], mut offset: u64) -> Result<bool, BackendError> {
        let flags = ReadWriteFlags::from_bits_retain(RWF_DONTCACHE);
        while !buf.is_empty() {
            match rustix::io::pwritev2(&self.file, &[io::IoSlice::new(buf)], offset, flags) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(Errno::INTR) => {}
                // Refused before anything was written: an unknown flag, a
                // file system without uncached writes, or no pwritev2.
                Err(Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(false),
                Err(e) => return Err(BackendError::Io(e.into())),
            }
        }
        Ok(true)
    }

    /// The next data or hole boundary at or after `from`, or `None` past the
    /// last data (`ENXIO`).
    fn seek(&self, to: SeekFrom) -> Result<Option<u64>, BackendError> {
        match rustix::fs::seek(&self.file, to) {
            Ok(at) => Ok(Some(at)),
            Err(Errno::NXIO) => Ok(None),
            Err(e) => Err(BackendError::Io(e.into())),
        }
    }
}

/// The exclusive lock of a child's file, or why another process keeps it.
fn take_lock(file: &File, path: &Path) -> Result<Exclusive, OpenError> {
    Exclusive::take(file).map_err(|source| OpenError::Locked {
        path: path.to_owned(),
        source,
    })
}

/// The identity of the file with this device and inode.
pub(crate) fn file_identity(dev: u64, ino: u64) -> String {
    format!("file:{dev}:{ino}")
}

/// The volume mark of `file`, if it has one.
fn read_mark(file: &File) -> Option<String> {
    let mut value = [0u8; 4096];
    let n = rustix::fs::fgetxattr(file, crate::confine::MARK_ATTRIBUTE, &mut value[..]).ok()?;
    String::from_utf8(value[..n].to_vec()).ok()
}

/// Where the file at `path` (symlinks followed) comes from, for a volume
/// whose mark is `mark` (see [`crate::FileOrigin`]). A device node or a
/// file system that keeps no extended attributes carries no mark ever
/// (the kernel keeps `user.` attributes on regular files only): nothing
/// can be told from it.
pub(crate) fn path_origin(path: &Path, mark: &str) -> crate::FileOrigin {
    use crate::FileOrigin;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileOrigin::Missing,
        Err(_) => return FileOrigin::Unknown,
    };
    if !meta.is_file() {
        return FileOrigin::Unknown;
    }
    let mut value = [0u8; 4096];
    let carried = match rustix::fs::getxattr(path, crate::confine::MARK_ATTRIBUTE, &mut value[..]) {
        Ok(n) => value[..n] == *mark.as_bytes(),
        Err(rustix::io::Errno::NODATA) => false,
        Err(_) => return FileOrigin::Unknown,
    };
    match (carried, meta.len()) {
        (_, 0) => FileOrigin::Empty,
        (true, _) => FileOrigin::Ours,
        (false, _) => FileOrigin::Foreign,
    }
}

/// Marks the file at `path` as the volume's whose mark is `mark`.
///
/// # Errors
/// The file cannot be reached or keeps no extended attributes.
pub(crate) fn set_path_mark(path: &Path, mark: &str) -> io::Result<()> {
    rustix::fs::setxattr(
        path,
        crate::confine::MARK_ATTRIBUTE,
        mark.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(())
}

/// Marks `file` as the volume's whose mark is `mark`.
fn set_mark(file: &File, mark: &str) -> io::Result<()> {
    rustix::fs::fsetxattr(
        file,
        crate::confine::MARK_ATTRIBUTE,
        mark.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(io::Error::from)
}

impl fmt::Display for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file({})", self.path.display())
    }
}

impl Backend for FileBackend {
    /// The file's device and inode: a hard link, a symlink or another
    /// spelling of the same path is the same file; for a block device, the
    /// device itself, whatever node names it.
    fn identity(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        match self.file.metadata() {
            Ok(m) if self.device => format!("device:{}", m.rdev()),
            Ok(m) => file_identity(m.dev(), m.ino()),
            Err(_) => self.to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)?;
        Ok(())
    }

    /// `preadv2` with `RWF_NOWAIT`: the kernel reads from the page cache
    /// and refuses (`EAGAIN`) rather than wait for the disk or a lock.
    fn read_now(&self, buf: &mut [u8], offset: u64) -> bool {
        if !self.nowait.load(Ordering::Relaxed) || self.check(offset, buf.len() as u64).is_err() {
            return false;
        }
        let want = buf.len();
        match preadv2(
            &self.file,
            &mut [IoSliceMut::new(buf)],
            offset,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => n == want,
            Err(Errno::OPNOTSUPP) => {
                self.nowait.store(false, Ordering::Relaxed);
                false
            }
            Err(_) => false,
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)?;
        Ok(())
    }

    /// In pieces of [`COPY_PIECE`], each uncached (`RWF_DONTCACHE`) where
    /// the kernel and the file system allow it: a resync neither fills the
    /// page cache with a copy that nobody reads nor leaves its whole
    /// write-out to the flush that follows. A plain write elsewhere.
    fn write_copy(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        for (i, piece) in buf.chunks(COPY_PIECE).enumerate() {
            let at = offset + (i * COPY_PIECE) as u64;
            if self.uncached.load(Ordering::Relaxed) && self.write_uncached(piece, at)? {
                continue;
            }
            self.uncached.store(false, Ordering::Relaxed);
            self.file.write_all_at(piece, at)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.punch_hole(offset, length)
    }

    /// A hole, as write-zeroes makes: the file system frees the blocks.
    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.punch_hole(offset, length)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Two seeks an extent pair, stopping once `limit` extents are
    /// finished (the one after them has begun).
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.check(offset, length)?;
        if self.device {
            return Ok(vec![Extent {
                offset,
                length,
                zero: false,
            }]);
        }
        let end = offset + length;
        let mut extents: Vec<Extent> = Vec::new();
        let mut push = |start: u64, stop: u64, zero: bool| {
            if stop > start {
                Extent::append(
                    &mut extents,
                    Extent {
                        offset: start,
                        length: stop - start,
                        zero,
                    },
                );
            }
            extents.len() > limit
        };
        let mut at = offset;
        while at < end {
            let data = self.seek(SeekFrom::Data(at))?.unwrap_or(end).min(end);
            if push(at, data, true) || data >= end {
                break;
            }
            let hole = self.seek(SeekFrom::Hole(data))?.unwrap_or(end).min(end);
            if push(data, hole, false) {
                break;
            }
            at = hole;
        }
        extents.truncate(limit);
        Ok(extents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn temp(size: u64) -> (tempfile::TempDir, FileBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FileBackend::open(&dir.path().join("child.img"), Some(size)).expect("open");
        (dir, backend)
    }

    #[test]
    fn conforms() {
        let (_dir, backend) = temp(conformance::SIZE);
        conformance::run(&backend);
    }

    /// Cached data is read without a worker where the file system allows
    /// `RWF_NOWAIT` (not tmpfs, which refuses it once and is not asked
    /// again); out of range is never read.
    #[test]
    fn read_now_reads_cached_data_where_the_file_system_can() {
        let (dir, backend) = temp(1 << 20);
        let data: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
        backend.write_at(&data, 4096).expect("write");
        /// `TMPFS_MAGIC` of `linux/magic.h`.
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        let tmpfs = rustix::fs::statfs(dir.path()).expect("statfs").f_type == TMPFS_MAGIC;
        let mut buf = vec![0u8; 8192];
        assert_eq!(backend.read_now(&mut buf, 4096), !tmpfs, "tmpfs: {tmpfs}");
        if !tmpfs {
            assert_eq!(buf, data);
        }
        assert_eq!(backend.nowait.load(Ordering::Relaxed), !tmpfs);
        assert!(
            !backend.read_now(&mut buf, (1 << 20) - 4096),
            "past the end"
        );
    }

    /// tmpfs has no uncached writes (its pages are the storage): copies
    /// fall back to plain writes, for good, and read back all the same.
    #[test]
    fn copies_fall_back_to_plain_writes_where_uncached_ones_are_refused() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm (tmpfs)");
        let backend = FileBackend::open(&dir.path().join("child.img"), Some(conformance::SIZE))
            .expect("open");
        let data: Vec<u8> = (0..COPY_PIECE + 5000).map(|i| (i % 251) as u8).collect();
        backend.write_copy(&data, 7).expect("copy");
        assert!(
            !backend.uncached.load(Ordering::Relaxed),
            "tmpfs took RWF_DONTCACHE"
        );
        let mut back = vec![0u8; data.len()];
        backend.read_at(&mut back, 7).expect("read");
        assert!(back == data, "the copy did not read back");
        backend.write_zeroes(0, conformance::SIZE).expect("zero");
        conformance::run(&backend);
    }

    #[test]
    fn creation_is_sparse_and_sizes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.img");
        let b = FileBackend::open(&path, Some(1 << 30)).expect("create");
        assert_eq!(b.size().expect("size"), 1 << 30);
        let meta = std::fs::metadata(&path).expect("meta");
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
            "not sparse"
        );
        drop(b);
        assert!(matches!(
            FileBackend::open(&path, Some(1 << 20)),
            Err(OpenError::SizeMismatch { .. })
        ));
        assert_eq!(
            FileBackend::open(&path, None)
                .expect("no size")
                .size()
                .expect("size"),
            1 << 30
        );
        assert!(matches!(
            FileBackend::open(&dir.path().join("missing.img"), None),
            Err(OpenError::NoSize { .. })
        ));
    }

    #[test]
    fn write_zeroes_and_discard_punch_a_hole() {
        type Zero = fn(&FileBackend, u64, u64) -> Result<(), BackendError>;
        let ways: [(&str, Zero); 2] = [
            ("write_zeroes", <FileBackend as Backend>::write_zeroes),
            ("discard", <FileBackend as Backend>::discard),
        ];
        for (what, zero) in ways {
            let (dir, b) = temp(1 << 20);
            b.write_at(&vec![7u8; 1 << 20], 0).expect("fill");
            b.flush().expect("flush");
            zero(&b, 256 << 10, 256 << 10).expect(what);
            let map = b.block_status(0, 1 << 20, 100).expect("status");
            assert_eq!(
                map,
                vec![
                    Extent {
                        offset: 0,
                        length: 256 << 10,
                        zero: false
                    },
                    Extent {
                        offset: 256 << 10,
                        length: 256 << 10,
                        zero: true
                    },
                    Extent {
                        offset: 512 << 10,
                        length: 512 << 10,
                        zero: false
                    },
                ],
                "{what}"
            );
            let meta = std::fs::metadata(dir.path().join("child.img")).expect("meta");
            assert!(
                std::os::unix::fs::MetadataExt::blocks(&meta) * 512 <= (768 << 10) + 8192,
                "{what} freed the blocks"
            );
        }
    }
}
