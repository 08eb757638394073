//! Every job as the API shows it, and a scrub as its file saves it.

use quorum_core::{JobKind, JobState};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::resync::ResyncStatus;

/// What is saved of a scrub: `data_dir/jobs/<volume>.json` is a list of
/// these (the format of the file; keep it readable by older servers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    id: u64,
    repair: bool,
    state: JobState,
    bytes_done: u64,
    bytes_total: u64,
    bytes_repaired: u64,
    started: String,
    mismatches: Vec<(String, u64)>,
    unrecoverable: Vec<(u64, u64)>,
    error: Option<String>,
}

/// Blocks no version of which reached the threshold: not repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Unrecoverable {
    /// Where they start, in the volume.
    pub offset: u64,
    /// How many bytes.
    pub bytes: u64,
}

/// A scrub as the jobs API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScrubStatus {
    /// Its id within the volume (1 and up).
    pub id: u64,
    /// Always [`JobKind::Scrub`].
    #[schema(value_type = crate::schema::JobKind)]
    pub kind: JobKind,
    /// Running (also paused, or waiting to resume after a restart), or how
    /// it ended.
    #[schema(value_type = crate::schema::JobState)]
    pub state: JobState,
    /// Whether it repairs what it finds.
    pub repair: bool,
    /// Bytes scanned.
    pub bytes_done: u64,
    /// Bytes to scan in all (the volume's size).
    pub bytes_total: u64,
    /// Bytes a second since it (re)started; 0 unless it is running.
    pub rate_bytes_per_sec: f64,
    /// Seconds left at that rate, when it is known.
    pub eta_seconds: Option<f64>,
    /// When it was started (RFC 3339).
    pub started: String,
    /// Bytes written back over losers.
    pub bytes_repaired: u64,
    /// Bytes each child lost votes on (a JSON object by child name).
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub mismatches: Vec<(String, u64)>,
    /// Blocks without a majority.
    pub unrecoverable: Vec<Unrecoverable>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Any job as the API shows it: the resync (job 0) or a scrub.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum JobStatus {
    /// The resync.
    Resync(ResyncStatus),
    /// A scrub.
    Scrub(ScrubStatus),
}

/// `anyOf` the two, not the derive's `oneOf`: a scrub's fields include
/// every field of the resync, so a scrub matches both.
impl utoipa::PartialSchema for JobStatus {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(ResyncStatus::name()))
            .item(Ref::from_schema_name(ScrubStatus::name()))
            .description(Some(
                "Any job: the resync (job 0, kind `resync`) or a scrub (kind `scrub`).",
            ))
            .into()
    }
}

impl ToSchema for JobStatus {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ResyncStatus::name().into(), ResyncStatus::schema()));
        ResyncStatus::schemas(schemas);
        schemas.push((ScrubStatus::name().into(), ScrubStatus::schema()));
        ScrubStatus::schemas(schemas);
    }
}

impl ScrubStatus {
    /// Whether it has not ended.
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }

    /// A saved scrub, with no rate yet.
    pub(super) fn from_record(r: Record) -> ScrubStatus {
        ScrubStatus {
            id: r.id,
            kind: JobKind::Scrub,
            state: r.state,
            repair: r.repair,
            bytes_done: r.bytes_done,
            bytes_total: r.bytes_total,
            rate_bytes_per_sec: 0.0,
            eta_seconds: None,
            started: r.started,
            bytes_repaired: r.bytes_repaired,
            mismatches: r.mismatches,
            unrecoverable: r
                .unrecoverable
                .into_iter()
                .map(|(offset, bytes)| Unrecoverable { offset, bytes })
                .collect(),
            error: r.error,
        }
    }

    /// What is saved of it.
    pub(super) fn record(&self) -> Record {
        Record {
            id: self.id,
            repair: self.repair,
            state: self.state,
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            bytes_repaired: self.bytes_repaired,
            started: self.started.clone(),
            mismatches: self.mismatches.clone(),
            unrecoverable: self
                .unrecoverable
                .iter()
                .map(|u| (u.offset, u.bytes))
                .collect(),
            error: self.error.clone(),
        }
    }
}

fn as_map<S: Serializer>(pairs: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(child, bytes)| (child, bytes)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A job file as the server before the workers wrote it.
    const SAVED: &str = r#"[
      {
        "id": 3,
        "repair": true,
        "state": "running",
        "bytes_done": 2097152,
        "bytes_total": 8388608,
        "bytes_repaired": 4096,
        "started": "2024-05-01T10:00:00Z",
        "mismatches": [["b", 4096], ["a", 8192]],
        "unrecoverable": [[20480, 4096]],
        "error": null
      }
    ]"#;

    #[test]
    fn the_job_file_reads_and_writes_as_before() {
        let records: Vec<Record> = serde_json::from_str(SAVED).expect("the old format");
        let status = ScrubStatus::from_record(records[0].clone());
        let again = serde_json::to_value(vec![status.record()]).expect("serialize");
        let before: serde_json::Value = serde_json::from_str(SAVED).expect("json");
        assert_eq!(again, before);
    }

    #[test]
    fn a_scrub_shows_the_fields_the_api_always_showed() {
        let records: Vec<Record> = serde_json::from_str(SAVED).expect("the old format");
        let status = ScrubStatus::from_record(records[0].clone());
        let shown = serde_json::to_string(&JobStatus::Scrub(status)).expect("serialize");
        let expected = json!({
            "id": 3,
            "kind": "scrub",
            "state": "running",
            "repair": true,
            "bytes_done": 2097152,
            "bytes_total": 8388608,
            "rate_bytes_per_sec": 0.0,
            "eta_seconds": null,
            "started": "2024-05-01T10:00:00Z",
            "bytes_repaired": 4096,
            "mismatches": { "b": 4096, "a": 8192 },
            "unrecoverable": [{ "offset": 20480, "bytes": 4096 }],
            "error": null,
        });
        // The same fields in the same order.
        assert_eq!(shown, expected.to_string());
    }

    #[test]
    fn the_resync_shows_the_fields_the_api_always_showed() {
        let status = JobStatus::Resync(ResyncStatus {
            id: 0,
            kind: JobKind::Resync,
            state: JobState::Idle,
            bytes_done: 10,
            bytes_total: 10,
            rate_bytes_per_sec: 0.0,
            eta_seconds: None,
        });
        let expected = json!({
            "id": 0,
            "kind": "resync",
            "state": "idle",
            "bytes_done": 10,
            "bytes_total": 10,
            "rate_bytes_per_sec": 0.0,
            "eta_seconds": null,
        });
        assert_eq!(
            serde_json::to_string(&status).expect("serialize"),
            expected.to_string()
        );
    }
}
