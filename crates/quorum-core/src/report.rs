//! Coalescing of the reports of one request.
//!
//! A request's reports are gathered here and emitted when it ends, with the
//! ranges of one child merged where they touch. A whole-volume read that
//! streams chunk by chunk is one request, so a child that is bad from end to
//! end gives one report, not one per chunk.

use std::collections::HashMap;

use crate::event::{Event, EventSink, Op};

/// The pending reports of one request.
pub(crate) struct Reports<'a> {
    volume: &'a str,
    sink: &'a dyn EventSink,
    pending: Vec<Event>,
    /// The index in `pending` of the last report and the last rewrite of
    /// each child (`true` for rewrites), the only ones a new one can extend:
    /// a request reports in increasing offsets, so coalescing stays linear.
    last: HashMap<(bool, String), usize>,
}

impl<'a> Reports<'a> {
    pub(crate) fn new(volume: &'a str, sink: &'a dyn EventSink) -> Reports<'a> {
        Reports {
            volume,
            sink,
            pending: Vec::new(),
            last: HashMap::new(),
        }
    }

    /// A child failed (`error`) or lost the vote on `offset..offset+bytes`.
    pub(crate) fn bad(
        &mut self,
        op: Op,
        child: &str,
        offset: u64,
        bytes: u64,
        error: Option<String>,
    ) {
        let last = self.last.get(&(false, child.to_owned())).copied();
        let merged = last
            .and_then(|i| self.pending.get_mut(i))
            .is_some_and(|e| match e {
                Event::ReportBad {
                    op: o,
                    offset: start,
                    bytes: len,
                    error: err,
                    ..
                } if *o == op && *err == error && *start + *len == offset && op != Op::Flush => {
                    *len += bytes;
                    true
                }
                _ => false,
            });
        if !merged {
            self.last
                .insert((false, child.to_owned()), self.pending.len());
            self.pending.push(Event::ReportBad {
                op,
                child: child.to_owned(),
                offset,
                bytes,
                error,
            });
        }
    }

    /// A child's range was rewritten with the winning data.
    pub(crate) fn rewrite(&mut self, child: &str, offset: u64, bytes: u64) {
        let last = self.last.get(&(true, child.to_owned())).copied();
        let merged = last
            .and_then(|i| self.pending.get_mut(i))
            .is_some_and(|e| match e {
                Event::Rewrite {
                    offset: start,
                    bytes: len,
                    ..
                } if *start + *len == offset => {
                    *len += bytes;
                    true
                }
                _ => false,
            });
        if !merged {
            self.last
                .insert((true, child.to_owned()), self.pending.len());
            self.pending.push(Event::Rewrite {
                child: child.to_owned(),
                offset,
                bytes,
            });
        }
    }

    /// An event that is never merged (a failure, a blkverify mismatch).
    pub(crate) fn push(&mut self, event: Event) {
        self.pending.push(event);
    }

    /// Emits everything pending, in order.
    pub(crate) fn emit(&mut self) {
        self.last.clear();
        for event in self.pending.drain(..) {
            self.sink.emit(self.volume, event);
        }
    }

    /// Drops what is pending, unsent: for an attempt whose findings are
    /// made again, so that nothing is counted twice.
    pub(crate) fn discard(&mut self) {
        self.last.clear();
        self.pending.clear();
    }
}

impl Drop for Reports<'_> {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RecordingSink;

    #[test]
    fn touching_ranges_of_one_child_merge() {
        let sink = RecordingSink::default();
        {
            let mut r = Reports::new("vm", &sink);
            r.bad(Op::Read, "c", 0, 100, None);
            r.bad(Op::Read, "b", 100, 100, None);
            r.bad(Op::Read, "c", 100, 50, None);
            r.bad(Op::Read, "c", 200, 50, None);
            r.bad(Op::Read, "c", 250, 50, Some("EIO".into()));
            r.rewrite("c", 0, 10);
            r.rewrite("c", 10, 10);
        }
        let bad = |child: &str, offset, bytes, error: Option<&str>| Event::ReportBad {
            op: Op::Read,
            child: child.into(),
            offset,
            bytes,
            error: error.map(Into::into),
        };
        assert_eq!(
            sink.take(),
            vec![
                bad("c", 0, 150, None),
                bad("b", 100, 100, None),
                bad("c", 200, 50, None),
                bad("c", 250, 50, Some("EIO")),
                Event::Rewrite {
                    child: "c".into(),
                    offset: 0,
                    bytes: 20
                },
            ]
        );
    }
}
