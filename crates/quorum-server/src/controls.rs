//! The operator's controls of a volume (SPEC 11, from QEMU's block layer),
//! held together: its I/O limits ([`Throttle`]), its error policy and
//! suspension ([`Suspension`]), its statistics ([`Stats`]), and its
//! scrub clock and schedule ([`ScrubClock`], [`ScrubScheduler`]).
//!
//! They live as long as the volume's [`VolumeEntry`] (membership changes
//! swap the engine volume and its jobs, not these), and every data request
//! of HTTP and NBD passes through them in [`VolumeEntry::io`]. What
//! Prometheus sees of them is written by [`render_metrics`].
//!
//! [`VolumeEntry`]: crate::membership::VolumeEntry
//! [`VolumeEntry::io`]: crate::membership::VolumeEntry::io

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::EventSink;

use crate::background::{NotStopped, Runner};
use crate::jobs::Jobs;
use crate::jobs::schedule::{ScrubClock, ScrubScheduler};
use crate::membership::VolumeEntry;
use crate::stats::Stats;
use crate::suspend::{DEFAULT_SUSPEND_TIMEOUT, ErrorPolicy, Suspension, VolumeState};
use crate::throttle::{IoLimits, Throttle};

/// A volume's controls as the config gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlsConfig {
    /// `[volume.limits]`.
    pub limits: IoLimits,
    /// `on_quorum_failure`.
    pub on_quorum_failure: ErrorPolicy,
    /// `suspend_timeout`.
    pub suspend_timeout: Duration,
    /// `scrub_interval`, if scrubs are scheduled.
    pub scrub_interval: Option<Duration>,
}

impl Default for ControlsConfig {
    fn default() -> Self {
        ControlsConfig {
            limits: IoLimits::default(),
            on_quorum_failure: ErrorPolicy::default(),
            suspend_timeout: DEFAULT_SUSPEND_TIMEOUT,
            scrub_interval: None,
        }
    }
}

/// The controls of one volume.
pub struct Controls {
    /// Its I/O limits.
    pub throttle: Throttle,
    /// Its error policy, and its suspension if any.
    pub suspension: Arc<Suspension>,
    /// Its statistics.
    pub stats: Stats,
    /// When its scrubs last completed.
    pub scrubs: Arc<ScrubClock>,
    scheduler: Mutex<Option<Runner<()>>>,
}

impl Controls {
    /// The controls of `volume` as `config` says, with the scrub clock
    /// `scrubs`; starts the scrub schedule (if any) over the volume's
    /// current `jobs`. Suspension events go to `sink`.
    ///
    /// # Errors
    /// The scheduler's thread cannot start.
    pub fn start(
        volume: &str,
        config: &ControlsConfig,
        scrubs: Arc<ScrubClock>,
        jobs: Arc<Mutex<Arc<Jobs>>>,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Controls> {
        let scheduler = match config.scrub_interval {
            Some(interval) => {
                let worker = ScrubScheduler::new(scrubs.clone(), interval, jobs);
                let runner = Runner::spawn_with_bell(
                    worker,
                    |()| {},
                    |bell| {
                        scrubs.listen(Some(bell));
                    },
                )?;
                Some(runner)
            }
            None => None,
        };
        Ok(Controls {
            throttle: Throttle::new(config.limits),
            suspension: Arc::new(Suspension::new(
                volume,
                config.on_quorum_failure,
                config.suspend_timeout,
                sink,
            )),
            stats: Stats::new(),
            scrubs,
            scheduler: Mutex::new(scheduler),
        })
    }

    /// Loads the scrub clock of `volume` from `data_dir`.
    ///
    /// # Errors
    /// As [`ScrubClock::load`].
    pub fn scrub_clock(
        data_dir: &Path,
        volume: &str,
        config: &ControlsConfig,
    ) -> std::io::Result<Arc<ScrubClock>> {
        ScrubClock::load(data_dir, volume, config.scrub_interval).map(Arc::new)
    }

    /// Stops the scrub schedule, waiting until `deadline`.
    ///
    /// # Errors
    /// The scheduler did not stop in time (it is stuck starting a scrub).
    pub fn stop(&self, deadline: Instant) -> Result<(), NotStopped> {
        let runner = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        runner.map_or(Ok(()), |r| r.stop(deadline))
    }

    /// What `GET /v1/volumes` shows of the controls.
    pub fn view(&self) -> ControlsView {
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let s = &self.suspension;
        ControlsView {
            state: s.state().as_str(),
            suspension: s.suspended().map(|sus| SuspensionView {
                cause: sus.cause.to_string(),
                since: time(sus.since),
                fails_at: time(sus.fails_at),
                held: sus.held,
            }),
            on_quorum_failure: s.policy().as_str(),
            suspend_timeout_seconds: s.timeout().as_secs_f64(),
            scrub_interval_seconds: self.scrubs.interval().map(|i| i.as_secs_f64()),
            last_scrub: self.scrubs.last_completed().map(time),
            next_scrub: self.scrubs.next_due().map(time),
        }
    }
}

/// A volume's controls as `GET /v1/volumes` shows them, beside its other
/// fields.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Controls)]
pub struct ControlsView {
    /// Whether it serves or holds its requests.
    #[schema(value_type = crate::schema::VolumeState)]
    pub state: &'static str,
    /// While it is suspended: why, since when, when the held requests fail.
    pub suspension: Option<SuspensionView>,
    /// What a request that fails its quorum does.
    #[schema(value_type = crate::schema::ErrorPolicy)]
    pub on_quorum_failure: &'static str,
    /// How long requests are held before they fail.
    pub suspend_timeout_seconds: f64,
    /// The interval of scheduled scrubs, if any.
    pub scrub_interval_seconds: Option<f64>,
    /// When the last scrub completed (RFC 3339).
    pub last_scrub: Option<String>,
    /// When the next scheduled scrub is due (RFC 3339).
    pub next_scrub: Option<String>,
}

/// A suspension as `GET /v1/volumes` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Suspension)]
pub struct SuspensionView {
    /// The quorum failure that suspended the volume.
    pub cause: String,
    /// When (RFC 3339).
    pub since: String,
    /// When the held requests fail unless it is resumed (RFC 3339).
    pub fails_at: String,
    /// Requests held.
    pub held: usize,
}

/// One gauge family of the controls: its name, help, and value per volume
/// (none: no sample).
struct Family {
    name: &'static str,
    help: &'static str,
    value: fn(&Controls) -> Option<f64>,
}

const FAMILIES: [Family; 3] = [
    Family {
        name: "quorum_volume_suspended",
        help: "1 while the volume is suspended (on_quorum_failure = \"suspend\" after a quorum failure; its requests are held), else 0.",
        value: |c| {
            Some(f64::from(u8::from(
                c.suspension.state() == VolumeState::Suspended,
            )))
        },
    },
    Family {
        name: "quorum_last_scrub_timestamp_seconds",
        help: "When the volume's last scrub completed (Unix time); on a volume with scrub_interval and no completed scrub yet, when the schedule began.",
        value: |c| c.scrubs.last_or_since().map(unix_seconds),
    },
    Family {
        name: "quorum_scrub_interval_seconds",
        help: "The volume's scrub_interval, when its scrubs are scheduled.",
        value: |c| c.scrubs.interval().map(|i| i.as_secs_f64()),
    },
];

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The controls' gauges of every volume, in the text format. Each family
/// is declared even with no sample, so dashboards and rules find its name.
/// Volume names obey the naming rule, so they need no escaping.
pub fn render_metrics(volumes: &BTreeMap<String, Arc<VolumeEntry>>) -> String {
    let mut out = String::new();
    for family in &FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} gauge", family.name);
        for (name, entry) in volumes {
            if let Some(value) = (family.value)(entry.controls()) {
                let _ = writeln!(out, "{}{{volume=\"{name}\"}} {value}", family.name);
            }
        }
    }
    out
}
