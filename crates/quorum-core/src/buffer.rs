//! Read buffers, recycled.
//!
//! A large quorum read needs one buffer per child. Fresh large allocations
//! cost page faults and zeroing on every request (for 1 MiB reads that was a
//! good part of the time), so buffers of [`POOLED_MIN`] bytes or more come
//! from a small pool and go back to it: the losing copies right after the
//! vote, the answer when the caller drops it ([`Bytes::from_owner`]). A
//! recycled buffer of the right length is not zeroed again: the child's read
//! overwrites all of it.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Reads smaller than this allocate as usual (cheap, and pooling would only
/// add contention at high request rates).
pub(crate) const POOLED_MIN: usize = 64 << 10;
/// Buffers larger than this are not kept.
const POOLED_MAX: usize = 16 << 20;
/// How many bytes of idle buffers the pool keeps at most. Requests in
/// flight give theirs back as others take them, so the pool holds few at a
/// time under load; what it keeps after the load is memory nobody uses.
const KEPT_BYTES: usize = 16 << 20;

/// A pool of read buffers shared by a volume's children.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Free>,
}

/// The idle buffers, and their capacities' sum.
#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl BufferPool {
    /// A buffer of exactly `len` bytes, with unspecified contents.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOLED_MIN {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let best = free
                .buffers
                .iter()
                .position(|b| b.len() == len)
                .or_else(|| free.buffers.iter().position(|b| b.capacity() >= len));
            if let Some(i) = best {
                let mut buf = free.buffers.swap_remove(i);
                free.bytes -= buf.capacity();
                drop(free);
                buf.resize(len, 0);
                return buf;
            }
        }
        vec![0; len]
    }

    /// Takes a buffer back.
    pub(crate) fn give(&self, buf: Vec<u8>) {
        if buf.len() < POOLED_MIN || buf.capacity() > POOLED_MAX {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.bytes + buf.capacity() <= KEPT_BYTES {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }

    /// `buf` as [`Bytes`] that returns to the pool when the last clone drops.
    pub(crate) fn bytes(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if buf.len() < POOLED_MIN {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back() {
        let pool = Arc::new(BufferPool::default());
        let mut a = pool.take(1 << 20);
        a[0] = 7;
        let ptr = a.as_ptr();
        let bytes = pool.bytes(a);
        assert_eq!(bytes.len(), 1 << 20);
        drop(bytes);
        let b = pool.take(1 << 20);
        assert_eq!(b.as_ptr(), ptr, "the buffer was reused");
        pool.give(b);
        let small = pool.take(100);
        assert_eq!(small, vec![0; 100]);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_idle_bytes() {
        let pool = BufferPool::default();
        let n = KEPT_BYTES / (1 << 20) + 8;
        let taken: Vec<Vec<u8>> = (0..n).map(|_| pool.take(1 << 20)).collect();
        for buf in taken {
            pool.give(buf);
        }
        let free = pool.free.lock().expect("free");
        assert!(free.bytes <= KEPT_BYTES, "{} bytes kept", free.bytes);
        assert_eq!(
            free.bytes,
            free.buffers.iter().map(Vec::capacity).sum::<usize>()
        );
        assert_eq!(free.buffers.len(), KEPT_BYTES / (1 << 20));
    }
}
