//! The event log: numbered, timestamped, bounded, persisted, streamed.
//!
//! The engine hands events to [`EventLog`] (its [`EventSink`]). Each gets the
//! next id and a timestamp, is serialized once to the JSON of SPEC section 6,
//! appended to `events.jsonl` under the data directory, kept in a ring of
//! the last `max_events`, and broadcast to live subscribers (SSE). On start
//! the file is read back, so ids keep increasing across restarts; a torn
//! last line (a crash mid-write) is skipped with a warning. The file is
//! rewritten down to the ring when it holds twice as many lines, so it stays
//! bounded too.
//!
//! A child that loses every vote or fails every request would push one
//! report per request into the log and wash out everything else, so
//! `QUORUM_REPORT_BAD` is rate-limited as QEMU does it: one event a second
//! per child and kind of report, the rest folded into an event emitted when
//! the second ends (see [`crate::fold`]). `QUORUM_REWRITE` is folded the
//! same way per child, since a resync or a scrub repairs one range per
//! extent. The metrics count every report and every repaired byte.
//!
//! `JOB_PROGRESS` goes to live subscribers only: it takes an id like any
//! event, but is neither kept in the ring nor written to the file, so that
//! a long scrub does not fill the history. The next id is noted in
//! `events.next-id` after each, so that ids keep increasing across a
//! restart for a client that saw it live.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{Event, EventSink};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::background::{Bell, Runner};
use crate::fold::{FOLD_WINDOW, FoldTimer, Folded, FoldedKind, Folds, Verdict};

/// The name of the log file under the data directory.
const LOG_FILE: &str = "events.jsonl";
/// The file that notes the next id when the last one given out went to
/// live subscribers only.
const NEXT_ID_FILE: &str = "events.next-id";

/// One stored event: its id, its volume, and its JSON exactly as served.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's id, from 1, increasing.
    pub id: u64,
    /// The volume it concerns.
    pub volume: String,
    /// Its JSON text.
    pub json: Arc<str>,
}

/// The server's event log. See the module doc.
pub struct EventLog {
    inner: Mutex<Inner>,
    live: broadcast::Sender<StoredEvent>,
    /// Emits folded reports when their window ends (stopped when the log
    /// is dropped).
    timer: Mutex<Option<Runner<()>>>,
    /// Wakes the timer when a window opens.
    bell: OnceLock<Bell>,
}

struct Inner {
    next_id: u64,
    ring: VecDeque<StoredEvent>,
    capacity: usize,
    path: PathBuf,
    file: File,
    lines_in_file: usize,
    /// The open windows of `QUORUM_REPORT_BAD`.
    folds: Folds,
}

impl EventLog {
    /// Opens (or creates) the log under `data_dir`, keeping `capacity`
    /// events, and starts the timer that ends its fold windows.
    pub fn open(data_dir: &Path, capacity: usize) -> io::Result<Arc<EventLog>> {
        EventLog::open_folding(data_dir, capacity, FOLD_WINDOW)
    }

    /// Like [`EventLog::open`], with fold windows of `window`.
    fn open_folding(
        data_dir: &Path,
        capacity: usize,
        window: Duration,
    ) -> io::Result<Arc<EventLog>> {
        let path = data_dir.join(LOG_FILE);
        let mut ring = VecDeque::with_capacity(capacity.min(4096));
        let mut next_id = 1;
        let mut lines_in_file = 0;
        match File::open(&path) {
            Ok(file) => {
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line?;
                    lines_in_file += 1;
                    match parse_stored(&line) {
                        Some(event) => {
                            next_id = next_id.max(event.id + 1);
                            if ring.len() == capacity {
                                ring.pop_front();
                            }
                            ring.push_back(event);
                        }
                        None => tracing::warn!(
                            file = %path.display(),
                            line = n + 1,
                            "skipping an unreadable event log line (torn by a crash?)"
                        ),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        end_with_whole_line(&file)?;
        next_id = next_id.max(read_next_id(data_dir));
        let (live, _) = broadcast::channel(1024);
        let log = Arc::new(EventLog {
            inner: Mutex::new(Inner {
                next_id,
                ring,
                capacity,
                path,
                file,
                lines_in_file,
                folds: Folds::new(window),
            }),
            live,
            timer: Mutex::new(None),
            bell: OnceLock::new(),
        });
        let timer = Runner::spawn(
            FoldTimer {
                log: Arc::downgrade(&log),
            },
            |()| {},
        )?;
        let _ = log.bell.set(timer.bell());
        *log.timer.lock().unwrap_or_else(PoisonError::into_inner) = Some(timer);
        Ok(log)
    }

    /// Events with id greater than `since`, oldest first, of `volume` if
    /// given, at most `limit`.
    pub fn since(&self, since: u64, volume: Option<&str>, limit: usize) -> Vec<StoredEvent> {
        let inner = self.lock();
        let start = inner.ring.partition_point(|e| e.id <= since);
        inner
            .ring
            .range(start..)
            .filter(|e| volume.is_none_or(|v| e.volume == v))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Subscribes to events as they are recorded.
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, volume: &str, event: &Event) {
        self.record_at(volume, event, Instant::now());
    }

    /// Records `event`, or folds it if it is a report that comes, at the
    /// moment `now`, within the window of an earlier one of its child and
    /// kind. The folds of windows that ended go first.
    fn record_at(&self, volume: &str, event: &Event, now: Instant) {
        let mut inner = self.lock();
        for folded in inner.folds.due(now) {
            self.store_folded(&mut inner, &folded);
        }
        let opened = match inner.folds.offer(volume, event, now) {
            Verdict::Folded => return,
            Verdict::Log { opened } => opened,
        };
        let json = to_json(inner.next_id, SystemTime::now(), volume, event, None);
        self.store(&mut inner, volume, json, event.kind().is_logged());
        drop(inner);
        if opened {
            if let Some(bell) = self.bell.get() {
                bell.ring();
            }
        }
    }

    /// Emits the folds of the windows that ended; says when the next one
    /// ends, if one is open. The timer calls it.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        let mut inner = self.lock();
        for folded in inner.folds.due(Instant::now()) {
            self.store_folded(&mut inner, &folded);
        }
        inner.folds.next_end()
    }

    /// Emits every fold pending, its window ended or not: at shutdown, so
    /// that no report goes unsaid.
    pub fn flush_folds(&self) {
        let mut inner = self.lock();
        for folded in inner.folds.drain() {
            self.store_folded(&mut inner, &folded);
        }
    }

    fn store_folded(&self, inner: &mut Inner, folded: &Folded) {
        let child = folded.child.clone();
        let offset = folded.span.start;
        let bytes = folded.span.end - folded.span.start;
        let event = match &folded.kind {
            FoldedKind::Report { op, error } => Event::ReportBad {
                op: *op,
                child,
                offset,
                bytes,
                error: error.clone(),
            },
            FoldedKind::Rewrite => Event::Rewrite {
                child,
                offset,
                bytes,
            },
        };
        let json = to_json(
            inner.next_id,
            SystemTime::now(),
            &folded.volume,
            &event,
            Some(folded),
        );
        self.store(inner, &folded.volume, json, true);
    }

    /// Gives `json` (made with the next id) that id, keeps it when
    /// `logged` (in the ring and the file), and sends it to live
    /// subscribers.
    fn store(&self, inner: &mut Inner, volume: &str, json: Value, logged: bool) {
        let id = inner.next_id;
        inner.next_id += 1;
        let stored = StoredEvent {
            id,
            volume: volume.to_owned(),
            json: json.to_string().into(),
        };
        if logged {
            if let Err(e) = inner.append(&stored) {
                tracing::error!(error = %e, file = %inner.path.display(), "cannot persist an event");
            }
            if inner.ring.len() == inner.capacity {
                inner.ring.pop_front();
            }
            inner.ring.push_back(stored.clone());
        } else if let Err(e) = inner.note_next_id() {
            tracing::warn!(error = %e, "cannot note the next event id");
        }
        // No subscriber is not an error.
        let _ = self.live.send(stored);
    }
}

impl Inner {
    /// Notes the next id beside the log (an event given out live only is
    /// not in the file, which would otherwise give its id again).
    fn note_next_id(&self) -> io::Result<()> {
        let path = self.path.with_file_name(NEXT_ID_FILE);
        fs::write(path, format!("{}\n", self.next_id))
    }

    fn append(&mut self, event: &StoredEvent) -> io::Result<()> {
        let mut line = String::with_capacity(event.json.len() + 1);
        line.push_str(&event.json);
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.lines_in_file += 1;
        if self.lines_in_file >= 2 * self.capacity {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file to hold only the ring, atomically.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for e in &self.ring {
            out.write_all(e.json.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines_in_file = self.ring.len();
        Ok(())
    }
}

impl EventSink for EventLog {
    fn emit(&self, volume: &str, event: Event) {
        self.record(volume, &event);
    }
}

/// Cuts a torn last line (a crash mid-append) off the log, so that the next
/// event starts a line of its own.
fn end_with_whole_line(file: &File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut reader = file;
    let mut kept = len;
    let mut buf = [0u8; 4096];
    loop {
        let start = kept.saturating_sub(buf.len() as u64);
        let n = (kept - start) as usize;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            kept = start + i as u64 + 1;
            break;
        }
        if start == 0 {
            kept = 0;
            break;
        }
        kept = start;
    }
    if kept < len {
        file.set_len(kept)?;
    }
    Ok(())
}

/// The next id noted beside the log, or 0 when none is (or it is torn).
fn read_next_id(data_dir: &Path) -> u64 {
    fs::read_to_string(data_dir.join(NEXT_ID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn parse_stored(line: &str) -> Option<StoredEvent> {
    let value: Value = serde_json::from_str(line).ok()?;
    Some(StoredEvent {
        id: value.get("id")?.as_u64()?,
        volume: value.get("volume")?.as_str()?.to_owned(),
        json: line.into(),
    })
}

/// `sector-num` and `sectors-count` of a byte range, as QEMU counts them.
fn sectors(offset: u64, bytes: u64) -> (u64, u64) {
    let first = offset / 512;
    (first, (offset + bytes).div_ceil(512) - first)
}

/// The wire form of an event (SPEC section 6); `folded` says what a
/// folded report or rewrite stands for.
fn to_json(id: u64, at: SystemTime, volume: &str, event: &Event, folded: Option<&Folded>) -> Value {
    let data = match event {
        Event::ReportBad {
            op,
            child,
            offset,
            bytes,
            error,
        } => {
            let (sector, count) = sectors(*offset, *bytes);
            let mut data = json!({
                "type": op.event_type(),
                "node-name": child,
                "sector-num": sector,
                "sectors-count": count,
                "offset": offset,
                "bytes": bytes,
            });
            if let Some(error) = error {
                data["error"] = json!(error);
            }
            if let Some(folded) = folded {
                add_folded(&mut data, folded);
            }
            data
        }
        Event::Failure { op, offset, bytes } => {
            let (sector, count) = sectors(*offset, *bytes);
            json!({
                "reference": volume,
                "type": op.event_type(),
                "sector-num": sector,
                "sectors-count": count,
                "offset": offset,
                "bytes": bytes,
            })
        }
        Event::Rewrite {
            child,
            offset,
            bytes,
        } => {
            let mut data = json!({ "node-name": child, "offset": offset, "bytes": bytes });
            if let Some(folded) = folded {
                add_folded(&mut data, folded);
            }
            data
        }
        Event::BlkverifyMismatch {
            offset,
            request_offset,
            request_bytes,
        } => json!({
            "offset": offset,
            "request-offset": request_offset,
            "request-bytes": request_bytes,
        }),
        Event::ChildAdded { child, uri } => json!({ "node-name": child, "uri": uri }),
        Event::ChildRemoved { child } => json!({ "node-name": child }),
        Event::ChildStateChange { child, from, to } => {
            json!({ "node-name": child, "from": from, "to": to })
        }
        Event::JobStarted {
            id,
            kind,
            repair,
            bytes_total,
        } => json!({ "job": id, "kind": kind, "repair": repair, "bytes_total": bytes_total }),
        Event::JobProgress {
            id,
            kind,
            bytes_done,
            bytes_total,
        } => {
            json!({ "job": id, "kind": kind, "bytes_done": bytes_done, "bytes_total": bytes_total })
        }
        Event::JobCompleted {
            id,
            kind,
            state,
            bytes_scanned,
            bytes_repaired,
            mismatches,
            unrecoverable,
        } => {
            let mismatches: serde_json::Map<String, Value> = mismatches
                .iter()
                .map(|(c, b)| (c.clone(), json!(b)))
                .collect();
            let unrecoverable: Vec<Value> = unrecoverable
                .iter()
                .map(|r| json!({ "offset": r.start, "bytes": r.end - r.start }))
                .collect();
            json!({
                "job": id,
                "kind": kind,
                "state": state,
                "bytes_scanned": bytes_scanned,
                "bytes_repaired": bytes_repaired,
                "mismatches": mismatches,
                "unrecoverable": unrecoverable,
            })
        }
        Event::VolumeSuspended {
            op,
            offset,
            bytes,
            cause,
        } => json!({
            "type": op.event_type(),
            "op": op,
            "offset": offset,
            "bytes": bytes,
            "cause": cause,
        }),
        Event::VolumeResumed { by, held } => json!({ "by": by, "held": held }),
    };
    json!({
        "id": id,
        "timestamp": humantime::format_rfc3339_millis(at).to_string(),
        "event": event.name(),
        "volume": volume,
        "data": data,
    })
}

/// The fields of a folded report or rewrite: how many it stands for, the
/// first one's offset, and the union of their ranges.
fn add_folded(data: &mut Value, folded: &Folded) {
    let ranges: Vec<Value> = folded
        .ranges
        .iter()
        .map(|r| json!({ "offset": r.start, "bytes": r.end - r.start }))
        .collect();
    data["suppressed"] = json!(folded.count);
    data["first-offset"] = json!(folded.first_offset);
    data["ranges"] = json!(ranges);
    data["ranges-truncated"] = json!(folded.truncated);
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorum_core::Op;

    fn bad(offset: u64) -> Event {
        Event::ReportBad {
            op: Op::Read,
            child: "c".into(),
            offset,
            bytes: 1000,
            error: None,
        }
    }

    #[test]
    fn ids_survive_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path(), 100).expect("open");
        log.emit("vm", bad(0));
        log.emit("other", bad(512));
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .expect("file");
        f.write_all(b"{\"id\": 3, \"volu").expect("torn line");
        let log = EventLog::open(dir.path(), 100).expect("reopen");
        log.emit("vm", bad(1024));
        drop(log);
        // The event after the torn line survives the next restart too.
        let log = EventLog::open(dir.path(), 100).expect("reopen again");
        let all = log.since(0, None, 100);
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(log.since(1, Some("vm"), 100).len(), 1);
        let v: Value = serde_json::from_str(&all[0].json).expect("json");
        assert_eq!(v["event"], "QUORUM_REPORT_BAD");
        assert_eq!(v["data"]["sector-num"], 0);
        assert_eq!(v["data"]["sectors-count"], 2);
        assert_eq!(v["data"]["node-name"], "c");
        assert!(v["data"].get("error").is_none());
    }

    #[test]
    fn the_log_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path(), 10).expect("open");
        let failure = |offset| Event::Failure {
            op: Op::Read,
            offset,
            bytes: 512,
        };
        for i in 0..55 {
            log.emit("vm", failure(i * 512));
        }
        let kept = log.since(0, None, 1000);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0].id, 46);
        let lines = fs::read_to_string(dir.path().join(LOG_FILE))
            .expect("read")
            .lines()
            .count();
        assert!(lines < 20, "{lines} lines");
        drop(log);
        let log = EventLog::open(dir.path(), 10).expect("reopen");
        log.emit("vm", bad(0));
        assert_eq!(log.since(55, None, 10)[0].id, 56);
    }

    fn failed(child: &str) -> Event {
        Event::ReportBad {
            op: Op::Write,
            child: child.into(),
            offset: 0,
            bytes: 10,
            error: Some("Input/output error".into()),
        }
    }

    fn json(e: &StoredEvent) -> Value {
        serde_json::from_str(&e.json).expect("json")
    }

    #[test]
    fn reports_of_a_child_fold_per_kind_and_the_fold_says_what_it_folds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path(), 100).expect("open");
        // On a clock the test moves: nothing waits for the window to pass.
        let start = Instant::now();
        for i in 0..50 {
            log.record_at("vm", &failed("a"), start);
            log.record_at("vm", &bad(4096 * (i % 3)), start);
        }
        log.record_at("vm", &failed("b"), start);
        let kept = log.since(0, None, 1000);
        // The first of each child and kind.
        assert_eq!(kept.len(), 3, "{kept:?}");
        // Just inside the window: still folded.
        let inside = start + FOLD_WINDOW - Duration::from_millis(1);
        log.record_at("vm", &failed("a"), inside);
        assert_eq!(log.since(0, None, 1000).len(), 3);
        // Once the window has passed, the folds come first, then the event.
        log.record_at("vm", &failed("a"), start + FOLD_WINDOW);
        let all = log.since(0, None, 1000);
        assert_eq!(all.len(), 5, "{all:?}");
        let errors = json(&all[3]);
        assert_eq!(errors["data"]["node-name"], "a");
        assert_eq!(errors["data"]["error"], "Input/output error");
        assert_eq!(errors["data"]["suppressed"], 50);
        let lost = json(&all[4]);
        assert_eq!(lost["event"], "QUORUM_REPORT_BAD");
        assert!(lost["data"].get("error").is_none(), "{lost}");
        assert_eq!(lost["data"]["suppressed"], 49);
        assert_eq!(lost["data"]["first-offset"], 4096);
        assert_eq!(
            lost["data"]["ranges"],
            json!([
                { "offset": 0, "bytes": 1000 },
                { "offset": 4096, "bytes": 1000 },
                { "offset": 8192, "bytes": 1000 },
            ])
        );
        assert_eq!(lost["data"]["ranges-truncated"], false);
        assert_eq!(lost["data"]["offset"], 0);
        assert_eq!(lost["data"]["bytes"], 9192);
        assert_eq!(lost["data"]["sectors-count"], 18);
        // The report that ended the window opened the next one: folded.
        assert_eq!(log.since(0, None, 1000).len(), 5);
        log.flush_folds();
        let last = json(log.since(5, None, 10).first().expect("flushed at shutdown"));
        assert_eq!(last["data"]["suppressed"], 1);
    }

    #[test]
    fn a_fold_is_emitted_when_its_window_ends_without_another_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let window = Duration::from_millis(300);
        let log = EventLog::open_folding(dir.path(), 100, window).expect("open");
        let mut live = log.subscribe();
        let started = Instant::now();
        for _ in 0..500 {
            log.emit("vm", bad(8192));
        }
        assert_eq!(log.since(0, None, 1000).len(), 1);
        // The timer emits the fold; nothing else is recorded meanwhile.
        let deadline = Instant::now() + Duration::from_secs(10);
        let folded = loop {
            if let Some(e) = log.since(1, None, 10).first() {
                break json(e);
            }
            assert!(Instant::now() < deadline, "no folded event came");
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = started.elapsed();
        assert!(took >= window, "emitted before the window ended: {took:?}");
        assert_eq!(folded["data"]["suppressed"], 499);
        assert_eq!(
            folded["data"]["ranges"],
            json!([{ "offset": 8192, "bytes": 1000 }])
        );
        // Live subscribers got both.
        let ids: Vec<u64> = std::iter::from_fn(|| live.try_recv().ok())
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        // The window opened again and closes empty: nothing more comes.
        std::thread::sleep(3 * window);
        assert_eq!(log.since(0, None, 1000).len(), 2);
    }

    #[test]
    fn job_progress_goes_live_only_and_its_id_is_not_given_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path(), 100).expect("open");
        let mut live = log.subscribe();
        log.emit("vm", bad(0));
        log.emit(
            "vm",
            Event::JobProgress {
                id: 1,
                kind: quorum_core::JobKind::Scrub,
                bytes_done: 10,
                bytes_total: 100,
            },
        );
        let sent: Vec<StoredEvent> = std::iter::from_fn(|| live.try_recv().ok()).collect();
        assert_eq!(sent.len(), 2);
        assert_eq!(json(&sent[1])["event"], "JOB_PROGRESS");
        assert_eq!(sent[1].id, 2);
        let kept = log.since(0, None, 100);
        assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
        drop(log);
        let log = EventLog::open(dir.path(), 100).expect("reopen");
        assert_eq!(log.since(0, None, 100).len(), 1);
        log.emit("vm", failed("a"));
        assert_eq!(log.since(1, None, 10)[0].id, 3, "id 2 was given out");
    }

    #[test]
    fn sectors_round_up() {
        assert_eq!(sectors(0, 10 << 20), (0, 20480));
        assert_eq!(sectors(1000, 100), (1, 2));
        assert_eq!(sectors(512, 512), (1, 1));
        assert_eq!(sectors(1000, 24), (1, 1));
        assert_eq!(sectors(1000, 100_000), (1, 197));
        assert_eq!(sectors(0, 0), (0, 0));
    }
}
