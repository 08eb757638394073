//! `unopened`: a child added at run time that could not be opened again
//! when the server started (its store gone, its keys revoked, its file
//! replaced by a symlink). A caller must not be able to keep the whole
//! server from starting through a child they control, so the volume starts
//! without it: every call to it fails, the volume serves from the others,
//! and the child shows failed (and stale everywhere) until it is removed or
//! opens again at a later start.

use std::fmt;

use quorum_core::{Backend, BackendError, Extent};

/// A child that could not be opened: `size` bytes, every call refused.
#[derive(Debug)]
pub struct Unopened {
    name: String,
    why: String,
    size: u64,
}

impl Unopened {
    /// The child `name` of `size` bytes, which could not be opened because
    /// of `why`.
    pub fn new(name: impl Into<String>, why: impl Into<String>, size: u64) -> Unopened {
        Unopened {
            name: name.into(),
            why: why.into(),
            size,
        }
    }

    fn refused(&self) -> BackendError {
        BackendError::Unavailable(format!("not opened at start: {}", self.why))
    }
}

impl fmt::Display for Unopened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unopened({})", self.name)
    }
}

impl Backend for Unopened {
    fn kind(&self) -> &'static str {
        "unopened"
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
