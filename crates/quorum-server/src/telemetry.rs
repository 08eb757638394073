//! Metrics in one place: every Prometheus series and every counter the API
//! shows, registered once per volume and child at start-up.
//!
//! The exporter is `metrics-exporter-prometheus`, used through its own
//! recorder rather than the process-global one, so handles are registered
//! once and the hot path is one atomic add per series. It is chosen over the
//! tikv `prometheus` crate because the `metrics` facade and its exporter are
//! the better maintained pair today, and over `prometheus-client` because its
//! output is the classic text format that `promtool check metrics` and every
//! scraper read.
//!
//! Labels are bounded: `volume`, `child`, `op`, `type`, `event` — never a uri
//! or an offset. Events feed the per-child series through [`Observer`], the
//! engine's event sink, which forwards each event to the event log too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use quorum_core::{ChildState, Event, EventKind, EventSink, JobKind, Op, VariantArray, Volume};
use serde_json::{Value, json};

use crate::events::EventLog;

/// Bucket bounds of the request-duration histogram, in seconds: 50 µs to 10 s.
const DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The `type` values of `QUORUM_REPORT_BAD`.
const REPORT_TYPES: [Op; 3] = [Op::Read, Op::Write, Op::Flush];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The index of a word in its `VARIANTS`, which list every value in
/// declaration order.
fn index<T: VariantArray + PartialEq>(word: T) -> usize {
    T::VARIANTS.iter().position(|w| *w == word).unwrap_or(0)
}

/// Every metric of the server.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    volumes: BTreeMap<String, VolumeMetrics>,
}

struct VolumeMetrics {
    ops: Vec<OpMetrics>,
    /// Bytes scanned by scrubs and copied by resyncs.
    job_bytes: Vec<Counter>,
    events: Vec<Counter>,
    children: RwLock<BTreeMap<String, ChildMetrics>>,
    counts: VolumeCounts,
}

struct OpMetrics {
    requests: Counter,
    bytes: Counter,
    duration: Histogram,
    failures: Counter,
}

struct ChildMetrics {
    errors: Vec<Counter>,
    bad_reports: Vec<Counter>,
    corrupted: Counter,
    repaired: Counter,
    healthy: Gauge,
    stale: Gauge,
    /// One gauge per state, 1 for the current one.
    states: Vec<Gauge>,
    counts: ChildCounts,
}

#[derive(Default)]
struct VolumeCounts {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct ChildCounts {
    errors: AtomicU64,
    bad_reports: AtomicU64,
    corrupted_bytes: AtomicU64,
    repaired_bytes: AtomicU64,
}

impl Telemetry {
    /// Registers every series of `volumes` (name and child names), at zero.
    pub fn new<'a>(volumes: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>) -> Telemetry {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("quorum_request_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        describe(&recorder);
        let mut telemetry = Telemetry {
            recorder,
            handle,
            volumes: BTreeMap::new(),
        };
        for (volume, children) in volumes {
            let metrics = telemetry.register_volume(volume, &children);
            telemetry.volumes.insert(volume.to_owned(), metrics);
        }
        telemetry
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let counter = self
            .recorder
            .register_counter(&key(name, labels), &METADATA);
        counter.increment(0);
        counter
    }

    fn register_volume(&self, volume: &str, children: &[&str]) -> VolumeMetrics {
        let ops = Op::VARIANTS
            .iter()
            .map(|op| {
                let labels = [("volume", volume), ("op", op.as_str())];
                OpMetrics {
                    requests: self.counter("quorum_requests_total", &labels),
                    bytes: self.counter("quorum_request_bytes_total", &labels),
                    duration: self.recorder.register_histogram(
                        &key("quorum_request_duration_seconds", &labels),
                        &METADATA,
                    ),
                    failures: self.counter("quorum_failures_total", &labels),
                }
            })
            .collect();
        let job_bytes = JobKind::VARIANTS
            .iter()
            .map(|kind| {
                self.counter(
                    "quorum_job_bytes_total",
                    &[("volume", volume), ("kind", kind.as_str())],
                )
            })
            .collect();
        let events = EventKind::VARIANTS
            .iter()
            .map(|e| {
                self.counter(
                    "quorum_events_total",
                    &[("volume", volume), ("event", e.as_str())],
                )
            })
            .collect();
        let children = children
            .iter()
            .map(|&child| (child.to_owned(), self.register_child(volume, child)))
            .collect();
        VolumeMetrics {
            ops,
            job_bytes,
            events,
            children: RwLock::new(children),
            counts: VolumeCounts::default(),
        }
    }

    fn register_child(&self, volume: &str, child: &str) -> ChildMetrics {
        let vc = [("volume", volume), ("child", child)];
        let metrics = ChildMetrics {
            errors: Op::VARIANTS
                .iter()
                .map(|op| {
                    self.counter(
                        "quorum_child_errors_total",
                        &[("volume", volume), ("child", child), ("op", op.as_str())],
                    )
                })
                .collect(),
            bad_reports: REPORT_TYPES
                .iter()
                .map(|t| {
                    self.counter(
                        "quorum_bad_reports_total",
                        &[("volume", volume), ("child", child), ("type", t.as_str())],
                    )
                })
                .collect(),
            corrupted: self.counter("quorum_corrupted_bytes_total", &vc),
            repaired: self.counter("quorum_repaired_bytes_total", &vc),
            healthy: self
                .recorder
                .register_gauge(&key("quorum_child_healthy", &vc), &METADATA),
            stale: self
                .recorder
                .register_gauge(&key("quorum_stale_bytes", &vc), &METADATA),
            states: ChildState::VARIANTS
                .iter()
                .map(|state| {
                    self.recorder.register_gauge(
                        &key(
                            "quorum_child_state",
                            &[
                                ("volume", volume),
                                ("child", child),
                                ("state", state.as_str()),
                            ],
                        ),
                        &METADATA,
                    )
                })
                .collect(),
            counts: ChildCounts::default(),
        };
        metrics.states[0].set(1.0);
        metrics.healthy.set(1.0);
        metrics
    }

    /// Registers the series of a child that joined `volume` at run time.
    pub fn add_child(&self, volume: &str, child: &str) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        let metrics = self.register_child(volume, child);
        v.children
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(child.to_owned())
            .or_insert(metrics);
    }

    /// Sets a volume's size, known once its children are open.
    pub fn set_size(&self, volume: &str, size: u64) {
        self.recorder
            .register_gauge(
                &key("quorum_volume_size_bytes", &[("volume", volume)]),
                &METADATA,
            )
            .set(size as f64);
    }

    /// Counts one request of `volume`: its kind, bytes and duration.
    pub fn request(&self, volume: &str, op: Op, bytes: u64, took: Duration) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        let m = &v.ops[index(op)];
        m.requests.increment(1);
        m.bytes.increment(bytes);
        m.duration.record(took.as_secs_f64());
        let (count, total) = match op {
            Op::Read => (&v.counts.reads, &v.counts.read_bytes),
            Op::Write | Op::WriteZeroes => (&v.counts.writes, &v.counts.write_bytes),
            Op::Flush | Op::BlockStatus => return,
        };
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Moves the count of NBD connections in transmission on `volume` by
    /// `delta` (`0` registers the series at zero).
    pub fn nbd_connections(&self, volume: &str, delta: i64) {
        let gauge = self.recorder.register_gauge(
            &key("quorum_nbd_connections", &[("volume", volume)]),
            &METADATA,
        );
        match delta {
            0 => gauge.increment(0.0),
            d if d > 0 => gauge.increment(d as f64),
            d => gauge.decrement(d.unsigned_abs() as f64),
        }
    }

    /// Counts bytes a background job went through.
    pub fn job_bytes(&self, volume: &str, kind: JobKind, bytes: u64) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        v.job_bytes[index(kind)].increment(bytes);
    }

    /// Counts what an event says about a volume and its children.
    pub fn event(&self, volume: &str, event: &Event) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        v.events[index(event.kind())].increment(1);
        match event {
            Event::ReportBad {
                op,
                child,
                bytes,
                error,
                ..
            } => {
                let children = v.children.read().unwrap_or_else(PoisonError::into_inner);
                let Some(c) = children.get(child) else {
                    return;
                };
                if let Some(t) = REPORT_TYPES
                    .iter()
                    .position(|t| t.as_str() == op.event_type())
                {
                    c.bad_reports[t].increment(1);
                }
                c.counts.bad_reports.fetch_add(1, Ordering::Relaxed);
                if error.is_some() {
                    c.errors[index(*op)].increment(1);
                    c.counts.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.corrupted.increment(*bytes);
                    c.counts
                        .corrupted_bytes
                        .fetch_add(*bytes, Ordering::Relaxed);
                }
            }
            Event::Failure { op, .. } => {
                v.ops[index(*op)].failures.increment(1);
                v.counts.failures.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rewrite { child, bytes, .. } => {
                if let Some(c) = v
                    .children
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(child)
                {
                    c.repaired.increment(*bytes);
                    c.counts.repaired_bytes.fetch_add(*bytes, Ordering::Relaxed);
                }
            }
            Event::BlkverifyMismatch { .. }
            | Event::ChildAdded { .. }
            | Event::ChildRemoved { .. }
            | Event::ChildStateChange { .. }
            | Event::JobStarted { .. }
            | Event::JobProgress { .. }
            | Event::JobCompleted { .. } => {}
        }
    }

    /// The Prometheus text exposition, with child health read from `volumes`.
    pub fn render<'a>(&self, volumes: impl IntoIterator<Item = (&'a str, &'a Volume)>) -> String {
        for (name, volume) in volumes {
            let Some(v) = self.volumes.get(name) else {
                continue;
            };
            let children = v.children.read().unwrap_or_else(PoisonError::into_inner);
            for child in volume.children() {
                if let Some(c) = children.get(&child.name) {
                    c.healthy
                        .set(if child.state == quorum_core::ChildState::Healthy {
                            1.0
                        } else {
                            0.0
                        });
                    c.stale.set(child.stale_bytes as f64);
                    for (gauge, state) in c.states.iter().zip(ChildState::VARIANTS) {
                        gauge.set(if child.state == *state { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// A volume's counters for the API: `{reads, writes, read_bytes, write_bytes, failures}`.
    pub fn volume_stats(&self, volume: &str) -> Value {
        let Some(v) = self.volumes.get(volume) else {
            return json!({});
        };
        let c = &v.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "reads": get(&c.reads),
            "writes": get(&c.writes),
            "read_bytes": get(&c.read_bytes),
            "write_bytes": get(&c.write_bytes),
            "failures": get(&c.failures),
        })
    }

    /// A child's counters for the API: `{errors, bad_reports, corrupted_bytes, repaired_bytes}`.
    pub fn child_stats(&self, volume: &str, child: &str) -> Value {
        let Some(v) = self.volumes.get(volume) else {
            return json!({});
        };
        let children = v.children.read().unwrap_or_else(PoisonError::into_inner);
        let Some(c) = children.get(child) else {
            return json!({});
        };
        let c = &c.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "errors": get(&c.errors),
            "bad_reports": get(&c.bad_reports),
            "corrupted_bytes": get(&c.corrupted_bytes),
            "repaired_bytes": get(&c.repaired_bytes),
        })
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

fn describe(r: &PrometheusRecorder) {
    let counters: [(&'static str, Option<Unit>, &'static str); 9] = [
        (
            "quorum_job_bytes_total",
            Some(Unit::Bytes),
            "Bytes scanned by scrubs and copied by resyncs, by volume and kind.",
        ),
        (
            "quorum_requests_total",
            None,
            "Requests served, by volume and op.",
        ),
        (
            "quorum_request_bytes_total",
            Some(Unit::Bytes),
            "Bytes asked for by requests, by volume and op.",
        ),
        (
            "quorum_child_errors_total",
            None,
            "Requests a child failed, by volume, child and op.",
        ),
        (
            "quorum_bad_reports_total",
            None,
            "QUORUM_REPORT_BAD events, by volume, child and type.",
        ),
        (
            "quorum_failures_total",
            None,
            "Requests that failed their quorum, by volume and op.",
        ),
        (
            "quorum_corrupted_bytes_total",
            Some(Unit::Bytes),
            "Bytes on which a child lost the vote.",
        ),
        (
            "quorum_repaired_bytes_total",
            Some(Unit::Bytes),
            "Bytes rewritten onto a child with the winning data.",
        ),
        (
            "quorum_events_total",
            None,
            "Events recorded, by volume and event name.",
        ),
    ];
    for (name, unit, help) in counters {
        r.describe_counter(KeyName::from(name), unit, SharedString::from(help));
    }
    r.describe_histogram(
        KeyName::from("quorum_request_duration_seconds"),
        Some(Unit::Seconds),
        SharedString::from("Request latency, by volume and op."),
    );
    r.describe_gauge(
        KeyName::from("quorum_volume_size_bytes"),
        Some(Unit::Bytes),
        SharedString::from("The volume's size."),
    );
    r.describe_gauge(
        KeyName::from("quorum_child_state"),
        None,
        SharedString::from(
            "1 for the child's current state (healthy, syncing, stale, failed), else 0.",
        ),
    );
    r.describe_gauge(
        KeyName::from("quorum_stale_bytes"),
        Some(Unit::Bytes),
        SharedString::from("Bytes a child missed that a resync has not copied yet."),
    );
    r.describe_gauge(
        KeyName::from("quorum_nbd_connections"),
        None,
        SharedString::from("NBD connections in transmission, by volume."),
    );
    r.describe_gauge(
        KeyName::from("quorum_child_healthy"),
        None,
        SharedString::from("1 when the child's last request succeeded, else 0."),
    );
}

/// The engine's event sink: counts each event, then records it in the log.
pub struct Observer {
    /// The metrics.
    pub telemetry: Arc<Telemetry>,
    /// The event log.
    pub log: Arc<EventLog>,
}

impl EventSink for Observer {
    fn emit(&self, volume: &str, event: Event) {
        self.telemetry.event(volume, &event);
        self.log.emit(volume, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_at_zero_and_count_events() {
        let t = Telemetry::new([("vm", vec!["a", "b"])]);
        t.set_size("vm", 1024);
        t.request("vm", Op::Read, 4096, Duration::from_micros(300));
        t.event(
            "vm",
            &Event::ReportBad {
                op: Op::Read,
                child: "b".into(),
                offset: 0,
                bytes: 100,
                error: None,
            },
        );
        t.event(
            "vm",
            &Event::ReportBad {
                op: Op::Write,
                child: "a".into(),
                offset: 0,
                bytes: 100,
                error: Some("EIO".into()),
            },
        );
        t.event(
            "vm",
            &Event::Rewrite {
                child: "b".into(),
                offset: 0,
                bytes: 100,
            },
        );
        let text = t.handle.render();
        for line in [
            "quorum_requests_total{volume=\"vm\",op=\"read\"} 1",
            "quorum_requests_total{volume=\"vm\",op=\"write\"} 0",
            "quorum_request_bytes_total{volume=\"vm\",op=\"read\"} 4096",
            "quorum_bad_reports_total{volume=\"vm\",child=\"b\",type=\"read\"} 1",
            "quorum_child_errors_total{volume=\"vm\",child=\"a\",op=\"write\"} 1",
            "quorum_corrupted_bytes_total{volume=\"vm\",child=\"b\"} 100",
            "quorum_repaired_bytes_total{volume=\"vm\",child=\"b\"} 100",
            "quorum_volume_size_bytes{volume=\"vm\"} 1024",
            "quorum_request_duration_seconds_bucket{volume=\"vm\",op=\"read\",le=\"0.0005\"} 1",
            "# TYPE quorum_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(t.child_stats("vm", "b")["corrupted_bytes"], 100);
        assert_eq!(t.child_stats("vm", "a")["errors"], 1);
        assert_eq!(t.volume_stats("vm")["read_bytes"], 4096);
    }
}
