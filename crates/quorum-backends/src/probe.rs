//! Looking at a child without changing it, for `quorum-server check`: the
//! errors [`crate::open`] would give at start, found without creating,
//! marking or locking anything.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::Access;

use crate::{ChildSource, OpenError};

/// What [`probe`] found of a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its size, or `None` when it does not exist yet and would be created
    /// with the volume's size.
    pub size: Option<u64>,
    /// The storage it uses, as [`quorum_core::Backend::identity`] names it
    /// (two children may not share one); for a file still to be created,
    /// its resolved path.
    pub identity: String,
}

/// Looks at the child `source` describes as [`crate::open`] would open it,
/// but read-only: a file is opened for reading and never created, marked
/// or locked (so the config of a running server can be checked), a remote
/// server is asked its volume's size, an S3 prefix its `meta.json`.
///
/// A missing file child is fine when its directory exists and may be
/// written, and the volume has a size (`source.create`); a missing child
/// added at run time is an error, as at start. Errors that only a write
/// would show (a full disk, a store that refuses writes) are not found.
///
/// # Errors
/// As [`crate::open`]: a bad uri or option, a fault rule that does not
/// hold, a file that cannot be read or written, of another size or
/// without a size to create it with, a remote that cannot be reached or
/// does not fit.
pub fn probe(source: ChildSource<'_>) -> Result<Probe, OpenError> {
    for (i, rule) in source.faults.iter().enumerate() {
        rule.validate().map_err(|problem| OpenError::Fault {
            index: i + 1,
            problem,
        })?;
    }
    match crate::scheme(source.uri) {
        None | Some("file") => {
            if let Some(option) = source.options.keys().next() {
                return Err(OpenError::UnknownOption {
                    option: option.clone(),
                    backend: "file",
                });
            }
            let path = source.base_dir.join(crate::file_path(source.uri)?);
            probe_file(&path, source.size, source.create)
        }
        #[cfg(feature = "http")]
        Some("http" | "https") => {
            use quorum_core::Backend as _;
            let backend = crate::HttpBackend::open(source.uri, source.options, source.size, None)?;
            Ok(Probe {
                size: Some(backend.size().map_err(|e| OpenError::Remote {
                    uri: crate::redact_uri(source.uri),
                    problem: e.to_string(),
                })?),
                identity: backend.identity(),
            })
        }
        #[cfg(feature = "s3")]
        Some("s3") => {
            crate::S3Backend::probe(source.uri, source.options, source.size, source.create)
        }
        Some(other) => Err(OpenError::UnsupportedScheme {
            scheme: other.to_owned(),
        }),
    }
}

fn probe_file(path: &Path, size: Option<u64>, create: bool) -> Result<Probe, OpenError> {
    let at = |source: io::Error| OpenError::File {
        path: path.to_owned(),
        source,
    };
    match File::open(path) {
        Ok(mut file) => {
            rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK)
                .map_err(|e| at(e.into()))?;
            let meta = file.metadata().map_err(at)?;
            // Opened for writing, as a start opens it, a directory fails.
            if meta.is_dir() {
                return Err(at(rustix::io::Errno::ISDIR.into()));
            }
            // A block device's length is where its end is.
            let actual = if meta.is_file() {
                meta.len()
            } else {
                file.seek(SeekFrom::End(0)).map_err(at)?
            };
            if let Some(expected) = size {
                if actual != expected {
                    return Err(OpenError::SizeMismatch {
                        path: path.to_owned(),
                        actual,
                        expected,
                    });
                }
            }
            Ok(Probe {
                size: Some(actual),
                identity: crate::file::file_identity(meta.dev(), meta.ino()),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Err(OpenError::Forbidden(format!(
                    "{}: missing (a child added at run time is not created again at start)",
                    path.display()
                )));
            }
            if size.is_none() {
                return Err(OpenError::NoSize {
                    path: path.to_owned(),
                });
            }
            let (dir, name) = match (path.parent(), path.file_name()) {
                (Some(dir), Some(name)) => (
                    if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    },
                    name,
                ),
                _ => return Err(at(io::Error::from(io::ErrorKind::InvalidInput))),
            };
            // Where it would be created: a directory this process may write.
            let dir = dir.canonicalize().map_err(at)?;
            if !dir.is_dir() {
                return Err(at(io::Error::from(io::ErrorKind::NotADirectory)));
            }
            rustix::fs::access(&dir, Access::WRITE_OK | Access::EXEC_OK)
                .map_err(|e| at(e.into()))?;
            Ok(Probe {
                size: None,
                identity: format!("new-file:{}", dir.join(name).display()),
            })
        }
        Err(e) => Err(at(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn source<'a>(
        uri: &'a str,
        options: &'a BTreeMap<String, String>,
        dir: &'a Path,
        size: Option<u64>,
    ) -> ChildSource<'a> {
        ChildSource {
            uri,
            options,
            base_dir: dir,
            size,
            faults: &[],
            mark: "",
            confine: None,
            create: true,
        }
    }

    #[test]
    fn a_file_is_looked_at_and_never_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = BTreeMap::new();
        let new = probe(source("new.img", &none, dir.path(), Some(8192))).expect("probe");
        assert_eq!(new.size, None);
        assert!(!dir.path().join("new.img").exists(), "probe created a file");
        assert!(matches!(
            probe(source("new.img", &none, dir.path(), None)),
            Err(OpenError::NoSize { .. })
        ));
        assert!(matches!(
            probe(source("no/such/dir/x.img", &none, dir.path(), Some(8192))),
            Err(OpenError::File { .. })
        ));
        let f = File::create(dir.path().join("old.img")).expect("create");
        f.set_len(4096).expect("size");
        let old = probe(source("old.img", &none, dir.path(), Some(4096))).expect("probe");
        assert_eq!(old.size, Some(4096));
        assert!(old.identity.starts_with("file:"), "{old:?}");
        assert!(matches!(
            probe(source("old.img", &none, dir.path(), Some(8192))),
            Err(OpenError::SizeMismatch { .. })
        ));
        // Two spellings of one file are one identity.
        let again = probe(source("./old.img", &none, dir.path(), None)).expect("probe");
        assert_eq!(again.identity, old.identity);
    }
}
