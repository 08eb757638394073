//! The ceiling of an s3 child: its own object_store client storing and
//! fetching whole objects of the request size, with no chunks, no
//! conditions, no checks and no engine.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

/// The requests of one run: request `i` stores or fetches the object named
/// after `offset(i) / size` under `dir`.
pub(crate) struct Direct<'a, O> {
    pub(crate) store: &'a Arc<AmazonS3>,
    pub(crate) dir: Path,
    pub(crate) payload: Bytes,
    pub(crate) write: bool,
    pub(crate) count: u64,
    pub(crate) depth: usize,
    pub(crate) offset: O,
}

impl<O: Fn(u64) -> u64> Direct<'_, O> {
    /// Keeps `depth` requests in flight on a runtime of two worker threads,
    /// as an s3 child runs its client.
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        runtime.block_on(
            stream::iter(0..self.count)
                .map(|i| self.request(i))
                .buffer_unordered(self.depth)
                .try_collect::<()>(),
        )
    }

    async fn request(&self, i: u64) -> anyhow::Result<()> {
        let size = self.payload.len() as u64;
        let path = self
            .dir
            .clone()
            .join(format!("{:016x}", (self.offset)(i) / size));
        if self.write {
            let payload = PutPayload::from(self.payload.clone());
            self.store
                .put(&path, payload)
                .await
                .with_context(|| format!("PUT {path}"))?;
            return Ok(());
        }
        let bytes = self
            .store
            .get(&path)
            .await
            .with_context(|| format!("GET {path} (the same writes make the objects reads need)"))?
            .bytes()
            .await
            .with_context(|| format!("GET {path}"))?;
        if bytes.len() as u64 != size {
            bail!("{path} holds {} bytes, not {size}", bytes.len());
        }
        Ok(())
    }
}
