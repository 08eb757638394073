//! The resync's caught-up events: a child marked stale between the
//! worker's look at who is behind and its step is still said caught up.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quorum_backends::FileBackend;
use quorum_core::{
    Backend, BackendError, ChildSpec, ChildState, Event, Extent, RecordingSink, Volume,
};

use crate::background::{Worker, WorkerState};
use crate::resync::{ResyncConfig, ResyncWorker};
use crate::telemetry::Telemetry;
use crate::test_volume;

/// What a [`Hooked`] child runs at one of its `kind` calls.
type Hook = Box<dyn FnOnce() + Send>;

/// A file child that runs a hook at its `at`-th `kind` call after
/// [`Hooked::arm`]: the resync's look at who is behind lists the children
/// (with their kind) after it read the stale bytes, so a hook there marks a
/// child stale that the look does not see.
struct Hooked {
    inner: FileBackend,
    calls: AtomicUsize,
    at: AtomicUsize,
    hook: Mutex<Option<Hook>>,
}

impl Hooked {
    fn arm(&self, at: usize, hook: Hook) {
        self.calls.store(0, Ordering::SeqCst);
        self.at.store(at, Ordering::SeqCst);
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }
}

impl fmt::Display for Hooked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hooked {}", self.inner)
    }
}

impl Backend for Hooked {
    fn kind(&self) -> &'static str {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.at.load(Ordering::SeqCst) {
            let hook = self
                .hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.kind()
    }
    fn size(&self) -> Result<u64, BackendError> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.inner.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.inner.write_zeroes(offset, length)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush()
    }
    fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, BackendError> {
        self.inner.block_status(offset, length, limit)
    }
}

/// A child marked stale after the look at the top of `work` (while the
/// look lists the children, after it read their stale bytes) and copied by
/// that same call's step is said caught up at the next call: the step's
/// child counts as behind.
#[test]
fn a_child_marked_stale_during_the_look_and_copied_by_its_step_is_said_caught_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let size = 1 << 20;
    let file = |name: &str| FileBackend::open(&dir.path().join(name), Some(size)).expect("file");
    let hooked = Arc::new(Hooked {
        inner: file("a"),
        calls: AtomicUsize::new(0),
        at: AtomicUsize::new(usize::MAX),
        hook: Mutex::new(None),
    });
    let children = vec![
        ChildSpec::new("a", hooked.clone()),
        ChildSpec::new("b", Arc::new(file("b"))),
        ChildSpec::new("c", Arc::new(file("c"))),
    ];
    let sink = Arc::new(RecordingSink::default());
    let volume = Arc::new(test_volume::open(children, sink.clone()));
    let telemetry = Arc::new(Telemetry::new([("vm", vec!["a", "b", "c"])]));
    let config = ResyncConfig {
        rate: 0,
        on_synced: Arc::new(|_: &Volume| {}),
    };
    let mut worker = ResyncWorker::new(volume.clone(), telemetry, sink.clone(), config);
    // The look lists the children twice (who caught up, who is behind);
    // the second listing read the stale bytes before it asks `a` its kind.
    let marks = Arc::downgrade(&volume);
    hooked.arm(
        1,
        Box::new(move || {
            if let Some(v) = marks.upgrade() {
                v.mark_stale("b", std::slice::from_ref(&(0..4096)))
                    .expect("mark b");
            }
        }),
    );
    sink.take();
    let first = worker.work();
    assert!(
        hooked.hook.lock().expect("hook").is_none(),
        "the hook ran during the look"
    );
    assert!(matches!(first, WorkerState::Throttled(_)), "it copied");
    assert_eq!(volume.stale_bytes(), vec![0, 0, 0]);
    assert!(matches!(worker.work(), WorkerState::Idle));
    let caught_up: Vec<(String, ChildState, ChildState)> = sink
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::ChildStateChange { child, from, to } => Some((child, from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        caught_up,
        vec![("b".to_owned(), ChildState::Stale, ChildState::Healthy)]
    );
    volume.close(Duration::from_secs(5));
}
