//! Children for the quorum engine, each a [`quorum_core::Backend`].
//!
//! - [`file`]: a local file or block device.
//! - [`s3`]: an S3-compatible object store (MinIO, SeaweedFS, AWS).
//! - [`http`]: a volume on another quorum-server, through its HTTP API.
//! - [`faulty`]: a wrapper that injects errors, corruption and latency, for
//!   tests and for rehearsing failures.
//!
//! [`conformance`] is the behaviour every backend must show, as a test suite
//! to run on a fresh child of each kind.
//!
//! [`open`] turns a child's `uri` and options from the config into a
//! backend, so that the server needs to know nothing of the backends;
//! [`probe()`] looks at one the same way without changing anything (for
//! `quorum-server check`).

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorum_core::Backend;

pub mod confine;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod faulty;
pub mod file;
#[cfg(feature = "http")]
pub mod http;
pub mod lock;
pub mod probe;
#[cfg(feature = "s3")]
pub mod s3;
pub mod unopened;

pub use confine::Confinement;
pub use faulty::{FaultRule, Faulty};
pub use file::FileBackend;
#[cfg(feature = "http")]
pub use http::HttpBackend;
pub use probe::{Probe, probe};
#[cfg(feature = "s3")]
pub use s3::S3Backend;
pub use unopened::Unopened;

/// The uri schemes of this build, as errors list them.
const SCHEMES: &str = if cfg!(all(feature = "s3", feature = "http")) {
    "file paths, file://, s3://, http:// and https://"
} else if cfg!(feature = "s3") {
    "file paths, file:// and s3://"
} else if cfg!(feature = "http") {
    "file paths, file://, http:// and https://"
} else {
    "file paths and file://"
};

/// Where a child lives, as the config describes it.
#[derive(Debug, Clone, Copy)]
pub struct ChildSource<'a> {
    /// `file:///abs/path`, `file:rel/path`, or a plain path.
    pub uri: &'a str,
    /// Backend-specific options.
    pub options: &'a BTreeMap<String, String>,
    /// The directory relative paths are resolved against (the config's).
    pub base_dir: &'a Path,
    /// The volume's size, to create missing children with and to check
    /// existing ones against; `None` when the config gives no size.
    pub size: Option<u64>,
    /// Fault rules; when not empty the child is wrapped in [`Faulty`].
    pub faults: &'a [FaultRule],
    /// The mark of this volume's files ([`Confinement::mark`]): set on the
    /// files quorum creates, required on existing ones a confined child
    /// opens.
    pub mark: &'a str,
    /// The limits of a child added at run time; `None` for the config
    /// file's children, which are trusted.
    pub confine: Option<&'a Confinement>,
    /// Whether a missing confined file may be created (when it is added,
    /// not when the server starts again).
    pub create: bool,
}

/// Why a child could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The uri names a backend this build does not have.
    #[error("unsupported uri scheme {scheme:?} (this build supports {SCHEMES})")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// The uri cannot be used.
    #[error("bad uri {uri:?}: {problem}")]
    BadUri {
        /// The uri, without credentials.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An option has a bad value.
    #[error("option {option:?}: {problem}")]
    BadOption {
        /// The option's key.
        option: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A remote child could not be reached or did not fit.
    #[error("{uri}: {problem}")]
    Remote {
        /// The remote's uri, without credentials.
        uri: String,
        /// What went wrong.
        problem: String,
    },
    /// A remote child (S3 or http) gave no answer: the connection was
    /// refused or reset, the name did not resolve, or nothing answered in
    /// time. Unlike every other error it may go away by itself: the server
    /// starts without such a child (failed, and retried) when the others
    /// reach the volume's threshold.
    #[error("{uri}: {source}")]
    Unreachable {
        /// The remote's uri, without credentials.
        uri: String,
        /// What the attempt got: [`quorum_core::BackendError::Unavailable`]
        /// or [`quorum_core::BackendError::Timeout`].
        source: quorum_core::BackendError,
    },
    /// An option the backend does not know.
    #[error("unknown option {option:?} for a {backend} child")]
    UnknownOption {
        /// The option's key.
        option: String,
        /// The backend kind.
        backend: &'static str,
    },
    /// The file could not be opened or created.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process (a second server) holds the file's lock.
    #[error("{}: {source}; one server per child file", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
        /// Who holds it.
        source: lock::LockError,
    },
    /// The file does not exist and there is no size to create it with.
    #[error("{} does not exist, and the volume has no size to create it with", path.display())]
    NoSize {
        /// The file.
        path: PathBuf,
    },
    /// A run-time child outside `child_roots` or `allowed_endpoints`, or
    /// with an option that could send the server elsewhere.
    #[error("{0}")]
    Forbidden(String),
    /// A run-time child's existing file is not quorum's for this volume.
    #[error(
        "{place} exists and was not created by quorum for this volume (only an empty file or one of this volume's own can be used)"
    )]
    NotOurs {
        /// The file or store, as the child's uri names it.
        place: String,
        /// Its identity ([`quorum_core::Backend::identity`]), to name the
        /// child that uses it, if one does.
        identity: String,
    },
    /// A run-time child's existing file has another size than the volume.
    #[error("{place} is not of the volume's size")]
    WrongSize {
        /// The file or store.
        place: String,
    },
    /// The existing file's size differs from the volume's.
    #[error("{} has {actual} bytes but the volume has {expected}", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// The volume's size.
        expected: u64,
    },
    /// A fault rule is contradictory or does nothing.
    #[error("fault rule {index}: {problem}")]
    Fault {
        /// The rule's position, from 1.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl OpenError {
    /// The error of a remote child that gave no answer to `attempt`:
    /// [`OpenError::Unreachable`] when the attempt timed out or found
    /// nothing to talk to, else [`OpenError::Remote`] saying `attempt`
    /// failed with it.
    #[cfg(any(feature = "s3", feature = "http"))]
    fn remote(uri: &str, source: quorum_core::BackendError, attempt: &str) -> OpenError {
        use quorum_core::BackendError;
        match source {
            BackendError::Unavailable(_) | BackendError::Timeout(_) => OpenError::Unreachable {
                uri: uri.to_owned(),
                source,
            },
            other => OpenError::Remote {
                uri: uri.to_owned(),
                problem: if attempt.is_empty() {
                    other.to_string()
                } else {
                    format!("{attempt}: {other}")
                },
            },
        }
    }
}

/// What a file child's file says of where it comes from, before it is
/// opened ([`ChildSource::file_origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOrigin {
    /// Not a file child, or its file cannot be looked at.
    Unknown,
    /// The file is not there: [`open`] would create it empty.
    Missing,
    /// The file is empty (truncated, or made by `: > file`): it holds
    /// nothing of the volume, whatever mark it carries.
    Empty,
    /// The file carries another mark or none: it was replaced, restored
    /// from a copy, belongs to another volume, or was made before marks.
    Foreign,
    /// The file carries this volume's mark: quorum made or opened it.
    Ours,
}

impl ChildSource<'_> {
    /// Where a file child's file comes from (see [`FileOrigin`]).
    pub fn file_origin(&self) -> FileOrigin {
        if !matches!(scheme(self.uri), None | Some("file")) {
            return FileOrigin::Unknown;
        }
        let Ok(path) = file_path(self.uri) else {
            return FileOrigin::Unknown;
        };
        file::path_origin(&self.base_dir.join(path), self.mark)
    }

    /// Marks a file child's file as the volume's, as [`open`] does and
    /// [`open_unmarked`] does not; nothing for other children.
    ///
    /// # Errors
    /// The file cannot be reached or its file system keeps no extended
    /// attributes.
    pub fn mark_file(&self) -> std::io::Result<()> {
        if !matches!(scheme(self.uri), None | Some("file")) || self.confine.is_some() {
            return Ok(());
        }
        let path = file_path(self.uri).map_err(std::io::Error::other)?;
        file::set_path_mark(&self.base_dir.join(path), self.mark)
    }
}

/// Opens the child that `source` describes as [`open`] does, but leaves a
/// config file child's file unmarked: a file that holds nothing of the
/// volume yet is marked ([`ChildSource::mark_file`]) only once it is known
/// stale, so that a start that fails before that does not make it the
/// volume's for the next one.
pub fn open_unmarked(source: ChildSource<'_>) -> Result<Arc<dyn Backend>, OpenError> {
    open_with(source, false)
}

/// Opens the child that `source` describes.
pub fn open(source: ChildSource<'_>) -> Result<Arc<dyn Backend>, OpenError> {
    open_with(source, true)
}

/// [`open`], marking a config file child's file (`mark`) or not.
fn open_with(source: ChildSource<'_>, mark: bool) -> Result<Arc<dyn Backend>, OpenError> {
    for (i, rule) in source.faults.iter().enumerate() {
        rule.validate().map_err(|problem| OpenError::Fault {
            index: i + 1,
            problem,
        })?;
    }
    let backend: Arc<dyn Backend> = match scheme(source.uri) {
        None | Some("file") => {
            if let Some(option) = source.options.keys().next() {
                return Err(OpenError::UnknownOption {
                    option: option.clone(),
                    backend: "file",
                });
            }
            let path = source.base_dir.join(file_path(source.uri)?);
            Arc::new(match source.confine {
                Some(confine) => {
                    let (root, below) = confine.file_path(&path)?;
                    FileBackend::open_confined(
                        &root,
                        &below,
                        source.size,
                        source.mark,
                        source.create,
                    )?
                }
                None if mark => FileBackend::open_marked(&path, source.size, source.mark)?,
                None => FileBackend::open(&path, source.size)?,
            })
        }
        #[cfg(feature = "http")]
        Some("http" | "https") => {
            let opened = HttpBackend::open(source.uri, source.options, source.size, source.confine);
            Arc::new(opened.map_err(|e| quiet(e, source.confine))?)
        }
        #[cfg(feature = "s3")]
        Some("s3") => {
            let opened = S3Backend::open(
                source.uri,
                source.options,
                source.size,
                source.mark,
                source.confine,
                source.create,
            );
            Arc::new(opened.map_err(|e| quiet(e, source.confine))?)
        }
        Some(other) => {
            return Err(OpenError::UnsupportedScheme {
                scheme: other.to_owned(),
            });
        }
    };
    if source.faults.is_empty() {
        Ok(backend)
    } else {
        Ok(Arc::new(Faulty::new(backend, source.faults.to_vec())))
    }
}

#[cfg(any(feature = "s3", feature = "http"))]
/// A remote's failure to open as a confined child's caller may see it: what
/// failed, not what the remote answered (that goes to the server's log).
fn quiet(e: OpenError, confine: Option<&Confinement>) -> OpenError {
    match (e, confine) {
        (OpenError::Unreachable { uri, source }, Some(_)) => {
            tracing::warn!(%uri, error = %source, "a run-time child could not be reached");
            OpenError::Unreachable {
                uri,
                source: quorum_core::BackendError::Unavailable(
                    "it cannot be reached (the server's log says why)".into(),
                ),
            }
        }
        (OpenError::Remote { uri, problem }, Some(_)) => {
            tracing::warn!(%uri, %problem, "a run-time child could not be opened");
            OpenError::Remote {
                uri,
                problem: "it cannot be opened as a volume of this size (the server's log says why)"
                    .into(),
            }
        }
        (e, _) => e,
    }
}

/// A child's uri as logs and the API may show it: any `user:password@` of
/// the authority replaced by `***@`.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

/// The file of a file child's `uri` (a plain path or a `file:` uri), made
/// absolute against `base_dir` without resolving links (`.` parts
/// dropped, `..` kept): `None` for other children. Two children whose
/// files compare equal here are one file; the converse needs the files.
pub fn file_location(uri: &str, base_dir: &Path) -> Option<PathBuf> {
    if !matches!(scheme(uri), None | Some("file")) {
        return None;
    }
    let path = base_dir.join(file_path(uri).ok()?);
    std::path::absolute(path).ok()
}

/// The scheme of a uri (`file` of `file:///x`), or `None` for a plain path.
fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

/// The path of a file uri: `file:///abs` and `file://localhost/abs` give
/// `/abs`, `file:rel` gives `rel` (RFC 8089); another host is refused.
fn file_path(uri: &str) -> Result<&Path, OpenError> {
    let Some(rest) = uri.strip_prefix("file:") else {
        return Ok(Path::new(uri));
    };
    let Some(authority_and_path) = rest.strip_prefix("//") else {
        return Ok(Path::new(rest));
    };
    let slash = authority_and_path
        .find('/')
        .unwrap_or(authority_and_path.len());
    match &authority_and_path[..slash] {
        "" | "localhost" => Ok(Path::new(&authority_and_path[slash..])),
        _ => Err(OpenError::BadUri {
            uri: redact_uri(uri),
            problem: "a file uri names no host other than localhost (file:///path)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_uri("http://u:p@h:1/v1/volumes/x"),
            "http://***@h:1/v1/volumes/x"
        );
        assert_eq!(redact_uri("http://h:1/v1/a@b"), "http://h:1/v1/a@b");
        assert_eq!(redact_uri("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(redact_uri("a.img"), "a.img");
    }

    #[test]
    fn a_files_origin_is_told_by_its_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = BTreeMap::new();
        let source = |uri, mark| ChildSource {
            uri,
            options: &options,
            base_dir: dir.path(),
            size: Some(4096),
            faults: &[],
            mark,
            confine: None,
            create: true,
        };
        assert_eq!(source("a.img", "vm@1").file_origin(), FileOrigin::Missing);
        drop(open(source("a.img", "vm@1")).expect("create a.img"));
        std::fs::write(dir.path().join("b.img"), [0u8; 4096]).expect("write b.img");
        assert_eq!(source("a.img", "vm@1").file_origin(), FileOrigin::Ours);
        assert_eq!(source("a.img", "vm@2").file_origin(), FileOrigin::Foreign);
        assert_eq!(source("b.img", "vm@1").file_origin(), FileOrigin::Foreign);
        assert_eq!(
            source("s3://bucket/p", "vm@1").file_origin(),
            FileOrigin::Unknown
        );
        // Truncated to nothing, the mark kept: nothing of the volume.
        std::fs::File::create(dir.path().join("a.img")).expect("empty a.img");
        assert_eq!(source("a.img", "vm@1").file_origin(), FileOrigin::Empty);
    }

    /// A device node carries no `user.` attribute ever (the kernel answers
    /// "no such attribute" for it): a disk named in the config was told
    /// `Foreign` at every start, so resynced whole at every restart.
    #[test]
    fn a_device_nodes_origin_is_unknown() {
        let options = BTreeMap::new();
        let source = ChildSource {
            uri: "/dev/null",
            options: &options,
            base_dir: Path::new("/"),
            size: None,
            faults: &[],
            mark: "vm@1",
            confine: None,
            create: true,
        };
        assert_eq!(source.file_origin(), FileOrigin::Unknown);
    }

    #[test]
    fn uris_name_files() {
        assert_eq!(scheme("a.img"), None);
        assert_eq!(scheme("/var/x.img"), None);
        assert_eq!(scheme("file:///var/x.img"), Some("file"));
        assert_eq!(scheme("s3://bucket/p"), Some("s3"));
        let path = |uri| file_path(uri).expect("a file uri");
        assert_eq!(path("file:///var/x.img"), Path::new("/var/x.img"));
        assert_eq!(path("file://localhost/var/x.img"), Path::new("/var/x.img"));
        assert_eq!(path("file:rel/x.img"), Path::new("rel/x.img"));
        assert_eq!(path("rel/x.img"), Path::new("rel/x.img"));
        assert!(file_path("file://host/var/x.img").is_err());
    }

    #[test]
    fn open_resolves_relative_paths_and_wraps_faults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = BTreeMap::new();
        let rules: Vec<FaultRule> = vec![FaultRule {
            op: faulty::FaultOp::Read,
            offset: bytesize::ByteSize(0),
            length: None,
            error: Some(faulty::Errno(5)),
            corrupt: false,
            latency: None,
            once: false,
        }];
        let b = open(ChildSource {
            uri: "sub.img",
            options: &options,
            base_dir: dir.path(),
            size: Some(8192),
            faults: &rules,
            mark: "t",
            confine: None,
            create: true,
        })
        .expect("open");
        assert!(dir.path().join("sub.img").exists());
        assert!(b.to_string().starts_with("faulty(file("), "{b}");
        let mut buf = [0u8; 1];
        assert!(b.read_at(&mut buf, 0).is_err());
        let err = open(ChildSource {
            uri: "ftp://host/x",
            options: &options,
            base_dir: dir.path(),
            size: Some(8192),
            faults: &[],
            mark: "t",
            confine: None,
            create: true,
        })
        .map(drop)
        .expect_err("no ftp backend");
        assert!(matches!(err, OpenError::UnsupportedScheme { .. }));
    }
}
