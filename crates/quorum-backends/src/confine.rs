//! What a child added at run time may reach (SPEC section 12).
//!
//! Whoever writes the config file is trusted; whoever calls the API is
//! not. A child added through the API is therefore confined before
//! anything is created or contacted: a file child must lie under one of
//! `child_roots` (checked on the path as written and again after symlinks
//! are resolved; the last component is opened without following a
//! symlink), and may open an existing file only if it is empty or carries
//! the mark quorum puts on the files it creates for this volume; an s3 or
//! http child must use an endpoint in `allowed_endpoints` (or one the
//! config file's children use), with only the options that cannot redirect
//! the server elsewhere. Errors then never carry a remote's answer or a
//! file's size: the caller learns what was refused, not what is there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::OpenError;

/// The extended attribute that marks a file as a child of one volume of one
/// server: its value is [`Confinement::mark`].
pub const MARK_ATTRIBUTE: &str = "user.quorum.volume";

/// The longest run-time timeout option (`timeout`, `op_timeout`, ...) and
/// the most retries: a caller must not park the server on a dead host.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The most retries a run-time S3 child may ask for.
pub const MAX_RETRIES: usize = 3;

/// The limits of a run-time child.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Directories under which file children may be created or opened:
    /// each as the config spells it and as its symlinks resolve. Empty: no
    /// file child at run time.
    pub child_roots: Vec<(PathBuf, PathBuf)>,
    /// Origins (`scheme://host[:port]`, normalized) that s3 and http
    /// children may use.
    pub allowed_endpoints: BTreeSet<String>,
}

impl Confinement {
    /// The confinement from the config's `child_roots` (made canonical:
    /// they must exist) and `allowed_endpoints`.
    ///
    /// # Errors
    /// A root that cannot be resolved, or an endpoint that is not a URL.
    pub fn new(
        child_roots: &[PathBuf],
        allowed_endpoints: &[String],
    ) -> Result<Confinement, String> {
        let mut roots = Vec::with_capacity(child_roots.len());
        for root in child_roots {
            let canonical = root
                .canonicalize()
                .map_err(|e| format!("child_roots: {}: {e}", root.display()))?;
            roots.push((root.clone(), canonical));
        }
        let mut allowed = BTreeSet::new();
        for endpoint in allowed_endpoints {
            allowed.insert(
                origin(endpoint)
                    .ok_or_else(|| format!("allowed_endpoints: {endpoint:?} is not a URL"))?,
            );
        }
        Ok(Confinement {
            child_roots: roots,
            allowed_endpoints: allowed,
        })
    }

    /// Allows the endpoint of a child the config file names (trusted): the
    /// remote server of an http child, the store of an s3 child (from its
    /// options or the `AWS_*` environment).
    pub fn allow_child(&mut self, uri: &str, options: &BTreeMap<String, String>) {
        let endpoint = match crate::scheme(uri) {
            Some("http" | "https") => Some(uri.to_owned()),
            #[cfg(feature = "s3")]
            Some("s3") => crate::s3::endpoint(options),
            _ => None,
        };
        #[cfg(not(feature = "s3"))]
        let _ = options;
        if let Some(o) = endpoint.as_deref().and_then(origin) {
            self.allowed_endpoints.insert(o);
        }
    }

    /// The mark of the storage (files, S3 prefixes) that belongs to
    /// `volume` of the server whose state lives in `data_dir`: another
    /// volume, or another server (it has its own random id in its
    /// `data_dir/server-id`), has a different one.
    ///
    /// # Errors
    /// The server id cannot be read or made.
    pub fn mark(data_dir: &Path, volume: &str) -> std::io::Result<String> {
        Ok(format!("{volume}@{}", server_id(data_dir)?))
    }

    /// Where a file child at `path` may be opened: a root and the path
    /// below it, to be opened with [`crate::FileBackend::open_confined`],
    /// which resolves it beneath the root without following any symlink.
    ///
    /// # Errors
    /// [`OpenError::Forbidden`] outside every root, or with a `..`.
    pub fn file_path(&self, path: &Path) -> Result<(PathBuf, PathBuf), OpenError> {
        let forbidden = || {
            OpenError::Forbidden(format!(
                "{} is not under the server's child_roots",
                path.display()
            ))
        };
        for (given, canonical) in &self.child_roots {
            for root in [given, canonical] {
                if let Ok(below) = path.strip_prefix(root) {
                    let plain = below
                        .components()
                        .all(|c| matches!(c, Component::Normal(_)));
                    if !plain || below.as_os_str().is_empty() {
                        return Err(forbidden());
                    }
                    return Ok((canonical.clone(), below.to_owned()));
                }
            }
        }
        Err(forbidden())
    }

    /// Checks a run-time child's duration option against [`MAX_TIMEOUT`].
    ///
    /// # Errors
    /// [`OpenError::Forbidden`] above it.
    pub fn timeout(&self, option: &str, value: Duration) -> Result<(), OpenError> {
        if value > MAX_TIMEOUT {
            return Err(OpenError::Forbidden(format!(
                "option {option:?}: at most {MAX_TIMEOUT:?} for a child added at run time"
            )));
        }
        Ok(())
    }

    /// Checks the endpoint a remote child would use.
    ///
    /// # Errors
    /// [`OpenError::Forbidden`] when it is not allowed.
    pub fn endpoint(&self, endpoint: &str) -> Result<(), OpenError> {
        match origin(endpoint) {
            Some(o) if self.allowed_endpoints.contains(&o) => Ok(()),
            _ => Err(OpenError::Forbidden(format!(
                "endpoint {:?} is not in the server's allowed_endpoints",
                crate::redact_uri(endpoint)
            ))),
        }
    }
}

/// The server's random id, made on first use and kept in
/// `data_dir/server-id`.
fn server_id(data_dir: &Path) -> std::io::Result<String> {
    use std::io::Write;
    let path = data_dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = random_id()?;
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join("server-id.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    // A server starting beside this one may have made its id first: the
    // first one to land wins, and both read it back.
    if std::fs::hard_link(&tmp, &path).is_err() && !path.exists() {
        std::fs::rename(&tmp, &path)?;
    }
    let _ = std::fs::remove_file(&tmp);
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(std::fs::read_to_string(&path)?.trim().to_owned())
}

/// 128 random bits in hex, from the kernel.
pub(crate) fn random_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `scheme://host[:port]` of a URL, lowercased, without a default port.
pub fn origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.host()?;
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            origin("HTTP://Example.com:80/x").as_deref(),
            Some("http://example.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:9000").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(origin("not a url"), None);
        assert_eq!(origin("file:///etc/passwd"), None);
    }

    #[test]
    fn paths_stay_under_the_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let c = Confinement::new(std::slice::from_ref(&root), &[]).expect("confinement");
        let canonical = root.canonicalize().expect("canonical");
        assert_eq!(
            c.file_path(&root.join("sub/a.img")).expect("inside"),
            (canonical.clone(), PathBuf::from("sub/a.img"))
        );
        for bad in [
            root.join("../outside/a.img"),
            root.join("sub/../../a.img"),
            root.clone(),
            PathBuf::from("/etc/passwd"),
            PathBuf::from("relative.img"),
        ] {
            let err = c.file_path(&bad).expect_err("outside");
            assert!(matches!(err, OpenError::Forbidden(_)), "{bad:?}: {err}");
        }
        let none = Confinement::default();
        assert!(matches!(
            none.file_path(&root.join("a.img")),
            Err(OpenError::Forbidden(_))
        ));
    }

    #[test]
    fn the_server_id_is_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Confinement::mark(dir.path(), "vm").expect("mark");
        assert_eq!(Confinement::mark(dir.path(), "vm").expect("mark"), first);
        assert_ne!(Confinement::mark(dir.path(), "other").expect("mark"), first);
        let elsewhere = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            Confinement::mark(elsewhere.path(), "vm").expect("mark"),
            first
        );
    }
}
