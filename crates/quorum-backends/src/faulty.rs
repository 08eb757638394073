//! `faulty`: a wrapper that makes another child misbehave, after QEMU's
//! blkdebug, so that tests and operators can rehearse failures.
//!
//! Rules are given per child in the config file:
//!
//! ```toml
//! [[volume.child.fault]]
//! op = "read"          # read | write | write_zeroes | discard | flush | any
//! offset = 0           # bytes or a size ("1MiB"); default 0
//! length = "4KiB"      # default: to the end of the child
//! error = "EIO"        # fail with this errno (a name or a number) ...
//! corrupt = true       # ... or, for reads, flip every bit of the bytes in range
//! latency = "200ms"    # wait this long first (alone or with error/corrupt)
//! once = true          # fire on the first matching request only
//! ```
//!
//! A rule matches a request of its `op` whose bytes overlap
//! `offset..offset+length`; a flush matches every `flush` or `any` rule.
//! The rules can be replaced while the child runs ([`Faulty::set_rules`]).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use bytesize::ByteSize;
use quorum_core::{Backend, BackendError, Extent};
use serde::{Deserialize, Deserializer, de};

/// The request kinds a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultOp {
    /// Reads.
    Read,
    /// Writes (not write-zeroes).
    Write,
    /// Write-zeroes.
    WriteZeroes,
    /// Discards.
    Discard,
    /// Flushes.
    Flush,
    /// Every request.
    #[default]
    Any,
}

/// One fault rule, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The request kind it applies to.
    #[serde(default)]
    pub op: FaultOp,
    /// Start of the byte range it applies to.
    #[serde(default)]
    pub offset: ByteSize,
    /// Length of the range; `None` for "to the end".
    #[serde(default)]
    pub length: Option<ByteSize>,
    /// Fail the request with this errno.
    #[serde(default)]
    pub error: Option<Errno>,
    /// Return the bytes in range with every bit flipped (reads only).
    #[serde(default)]
    pub corrupt: bool,
    /// Wait this long before the request.
    #[serde(default, deserialize_with = "duration")]
    pub latency: Option<Duration>,
    /// Fire once only.
    #[serde(default)]
    pub once: bool,
}

impl FaultRule {
    /// Checks that the rule does something, and not two contradictory things.
    pub fn validate(&self) -> Result<(), String> {
        if self.error.is_some() && self.corrupt {
            return Err("a rule cannot both fail (error) and corrupt".into());
        }
        if self.error.is_none() && !self.corrupt && self.latency.is_none() {
            return Err("a rule needs error, corrupt or latency".into());
        }
        if self.corrupt && !matches!(self.op, FaultOp::Read | FaultOp::Any) {
            return Err("corrupt applies to reads only".into());
        }
        Ok(())
    }

    fn range(&self) -> Range<u64> {
        let start = self.offset.as_u64();
        let end = self
            .length
            .map_or(u64::MAX, |l| start.saturating_add(l.as_u64()));
        start..end
    }

    fn applies(&self, op: FaultOp, span: Option<&Range<u64>>) -> bool {
        (self.op == op || self.op == FaultOp::Any)
            && span.is_none_or(|s| {
                let r = self.range();
                s.start < r.end && r.start < s.end
            })
    }
}

/// An errno, written in the config as a name (`"EIO"`) or a number (`5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

const ERRNO_NAMES: &[(&str, rustix::io::Errno)] = &[
    ("EIO", rustix::io::Errno::IO),
    ("ENOSPC", rustix::io::Errno::NOSPC),
    ("EROFS", rustix::io::Errno::ROFS),
    ("EACCES", rustix::io::Errno::ACCESS),
    ("EPERM", rustix::io::Errno::PERM),
    ("ENOENT", rustix::io::Errno::NOENT),
    ("EBUSY", rustix::io::Errno::BUSY),
    ("EAGAIN", rustix::io::Errno::AGAIN),
    ("ETIMEDOUT", rustix::io::Errno::TIMEDOUT),
    ("ENXIO", rustix::io::Errno::NXIO),
    ("ENODEV", rustix::io::Errno::NODEV),
    ("EINVAL", rustix::io::Errno::INVAL),
    ("ENOMEM", rustix::io::Errno::NOMEM),
    ("EDQUOT", rustix::io::Errno::DQUOT),
    ("EFBIG", rustix::io::Errno::FBIG),
    ("ESTALE", rustix::io::Errno::STALE),
    ("ECONNREFUSED", rustix::io::Errno::CONNREFUSED),
    ("ECONNRESET", rustix::io::Errno::CONNRESET),
    ("EMEDIUMTYPE", rustix::io::Errno::MEDIUMTYPE),
];

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) if (1..4096).contains(&n) => Ok(Errno(n as i32)),
            Raw::Number(n) => Err(de::Error::custom(format!("errno {n} is out of range"))),
            Raw::Name(name) => ERRNO_NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, e)| Errno(e.raw_os_error()))
                .ok_or_else(|| {
                    let known: Vec<&str> = ERRNO_NAMES.iter().map(|(n, _)| *n).collect();
                    de::Error::custom(format!(
                        "unknown errno {name:?}; use a number or one of {}",
                        known.join(", ")
                    ))
                }),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| de::Error::custom(format!("bad duration {text:?}: {e}")))
}

#[derive(Debug)]
struct Armed {
    rule: FaultRule,
    spent: bool,
}

/// What the matching rules ask of one request.
#[derive(Debug, Default)]
struct Verdict {
    latency: Duration,
    error: Option<i32>,
    corrupt: Vec<Range<u64>>,
}

/// A child that wraps another and injects the faults its rules describe.
pub struct Faulty {
    inner: Arc<dyn Backend>,
    rules: Mutex<Vec<Armed>>,
}

impl Faulty {
    /// Wraps `inner` with `rules`.
    pub fn new(inner: Arc<dyn Backend>, rules: Vec<FaultRule>) -> Faulty {
        let faulty = Faulty {
            inner,
            rules: Mutex::new(Vec::new()),
        };
        faulty.set_rules(rules);
        faulty
    }

    /// Replaces the rules; rules that fire once are armed again.
    pub fn set_rules(&self, rules: Vec<FaultRule>) {
        *self.rules.lock().unwrap_or_else(PoisonError::into_inner) = rules
            .into_iter()
            .map(|rule| Armed { rule, spent: false })
            .collect();
    }

    fn verdict(&self, op: FaultOp, span: Option<Range<u64>>) -> Verdict {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let mut verdict = Verdict::default();
        for armed in rules.iter_mut().filter(|a| !a.spent) {
            if !armed.rule.applies(op, span.as_ref()) {
                continue;
            }
            armed.spent = armed.rule.once;
            verdict.latency += armed.rule.latency.unwrap_or_default();
            if let Some(Errno(e)) = armed.rule.error {
                verdict.error.get_or_insert(e);
            }
            if armed.rule.corrupt && op == FaultOp::Read {
                verdict.corrupt.push(armed.rule.range());
            }
        }
        verdict
    }

    /// Whether a rule would act on `op` over `span` (nothing is spent).
    fn armed_for(&self, op: FaultOp, span: Option<Range<u64>>) -> bool {
        let rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        rules
            .iter()
            .any(|a| !a.spent && a.rule.applies(op, span.as_ref()))
    }

    /// Waits and fails as the verdict says; returns the ranges to corrupt.
    fn apply(
        &self,
        op: FaultOp,
        span: Option<Range<u64>>,
    ) -> Result<Vec<Range<u64>>, BackendError> {
        let verdict = self.verdict(op, span);
        if !verdict.latency.is_zero() {
            thread::sleep(verdict.latency);
        }
        match verdict.error {
            Some(errno) => Err(BackendError::from_errno(errno)),
            None => Ok(verdict.corrupt),
        }
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty({})", self.inner)
    }
}

fn span(offset: u64, length: u64) -> Option<Range<u64>> {
    Some(offset..offset.saturating_add(length))
}

#[deny(clippy::missing_trait_methods)]
impl Backend for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn size(&self) -> Result<u64, BackendError> {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let corrupt = self.apply(FaultOp::Read, span(offset, buf.len() as u64))?;
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for r in corrupt {
            let (s, e) = (r.start.max(offset), r.end.min(end));
            for byte in &mut buf[(s - offset) as usize..(e - offset) as usize] {
                *byte = !*byte;
            }
        }
        Ok(())
    }

    /// The inner backend's, while no rule would act on the read: a fault
    /// is applied by [`Backend::read_at`] on a worker, as it waits.
    fn read_now(&self, buf: &mut [u8], offset: u64) -> bool {
        !self.armed_for(FaultOp::Read, span(offset, buf.len() as u64))
            && self.inner.read_now(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.apply(FaultOp::Write, span(offset, buf.len() as u64))?;
        self.inner.write_at(buf, offset)
    }

    /// A write as far as the faults go.
    fn write_copy(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.apply(FaultOp::Write, span(offset, buf.len() as u64))?;
        self.inner.write_copy(buf, offset)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.apply(FaultOp::WriteZeroes, span(offset, length))?;
        self.inner.write_zeroes(offset, length)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<(), BackendError> {
        self.apply(FaultOp::Discard, span(offset, length))?;
        self.inner.discard(offset, length)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.apply(FaultOp::Flush, None)?;
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

    fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight()
    }

    fn write_unit(&self) -> u64 {
        self.inner.write_unit()
    }

    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn identity_known(&self) -> bool {
        self.inner.identity_known()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use crate::file::FileBackend;

    fn rules(toml_text: &str) -> Vec<FaultRule> {
        #[derive(Deserialize)]
        struct Doc {
            fault: Vec<FaultRule>,
        }
        let doc: Doc = toml::from_str(toml_text).expect("rules parse");
        doc.fault
    }

    fn wrapped(rules: Vec<FaultRule>) -> (tempfile::TempDir, Faulty) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file =
            FileBackend::open(&dir.path().join("c.img"), Some(conformance::SIZE)).expect("open");
        (dir, Faulty::new(Arc::new(file), rules))
    }

    #[test]
    fn without_rules_it_conforms() {
        let (_dir, b) = wrapped(Vec::new());
        conformance::run(&b);
    }

    #[test]
    fn errors_hit_only_their_op_and_range() {
        let (_dir, b) = wrapped(rules(
            r#"
            [[fault]]
            op = "read"
            offset = "4KiB"
            length = 4096
            error = "EIO"
            "#,
        ));
        let mut buf = [0u8; 10];
        b.read_at(&mut buf, 0).expect("before the range");
        b.read_at(&mut buf, 8192).expect("after the range");
        let err = b.read_at(&mut buf, 4090).expect_err("overlaps");
        assert!(err.to_string().contains("Input/output error"), "{err}");
        b.write_at(&buf, 4096).expect("writes are not affected");
    }

    #[test]
    fn zeroing_ops_are_told_apart() {
        let (_dir, b) = wrapped(rules(
            "[[fault]]\nop = \"discard\"\nerror = \"EIO\"\n\n[[fault]]\nop = \"write_zeroes\"\noffset = 8192\nerror = \"ENOSPC\"\n",
        ));
        b.write_at(&[5; 100], 0).expect("write");
        let err = b.discard(0, 100).expect_err("a discard fails");
        assert!(
            matches!(&err, BackendError::Io(e) if e.raw_os_error() == Some(5)),
            "{err}"
        );
        let mut buf = [0u8; 100];
        b.read_at(&mut buf, 0).expect("read");
        assert_eq!(buf, [5; 100], "a failed discard reached nothing");
        b.write_zeroes(0, 100)
            .expect("write-zeroes below its rule's range");
        let err = b.write_zeroes(8192, 10).expect_err("write-zeroes in range");
        assert!(
            matches!(&err, BackendError::Io(e) if e.raw_os_error() == Some(28)),
            "{err}"
        );
        b.set_rules(Vec::new());
        b.write_at(&[6; 100], 0).expect("write");
        b.discard(0, 50).expect("no rule");
        b.read_at(&mut buf, 0).expect("read");
        assert!(buf[..50].iter().all(|&x| x == 0) && buf[50..].iter().all(|&x| x == 6));
    }

    #[test]
    fn once_fires_once_and_numbers_work() {
        let (_dir, b) = wrapped(rules(
            "[[fault]]\nop = \"write\"\nerror = 28\nonce = true\n",
        ));
        assert!(b.write_at(&[1], 0).is_err());
        b.write_at(&[1], 0).expect("second write");
    }

    #[test]
    fn corrupt_flips_bits_in_range() {
        let (_dir, b) = wrapped(rules(
            "[[fault]]\nop = \"read\"\noffset = 2\nlength = 3\ncorrupt = true\n",
        ));
        b.write_at(&[1, 2, 3, 4, 5, 6], 0).expect("write");
        let mut buf = [0u8; 6];
        b.read_at(&mut buf, 0).expect("read");
        assert_eq!(buf, [1, 2, !3, !4, !5, 6]);
    }

    #[test]
    fn latency_delays() {
        let (_dir, b) = wrapped(rules("[[fault]]\nop = \"flush\"\nlatency = \"30ms\"\n"));
        let start = std::time::Instant::now();
        b.flush().expect("flush");
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn bad_rules_are_refused() {
        let parse = |t: &str| {
            #[derive(Deserialize)]
            struct Doc {
                #[allow(dead_code)]
                fault: Vec<FaultRule>,
            }
            toml::from_str::<Doc>(t).map(|d| d.fault)
        };
        assert!(parse("[[fault]]\nerror = \"EWHAT\"\n").is_err());
        assert!(parse("[[fault]]\nop = \"munch\"\nerror = 5\n").is_err());
        assert!(parse("[[fault]]\nerror = 5\ncolour = 1\n").is_err());
        assert!(parse("[[fault]]\nlatency = \"soon\"\n").is_err());
        let both = parse("[[fault]]\nerror = 5\ncorrupt = true\n").expect("parses");
        assert!(both[0].validate().is_err());
        let nothing = parse("[[fault]]\nop = \"read\"\n").expect("parses");
        assert!(nothing[0].validate().is_err());
    }
}
