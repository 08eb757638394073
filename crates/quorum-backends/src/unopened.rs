//! `unopened`: a child that could not be opened when the server started,
//! in its place until it opens: a remote of the config file that could not
//! be reached (a store or server down), or a child added at run time that
//! could not be opened again (its store gone, its keys revoked, its file
//! replaced by a symlink; a caller must not be able to keep the whole
//! server from starting through a child they control). The volume starts
//! without it when the others reach its threshold: every call to it fails,
//! the volume serves from the others, and the child shows failed while the
//! server tries to open it again.

use std::fmt;

use quorum_core::{Backend, BackendError, Extent};

/// A child that could not be opened: `size` bytes, every call refused.
#[derive(Debug)]
pub struct Unopened {
    name: String,
    uri: String,
    why: String,
    size: u64,
}

impl Unopened {
    /// Its [`Backend::kind`], which tells an unopened child from others.
    pub const KIND: &'static str = "unopened";

    /// The child `name` at `uri`, of `size` bytes, which could not be
    /// opened because of `why`.
    pub fn new(name: impl Into<String>, uri: &str, why: impl Into<String>, size: u64) -> Unopened {
        Unopened {
            name: name.into(),
            uri: crate::redact_uri(uri),
            why: why.into(),
            size,
        }
    }

    fn refused(&self) -> BackendError {
        BackendError::Unavailable(format!("not opened yet: {}", self.why))
    }
}

impl fmt::Display for Unopened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unopened({})", self.name)
    }
}

impl Backend for Unopened {
    fn kind(&self) -> &'static str {
        Unopened::KIND
    }

    /// Its uri: the storage it stands for is not known until it opens, and
    /// two children of one uri are one copy all the same.
    fn identity(&self) -> String {
        format!("unopened:{}", self.uri)
    }

    /// Not known until it opens.
    fn identity_known(&self) -> bool {
        false
    }

    fn size(&self) -> Result<u64, BackendError> {
        Ok(self.size)
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<(), BackendError> {
        Err(self.refused())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), BackendError> {
        Err(self.refused())
    }

    fn write_zeroes(&self, _offset: u64, _length: u64) -> Result<(), BackendError> {
        Err(self.refused())
    }

    fn discard(&self, _offset: u64, _length: u64) -> Result<(), BackendError> {
        Err(self.refused())
    }

    fn flush(&self) -> Result<(), BackendError> {
        Err(self.refused())
    }

    fn block_status(
        &self,
        _offset: u64,
        _length: u64,
        _limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        Err(self.refused())
    }
}
