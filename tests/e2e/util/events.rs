//! The events of SPEC section 6: `/v1/events` read with their envelope
//! checked, and assertions on `QUORUM_REPORT_BAD` and its sectors.

use serde_json::Value;

use super::{Server, wait_until};

impl Server {
    /// Events of `/v1/events?QUERY`, with their shape checked (SPEC section 6).
    #[track_caller]
    pub fn events(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/events?{query}"));
        r.expect_status(200);
        let v = r.json();
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("/v1/events?{query} is not a JSON array: {v}"))
            .clone();
        let mut last = 0;
        for ev in &list {
            check_event_shape(ev);
            let id = event_id(ev);
            assert!(id > last, "event ids are not increasing in {v}");
            last = id;
        }
        list
    }

    /// Every event.
    #[track_caller]
    pub fn all_events(&self) -> Vec<Value> {
        self.events("since=0")
    }

    /// Every event, once those after the first `from` are `expected` by
    /// name in any order: a report folded with an earlier one is logged
    /// when its second ends, after the state changes it caused. Waits a
    /// bounded time.
    #[track_caller]
    pub fn events_settled(&self, from: usize, expected: &[&str]) -> Vec<Value> {
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_unstable();
        let mut all = Vec::new();
        wait_until(
            &format!("the events {expected:?} after the first {from}"),
            || {
                all = self.all_events();
                let mut got: Vec<&str> = all
                    .iter()
                    .skip(from)
                    .filter_map(|e| e["event"].as_str())
                    .collect();
                got.sort_unstable();
                got == want
            },
        );
        all
    }

    /// The id of the newest event, 0 without any.
    #[track_caller]
    pub fn last_event_id(&self) -> u64 {
        self.all_events().last().map_or(0, event_id)
    }
}

/// The `id` of an event, 0 without one.
pub fn event_id(ev: &Value) -> u64 {
    ev["id"].as_u64().unwrap_or(0)
}

/// Asserts the envelope of SPEC section 6.
#[track_caller]
pub fn check_event_shape(ev: &Value) {
    assert!(
        ev["id"].as_u64().is_some_and(|id| id >= 1),
        "event id should be an integer >= 1: {ev}"
    );
    let ts = ev["timestamp"].as_str().unwrap_or("");
    let b = ts.as_bytes();
    let rfc3339 = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':'
        && (ts.ends_with(['Z', 'z']) || matches!(b[b.len() - 6], b'+' | b'-'));
    assert!(rfc3339, "event timestamp is not RFC 3339: {ev}");
    assert!(ev["event"].is_string(), "event name missing: {ev}");
    assert!(ev["volume"].is_string(), "event volume missing: {ev}");
    assert!(ev["data"].is_object(), "event data is not an object: {ev}");
}

/// The events named `name`.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The QUORUM_REPORT_BAD events of child `node`.
pub fn reports_for<'a>(events: &'a [Value], node: &str) -> Vec<&'a Value> {
    named(events, "QUORUM_REPORT_BAD")
        .into_iter()
        .filter(|e| e["data"]["node-name"] == node)
        .collect()
}

/// How many reports a `QUORUM_REPORT_BAD` stands for: a folded one (the
/// reports of a child within a second after the first) its `suppressed`,
/// any other 1.
pub fn reports_in(ev: &Value) -> u64 {
    ev["data"]["suppressed"].as_u64().unwrap_or(1)
}

/// The byte ranges a `QUORUM_REPORT_BAD` names, as (offset, bytes): a
/// folded one's `ranges` (the union of the reports it stands for; it must
/// list them all), any other its `offset` and `bytes`.
#[track_caller]
pub fn report_ranges(ev: &Value) -> Vec<(u64, u64)> {
    match ev["data"]["ranges"].as_array() {
        Some(ranges) => {
            assert_eq!(ev["data"]["ranges-truncated"], false, "{ev}");
            ranges
                .iter()
                .map(|r| {
                    let field = |k: &str| {
                        r[k].as_u64()
                            .unwrap_or_else(|| panic!("a range without {k} in {ev}"))
                    };
                    (field("offset"), field("bytes"))
                })
                .collect()
        }
        None => vec![(data_u64(ev, "offset"), data_u64(ev, "bytes"))],
    }
}

/// An unsigned field of an event's data.
#[track_caller]
pub fn data_u64(ev: &Value, key: &str) -> u64 {
    ev["data"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("data.{key} is not an unsigned integer in {ev}"))
}

/// Asserts `sector-num` and `sectors-count` agree with `offset` and `bytes`
/// (512-byte sectors, SPEC section 6).
#[track_caller]
pub fn check_sectors(ev: &Value) {
    let offset = data_u64(ev, "offset");
    let bytes = data_u64(ev, "bytes");
    let sector = offset / 512;
    let count = (offset + bytes).div_ceil(512) - sector;
    assert_eq!(data_u64(ev, "sector-num"), sector, "sector-num of {ev}");
    assert_eq!(
        data_u64(ev, "sectors-count"),
        count,
        "sectors-count of {ev}"
    );
}

/// Asserts a QUORUM_REPORT_BAD: volume, child, type, sectors, and that an
/// `error` is present (containing `error`) or absent.
#[track_caller]
pub fn check_report(ev: &Value, volume: &str, node: &str, kind: &str, error: Option<&str>) {
    assert_eq!(ev["event"], "QUORUM_REPORT_BAD", "{ev}");
    assert_eq!(ev["volume"], volume, "volume of {ev}");
    assert_eq!(ev["data"]["node-name"], node, "node-name of {ev}");
    assert_eq!(ev["data"]["type"], kind, "type of {ev}");
    check_sectors(ev);
    match error {
        Some(text) => {
            let e = ev["data"]["error"].as_str().unwrap_or_else(|| {
                panic!("a report of a failed child should carry an error: {ev}")
            });
            assert!(e.contains(text), "error of {ev} should contain {text:?}");
        }
        None => assert!(
            ev["data"].get("error").is_none(),
            "a report of a child that answered should carry no error: {ev}"
        ),
    }
}

/// Asserts a reported range lies inside `[lo, hi)` and covers `[from, to)`.
#[track_caller]
pub fn check_range_within(ev: &Value, lo: u64, hi: u64, from: u64, to: u64) {
    let offset = data_u64(ev, "offset");
    let end = offset + data_u64(ev, "bytes");
    assert!(
        lo <= offset && end <= hi,
        "reported range {offset}..{end} should lie in {lo}..{hi}: {ev}"
    );
    assert!(
        offset <= from && to <= end,
        "reported range {offset}..{end} should cover {from}..{to}: {ev}"
    );
}
