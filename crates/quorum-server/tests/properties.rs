//! Property tests (issue 8, "Fuzzing") of the two parsers that take
//! untrusted text: the `Range` header parser and the config parser.
//!
//! The third target of the issue, the vote, is checked against a naive
//! per-block majority in `crates/quorum-core/src/vote.rs`
//! (`matches_naive_reference_on_random_inputs`).
//!
//! Run: `cargo test -p quorum-server --test properties` (a few seconds).

use std::path::Path;

use proptest::prelude::*;
use quorum_server::config::{Config, valid_name};
use quorum_server::error::ApiError;
use quorum_server::range::{self, ByteRange};

// ---------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------

/// What the reference says of a Range value.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// `offset`, `length`.
    Ok(u64, u64),
    /// 400 bad_request.
    Bad,
    /// 416 out_of_range.
    Outside,
}

fn verdict(r: &Result<ByteRange, ApiError>) -> Verdict {
    match r {
        Ok(b) => Verdict::Ok(b.offset, b.length),
        Err(ApiError::BadRequest(_)) => Verdict::Bad,
        Err(ApiError::OutOfRange { .. }) => Verdict::Outside,
        Err(e) => panic!("range::parse gave an error of neither 400 nor 416: {e:?}"),
    }
}

/// A naive reading of SPEC section 4 for the three forms, on a volume of
/// `size` bytes: one range, wholly inside the volume, else 416 (no
/// clamping); a last byte before the first, or a suffix of 0, is malformed.
fn reference(value: &str, size: u64) -> Verdict {
    let Some(spec) = value.strip_prefix("bytes=") else {
        return Verdict::Bad;
    };
    let Some((a, b)) = spec.split_once('-') else {
        return Verdict::Bad;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            None | Some(0) => Verdict::Bad,
            Some(n) if n > size => Verdict::Outside,
            Some(n) => Verdict::Ok(size - n, n),
        },
        // bytes=A-: from A to the end.
        (false, true) => match num(a) {
            None => Verdict::Bad,
            Some(first) if first >= size => Verdict::Outside,
            Some(first) => Verdict::Ok(first, size - first),
        },
        // bytes=A-B: inclusive.
        (false, false) => match (num(a), num(b)) {
            (Some(first), Some(last)) if last < first => Verdict::Bad,
            (Some(first), Some(last)) if last >= size => {
                let _ = first;
                Verdict::Outside
            }
            (Some(first), Some(last)) => Verdict::Ok(first, last - first + 1),
            _ => Verdict::Bad,
        },
        (true, true) => Verdict::Bad,
    }
}

/// Sizes: small, any, and the extremes.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..5000u64,
        any::<u64>(),
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
    ]
}

/// A number near the interesting places of a volume of `size` bytes.
fn near(size: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=16u64,
        any::<u64>(),
        (0..=16u64).prop_map(move |d| size.saturating_sub(d)),
        (0..=16u64).prop_map(move |d| size.saturating_add(d)),
        (0..=16u64).prop_map(|d| u64::MAX - d),
        (0..=size.max(1)),
    ]
}

/// A valid-looking value of one of the three forms.
fn three_forms() -> impl Strategy<Value = (String, u64)> {
    size().prop_flat_map(|size| {
        (near(size), near(size), 0..3u8).prop_map(move |(a, b, form)| {
            let value = match form {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{b}"),
            };
            (value, size)
        })
    })
}

/// Checks what holds of every answer: Ok lies inside the volume and is not
/// empty; a 416 names the volume's size.
fn check_invariants(value: &str, size: u64, r: &Result<ByteRange, ApiError>) {
    match r {
        Ok(b) => {
            assert!(b.length >= 1, "{value:?} on {size}: empty range {b:?}");
            let end = b.offset.checked_add(b.length);
            assert!(
                end.is_some_and(|end| end <= size),
                "{value:?} on {size}: {b:?} is not inside the volume"
            );
            assert_eq!(b.last(), b.offset + b.length - 1);
        }
        Err(ApiError::OutOfRange { size: s, .. }) => {
            assert_eq!(*s, size, "{value:?}: the 416 carries another size");
        }
        Err(ApiError::BadRequest(m)) => {
            assert!(!m.is_empty(), "{value:?}: an empty message");
        }
        Err(e) => panic!("{value:?}: neither 400 nor 416: {e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Any string at all: no panic, and the invariants hold.
    #[test]
    fn range_parse_never_panics_on_any_string(value in "\\PC{0,80}", size in size()) {
        let r = range::parse(&value, size);
        check_invariants(&value, size, &r);
    }

    /// Strings made of the Range alphabet, where the parser's corners are.
    #[test]
    fn range_parse_never_panics_on_range_like_strings(
        value in "(bytes|BYTES|byte|)[= ]{0,2}[-0-9, ]{0,40}",
        size in size(),
    ) {
        let r = range::parse(&value, size);
        check_invariants(&value, size, &r);
    }

    /// `bytes=A-B`, `bytes=A-`, `bytes=-N`: the parser agrees with the
    /// naive reference.
    #[test]
    fn range_parse_matches_the_reference((value, size) in three_forms()) {
        let r = range::parse(&value, size);
        check_invariants(&value, size, &r);
        prop_assert_eq!(verdict(&r), reference(&value, size), "{:?} on a volume of {}", value, size);
    }

    /// Two or more ranges are never served (SPEC: one range only).
    #[test]
    fn several_ranges_are_refused(
        (value, size) in three_forms(),
        more in prop::collection::vec((0..5000u64, 0..5000u64), 1..20),
    ) {
        let mut v = value;
        for (a, b) in more {
            v.push_str(&format!(",{}-{}", a.min(b), a.max(b)));
        }
        let r = range::parse(&v, size);
        prop_assert!(r.is_err(), "{:?} on {} gave {:?}", v, size, r);
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// Valid configs to mutate: the shapes the README documents.
const VALID: [&str; 4] = [
    r#"
listen = "127.0.0.1:8700"
data_dir = "quorum-data"
max_request_bytes = "64MiB"
max_events = 10000
body_timeout = "60s"

[auth]
token = "s3cret"

[[volume]]
name = "vm1"
size = "10MiB"
vote_threshold = 2
read_pattern = "quorum"
rewrite_corrupted = false
blkverify = false

  [[volume.child]]
  name = "a"
  uri = "vm1-a.img"

  [[volume.child]]
  name = "b"
  uri = "file:///var/lib/quorum/vm1-b.img"

  [[volume.child]]
  uri = "vm1-c.img"
"#,
    r#"
[[volume]]
name = "vm"
size = "2MiB"
vote_threshold = 2
read_pattern = "fifo"
rewrite_corrupted = true

  [[volume.child]]
  name = "c"
  uri = "vm1-c.img"

    [[volume.child.fault]]
    op = "read"
    offset = "1MiB"
    length = "4KiB"
    error = "EIO"
    once = true

    [[volume.child.fault]]
    op = "any"
    latency = "200ms"
    corrupt = true

  [[volume.child]]
  name = "minio1"
  uri = "s3://blocks/vm1"
  options = { aws_endpoint = "http://127.0.0.1:9000", aws_allow_http = "true", aws_region = "us-east-1", chunk_size = "64KiB" }

  [[volume.child]]
  name = "remote1"
  uri = "http://10.0.0.7:8700/v1/volumes/blk"
  options = { token = "t", timeout = "5s", connect_timeout = "2s" }
"#,
    r#"
[[volume]]
name = "pair"
size = "1GiB"
vote_threshold = 2
blkverify = true
[[volume.child]]
uri = "x.img"
[[volume.child]]
uri = "y.img"

[[volume]]
name = "blk"
size = "100GiB"
vote_threshold = 1
[[volume.child]]
uri = "/srv/blk.img"
"#,
    quorum_server::config::EMBEDDED_DEFAULT,
];

/// Fragments that poke at the parser's corners: TOML syntax, huge and
/// negative numbers, sizes and durations out of range, keys with newlines.
const FRAGMENTS: &[&str] = &[
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "\n",
    "\r\n",
    "#",
    "\\",
    "\\u0000",
    "\u{0}",
    "é",
    "-1",
    "0",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775808",
    "1e400",
    "nan",
    "inf",
    "\"99999999999999999999EiB\"",
    "\"18446744073709551615\"",
    "\"16EiB\"",
    "\"-5MiB\"",
    "\"0\"",
    "\"99999999999999999999s\"",
    "\"18446744073709551615s\"",
    "\"0s\"",
    "\"1ns\"",
    "\"ten\"",
    "true",
    "[[volume]]\n",
    "[[volume.child]]\n",
    "[[volume.child.fault]]\n",
    "[auth]\n",
    "vote_threshold = 18446744073709551615\n",
    "max_events = 0\n",
    "max_events = 18446744073709551615\n",
    "latency = \"584942417355y\"\n",
    "offset = \"16EiB\"\n",
    "length = \"16EiB\"\n",
    "error = 4294967296\n",
    "error = -1\n",
    "error = \"ENOSUCH\"\n",
    "\"k\\ny\" = 1\n",
    "name = \"x\\ny\"\n",
    "uri = \"a\\nb\"\n",
    "listen = \"[::1]:99999\"\n",
    "body_timeout = \"1\\n2s\"\n",
    "options = { \"a\\nb\" = [1] }\n",
];

/// Well-formed TOML values of every type and extreme, to put in place of
/// a value: the text stays TOML, so the parser's checks of values run.
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "-0.0",
    "1e308",
    "nan",
    "inf",
    "true",
    "false",
    "\"\"",
    "\" \"",
    "\"0\"",
    "\"1\"",
    "\"1B\"",
    "\"16EiB\"",
    "\"18446744073709551615\"",
    "\"18446744073709551616\"",
    "\"99999999999999999999 TiB\"",
    "\"-1KiB\"",
    "\"1.5MiB\"",
    "\"0s\"",
    "\"1ns\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999999h\"",
    "\"584942417355y\"",
    "\"EIO\"",
    "\"ENOSPC\"",
    "\"EWHAT\"",
    "4294967296",
    "\"any\"",
    "\"read\"",
    "\"fifo\"",
    "\"quorum\"",
    "\"random\"",
    "\"..\"",
    "\".\"",
    "\"a/b\"",
    "\"x\\ny\"",
    "\"\\u0000\"",
    "\"é\"",
    "\"0.0.0.0:0\"",
    "\"[::1]:8700\"",
    "\"127.0.0.1:65536\"",
    "\"s3://\"",
    "\"http://u:p@h/v1/volumes/x\"",
    "\"file://\"",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "{ \"k\\nk\" = { x = [] } }",
    "1979-05-27T07:32:00Z",
];

/// One edit of a config text (positions are taken modulo the length).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    InsertText(usize, String),
    ReplaceValue(usize, usize),
    DuplicateLine(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = 0..FRAGMENTS.len();
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), fragment.clone()).prop_map(|(at, f)| Edit::Insert(at, f)),
        (any::<usize>(), "\\PC{1,6}").prop_map(|(at, s)| Edit::InsertText(at, s)),
        (any::<usize>(), fragment).prop_map(|(line, f)| Edit::ReplaceValue(line, f)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| {
        if chars.is_empty() {
            0
        } else {
            i % (chars.len() + 1)
        }
    };
    let join = |v: &[char]| v.iter().collect::<String>();
    match edit {
        Edit::Delete(i, n) => {
            let from = at(*i);
            let to = (from + n).min(chars.len());
            format!("{}{}", join(&chars[..from]), join(&chars[to..]))
        }
        Edit::Insert(i, f) => {
            let p = at(*i);
            format!(
                "{}{}{}",
                join(&chars[..p]),
                FRAGMENTS[*f],
                join(&chars[p..])
            )
        }
        Edit::InsertText(i, s) => {
            let p = at(*i);
            format!("{}{s}{}", join(&chars[..p]), join(&chars[p..]))
        }
        Edit::ReplaceValue(line, f) => replace_value(text, *line, FRAGMENTS[*f].trim_end()),
        Edit::DuplicateLine(line) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let target = line % lines.len();
            let mut out = String::new();
            for (i, l) in lines.iter().enumerate() {
                out.push_str(l);
                out.push('\n');
                if i == target {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out
        }
        Edit::Truncate(i) => join(&chars[..at(*i)]),
    }
}

/// `text` with the value of its `line`-th `key = value` line (modulo their
/// number) replaced by `value`.
fn replace_value(text: &str, line: usize, value: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let with_values: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].contains(" = "))
        .collect();
    if with_values.is_empty() {
        return text.to_string();
    }
    let target = with_values[line % with_values.len()];
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i == target {
            let key = l.split(" = ").next().unwrap_or("");
            out.push_str(&format!("{key} = {value}"));
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

/// Parses `text` and checks what must hold of any answer.
fn check_config(text: &str) {
    match Config::parse(text, Path::new("/nonexistent/base")) {
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty(), "an empty error for {text:?}");
            assert!(
                !message.contains('\n') && !message.contains('\r'),
                "a config error of more than one line: {message:?}\nfor {text:?}"
            );
        }
        Ok(c) => {
            assert!(!c.volumes.is_empty(), "no volume in {text:?}");
            assert!(c.max_events >= 1);
            assert!(!c.body_timeout.is_zero());
            let mut names = std::collections::HashSet::new();
            for v in &c.volumes {
                assert!(valid_name(&v.options.name), "{:?}", v.options.name);
                assert!(names.insert(v.options.name.clone()), "a duplicate volume");
                let t = v.options.vote_threshold;
                assert!(
                    (1..=v.children.len()).contains(&t),
                    "threshold {t} of {} children accepted in {text:?}",
                    v.children.len()
                );
                assert!(v.children.iter().all(|c| !c.name.is_empty()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Any text: no panic, errors are one line.
    #[test]
    fn config_parse_never_panics_on_any_text(text in "(?s).{0,300}") {
        check_config(&text);
    }

    /// Valid configs with 1 to 6 values replaced by well-formed values of
    /// any type: no panic, one-line errors, servable when accepted.
    #[test]
    fn config_parse_never_panics_on_replaced_values(
        base in 0..VALID.len(),
        edits in prop::collection::vec((any::<usize>(), 0..VALUES.len()), 1..6),
    ) {
        let mut text = VALID[base].to_string();
        for (line, v) in &edits {
            text = replace_value(&text, *line, VALUES[*v]);
        }
        check_config(&text);
    }

    /// Valid configs after 1 to 6 random edits: no panic, errors are one
    /// line, and what is accepted is a servable config.
    #[test]
    fn config_parse_never_panics_on_mutated_configs(
        base in 0..VALID.len(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut text = VALID[base].to_string();
        for e in &edits {
            text = apply(&text, e);
        }
        check_config(&text);
    }
}

/// The seeds themselves parse (else the mutations start from an error).
#[test]
fn the_valid_configs_parse() {
    for (i, text) in VALID.iter().enumerate() {
        if let Err(e) = Config::parse(text, Path::new("/base")) {
            panic!("VALID[{i}] does not parse: {e}");
        }
    }
}
