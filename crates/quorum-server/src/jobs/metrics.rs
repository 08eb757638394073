//! What Prometheus sees of the jobs beside their byte counters
//! (`quorum_job_bytes_total`): `quorum_job_remaining_bytes{volume,kind}`,
//! the bytes the running jobs of each kind have left, so that a rate of
//! the counter gives an ETA.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use quorum_core::{JobKind, VariantArray};

use super::{JobStatus, Jobs};
use crate::membership::VolumeEntry;

const NAME: &str = "quorum_job_remaining_bytes";
const HELP: &str = "Bytes the volume's jobs of a kind have left: the scan of the running scrubs, the stale bytes the resync has to copy (0 when none runs).";

impl Jobs {
    /// The bytes the jobs of `kind` have left: for the resync, every
    /// child's stale bytes now; for scrubs, what the running ones have
    /// left to scan as they last reported.
    pub fn remaining(&self, kind: JobKind) -> u64 {
        match kind {
            JobKind::Resync => self.volume.stale_bytes().iter().sum(),
            JobKind::Scrub => self
                .list()
                .iter()
                .filter_map(|job| match job {
                    JobStatus::Scrub(s) if s.is_running() => {
                        Some(s.bytes_total.saturating_sub(s.bytes_done))
                    }
                    _ => None,
                })
                .sum(),
        }
    }
}

/// The jobs' gauge of every volume, in the text format; the family is
/// declared even with no volume. Volume names obey the naming rule, so
/// they need no escaping.
pub fn render_metrics(volumes: &BTreeMap<String, Arc<VolumeEntry>>) -> String {
    let mut out = format!("# HELP {NAME} {HELP}\n# TYPE {NAME} gauge\n");
    for (name, entry) in volumes {
        let jobs = entry.jobs();
        for kind in JobKind::VARIANTS {
            let _ = writeln!(
                out,
                "{NAME}{{volume=\"{name}\",kind=\"{}\"}} {}",
                kind.as_str(),
                jobs.remaining(*kind)
            );
        }
    }
    out
}
