//! What the engine tells the outside world about bad replicas.
//!
//! The engine knows nothing of ids, timestamps or persistence: it hands each
//! [`Event`] to an [`EventSink`], and the server numbers, stores and streams
//! them. The events are QEMU's (`QUORUM_REPORT_BAD`, `QUORUM_FAILURE`) plus
//! quorum's own (`QUORUM_REWRITE`, `BLKVERIFY_MISMATCH`).

use std::sync::Mutex;

use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::child_state::ChildState;
use crate::job::{JobKind, JobState};

/// The kind of request, as metrics and events name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Op {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A write of zeroes.
    WriteZeroes,
    /// A discard: zeroes, with the space freed where a child can.
    Discard,
    /// A flush.
    Flush,
    /// A block-status query.
    BlockStatus,
}

impl Op {
    /// The metric label: `read`, `write`, `write_zeroes`, `discard`,
    /// `flush`, `block_status`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The `type` field of QEMU's events, which knows only read, write and
    /// flush: write-zeroes and discard are writes there, block status a
    /// read.
    pub fn event_type(self) -> &'static str {
        match self {
            Op::Read | Op::BlockStatus => Op::Read.as_str(),
            Op::Write | Op::WriteZeroes | Op::Discard => Op::Write.as_str(),
            Op::Flush => Op::Flush.as_str(),
        }
    }
}

/// The kind of an [`Event`]; its one string form is the event's name on
/// the wire (`QUORUM_REPORT_BAD`, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// [`Event::ReportBad`].
    #[strum(serialize = "QUORUM_REPORT_BAD")]
    ReportBad,
    /// [`Event::Failure`].
    #[strum(serialize = "QUORUM_FAILURE")]
    Failure,
    /// [`Event::Rewrite`].
    #[strum(serialize = "QUORUM_REWRITE")]
    Rewrite,
    /// [`Event::BlkverifyMismatch`].
    BlkverifyMismatch,
    /// [`Event::ChildAdded`].
    ChildAdded,
    /// [`Event::ChildRemoved`].
    ChildRemoved,
    /// [`Event::ChildStateChange`].
    ChildStateChange,
    /// [`Event::JobStarted`].
    JobStarted,
    /// [`Event::JobProgress`].
    JobProgress,
    /// [`Event::JobCompleted`].
    JobCompleted,
    /// [`Event::VolumeSuspended`].
    VolumeSuspended,
    /// [`Event::VolumeResumed`].
    VolumeResumed,
}

impl EventKind {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether events of this kind are kept in the event log, not only
    /// streamed live: all but the frequent [`EventKind::JobProgress`].
    pub fn is_logged(self) -> bool {
        self != EventKind::JobProgress
    }
}

/// What ended a volume's suspension ([`Event::VolumeResumed`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ResumedBy {
    /// An operator resumed it: the held requests are retried in order.
    Operator,
    /// `suspend_timeout` passed: the held requests failed.
    Timeout,
    /// The server shut down: the held requests failed.
    Shutdown,
}

impl ResumedBy {
    /// `operator`, `timeout` or `shutdown`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Something an operator should know about a volume's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A child failed a request (`error` is set), or held data that lost the
    /// vote on `offset..offset+bytes` (`error` is `None`).
    ReportBad {
        /// The request kind.
        op: Op,
        /// The child's name.
        child: String,
        /// First byte concerned.
        offset: u64,
        /// Number of bytes concerned.
        bytes: u64,
        /// The child's error, when it failed rather than lost a vote.
        error: Option<String>,
    },
    /// A request failed because the quorum was not reached.
    Failure {
        /// The request kind.
        op: Op,
        /// First byte of the request.
        offset: u64,
        /// Length of the request.
        bytes: u64,
    },
    /// The winning data was written back over a child's bad range.
    Rewrite {
        /// The repaired child.
        child: String,
        /// First byte repaired.
        offset: u64,
        /// Number of bytes repaired.
        bytes: u64,
    },
    /// A child joined the volume (it syncs before it votes).
    ChildAdded {
        /// The child's name.
        child: String,
        /// Its uri, without credentials.
        uri: String,
    },
    /// A child left the volume.
    ChildRemoved {
        /// The child's name.
        child: String,
    },
    /// A child's state changed: `syncing` or `stale` to `healthy` (or
    /// `damaged`) when the resync caught it up, `healthy` to `damaged` when
    /// it first holds a range known bad, `damaged` to `healthy` when its
    /// last one is repaired.
    ChildStateChange {
        /// The child's name.
        child: String,
        /// The state before.
        from: ChildState,
        /// The state now.
        to: ChildState,
    },
    /// A background job (a scrub) started.
    JobStarted {
        /// The job's id within the volume.
        id: u64,
        /// What kind of job.
        kind: JobKind,
        /// Whether it repairs what it finds.
        repair: bool,
        /// Bytes it will scan.
        bytes_total: u64,
    },
    /// A job's progress (a few times a minute at most).
    JobProgress {
        /// The job's id.
        id: u64,
        /// What kind of job.
        kind: JobKind,
        /// Bytes scanned so far.
        bytes_done: u64,
        /// Bytes to scan in all.
        bytes_total: u64,
    },
    /// A job ended.
    JobCompleted {
        /// The job's id.
        id: u64,
        /// What kind of job.
        kind: JobKind,
        /// How it ended.
        state: JobState,
        /// Bytes scanned.
        bytes_scanned: u64,
        /// Bytes repaired.
        bytes_repaired: u64,
        /// Bytes each child lost votes on, by child name.
        mismatches: Vec<(String, u64)>,
        /// Blocks without a majority (not repaired), as volume byte ranges.
        unrecoverable: Vec<std::ops::Range<u64>>,
    },
    /// A request failed its quorum on a volume whose error policy is
    /// `suspend`: it and every later request are held until the volume is
    /// resumed or `suspend_timeout` passes (SPEC 11).
    VolumeSuspended {
        /// The kind of the request that failed.
        op: Op,
        /// Its first byte.
        offset: u64,
        /// Its length.
        bytes: u64,
        /// Why it failed, as its error says.
        cause: String,
    },
    /// A suspended volume serves again.
    VolumeResumed {
        /// What ended the suspension.
        by: ResumedBy,
        /// The requests held then: retried in order (by an operator) or
        /// failed (by the timeout or the shutdown).
        held: u64,
    },
    /// blkverify found the two children different.
    BlkverifyMismatch {
        /// The first differing byte, as a volume offset.
        offset: u64,
        /// First byte of the read.
        request_offset: u64,
        /// Length of the read.
        request_bytes: u64,
    },
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ReportBad { .. } => EventKind::ReportBad,
            Event::Failure { .. } => EventKind::Failure,
            Event::Rewrite { .. } => EventKind::Rewrite,
            Event::BlkverifyMismatch { .. } => EventKind::BlkverifyMismatch,
            Event::ChildAdded { .. } => EventKind::ChildAdded,
            Event::ChildRemoved { .. } => EventKind::ChildRemoved,
            Event::ChildStateChange { .. } => EventKind::ChildStateChange,
            Event::JobStarted { .. } => EventKind::JobStarted,
            Event::JobProgress { .. } => EventKind::JobProgress,
            Event::JobCompleted { .. } => EventKind::JobCompleted,
            Event::VolumeSuspended { .. } => EventKind::VolumeSuspended,
            Event::VolumeResumed { .. } => EventKind::VolumeResumed,
        }
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// Receives the events of every volume. Called on the engine's threads, so
/// it must be quick and must not call back into the volume.
pub trait EventSink: Send + Sync {
    /// Takes one event of volume `volume`.
    fn emit(&self, volume: &str, event: Event);
}

/// A sink that keeps every event in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<(String, Event)>>,
}

impl RecordingSink {
    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<(String, Event)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Takes every event so far, leaving the sink empty.
    pub fn take(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|mut e| e.drain(..).map(|(_, ev)| ev).collect())
            .unwrap_or_default()
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, volume: &str, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push((volume.to_owned(), event));
        }
    }
}

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _volume: &str, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_wire_names() {
        let names: Vec<&str> = EventKind::VARIANTS.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "QUORUM_REPORT_BAD",
                "QUORUM_FAILURE",
                "QUORUM_REWRITE",
                "BLKVERIFY_MISMATCH",
                "CHILD_ADDED",
                "CHILD_REMOVED",
                "CHILD_STATE_CHANGE",
                "JOB_STARTED",
                "JOB_PROGRESS",
                "JOB_COMPLETED",
                "VOLUME_SUSPENDED",
                "VOLUME_RESUMED",
            ]
        );
        for kind in EventKind::VARIANTS {
            assert_eq!(kind.as_str().parse::<EventKind>().ok(), Some(*kind));
        }
        let ops: Vec<&str> = Op::VARIANTS.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            ops,
            [
                "read",
                "write",
                "write_zeroes",
                "discard",
                "flush",
                "block_status"
            ]
        );
        let types: Vec<&str> = Op::VARIANTS.iter().map(|o| o.event_type()).collect();
        assert_eq!(types, ["read", "write", "write", "write", "flush", "read"]);
    }
}
