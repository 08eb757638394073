//! Coalescing of the reports of one request.
//!
//! A request's reports are gathered here and emitted when it ends, with the
//! ranges of one child merged where they touch. A whole-volume read that
//! streams chunk by chunk is one request, so a child that is bad from end to
//! end gives one report, not one per chunk.

use crate::event::{Event, EventSink, Op};

/// The pending reports of one request.
pub(crate) struct Reports<'a> {
    volume: &'a str,
    sink: &'a dyn EventSink,
    pending: Vec<Event>,
}

impl<'a> Reports<'a> {
    pub(crate) fn new(volume: &'a str, sink: &'a dyn EventSink) -> Reports<'a> {
        Reports {
            volume,
            sink,
            pending: Vec::new(),
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
        let merged = self.pending.iter_mut().rev().any(|e| match e {
            Event::ReportBad {
                op: o,
                child: c,
                offset: start,
                bytes: len,
                error: err,
            } if *o == op
                && c == child
                && *err == error
                && *start + *len == offset
                && op != Op::Flush =>
            {
                *len += bytes;
                true
            }
            _ => false,
        });
        if !merged {
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
        let merged = self.pending.iter_mut().rev().any(|e| match e {
            Event::Rewrite {
                child: c,
                offset: start,
                bytes: len,
            } if c == child && *start + *len == offset => {
                *len += bytes;
                true
            }
            _ => false,
        });
        if !merged {
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
        for event in self.pending.drain(..) {
            self.sink.emit(self.volume, event);
        }
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
