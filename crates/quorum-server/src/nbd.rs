//! The volumes as NBD exports (SPEC section 9), over the HTTP handlers'
//! own path.
//!
//! `quorum-nbd` speaks the protocol; here each of its calls becomes the
//! engine call an HTTP handler would make, the same way: the request's
//! memory from the server-wide [`Budget`], the engine call through the
//! volume's one data path ([`VolumeEntry::io`]: I/O limits, error policy,
//! statistics, then the engine call with the membership gate held, reads
//! and writes started without a blocking thread where the engine can),
//! and the request counted in [`Telemetry`]. So an NBD read votes,
//! reports, repairs and marks stale exactly like an HTTP read, and the
//! same events and metrics follow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorum_core::{Op, Volume, VolumeError};
use quorum_nbd::{Export, ExportError, Exports, Extent};

use crate::bridge::Start;
use crate::budget::{Budget, Reservation};
use crate::io::IoError;
use crate::membership::VolumeEntry;
use crate::telemetry::{Frontend, Telemetry};

/// Every volume of the server, by name.
pub struct NbdExports {
    volumes: BTreeMap<String, Arc<NbdVolume>>,
}

impl NbdExports {
    /// The exports of `volumes`; requests wait at most `budget_wait` for
    /// room in `budget`.
    pub fn new(
        volumes: &BTreeMap<String, Arc<VolumeEntry>>,
        telemetry: &Arc<Telemetry>,
        budget: &Budget,
        budget_wait: Duration,
    ) -> NbdExports {
        let volumes = volumes
            .iter()
            .map(|(name, entry)| {
                telemetry.nbd_connections(name, 0);
                let volume = NbdVolume {
                    name: name.clone(),
                    entry: entry.clone(),
                    telemetry: telemetry.clone(),
                    budget: budget.clone(),
                    budget_wait,
                };
                (name.clone(), Arc::new(volume))
            })
            .collect();
        NbdExports { volumes }
    }
}

impl Exports for NbdExports {
    type Export = NbdVolume;

    fn names(&self) -> Vec<String> {
        self.volumes.keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<Arc<NbdVolume>> {
        self.volumes.get(name).cloned()
    }
}

/// One volume as an NBD export.
pub struct NbdVolume {
    name: String,
    entry: Arc<VolumeEntry>,
    telemetry: Arc<Telemetry>,
    budget: Budget,
    budget_wait: Duration,
}

impl NbdVolume {
    /// Runs `f` on the volume as HTTP does, and counts it as `op`.
    async fn call<T, F>(&self, op: Op, bytes: u64, f: F) -> Result<T, ExportError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        self.counted(op, bytes, self.entry.io(op, bytes, f)).await
    }

    /// [`NbdVolume::call`] of a read or write that the engine may start
    /// with `start`, without a blocking thread ([`VolumeEntry::io_started`]).
    async fn call_started<T, F>(
        &self,
        op: Op,
        bytes: u64,
        start: Start<'_, T>,
        f: F,
    ) -> Result<T, ExportError>
    where
        F: Fn(&Volume) -> Result<T, VolumeError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let request = self.entry.io_started(op, bytes, start, f);
        self.counted(op, bytes, request).await
    }

    /// Awaits `request` (the volume's data path) and counts it as `op`.
    async fn counted<T>(
        &self,
        op: Op,
        bytes: u64,
        request: impl Future<Output = Result<T, IoError>>,
    ) -> Result<T, ExportError> {
        let started = Instant::now();
        let result = request.await;
        let moved = crate::io::moved(&result, bytes);
        self.telemetry
            .request(&self.name, Frontend::Nbd, op, moved, started.elapsed());
        result.map_err(|e| export_error(&self.name, e))
    }
}

/// Folds an engine error into what NBD can say.
fn export_error(volume: &str, e: IoError) -> ExportError {
    match e {
        IoError::Volume(VolumeError::OutOfRange {
            offset,
            length,
            size,
        }) => ExportError::OutOfRange {
            offset,
            end: offset.saturating_add(length),
            size,
        },
        other => ExportError::Io(format!("volume {volume:?}: {other}")),
    }
}

impl Export for NbdVolume {
    type Permit = Reservation;

    fn size(&self) -> u64 {
        self.entry.volume().size()
    }

    fn description(&self) -> String {
        let volume = self.entry.volume();
        format!(
            "quorum volume {:?}: {} children, vote_threshold {}",
            self.name,
            volume.children().len(),
            volume.options().vote_threshold
        )
    }

    async fn reserve(&self, bytes: u64) -> Result<Reservation, ExportError> {
        let deadline = tokio::time::Instant::now() + self.budget_wait;
        self.budget
            .reserve(bytes, deadline)
            .await
            .map_err(|e| ExportError::Busy(e.to_string()))
    }

    async fn grow(
        &self,
        permit: &mut Reservation,
        bytes: u64,
        need: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), ExportError> {
        self.budget
            .grow_to(permit, bytes, need, deadline)
            .await
            .map_err(|e| ExportError::Busy(e.to_string()))
    }

    async fn read(&self, offset: u64, length: u32) -> Result<Bytes, ExportError> {
        let len = length as usize;
        self.call_started(
            Op::Read,
            u64::from(length),
            &move |v, done| v.start_read(offset, len, done),
            move |v| v.read(offset, len),
        )
        .await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), ExportError> {
        let bytes = data.len() as u64;
        let copy = data.clone();
        self.call_started(
            Op::Write,
            bytes,
            &move |v, done| v.start_write(offset, copy.clone(), done),
            move |v| v.write(offset, data.clone()),
        )
        .await?;
        if fua {
            self.flush().await?;
        }
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        length: u32,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        let bytes = u64::from(length);
        self.call(Op::WriteZeroes, bytes, move |v| {
            if no_hole {
                v.write_zeroes_allocated(offset, bytes)
            } else {
                v.write_zeroes(offset, bytes)
            }
        })
        .await?;
        if fua {
            self.flush().await?;
        }
        Ok(())
    }

    async fn discard(&self, offset: u64, length: u32, fua: bool) -> Result<(), ExportError> {
        let bytes = u64::from(length);
        self.call(Op::Discard, bytes, move |v| v.discard(offset, bytes))
            .await?;
        if fua {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), ExportError> {
        self.call(Op::Flush, 0, Volume::flush).await
    }

    async fn block_status(
        &self,
        offset: u64,
        length: u32,
        limit: usize,
    ) -> Result<Vec<Extent>, ExportError> {
        let extents = self
            .call(Op::BlockStatus, 0, move |v| {
                v.block_status(offset, u64::from(length), limit)
            })
            .await?;
        Ok(extents
            .into_iter()
            .map(|e| Extent {
                offset: e.offset,
                length: e.length,
                zero: e.zero,
            })
            .collect())
    }

    fn connections(&self, delta: i64) {
        self.telemetry.nbd_connections(&self.name, delta);
    }
}
