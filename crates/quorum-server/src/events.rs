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
//! A child that fails every request would otherwise push one report per
//! request into the log and wash out everything else. So, as QEMU does,
//! `QUORUM_REPORT_BAD` events that carry an error are folded per volume,
//! child and type: the first is recorded, the ones within the next
//! [`FOLD_WINDOW`] are only counted, and the next one recorded carries
//! `"suppressed": N`, the number folded into it. Reports without an error
//! (lost votes, which say where a replica is bad) are never folded, and the
//! metrics count every report.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quorum_core::{Event, EventSink};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The name of the log file under the data directory.
const LOG_FILE: &str = "events.jsonl";
/// Error reports of one child and type closer together than this are folded.
pub const FOLD_WINDOW: Duration = Duration::from_secs(1);

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
}

struct Inner {
    next_id: u64,
    ring: VecDeque<StoredEvent>,
    capacity: usize,
    path: PathBuf,
    file: File,
    lines_in_file: usize,
    /// Per (volume, child, type): when an error report was last recorded,
    /// and how many were folded since.
    folds: HashMap<(String, String, &'static str), (Instant, u64)>,
}

impl EventLog {
    /// Opens (or creates) the log under `data_dir`, keeping `capacity` events.
    pub fn open(data_dir: &Path, capacity: usize) -> io::Result<EventLog> {
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
        let (live, _) = broadcast::channel(1024);
        Ok(EventLog {
            inner: Mutex::new(Inner {
                next_id,
                ring,
                capacity,
                path,
                file,
                lines_in_file,
                folds: HashMap::new(),
            }),
            live,
        })
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

    /// Records `event`, folding it if it is an error report that comes,
    /// at the moment `now`, within [`FOLD_WINDOW`] of the last one recorded
    /// for its child and type.
    fn record_at(&self, volume: &str, event: &Event, now: Instant) {
        let mut inner = self.lock();
        let mut suppressed = 0;
        if let Event::ReportBad {
            op,
            child,
            error: Some(_),
            ..
        } = event
        {
            let key = (volume.to_owned(), child.clone(), op.event_type());
            match inner.folds.get_mut(&key) {
                Some((last, folded)) if now.duration_since(*last) < FOLD_WINDOW => {
                    *folded += 1;
                    return;
                }
                Some((last, folded)) => {
                    suppressed = std::mem::take(folded);
                    *last = now;
                }
                None => {
                    inner.folds.insert(key, (now, 0));
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let json: Arc<str> = to_json(id, SystemTime::now(), volume, event, suppressed)
            .to_string()
            .into();
        let stored = StoredEvent {
            id,
            volume: volume.to_owned(),
            json,
        };
        if let Err(e) = inner.append(&stored) {
            tracing::error!(error = %e, file = %inner.path.display(), "cannot persist an event");
        }
        if inner.ring.len() == inner.capacity {
            inner.ring.pop_front();
        }
        inner.ring.push_back(stored.clone());
        // No subscriber is not an error.
        let _ = self.live.send(stored);
    }
}

impl Inner {
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

/// The wire form of an event (SPEC section 6).
fn to_json(id: u64, at: SystemTime, volume: &str, event: &Event, suppressed: u64) -> Value {
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
            if suppressed > 0 {
                data["suppressed"] = json!(suppressed);
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
        } => json!({ "node-name": child, "offset": offset, "bytes": bytes }),
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
        for i in 0..55 {
            log.emit("vm", bad(i * 512));
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

    #[test]
    fn error_reports_of_a_child_fold_within_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path(), 100).expect("open");
        let failed = |child: &str| Event::ReportBad {
            op: Op::Write,
            child: child.into(),
            offset: 0,
            bytes: 10,
            error: Some("Input/output error".into()),
        };
        // On a clock the test moves: nothing waits for the window to pass.
        let start = Instant::now();
        for _ in 0..50 {
            log.record_at("vm", &failed("a"), start);
            log.record_at("vm", &bad(0), start);
        }
        log.record_at("vm", &failed("b"), start);
        let kept = log.since(0, None, 1000);
        // One error report for a, one for b, and every lost-vote report.
        assert_eq!(kept.len(), 52);
        // Just inside the window: still folded.
        let inside = start + FOLD_WINDOW - Duration::from_millis(1);
        log.record_at("vm", &failed("a"), inside);
        assert_eq!(log.since(0, None, 1000).len(), 52);
        // Once the window has passed: recorded, with the count folded.
        log.record_at("vm", &failed("a"), start + FOLD_WINDOW);
        let all = log.since(0, None, 1000);
        assert_eq!(all.len(), 53);
        let last: Value = serde_json::from_str(&all.last().expect("event").json).expect("json");
        assert_eq!(last["data"]["node-name"], "a");
        assert_eq!(last["data"]["suppressed"], 50);
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
