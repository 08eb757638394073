//! Start-up and shutdown: open every volume, serve, stop cleanly.
//!
//! Start-up validates everything before it listens: the config, every
//! child (created sparse if missing, sizes checked), the event log. A
//! remote child that cannot be reached (an S3 store or a quorum-server that
//! is down) does not stop the start when the others reach the volume's
//! `vote_threshold`: the volume opens without it, failed, and
//! [`crate::reopen`] opens it when it can. Shutdown
//! on SIGTERM or Ctrl-C stops accepting, lets in-flight requests finish
//! (their engine calls run to completion on the blocking pool), ends live
//! event streams, then flushes every volume and stops its workers, saying
//! which child did not stop in time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use quorum_backends::lock::Exclusive;
use quorum_backends::{ChildSource, Confinement, OpenError};
use quorum_core::{ChildSpec, ChildState, Event, EventSink, Volume};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::budget::Budget;
use crate::config::{ChildConfig, Config, NbdConfig, VolumeConfig};
use crate::events::EventLog;
use crate::listener::{self, Limits};
use crate::membership::{self, Rebuild, VolumeEntry};
use crate::nbd::NbdExports;
use crate::nbd_listen::NbdListeners;
use crate::origins::{self, Origins};
use crate::reopen::{Reopener, Unreached};
use crate::telemetry::{Observer, Telemetry, UPKEEP_EVERY};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long each volume's workers get to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Opens the volumes of `config` with their events going to `sink`, and
/// starts their jobs and the reopening of the children they start without.
///
/// # Errors
/// The first volume or child that cannot be opened, as one line naming
/// them.
pub fn open_volumes(
    config: &Config,
    sink: &Arc<dyn EventSink>,
    telemetry: &Arc<Telemetry>,
) -> anyhow::Result<BTreeMap<String, Arc<VolumeEntry>>> {
    let mut confine = Confinement::new(&config.child_roots, &config.allowed_endpoints)
        .map_err(anyhow::Error::msg)?;
    for child in config.volumes.iter().flat_map(|v| &v.children) {
        confine.allow_child(&child.uri, &child.options);
    }
    let confine = Arc::new(confine);
    let mut volumes: BTreeMap<String, Arc<VolumeEntry>> = BTreeMap::new();
    let mut missing = Vec::new();
    for vc in &config.volumes {
        let (entry, unreached) = open_volume(config, vc, sink, telemetry, &confine)?;
        let volume = entry.volume();
        for child in volume.child_specs() {
            if let Some((other, owner)) = membership::claimed(&volumes, &child.backend.identity()) {
                return Err(anyhow!(
                    "volume {:?}, child {:?}: it uses the same storage as volume {other:?}, child {owner:?}",
                    vc.options.name,
                    child.name
                ));
            }
        }
        volumes.insert(vc.options.name.clone(), Arc::new(entry));
        missing.push((vc.options.name.clone(), unreached));
    }
    // Said once every volume is open: a refusal stays the only line.
    for (name, entry) in &volumes {
        let volume = entry.volume();
        tracing::info!(volume = %name, size = volume.size(), children = volume.children().len(), "volume opened");
    }
    let all: Vec<_> = volumes.values().map(Arc::downgrade).collect();
    for (name, unreached) in missing {
        let Some(entry) = volumes.get(&name) else {
            continue;
        };
        for (u, why) in &unreached {
            tracing::warn!(volume = %name, child = %u.child, error = %why, "a child cannot be opened: the volume starts without it (failed; every write it misses is marked stale) and opens it when it can");
            sink.emit(
                &name,
                Event::ChildStateChange {
                    child: u.child.clone(),
                    from: ChildState::Healthy,
                    to: ChildState::Failed,
                },
            );
        }
        let children = unreached.into_iter().map(|(u, _)| u).collect();
        Reopener::start(entry, all.clone(), children).with_context(|| {
            format!("volume {name:?}: cannot start reopening its unopened children")
        })?;
    }
    Ok(volumes)
}

/// Where `child` of `vc` lives, and whether the config file names it (else
/// it was added through the API: it is opened as confined as it was added,
/// and never created again; one that fails does not keep the server from
/// starting).
fn child_source<'a>(
    config: &'a Config,
    vc: &'a VolumeConfig,
    child: &'a ChildConfig,
    mark: &'a str,
    confine: &'a Confinement,
) -> (bool, ChildSource<'a>) {
    let from_config = vc.names(child);
    let source = ChildSource {
        uri: &child.uri,
        options: &child.options,
        base_dir: &config.base_dir,
        size: vc.size,
        faults: &child.faults,
        mark,
        confine: (!from_config).then_some(confine),
        create: from_config,
    };
    (from_config, source)
}

/// Opens one volume. A child that cannot be opened is an error, unless it
/// is a remote that cannot be reached ([`OpenError::Unreachable`]) or was
/// added at run time, and the other children reach `vote_threshold`: then
/// the volume opens without it (an [`quorum_backends::Unopened`] in its
/// place, failed) and it is returned with why, to be opened again.
fn open_volume(
    config: &Config,
    vc: &VolumeConfig,
    sink: &Arc<dyn EventSink>,
    telemetry: &Arc<Telemetry>,
    confine: &Arc<Confinement>,
) -> anyhow::Result<(VolumeEntry, Vec<(Unreached, String)>)> {
    let name = &vc.options.name;
    let saved_at = membership::saved_path(&config.data_dir, name);
    let saved = membership::load(&saved_at)
        .with_context(|| format!("volume {name:?}: cannot read {}", saved_at.display()))?;
    let (children, syncing) = match saved {
        Some(saved) => {
            tracing::debug!(volume = %name, file = %saved_at.display(), "children from the saved membership");
            let names = |list: &mut dyn Iterator<Item = &str>| list.collect::<Vec<_>>().join(", ");
            let config_names = names(&mut vc.children.iter().map(|c| c.name.as_str()));
            let saved_names = names(&mut saved.children.iter().map(|c| c.name.as_str()));
            if config_names != saved_names {
                tracing::warn!(volume = %name, file = %saved_at.display(), saved = %saved_names, config = %config_names, "the children changed at run time are served, not the config file's: the saved membership replaces them; change them with `quorum child add|remove`");
            }
            let children = saved
                .children
                .into_iter()
                .map(|c| {
                    // Fault rules live in the config only.
                    let faults = vc
                        .children
                        .iter()
                        .find(|k| k.name == c.name)
                        .map(|k| k.faults.clone())
                        .unwrap_or_default();
                    ChildConfig {
                        name: c.name,
                        uri: c.uri,
                        options: c.options,
                        faults,
                    }
                })
                .collect();
            (children, saved.syncing)
        }
        None => (vc.children.clone(), Vec::new()),
    };
    let mark = Confinement::mark(&config.data_dir, name).with_context(|| {
        format!(
            "cannot read or make the server id in {}",
            config.data_dir.display()
        )
    })?;
    let mut opened = Vec::with_capacity(children.len());
    let mut unopened: Vec<(Unreached, String)> = Vec::new();
    let journal = origins::journal_path(&config.data_dir, name);
    // A journal from an earlier start says what each child missed until
    // then; without one nothing is known of a child that is not there, and
    // writes may have reached the others without it.
    let known = journal.exists();
    let source_of = |child| child_source(config, vc, child, &mark, confine);
    let mut origins = Origins::default();
    for child in &children {
        let (from_config, source) = source_of(child);
        origins.survey(&child.name, &source, from_config);
    }
    origins.check(name, &journal, children.len(), vc.options.vote_threshold)?;
    for child in &children {
        let (from_config, source) = source_of(child);
        let result = if origins.defers_mark(&child.name, known) {
            quorum_backends::open_unmarked(source)
        } else {
            quorum_backends::open(source)
        };
        match result {
            Ok(backend) => opened.push(Some(backend)),
            // A remote that is down may come back; any other failure of
            // a config file's child is a mistake to fix first.
            Err(e) if !from_config || matches!(e, OpenError::Unreachable { .. }) => {
                let child = child.name.clone();
                unopened.push((Unreached { child, from_config }, e.to_string()));
                opened.push(None);
            }
            Err(e) => return Err(anyhow!("volume {name:?}, child {:?}: {e}", child.name)),
        }
    }
    let reachable = opened.iter().flatten().count();
    let threshold = vc.options.vote_threshold;
    if !unopened.is_empty() && reachable < threshold {
        let why: Vec<String> = unopened
            .iter()
            .map(|(u, why)| format!("child {:?}: {why}", u.child))
            .collect();
        return Err(anyhow!(
            "volume {name:?}: only {reachable} of {} children can be opened, fewer than vote_threshold {threshold}; {}",
            children.len(),
            why.join("; ")
        ));
    }
    let size = match vc.size {
        Some(size) => Some(size),
        None => opened.iter().flatten().find_map(|b| b.size().ok()),
    };
    let mut specs = Vec::with_capacity(children.len());
    for (child, backend) in children.iter().zip(opened) {
        let backend = match (backend, size) {
            (Some(backend), _) => backend,
            (None, Some(size)) => {
                let why = unopened
                    .iter()
                    .find(|(u, _)| u.child == child.name)
                    .map(|(_, why)| why.clone())
                    .unwrap_or_default();
                Arc::new(quorum_backends::Unopened::new(
                    &child.name,
                    &child.uri,
                    why,
                    size,
                ))
            }
            (None, None) => {
                return Err(anyhow!(
                    "volume {name:?}: no child could be opened to learn the volume's size"
                ));
            }
        };
        specs.push(ChildSpec::new(child.name.clone(), backend));
    }
    let volume = Volume::open_journaled(vc.options.clone(), specs, sink.clone(), Some(&journal))
        .map_err(|e| anyhow!("volume {name:?}: {e}"))?;
    volume.set_syncing(syncing);
    for (u, _) in &unopened {
        volume.mark_failed(&u.child);
        if known {
            continue;
        }
        let everything = 0..volume.size();
        volume
            .mark_stale(&u.child, std::slice::from_ref(&everything))
            .map_err(|e| {
                anyhow!(
                    "volume {name:?}, child {:?}: cannot mark it stale: {e}",
                    u.child
                )
            })?;
    }
    origins.mark(&volume, known, &**sink)?;
    for child in children
        .iter()
        .filter(|c| origins.defers_mark(&c.name, known))
    {
        if let Err(e) = source_of(child).1.mark_file() {
            tracing::warn!(volume = %name, child = %child.name, error = %e, "cannot mark the child's file as the volume's: it will be resynced whole again at the next start");
        }
    }
    for child in &children {
        telemetry.add_child(name, &child.name);
    }
    telemetry.set_size(name, volume.size());
    let rebuild = Rebuild {
        options: vc.options.clone(),
        journal,
        data_dir: config.data_dir.clone(),
        base_dir: config.base_dir.clone(),
        scrub_rate: config.scrub_rate,
        resync_rate: config.resync_rate,
        sink: sink.clone(),
        telemetry: telemetry.clone(),
        confine: confine.clone(),
        mark,
    };
    let entry = VolumeEntry::start(volume, children, rebuild, &vc.controls)
        .with_context(|| format!("volume {name:?}: cannot start its background jobs"))?;
    Ok((entry, unopened))
}

/// Serves `config` until SIGTERM or Ctrl-C. `listen` overrides the config's
/// address, `nbd` the NBD TCP one. Prints `listening on http://ADDR` on
/// stdout once bound, then `nbd listening on nbd://ADDR` and
/// `nbd listening on nbd+unix:///?socket=PATH` for the NBD listeners.
pub fn run(
    mut config: Config,
    listen: Option<SocketAddr>,
    nbd: Option<SocketAddr>,
) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if let Some(addr) = nbd {
        let mut nbd = config.nbd.take().unwrap_or(NbdConfig {
            listen: None,
            socket: None,
            allow_plaintext: false,
            tls: None,
        });
        nbd.listen = Some(addr);
        nbd.check()?;
        crate::config::check_nbd_budget(config.max_buffered_bytes)?;
        config.nbd = Some(nbd);
    }
    config.check_listeners()?;
    if config.token.is_none() {
        config.token = std::env::var("QUORUM_TOKEN").ok().filter(|t| !t.is_empty());
        if let Some(token) = &config.token {
            crate::config::check_token(token).context("QUORUM_TOKEN")?;
        }
    }
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        tracing::warn!(listen = %config.listen, "listening beyond loopback without a token: anyone who can reach it can read and write the volumes");
    }
    // Before anything is created: a bad [nbd] table changes nothing.
    let nbd_listeners = config.nbd.as_ref().map(NbdListeners::bind).transpose()?;
    listener::raise_file_limit(config.max_connections);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let _data_dir = lock_data_dir(&config.data_dir)?;
    let events = EventLog::open(&config.data_dir, config.max_events)
        .with_context(|| format!("cannot open the event log in {}", config.data_dir.display()))?;
    let telemetry = Arc::new(Telemetry::new(config.volumes.iter().map(|v| {
        let children = v.children.iter().map(|c| c.name.as_str()).collect();
        (v.options.name.as_str(), children)
    })));
    let sink: Arc<dyn EventSink> = Arc::new(Observer {
        telemetry: telemetry.clone(),
        log: events.clone(),
    });
    let volumes = open_volumes(&config, &sink, &telemetry)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quorum-http")
        .build()
        .context("cannot start the async runtime")?;
    let state = Arc::new(AppState {
        volumes,
        events,
        telemetry,
        token: config.token.clone(),
        max_request_bytes: config.max_request_bytes,
        body_timeout: config.body_timeout,
        budget: Budget::new(config.max_buffered_bytes),
        shutdown: CancellationToken::new(),
        adding: Arc::default(),
    });
    let limits = Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        write_timeout: config.body_timeout,
    };
    let nbd = nbd_listeners.map(|listeners| {
        let exports = NbdExports::new(
            &state.volumes,
            &state.telemetry,
            &state.budget,
            config.body_timeout,
        );
        let limits = quorum_nbd::server::Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_timeout,
            write_timeout: config.body_timeout,
            payload_timeout: config.body_timeout,
        };
        (listeners, Arc::new(exports), limits)
    });
    let served = runtime.block_on(serve(config.listen, nbd, state.clone(), limits));
    let mut busy = std::collections::BTreeSet::new();
    for (name, entry) in &state.volumes {
        if let Err(stuck) = entry.stop() {
            tracing::error!(volume = %name, workers = ?stuck, "background workers did not stop in time; the volume is flushed but not settled, so the next start reconciles what they were writing");
            busy.insert(name.clone());
        }
    }
    served?;
    runtime.block_on(close_volumes(&state, &busy));
    state.events.flush_folds();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// Holds `data_dir` for this server alone, for as long as the value
/// lives: two servers on one `data_dir` would each rewrite the other's
/// stale maps and event log. A second server refuses to start, naming the
/// holder; the lock file says the holder's pid to people too.
fn lock_data_dir(dir: &Path) -> anyhow::Result<Exclusive> {
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let lock = Exclusive::take(&file).with_context(|| {
        format!(
            "data_dir {} is in use by another server: {}",
            dir.display(),
            path.display()
        )
    })?;
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(lock)
}

/// What the NBD listeners need: themselves, bound; the exports; the bounds.
type NbdServe = (NbdListeners, Arc<NbdExports>, quorum_nbd::server::Limits);

async fn serve(
    addr: SocketAddr,
    nbd: Option<NbdServe>,
    state: Arc<AppState>,
    limits: Limits,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!("listening on http://{bound}");
    tracing::info!(%bound, "listening");
    let shutdown = state.shutdown.clone();
    let nbd_server = match nbd {
        Some((listeners, exports, nbd_limits)) => {
            Some(listeners.start(exports, nbd_limits, shutdown.clone())?)
        }
        None => None,
    };
    // Under systemd (Type=notify), ready once every listener is bound.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the server is ready");
    }
    let app = api::router(state.clone());
    let server = tokio::spawn(listener::serve(listener, app, limits, shutdown.clone()));
    tokio::spawn(upkeep(state.telemetry.clone(), shutdown.clone()));
    wait_for_signal().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
    // Held requests would wait for a resume that cannot come now.
    for entry in state.volumes.values() {
        entry.controls().suspension.shut_down();
    }
    let both = async {
        let http = server.await;
        if let Some(nbd) = nbd_server {
            nbd.join().await;
        }
        http
    };
    match tokio::time::timeout(DRAIN_DEADLINE, both).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("the HTTP server task failed: {e}")),
        Err(_) => {
            tracing::warn!(deadline = ?DRAIN_DEADLINE, "some requests did not finish in time; closing anyway");
            Ok(())
        }
    }
}

/// Runs the metrics' upkeep every [`UPKEEP_EVERY`] until the shutdown.
async fn upkeep(telemetry: Arc<Telemetry>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => telemetry.upkeep(),
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Flushes every volume, then stops its workers. A volume in `busy` (a
/// background worker still in a step) is flushed but not settled: its
/// write intents stay, so the next start reconciles them.
async fn close_volumes(state: &AppState, busy: &std::collections::BTreeSet<String>) {
    for (name, entry) in &state.volumes {
        let volume = entry.volume();
        let settle = !busy.contains(name);
        let result = tokio::task::spawn_blocking(move || {
            // Settled: the next start has no write-intent region to reconcile.
            let flushed = if settle {
                volume.flush_and_settle()
            } else {
                volume.flush()
            };
            let stuck = volume.close(STOP_DEADLINE);
            (flushed, stuck)
        })
        .await;
        match result {
            Ok((Ok(()), stuck)) if stuck.is_empty() => {
                tracing::info!(volume = %name, "flushed and closed")
            }
            Ok((flushed, stuck)) => {
                if let Err(e) = flushed {
                    tracing::error!(volume = %name, error = %e, "the final flush failed");
                }
                if !stuck.is_empty() {
                    tracing::error!(volume = %name, children = ?stuck, "these children did not stop in time");
                }
            }
            Err(e) => tracing::error!(volume = %name, error = %e, "closing failed"),
        }
    }
}
