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
use std::path::{Path, PathBuf};

use crate::OpenError;

/// The extended attribute that marks a file as a child of one volume of one
/// server: its value is [`Confinement::mark`].
pub const MARK_ATTRIBUTE: &str = "user.quorum.volume";

/// The limits of a run-time child.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Directories under which file children may be created or opened,
    /// canonical (symlinks resolved). Empty: no file child at run time.
    pub child_roots: Vec<PathBuf>,
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
            roots.push(canonical);
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

    /// The mark of files that belong to `volume` of the server whose state
    /// lives in `data_dir`: another volume, or another server on the host,
    /// has a different one.
    pub fn mark(data_dir: &Path, volume: &str) -> String {
        let dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_owned());
        format!("{volume}@{}", dir.display())
    }

    /// Where a file child at `path` may be opened: the path with
    /// its directory's symlinks resolved, if it lies under a root.
    ///
    /// # Errors
    /// [`OpenError::Forbidden`] outside every root, whether the path says so
    /// or its symlinks do.
    pub fn file_path(&self, path: &Path) -> Result<PathBuf, OpenError> {
        let forbidden = || {
            OpenError::Forbidden(format!(
                "{} is not under the server's child_roots",
                path.display()
            ))
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(forbidden());
        };
        // A directory that cannot be resolved is refused like one outside
        // the roots, so that the answer says nothing of what exists there.
        let dir = dir.canonicalize().map_err(|_| forbidden())?;
        let resolved = dir.join(name);
        let under = self
            .child_roots
            .iter()
            .any(|root| resolved.starts_with(root) && resolved != *root);
        if !under {
            return Err(forbidden());
        }
        Ok(resolved)
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
        std::fs::create_dir(dir.path().join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).expect("ln");
        let c = Confinement::new(std::slice::from_ref(&root), &[]).expect("confinement");
        let canonical = root.canonicalize().expect("canonical");
        assert_eq!(
            c.file_path(&root.join("a.img")).expect("inside"),
            canonical.join("a.img")
        );
        for bad in [
            root.join("../outside/a.img"),
            root.join("link/a.img"),
            root.clone(),
            root.join("missing/a.img"),
            PathBuf::from("/etc/passwd"),
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
}
