//! The per-child families: kept outside the exporter's registry (see
//! the module docs), written after its text by [`Telemetry::render`].

use std::fmt::Write as _;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use quorum_core::{ChildState, Op, VariantArray};

use super::{OPS, REPORT_TYPES, Telemetry, index};

/// The series of one child, outside the exporter's registry (see the
/// module docs).
pub(super) struct ChildMetrics {
    /// Requests the child failed, by op (in `Op::VARIANTS` order).
    pub(super) errors: [AtomicU64; OPS],
    /// Bad reports by type (in [`REPORT_TYPES`] order).
    pub(super) bad_reports: [AtomicU64; REPORT_TYPES.len()],
    /// Bad reports of any type.
    pub(super) bad_reports_total: AtomicU64,
    pub(super) corrupted_bytes: AtomicU64,
    pub(super) repaired_bytes: AtomicU64,
    /// The gauges, as [`Telemetry::render`] last read them from the volume.
    pub(super) healthy: AtomicU64,
    pub(super) stale_bytes: AtomicU64,
    pub(super) damaged_bytes: AtomicU64,
    /// The index of the child's state in `ChildState::VARIANTS`.
    pub(super) state: AtomicUsize,
}

impl ChildMetrics {
    /// A child's series at zero, healthy.
    pub(super) fn new() -> ChildMetrics {
        ChildMetrics {
            errors: Default::default(),
            bad_reports: Default::default(),
            bad_reports_total: AtomicU64::new(0),
            corrupted_bytes: AtomicU64::new(0),
            repaired_bytes: AtomicU64::new(0),
            healthy: AtomicU64::new(1),
            stale_bytes: AtomicU64::new(0),
            damaged_bytes: AtomicU64::new(0),
            state: AtomicUsize::new(index(ChildState::Healthy)),
        }
    }
}

impl Telemetry {
    /// Writes the per-child families (see the module docs) to `out`.
    pub(super) fn render_children(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let families: [ChildFamily<'_>; 8] = [
            ChildFamily {
                name: "quorum_child_errors_total",
                kind: "counter",
                help: "Requests a child failed, by volume, child and op.",
                samples: &|c| {
                    Op::VARIANTS
                        .iter()
                        .zip(&c.errors)
                        .map(|(op, n)| (Some(("op", op.as_str())), get(n)))
                        .collect()
                },
            },
            ChildFamily {
                name: "quorum_bad_reports_total",
                kind: "counter",
                help: "QUORUM_REPORT_BAD events, by volume, child and type.",
                samples: &|c| {
                    REPORT_TYPES
                        .iter()
                        .zip(&c.bad_reports)
                        .map(|(t, n)| (Some(("type", t.as_str())), get(n)))
                        .collect()
                },
            },
            ChildFamily {
                name: "quorum_corrupted_bytes_total",
                kind: "counter",
                help: "Bytes on which a child lost the vote.",
                samples: &|c| vec![(None, get(&c.corrupted_bytes))],
            },
            ChildFamily {
                name: "quorum_repaired_bytes_total",
                kind: "counter",
                help: "Bytes rewritten onto a child with the winning data.",
                samples: &|c| vec![(None, get(&c.repaired_bytes))],
            },
            ChildFamily {
                name: "quorum_child_healthy",
                kind: "gauge",
                help: "1 when the child's state is healthy, else 0.",
                samples: &|c| vec![(None, get(&c.healthy))],
            },
            ChildFamily {
                name: "quorum_stale_bytes",
                kind: "gauge",
                help: "Bytes a child missed that a resync has not copied yet.",
                samples: &|c| vec![(None, get(&c.stale_bytes))],
            },
            ChildFamily {
                name: "quorum_child_damaged_bytes",
                kind: "gauge",
                help: "Bytes of a child that lost a vote or failed to read and are not repaired yet.",
                samples: &|c| vec![(None, get(&c.damaged_bytes))],
            },
            ChildFamily {
                name: "quorum_child_state",
                kind: "gauge",
                help: "1 for the child's current state (the state label, as GET /v1/child-states lists them), else 0.",
                samples: &|c| {
                    let now = c.state.load(Ordering::Relaxed);
                    ChildState::VARIANTS
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (Some(("state", s.as_str())), u64::from(i == now)))
                        .collect()
                },
            },
        ];
        for family in families {
            let mut lines = String::new();
            for (volume, v) in &self.volumes {
                let children = v.children.read().unwrap_or_else(PoisonError::into_inner);
                for (child, c) in children.iter() {
                    for (extra, value) in (family.samples)(c) {
                        let _ = write!(
                            lines,
                            "{}{{volume=\"{}\",child=\"{}\"",
                            family.name,
                            escape(volume),
                            escape(child)
                        );
                        if let Some((label, text)) = extra {
                            let _ = write!(lines, ",{label}=\"{}\"", escape(text));
                        }
                        let _ = writeln!(lines, "}} {value}");
                    }
                }
            }
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            out.push_str(&lines);
            out.push('\n');
        }
    }
}

/// One per-child family: its samples for a child, each with its extra
/// label (beside `volume` and `child`) and value.
struct ChildFamily<'a> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    #[allow(clippy::type_complexity)]
    samples: &'a dyn Fn(&ChildMetrics) -> Vec<(Option<(&'static str, &'static str)>, u64)>,
}

/// A label value as the text format writes it.
pub(super) fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}
