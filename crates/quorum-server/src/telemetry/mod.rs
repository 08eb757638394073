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
//! Labels are bounded: `volume`, `child`, `op`, `type`, `event`, `frontend`
//! — never a uri or an offset. Events feed the per-child series through [`Observer`], the
//! engine's event sink, which forwards each event to the event log too.
//!
//! # Series of children that come and go
//!
//! The exporter's registry cannot forget a series: it has no delete, and
//! its `idle_timeout` would drop every series not updated for a while,
//! live counters that stay at zero included. A child added and removed at
//! run time would leave its series (and their memory) behind forever, and
//! a loop of additions and removals would grow `/metrics` without bound.
//! So the per-child families (`quorum_child_*`, `quorum_bad_reports_total`,
//! `quorum_corrupted_bytes_total`, `quorum_repaired_bytes_total`,
//! `quorum_stale_bytes`, `quorum_child_damaged_bytes`) are not in the registry: each volume keeps its
//! children's counters in a map, [`Telemetry::render`] writes them after
//! the exporter's text, and [`Telemetry::remove_child`] drops a child's
//! entry, so its series go with it.
//!
//! # Histogram samples
//!
//! The exporter keeps each histogram sample until an upkeep folds it into
//! the buckets: a server nobody scrapes would hold 8 bytes per request for
//! good (30 MiB in half a minute of 4 KiB reads). [`Telemetry::upkeep`]
//! runs every [`UPKEEP_EVERY`], as the exporter's own installer does.

mod children;
mod describe;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use quorum_core::{ChildState, Event, EventKind, EventSink, JobKind, Op, VariantArray, Volume};

use self::children::ChildMetrics;
use self::describe::describe;
use crate::events::EventLog;
use crate::history::{Direction, History, Recent};

/// How often [`Telemetry::upkeep`] should run: the exporter's own default.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Bucket bounds of the request-duration histogram, in seconds: 50 µs to 10 s.
const DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The `type` values of `QUORUM_REPORT_BAD`.
const REPORT_TYPES: [Op; 3] = [Op::Read, Op::Write, Op::Flush];

/// How many ops there are.
const OPS: usize = Op::VARIANTS.len();

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The index of a word in its `VARIANTS`, which list every value in
/// declaration order.
fn index<T: VariantArray + PartialEq>(word: T) -> usize {
    T::VARIANTS.iter().position(|w| *w == word).unwrap_or(0)
}

/// The front end a request came in by: its one string form is the
/// `frontend` label of the request series (`http`, `nbd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Frontend {
    /// The HTTP API.
    Http,
    /// The NBD export.
    Nbd,
}

impl Frontend {
    /// The metric label: `http` or `nbd`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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
    /// The last seconds of requests and job bytes.
    history: History,
}

struct OpMetrics {
    /// By front end, in `Frontend::VARIANTS` order.
    by_frontend: Vec<RequestMetrics>,
    failures: Counter,
}

/// The request series of one volume, op and front end.
struct RequestMetrics {
    requests: Counter,
    bytes: Counter,
    duration: Histogram,
}

#[derive(Default)]
struct VolumeCounts {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    failures: AtomicU64,
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
                let by_frontend = Frontend::VARIANTS
                    .iter()
                    .map(|f| {
                        let labels = [labels[0], labels[1], ("frontend", f.as_str())];
                        RequestMetrics {
                            requests: self.counter("quorum_requests_total", &labels),
                            bytes: self.counter("quorum_request_bytes_total", &labels),
                            duration: self.recorder.register_histogram(
                                &key("quorum_request_duration_seconds", &labels),
                                &METADATA,
                            ),
                        }
                    })
                    .collect();
                OpMetrics {
                    by_frontend,
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
            .map(|&child| (child.to_owned(), ChildMetrics::new()))
            .collect();
        VolumeMetrics {
            ops,
            job_bytes,
            events,
            children: RwLock::new(children),
            counts: VolumeCounts::default(),
            history: History::new(),
        }
    }

    /// Registers the series of a child that joined `volume` at run time.
    pub fn add_child(&self, volume: &str, child: &str) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        v.children
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(child.to_owned())
            .or_insert_with(ChildMetrics::new);
    }

    /// Forgets the series of a child that left `volume`: they are no longer
    /// rendered and their memory is freed. A child added again under the
    /// same name starts at zero.
    pub fn remove_child(&self, volume: &str, child: &str) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        v.children
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(child);
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

    /// Counts one request of `volume` that came in by `frontend`: its
    /// kind, bytes and duration, in the series and in the volume's history.
    pub fn request(&self, volume: &str, frontend: Frontend, op: Op, bytes: u64, took: Duration) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        let m = &v.ops[index(op)].by_frontend[index(frontend)];
        m.requests.increment(1);
        m.bytes.increment(bytes);
        m.duration.record(took.as_secs_f64());
        let (count, total) = match Direction::of(op) {
            Some(Direction::Read) => (&v.counts.reads, &v.counts.read_bytes),
            Some(Direction::Write) => (&v.counts.writes, &v.counts.write_bytes),
            None => return,
        };
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
        v.history.request(op, bytes, took);
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

    /// Counts bytes a background job went through, in the series and in
    /// the volume's history.
    pub fn job_bytes(&self, volume: &str, kind: JobKind, bytes: u64) {
        let Some(v) = self.volumes.get(volume) else {
            return;
        };
        v.job_bytes[index(kind)].increment(bytes);
        v.history.job_bytes(kind, bytes);
    }

    /// The closed seconds of `volume`'s history after `after` (see
    /// [`crate::history`]); `None` for a volume it does not know.
    pub fn history(&self, volume: &str, after: Option<u64>) -> Option<Recent> {
        self.volumes.get(volume).map(|v| v.history.since(after))
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
                    c.bad_reports[t].fetch_add(1, Ordering::Relaxed);
                }
                c.bad_reports_total.fetch_add(1, Ordering::Relaxed);
                if error.is_some() {
                    c.errors[index(*op)].fetch_add(1, Ordering::Relaxed);
                } else {
                    c.corrupted_bytes.fetch_add(*bytes, Ordering::Relaxed);
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
                    c.repaired_bytes.fetch_add(*bytes, Ordering::Relaxed);
                }
            }
            Event::BlkverifyMismatch { .. }
            | Event::ChildAdded { .. }
            | Event::ChildRemoved { .. }
            | Event::ChildStateChange { .. }
            | Event::JobStarted { .. }
            | Event::JobProgress { .. }
            | Event::JobCompleted { .. }
            | Event::VolumeSuspended { .. }
            | Event::VolumeResumed { .. } => {}
        }
    }

    /// Folds the histogram samples recorded since the last upkeep (or
    /// scrape) into their buckets, and frees them.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
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
                    let healthy = child.state == ChildState::Healthy;
                    c.healthy.store(u64::from(healthy), Ordering::Relaxed);
                    c.stale_bytes.store(child.stale_bytes, Ordering::Relaxed);
                    c.damaged_bytes
                        .store(child.damaged_bytes, Ordering::Relaxed);
                    c.state.store(index(child.state), Ordering::Relaxed);
                }
            }
        }
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        self.render_children(&mut text);
        text
    }

    /// A volume's counters for the API (zero for an unknown volume).
    pub fn volume_stats(&self, volume: &str) -> VolumeCounters {
        let Some(v) = self.volumes.get(volume) else {
            return VolumeCounters::default();
        };
        let c = &v.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VolumeCounters {
            reads: get(&c.reads),
            writes: get(&c.writes),
            read_bytes: get(&c.read_bytes),
            write_bytes: get(&c.write_bytes),
            failures: get(&c.failures),
        }
    }

    /// A child's counters for the API; `None` for a child it does not
    /// know (one removed meanwhile).
    pub fn child_stats(&self, volume: &str, child: &str) -> Option<ChildCounters> {
        let v = self.volumes.get(volume)?;
        let children = v.children.read().unwrap_or_else(PoisonError::into_inner);
        let c = children.get(child)?;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(ChildCounters {
            errors: c.errors.iter().map(get).sum::<u64>(),
            bad_reports: get(&c.bad_reports_total),
            corrupted_bytes: get(&c.corrupted_bytes),
            repaired_bytes: get(&c.repaired_bytes),
        })
    }
}

/// A volume's counters as the API shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VolumeCounters {
    /// Reads served.
    pub reads: u64,
    /// Writes served.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Requests that failed their quorum.
    pub failures: u64,
}

/// A child's counters as the API shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ChildCounters {
    /// Requests it failed.
    pub errors: u64,
    /// Bad reports about it (`QUORUM_REPORT_BAD`).
    pub bad_reports: u64,
    /// Bytes it had wrong (lost votes).
    pub corrupted_bytes: u64,
    /// Bytes written back over its wrong ones.
    pub repaired_bytes: u64,
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
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
