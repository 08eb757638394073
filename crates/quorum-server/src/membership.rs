//! Children joining and leaving a volume at run time.
//!
//! A [`VolumeEntry`] serves one volume. Its engine volume is immutable, so a
//! membership change builds a new one over the same backends plus or minus
//! one child and swaps it in. Every engine call holds the entry's gate for
//! reading ([`VolumeEntry::run`]); a change holds it for writing, so it
//! happens between requests, never during one: overlapping requests stay
//! ordered and no request sees two memberships. The jobs (resync and
//! scrubs) are stopped at a checkpoint and started again on the new volume.
//!
//! A new child is not trusted: the whole volume is marked stale on it, so it
//! receives every new write but is neither read nor counted in votes, and
//! counts as data in block status, until the resync has made its copy (in
//! the background, without holding client I/O: where every other child
//! reads zero it is zeroed unless it reads zero already, elsewhere the voted
//! data is copied); it shows as `syncing` until then.
//!
//! A change waits for the requests in flight for [`DRAIN_WAIT`] at most; a
//! change that waits holds off new requests (the gate is a fair lock), so a
//! steady load cannot starve it.
//!
//! QEMU's constraints hold: no child is added in blkverify mode, no removal
//! leaves fewer children than `vote_threshold`, names are unique.
//!
//! The membership survives restarts: `data_dir/membership/<volume>.json`
//! holds the children (name, uri, options; it may hold secrets, so it is
//! written with mode 0600) in their stable order and the syncing ones; when
//! it exists it replaces the config file's children.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use parking_lot::{
    ArcRwLockReadGuard, RawRwLock, RwLock as FairLock, RwLockReadGuard, RwLockWriteGuard,
};
use quorum_backends::{ChildSource, Confinement, OpenError, Unopened};
use quorum_core::{
    Backend, ChildInfo, ChildSpec, Event, EventSink, Volume, VolumeError, VolumeOptions,
};
use serde::{Deserialize, Serialize};

use crate::background::{NotStopped, Runner};
use crate::config::{ChildConfig, NAME_RULE, valid_name};
use crate::controls::{Controls, ControlsConfig};
use crate::jobs::Jobs;
use crate::jobs::schedule::ClockedSink;
use crate::resync::ResyncConfig;
use crate::telemetry::Telemetry;

/// The most children a volume may have: each costs threads, a descriptor
/// and a full copy of the volume.
pub const MAX_CHILDREN: usize = 32;
/// The longest uri, option key and option value of a run-time child, and
/// the most options: they are saved, logged and put in events.
const MAX_URI_BYTES: usize = 1024;
const MAX_OPTION_KEY_BYTES: usize = 64;
const MAX_OPTIONS: usize = 16;

/// How long a membership change waits for the requests in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A child cannot be added to a blkverify volume.
    #[error("a child cannot be added in blkverify mode")]
    Blkverify,
    /// The name is taken.
    #[error("a child named {0:?} exists")]
    NameTaken(String),
    /// The name breaks the naming rule.
    #[error("bad child name: {NAME_RULE}")]
    BadName,
    /// The uri or an option is too long, or there are too many options.
    #[error(
        "the uri and each option value are at most {MAX_URI_BYTES} bytes, option keys {MAX_OPTION_KEY_BYTES}, and there are at most {MAX_OPTIONS} options"
    )]
    TooLong,
    /// The volume has as many children as it may.
    #[error("a volume has at most {MAX_CHILDREN} children")]
    TooManyChildren,
    /// The storage is another child's (of this volume or another).
    #[error(
        "volume {volume:?}, child {child:?} already uses that storage: one copy cannot have two votes"
    )]
    StorageTaken {
        /// The volume of the child that uses it.
        volume: String,
        /// That child.
        child: String,
    },
    /// The removal would leave a range with no fresh copy.
    #[error(
        "child {child:?} holds the only fresh copy of bytes {}..{} (the others missed writes there); wait for the resync",
        range.start,
        range.end
    )]
    LastCopy {
        /// The child.
        child: String,
        /// The range only it holds fresh.
        range: std::ops::Range<u64>,
    },
    /// The removal would leave fewer children than the threshold.
    #[error(
        "removing {child:?} would leave {left} children, fewer than vote_threshold {threshold}"
    )]
    BelowThreshold {
        /// The child.
        child: String,
        /// Children that would be left.
        left: usize,
        /// The volume's threshold.
        threshold: usize,
    },
    /// No child of that name.
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    /// The new child cannot be opened, or lies outside what the server
    /// allows ([`OpenError::Forbidden`]) or is not quorum's
    /// ([`OpenError::NotOurs`], [`OpenError::WrongSize`]).
    #[error("child {child:?}: {source}")]
    Open {
        /// The child.
        child: String,
        /// Why.
        source: OpenError,
    },
    /// The new volume could not be opened or prepared.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The new volume could not be opened.
    #[error(transparent)]
    Rebuild(#[from] quorum_core::OpenError),
    /// Requests in flight (or a job's step) did not end in time.
    #[error("the volume stayed busy for {0:?}; try again")]
    Busy(Duration),
    /// The volume is shutting down.
    #[error("the volume is shutting down")]
    Closing,
}

/// A change of a volume's children's configs, with the membership change
/// that makes it.
type ConfigEdit<'a> = dyn FnMut(&mut Vec<ChildConfig>) + 'a;

/// The saved membership of a volume.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The children, in order.
    pub children: Vec<SavedChild>,
    /// The children still syncing.
    #[serde(default)]
    pub syncing: Vec<String>,
}

/// One saved child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedChild {
    /// Its name.
    pub name: String,
    /// Its uri.
    pub uri: String,
    /// Its backend options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Where a volume's membership is saved.
pub fn saved_path(data_dir: &Path, volume: &str) -> PathBuf {
    data_dir.join("membership").join(format!("{volume}.json"))
}

/// Reads a saved membership, if there is one.
pub fn load(path: &Path) -> std::io::Result<Option<Saved>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a volume needs to be rebuilt.
pub struct Rebuild {
    /// The volume's options.
    pub options: VolumeOptions,
    /// The stale-map journal.
    pub journal: PathBuf,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Where relative child paths start.
    pub base_dir: PathBuf,
    /// Scrub rate limit.
    pub scrub_rate: u64,
    /// Resync rate limit.
    pub resync_rate: u64,
    /// The event sink.
    pub sink: Arc<dyn EventSink>,
    /// The metrics.
    pub telemetry: Arc<Telemetry>,
    /// What a child added at run time may reach.
    pub confine: Arc<Confinement>,
    /// The mark of this volume's files.
    pub mark: String,
}

/// A served volume: the current engine volume, its jobs, its children's
/// config, the gate that keeps membership changes between requests, and
/// the operator's controls (which outlive membership changes).
pub struct VolumeEntry {
    current: RwLock<Arc<Volume>>,
    gate: Arc<FairLock<()>>,
    /// Shared with the scrub schedule, which starts scrubs on the current
    /// jobs.
    jobs: Arc<Mutex<Arc<Jobs>>>,
    controls: Controls,
    /// Shared with the resync's callback, which saves the membership when a
    /// child has synced.
    children: Arc<Mutex<Vec<ChildConfig>>>,
    rebuild: Rebuild,
    /// Opens again the children that could not be opened at start.
    reopen: Mutex<Option<Runner<()>>>,
    /// Set at shutdown: no membership change starts after it.
    closing: AtomicBool,
}

impl VolumeEntry {
    /// Serves `volume`, whose children are `children`, with the
    /// `controls` of its config, and starts its jobs.
    pub fn start(
        volume: Volume,
        children: Vec<ChildConfig>,
        mut rebuild: Rebuild,
        controls: &ControlsConfig,
    ) -> std::io::Result<VolumeEntry> {
        let scrubs = Controls::scrub_clock(&rebuild.data_dir, volume.name(), controls)?;
        let events = rebuild.sink.clone();
        // The jobs' events tell the scrub clock when a scrub completed.
        rebuild.sink = Arc::new(ClockedSink {
            inner: events.clone(),
            clock: scrubs.clone(),
        });
        let volume = Arc::new(volume);
        let children = Arc::new(Mutex::new(children));
        let jobs = Jobs::start(
            volume.clone(),
            rebuild.sink.clone(),
            rebuild.telemetry.clone(),
            &rebuild.data_dir,
            rebuild.scrub_rate,
            resync_config(&rebuild, &children),
        )?;
        let jobs = Arc::new(Mutex::new(jobs));
        let controls = Controls::start(volume.name(), controls, scrubs, jobs.clone(), events)?;
        Ok(VolumeEntry {
            current: RwLock::new(volume),
            gate: Arc::new(FairLock::new(())),
            jobs,
            controls,
            children,
            rebuild,
            reopen: Mutex::new(None),
            closing: AtomicBool::new(false),
        })
    }

    /// The current engine volume.
    pub fn volume(&self) -> Arc<Volume> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The volume's jobs.
    pub fn jobs(&self) -> Arc<Jobs> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The volume's I/O limits, error policy, statistics and scrub clock.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// The children's uris, in order, without credentials.
    pub fn uris(&self) -> Vec<String> {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| quorum_backends::redact_uri(&c.uri))
            .collect()
    }

    /// Runs an engine call on the current volume, with no membership change
    /// meanwhile. Call it on a blocking thread.
    pub fn run<T>(&self, f: impl FnOnce(&Volume) -> T) -> T {
        let _gate = self.gate_read();
        f(&self.volume())
    }

    /// Holds off membership changes while the guard lives.
    pub fn gate_read(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// [`VolumeEntry::gate_read`] for a request that ends on another
    /// thread (the engine's): the guard may be dropped there. `None`,
    /// without waiting, when a membership change holds or waits for the
    /// gate.
    pub fn try_gate_owned(&self) -> Option<ArcRwLockReadGuard<RawRwLock, ()>> {
        self.gate.try_read_arc()
    }

    /// Waits for the requests in flight, holding off new ones meanwhile.
    fn gate_write(&self) -> Result<RwLockWriteGuard<'_, ()>, MembershipError> {
        self.gate
            .try_write_for(DRAIN_WAIT)
            .ok_or(MembershipError::Busy(DRAIN_WAIT))
    }

    /// Stops the reopening of children and the jobs (at a checkpoint); no
    /// membership change starts after it.
    ///
    /// # Errors
    /// The background workers that did not stop in time (each still in a
    /// step that may write): the volume must not be settled over them.
    pub fn stop(&self) -> Result<(), Vec<NotStopped>> {
        self.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + self.jobs().stop_wait();
        let mut stuck: Vec<NotStopped> = self.controls.stop(deadline).err().into_iter().collect();
        let reopen = self
            .reopen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runner) = reopen {
            if let Err(e) = runner.stop(deadline) {
                stuck.push(e);
            }
        }
        stuck.extend(self.jobs().stop());
        if stuck.is_empty() { Ok(()) } else { Err(stuck) }
    }

    /// Keeps `runner`, the worker that opens this volume's unopened
    /// children again, until [`VolumeEntry::stop`].
    pub(crate) fn set_reopener(&self, runner: Runner<()>) {
        *self.reopen.lock().unwrap_or_else(PoisonError::into_inner) = Some(runner);
    }

    /// What the volume's children are opened with.
    pub(crate) fn rebuild(&self) -> &Rebuild {
        &self.rebuild
    }

    /// The config of child `name` (uri, options, fault rules).
    pub(crate) fn child_config(&self, name: &str) -> Option<ChildConfig> {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Puts `backend` in place of child `name`, which must still be
    /// [`Unopened`]: a membership change that keeps the membership, so the
    /// child's stale ranges carry over (the journal knows them by name) and
    /// the resync copies them. Returns the child as it is now.
    pub(crate) fn replace_unopened(
        &self,
        name: &str,
        backend: Arc<dyn Backend>,
    ) -> Result<ChildInfo, MembershipError> {
        let _gate = self.gate_write()?;
        if self.closing.load(Ordering::Acquire) {
            return Err(MembershipError::Closing);
        }
        let old = self.volume();
        let mut specs = old.child_specs();
        let slot = specs
            .iter_mut()
            .find(|c| c.name == name && c.backend.kind() == Unopened::KIND)
            .ok_or_else(|| MembershipError::NoSuchChild(name.to_owned()))?;
        *slot = ChildSpec::new(name.to_owned(), backend);
        // The membership is unchanged: nothing to save (a saved membership
        // would take the place of the config file's children at start).
        self.swap(specs, old.syncing(), None, |_| Ok(()))?;
        self.volume()
            .children()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| MembershipError::NoSuchChild(name.to_owned()))
    }

    /// Adds a child, confined to what the server allows; it syncs before
    /// it votes. Its storage must not be any child's of `volumes` (every
    /// volume of the server, this one included). Call it on a blocking
    /// thread, one add at a time per server.
    pub fn add_child(
        &self,
        name: &str,
        uri: &str,
        options: BTreeMap<String, String>,
        volumes: &BTreeMap<String, Arc<VolumeEntry>>,
    ) -> Result<ChildInfo, MembershipError> {
        let old = self.volume();
        if old.options().blkverify {
            return Err(MembershipError::Blkverify);
        }
        if !valid_name(name) {
            return Err(MembershipError::BadName);
        }
        let too_long = uri.len() > MAX_URI_BYTES
            || options.len() > MAX_OPTIONS
            || options
                .iter()
                .any(|(k, v)| k.len() > MAX_OPTION_KEY_BYTES || v.len() > MAX_URI_BYTES);
        if too_long {
            return Err(MembershipError::TooLong);
        }
        if old.children().len() >= MAX_CHILDREN {
            return Err(MembershipError::TooManyChildren);
        }
        if old.children().iter().any(|c| c.name == name) {
            return Err(MembershipError::NameTaken(name.to_owned()));
        }
        let backend = quorum_backends::open(ChildSource {
            uri,
            options: &options,
            base_dir: &self.rebuild.base_dir,
            size: Some(old.size()),
            faults: &[],
            mark: &self.rebuild.mark,
            confine: Some(&self.rebuild.confine),
            create: true,
        })
        .map_err(|source| {
            let user = match &source {
                OpenError::NotOurs { identity, .. } => claimed(volumes, identity),
                _ => None,
            };
            match user {
                Some((volume, child)) => MembershipError::StorageTaken { volume, child },
                None => MembershipError::Open {
                    child: name.to_owned(),
                    source,
                },
            }
        })?;
        let _gate = self.gate_write()?;
        if self.closing.load(Ordering::Acquire) {
            return Err(MembershipError::Closing);
        }
        let old = self.volume();
        if old.children().iter().any(|c| c.name == name) {
            return Err(MembershipError::NameTaken(name.to_owned()));
        }
        if let Some((volume, child)) = claimed(volumes, &backend.identity()) {
            return Err(MembershipError::StorageTaken { volume, child });
        }
        let mut specs = old.child_specs();
        specs.push(ChildSpec::new(name.to_owned(), backend));
        let mut syncing = old.syncing();
        syncing.push(name.to_owned());
        let everything = 0..old.size();
        let config = ChildConfig {
            name: name.to_owned(),
            uri: uri.to_owned(),
            options,
            faults: Vec::new(),
        };
        self.swap(
            specs,
            syncing,
            Some(&mut |children: &mut Vec<ChildConfig>| children.push(config.clone())),
            |v| v.mark_stale(name, std::slice::from_ref(&everything)),
        )?;
        self.rebuild.telemetry.add_child(old.name(), name);
        self.rebuild.sink.emit(
            old.name(),
            Event::ChildAdded {
                child: name.to_owned(),
                uri: quorum_backends::redact_uri(uri),
            },
        );
        tracing::info!(volume = old.name(), child = name, "child added; syncing");
        self.volume()
            .children()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| MembershipError::NoSuchChild(name.to_owned()))
    }

    /// Removes a child. Call it on a blocking thread.
    pub fn remove_child(&self, name: &str) -> Result<(), MembershipError> {
        let _gate = self.gate_write()?;
        if self.closing.load(Ordering::Acquire) {
            return Err(MembershipError::Closing);
        }
        let old = self.volume();
        if !old.children().iter().any(|c| c.name == name) {
            return Err(MembershipError::NoSuchChild(name.to_owned()));
        }
        if let Some(range) = old.sole_copy(name) {
            return Err(MembershipError::LastCopy {
                child: name.to_owned(),
                range,
            });
        }
        let left = old.children().len() - 1;
        if left < old.options().vote_threshold {
            return Err(MembershipError::BelowThreshold {
                child: name.to_owned(),
                left,
                threshold: old.options().vote_threshold,
            });
        }
        let specs: Vec<ChildSpec> = old
            .child_specs()
            .into_iter()
            .filter(|c| c.name != name)
            .collect();
        let syncing: Vec<String> = old.syncing().into_iter().filter(|c| c != name).collect();
        self.swap(
            specs,
            syncing,
            Some(&mut |children: &mut Vec<ChildConfig>| children.retain(|c| c.name != name)),
            |_| Ok(()),
        )?;
        self.rebuild.telemetry.remove_child(old.name(), name);
        self.rebuild.sink.emit(
            old.name(),
            Event::ChildRemoved {
                child: name.to_owned(),
            },
        );
        tracing::info!(volume = old.name(), child = name, "child removed");
        Ok(())
    }

    /// With the gate held: stops the jobs, opens the new volume, prepares
    /// it, swaps it in, applies `edit` to the children's configs and saves
    /// the membership (when there is an edit), starts the jobs again.
    fn swap(
        &self,
        specs: Vec<ChildSpec>,
        syncing: Vec<String>,
        edit: Option<&mut ConfigEdit<'_>>,
        prepare: impl FnOnce(&Volume) -> Result<(), VolumeError>,
    ) -> Result<(), MembershipError> {
        let r = &self.rebuild;
        let jobs = self.jobs();
        if !jobs.stop().is_empty() {
            // A job is still in a step on the old volume: a new volume over
            // the same children must not run beside it.
            self.restart_jobs(self.volume());
            return Err(MembershipError::Busy(jobs.stop_wait()));
        }
        // No request runs now: settle the old volume's write intents, so
        // that the new one has nothing to reconcile (if this fails, it does).
        if let Err(e) = self.volume().flush_and_settle() {
            tracing::warn!(volume = r.options.name, error = %e, "the flush before a membership change failed; the new volume reconciles the regions written lately");
        }
        let opened = self.volume().succeed(r.options.clone(), specs, &r.journal);
        let volume = match opened {
            Ok(v) => Arc::new(v),
            Err(e) => {
                self.restart_jobs(self.volume());
                return Err(e.into());
            }
        };
        if let Err(e) = prepare(&volume) {
            volume.close(Duration::ZERO);
            self.restart_jobs(self.volume());
            return Err(e.into());
        }
        volume.set_syncing(syncing);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = volume.clone();
        if let Some(edit) = edit {
            edit(&mut self.children.lock().unwrap_or_else(PoisonError::into_inner));
            save_membership(&r.data_dir, &volume, &self.children);
        }
        self.restart_jobs(volume);
        Ok(())
    }

    fn restart_jobs(&self, volume: Arc<Volume>) {
        let r = &self.rebuild;
        match Jobs::start(
            volume,
            r.sink.clone(),
            r.telemetry.clone(),
            &r.data_dir,
            r.scrub_rate,
            resync_config(r, &self.children),
        ) {
            Ok(jobs) => *self.jobs.lock().unwrap_or_else(PoisonError::into_inner) = jobs,
            Err(e) => tracing::error!(error = %e, "cannot restart the volume's jobs"),
        }
    }
}

/// The volume and child of `volumes` whose storage is `identity`, if any.
pub fn claimed(
    volumes: &BTreeMap<String, Arc<VolumeEntry>>,
    identity: &str,
) -> Option<(String, String)> {
    volumes.iter().find_map(|(volume, entry)| {
        entry
            .volume()
            .child_specs()
            .into_iter()
            .find(|c| c.backend.identity() == identity)
            .map(|c| (volume.clone(), c.name))
    })
}

/// The resync of a volume, saving the membership whenever a child synced
/// (so that a restart does not show it as syncing again).
fn resync_config(r: &Rebuild, children: &Arc<Mutex<Vec<ChildConfig>>>) -> ResyncConfig {
    let (data_dir, children) = (r.data_dir.clone(), children.clone());
    ResyncConfig {
        rate: r.resync_rate,
        on_synced: Arc::new(move |volume: &Volume| save_membership(&data_dir, volume, &children)),
    }
}

/// Saves `volume`'s membership: `children` in order and the syncing ones.
fn save_membership(data_dir: &Path, volume: &Volume, children: &Mutex<Vec<ChildConfig>>) {
    let saved = Saved {
        children: children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| SavedChild {
                name: c.name.clone(),
                uri: c.uri.clone(),
                options: c.options.clone(),
            })
            .collect(),
        syncing: volume.syncing(),
    };
    if let Err(e) = save(&saved_path(data_dir, volume.name()), &saved) {
        tracing::error!(volume = volume.name(), error = %e, "cannot save the membership");
    }
}

/// Writes a membership atomically, readable by the owner only (it may hold
/// credentials).
fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
