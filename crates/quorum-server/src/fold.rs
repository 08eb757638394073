//! The rate limit of `QUORUM_REPORT_BAD` and `QUORUM_REWRITE`, after QEMU's
//! monitor.
//!
//! A replica that is bad over a block loses the vote of every read of it:
//! 500 reads are 500 reports in a fraction of a second, enough to wash
//! everything else out of the event log. So, as QEMU rate-limits
//! `QUORUM_REPORT_BAD` per node, the reports of one child are limited to one
//! a [`FOLD_WINDOW`] for each kind of report: each `type` (read, write,
//! flush), lost votes apart from failures. The repairs of one child are
//! limited the same way: the resync of a new child, or a scrub repairing a
//! child that lost a disk's worth, rewrites one range per extent, tens of
//! thousands of them, which would otherwise push out of the bounded log the
//! very report that said which child went bad. The first report of a kind is
//! logged at once and opens a window; the ones that come within it are
//! folded; when the window ends, one event says what was folded (how many
//! reports, the first one's offset, the union of their ranges) and the next
//! window opens, so a child that keeps failing gives one event a second.
//! A window in which nothing was folded closes silently.
//!
//! A folded event is emitted when its window ends whether or not another
//! event comes: [`FoldTimer`] is a [`Worker`] that sleeps on its inbox
//! until the first window ends, flushes what is due and sleeps again (an
//! opened window rings it; it never polls). The metrics count every report,
//! folded or not: the log says what happened, the counters how often.
//!
//! [`Folds`] is the bookkeeping alone, on a clock the caller passes, so that
//! it is tested without waiting.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Weak;
use std::time::{Duration, Instant};

use quorum_core::{Event, Op};

use crate::background::{Inbox, Wake, Worker, WorkerState};
use crate::events::EventLog;

/// The reports of one child and kind closer together than this are folded.
pub const FOLD_WINDOW: Duration = Duration::from_secs(1);
/// The most ranges a folded event lists; beyond them `ranges-truncated`
/// says so, and its `offset` and `bytes` still cover every folded range.
pub const MAX_FOLDED_RANGES: usize = 16;

/// What events are folded by: their volume and child, and their kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    volume: String,
    child: String,
    kind: KeyKind,
}

/// The kinds of events that fold apart from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyKind {
    /// Reports of one `type`, and whether the child failed (an error) or
    /// lost a vote.
    Report { kind: &'static str, failed: bool },
    /// Repairs.
    Rewrite,
}

/// Which event a fold stands for, and what only that event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldedKind {
    /// `QUORUM_REPORT_BAD`.
    Report {
        /// The request kind of the first report folded.
        op: Op,
        /// The last error folded (`None` for lost votes).
        error: Option<String>,
    },
    /// `QUORUM_REWRITE`.
    Rewrite,
}

/// The reports folded within one window: what the folded event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The volume.
    pub volume: String,
    /// The child.
    pub child: String,
    /// The event folded.
    pub kind: FoldedKind,
    /// How many reports were folded.
    pub count: u64,
    /// The offset of the first report folded.
    pub first_offset: u64,
    /// The union of their ranges, in order, touching ones merged: the
    /// first [`MAX_FOLDED_RANGES`] disjoint ranges seen.
    pub ranges: Vec<Range<u64>>,
    /// Whether some folded range is not in `ranges` (it is in `span`).
    pub truncated: bool,
    /// From the lowest folded byte to the highest.
    pub span: Range<u64>,
}

impl Folded {
    fn new(volume: &str, child: &str, kind: FoldedKind, offset: u64, bytes: u64) -> Folded {
        Folded {
            volume: volume.to_owned(),
            child: child.to_owned(),
            kind,
            count: 0,
            first_offset: offset,
            ranges: Vec::new(),
            truncated: false,
            span: offset..offset + bytes,
        }
    }

    /// Adds one report's range.
    fn add(&mut self, range: Range<u64>, error: Option<&String>) {
        self.count += 1;
        if let FoldedKind::Report { error: last, .. } = &mut self.kind {
            *last = error.cloned();
        }
        self.span = self.span.start.min(range.start)..self.span.end.max(range.end);
        // The ranges it overlaps or touches, merged into one.
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let last = self.ranges.partition_point(|r| r.start <= range.end);
        if first < last {
            let start = self.ranges[first].start.min(range.start);
            let end = self.ranges[last - 1].end.max(range.end);
            self.ranges.drain(first + 1..last);
            self.ranges[first] = start..end;
        } else if self.ranges.len() < MAX_FOLDED_RANGES {
            self.ranges.insert(first, range);
        } else {
            self.truncated = true;
        }
    }
}

/// A window: when it ends, and what was folded in it so far.
#[derive(Debug)]
struct Window {
    ends: Instant,
    folded: Option<Folded>,
}

/// What [`Folds::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log the event now. `opened` says a window opened that ends before
    /// any other may have: the timer must be told.
    Log {
        /// Whether a window opened.
        opened: bool,
    },
    /// The report was folded into its window.
    Folded,
}

/// The open windows, per child and kind of report.
#[derive(Debug)]
pub struct Folds {
    window: Duration,
    windows: HashMap<Key, Window>,
}

impl Folds {
    /// No window open; windows of `window`.
    pub fn new(window: Duration) -> Folds {
        Folds {
            window,
            windows: HashMap::new(),
        }
    }

    /// Decides, at the moment `now`, whether `event` of `volume` is logged
    /// or folded. Only `QUORUM_REPORT_BAD` and `QUORUM_REWRITE` are ever
    /// folded. Call [`Folds::due`] first, so that a window that ended is
    /// not extended.
    pub fn offer(&mut self, volume: &str, event: &Event, now: Instant) -> Verdict {
        let (child, offset, bytes, error, kind, key_kind) = match event {
            Event::ReportBad {
                op,
                child,
                offset,
                bytes,
                error,
            } => (
                child,
                *offset,
                *bytes,
                error.as_ref(),
                FoldedKind::Report {
                    op: *op,
                    error: None,
                },
                KeyKind::Report {
                    kind: op.event_type(),
                    failed: error.is_some(),
                },
            ),
            Event::Rewrite {
                child,
                offset,
                bytes,
            } => (
                child,
                *offset,
                *bytes,
                None,
                FoldedKind::Rewrite,
                KeyKind::Rewrite,
            ),
            _ => return Verdict::Log { opened: false },
        };
        let key = Key {
            volume: volume.to_owned(),
            child: child.clone(),
            kind: key_kind,
        };
        match self.windows.get_mut(&key) {
            Some(window) => {
                window
                    .folded
                    .get_or_insert_with(|| Folded::new(volume, child, kind, offset, bytes))
                    .add(offset..offset + bytes, error);
                Verdict::Folded
            }
            None => {
                self.windows.insert(
                    key,
                    Window {
                        ends: now + self.window,
                        folded: None,
                    },
                );
                Verdict::Log { opened: true }
            }
        }
    }

    /// The folds of every window that ended by `now`, oldest window first.
    /// A window with folds opens again from `now` (the next event of its
    /// kind is a second away at least); one without closes.
    pub fn due(&mut self, now: Instant) -> Vec<Folded> {
        let mut due: Vec<(Instant, Folded)> = Vec::new();
        let next_end = now + self.window;
        self.windows.retain(|_, w| {
            if w.ends > now {
                return true;
            }
            match w.folded.take() {
                Some(folded) => {
                    due.push((w.ends, folded));
                    w.ends = next_end;
                    true
                }
                None => false,
            }
        });
        due.sort_by_key(|(ends, f)| (*ends, f.volume.clone(), f.child.clone()));
        due.into_iter().map(|(_, f)| f).collect()
    }

    /// Every fold pending, whether its window ended or not (at shutdown);
    /// every window closes.
    pub fn drain(&mut self) -> Vec<Folded> {
        let mut all: Vec<(Instant, Folded)> = self
            .windows
            .drain()
            .filter_map(|(_, w)| w.folded.map(|f| (w.ends, f)))
            .collect();
        all.sort_by_key(|(ends, f)| (*ends, f.volume.clone(), f.child.clone()));
        all.into_iter().map(|(_, f)| f).collect()
    }

    /// When the first open window ends, if one is open.
    pub fn next_end(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.ends).min()
    }
}

/// Emits the folded events of windows as they end, on its own thread. It
/// holds the log weakly: when the log goes, so does the timer.
pub struct FoldTimer {
    /// The log whose windows it ends.
    pub log: Weak<EventLog>,
}

impl Worker for FoldTimer {
    type Command = ();
    type Status = ();

    fn name(&self) -> String {
        "event-folds".into()
    }

    fn status(&self) {}

    fn work(&mut self) -> WorkerState {
        let Some(log) = self.log.upgrade() else {
            return WorkerState::Done;
        };
        match log.flush_due() {
            Some(end) => WorkerState::Throttled(end.saturating_duration_since(Instant::now())),
            None => WorkerState::Idle,
        }
    }

    fn wait_for_work(&mut self, inbox: &Inbox<()>) -> WorkerState {
        match inbox.wait(None) {
            Wake::Rung => WorkerState::Busy,
            _ => WorkerState::Idle,
        }
    }

    fn command(&mut self, (): ()) -> Option<WorkerState> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(1);

    fn lost(child: &str, offset: u64, bytes: u64) -> Event {
        Event::ReportBad {
            op: Op::Read,
            child: child.into(),
            offset,
            bytes,
            error: None,
        }
    }

    /// The op and last error of a folded report.
    fn report(d: &Folded) -> (Op, Option<&str>) {
        match &d.kind {
            FoldedKind::Report { op, error } => (*op, error.as_deref()),
            FoldedKind::Rewrite => panic!("a report, not a rewrite: {d:?}"),
        }
    }

    fn failed(child: &str, op: Op, error: &str) -> Event {
        Event::ReportBad {
            op,
            child: child.into(),
            offset: 0,
            bytes: 4096,
            error: Some(error.into()),
        }
    }

    #[test]
    fn the_first_report_is_logged_and_the_rest_of_the_second_folded() {
        let mut f = Folds::new(W);
        let t = Instant::now();
        assert_eq!(
            f.offer("vm", &lost("c", 1000, 100), t),
            Verdict::Log { opened: true }
        );
        for i in 1..500u64 {
            let at = t + Duration::from_micros(i * 160);
            assert!(f.due(at).is_empty());
            assert_eq!(f.offer("vm", &lost("c", 1000, 100), at), Verdict::Folded);
        }
        assert_eq!(f.next_end(), Some(t + W));
        // Nothing is due before the window ends, and all of it then.
        assert!(f.due(t + W - Duration::from_millis(1)).is_empty());
        let due = f.due(t + W);
        assert_eq!(due.len(), 1);
        let folded = &due[0];
        assert_eq!(folded.count, 499);
        assert_eq!(folded.first_offset, 1000);
        assert_eq!(folded.ranges, vec![1000..1100]);
        assert_eq!(folded.span, 1000..1100);
        assert!(!folded.truncated);
        assert_eq!(folded.child, "c");
        assert_eq!(
            folded.kind,
            FoldedKind::Report {
                op: Op::Read,
                error: None
            }
        );
        // The window opened again; with nothing folded in it, it closes.
        assert_eq!(f.next_end(), Some(t + 2 * W));
        assert!(f.due(t + 2 * W).is_empty());
        assert_eq!(f.next_end(), None);
        assert_eq!(
            f.offer("vm", &lost("c", 0, 1), t + 2 * W),
            Verdict::Log { opened: true }
        );
    }

    #[test]
    fn children_and_kinds_have_windows_of_their_own() {
        let mut f = Folds::new(W);
        let t = Instant::now();
        let events = [
            ("vm", lost("a", 0, 10)),
            ("vm", lost("b", 0, 10)),
            ("other", lost("a", 0, 10)),
            ("vm", failed("a", Op::Read, "EIO")),
            ("vm", failed("a", Op::Write, "EIO")),
            ("vm", failed("a", Op::Flush, "EIO")),
        ];
        for (volume, event) in &events {
            assert_eq!(
                f.offer(volume, event, t),
                Verdict::Log { opened: true },
                "{volume} {event:?}"
            );
        }
        // Write zeroes are writes, block status is a read: same windows.
        assert_eq!(
            f.offer("vm", &failed("a", Op::WriteZeroes, "EIO"), t),
            Verdict::Folded
        );
        assert_eq!(
            f.offer("vm", &failed("a", Op::BlockStatus, "ETIMEDOUT"), t),
            Verdict::Folded
        );
        for (volume, event) in &events {
            assert_eq!(f.offer(volume, event, t), Verdict::Folded);
        }
        let due = f.due(t + W);
        assert_eq!(due.len(), events.len());
        let read_errors = due
            .iter()
            .find(|d| {
                d.volume == "vm"
                    && d.child == "a"
                    && report(d).1.is_some()
                    && report(d).0.event_type() == "read"
            })
            .expect("the read errors of a");
        assert_eq!(read_errors.count, 2);
        assert_eq!(report(read_errors).1, Some("EIO"), "the last error");
        let writes = due
            .iter()
            .find(|d| report(d).0 == Op::WriteZeroes)
            .expect("the write errors of a, first a write-zeroes");
        assert_eq!(writes.count, 2);
        // Other events are never folded.
        let other = Event::Failure {
            op: Op::Read,
            offset: 0,
            bytes: 1,
        };
        assert_eq!(f.offer("vm", &other, t), Verdict::Log { opened: false });
        assert_eq!(f.offer("vm", &other, t), Verdict::Log { opened: false });
    }

    #[test]
    fn rewrites_fold_per_child_apart_from_reports() {
        let mut f = Folds::new(W);
        let t = Instant::now();
        let rewrite = |child: &str, offset| Event::Rewrite {
            child: child.into(),
            offset,
            bytes: 4096,
        };
        assert_eq!(
            f.offer("vm", &lost("d", 0, 1), t),
            Verdict::Log { opened: true }
        );
        assert_eq!(
            f.offer("vm", &rewrite("d", 0), t),
            Verdict::Log { opened: true }
        );
        assert_eq!(
            f.offer("vm", &rewrite("e", 0), t),
            Verdict::Log { opened: true }
        );
        // A resync's copies, one per extent: 1000 in the second.
        for i in 1..=1000u64 {
            assert_eq!(f.offer("vm", &rewrite("d", i * 8192), t), Verdict::Folded);
        }
        let due = f.due(t + W);
        assert_eq!(due.len(), 1, "{due:?}");
        let d = &due[0];
        assert_eq!((d.child.as_str(), &d.kind), ("d", &FoldedKind::Rewrite));
        assert_eq!(d.count, 1000);
        assert_eq!(d.first_offset, 8192);
        assert_eq!(d.span, 8192..1000 * 8192 + 4096);
        assert_eq!(d.ranges.len(), MAX_FOLDED_RANGES);
        assert!(d.truncated);
    }

    #[test]
    fn ranges_are_their_exact_union_up_to_a_cap() {
        let mut f = Folds::new(W);
        let t = Instant::now();
        f.offer("vm", &lost("c", 0, 1), t);
        for (offset, bytes) in [(500, 100), (100, 50), (150, 50), (590, 20), (90, 10)] {
            f.offer("vm", &lost("c", offset, bytes), t);
        }
        let due = f.due(t + W);
        let d = &due[0];
        assert_eq!(d.count, 5);
        assert_eq!(d.first_offset, 500);
        assert_eq!(d.ranges, vec![90..200, 500..610]);
        assert_eq!(d.span, 90..610);
        assert!(!d.truncated);

        // One range more than the cap: it is only in the span.
        let t = t + 10 * W;
        assert!(f.due(t).is_empty(), "the reopened window closes empty");
        assert_eq!(
            f.offer("vm", &lost("c", 0, 1), t),
            Verdict::Log { opened: true }
        );
        let n = MAX_FOLDED_RANGES as u64;
        for i in 0..=n {
            f.offer("vm", &lost("c", 1000 * (n - i), 10), t);
        }
        // A range touching a listed one still merges.
        f.offer("vm", &lost("c", 1000 * n + 10, 5), t);
        let due = f.due(t + W);
        let d = &due[0];
        assert_eq!(d.count, n + 2);
        assert_eq!(d.ranges.len(), MAX_FOLDED_RANGES);
        assert!(d.truncated);
        assert_eq!(d.ranges.last(), Some(&(1000 * n..1000 * n + 15)));
        assert_eq!(d.ranges.first(), Some(&(1000..1010)), "0 is not listed");
        assert_eq!(d.span, 0..1000 * n + 15);
    }

    #[test]
    fn a_steady_stream_gives_one_event_a_window_and_drain_takes_the_rest() {
        let mut f = Folds::new(W);
        let t = Instant::now();
        let mut logged = 0;
        let mut folded_events = 0;
        let mut reports_in_folds = 0;
        // 100 reports a second for 5 seconds.
        for i in 0..500u64 {
            let at = t + Duration::from_millis(i * 10);
            for d in f.due(at) {
                folded_events += 1;
                reports_in_folds += d.count;
            }
            if f.offer("vm", &lost("c", i * 4096, 4096), at) != Verdict::Folded {
                logged += 1;
            }
        }
        let rest: u64 = f.drain().iter().map(|d| d.count).sum();
        assert_eq!(logged, 1);
        assert_eq!(folded_events, 4, "one a second after the first");
        assert_eq!(
            logged + reports_in_folds + rest,
            500,
            "every report counted"
        );
        assert_eq!(f.next_end(), None);
    }
}
