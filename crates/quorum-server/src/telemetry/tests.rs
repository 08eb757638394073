//! Tests of the metrics: series at zero, counts, the per-child families.

use super::children::escape;
use super::*;

#[test]
fn series_exist_at_zero_and_count_events() {
    let t = Telemetry::new([("vm", vec!["a", "b"])]);
    t.set_size("vm", 1024);
    t.request(
        "vm",
        Frontend::Http,
        Op::Read,
        4096,
        Duration::from_micros(300),
    );
    t.request(
        "vm",
        Frontend::Nbd,
        Op::Read,
        512,
        Duration::from_micros(300),
    );
    t.request(
        "vm",
        Frontend::Nbd,
        Op::Write,
        1024,
        Duration::from_micros(300),
    );
    t.event(
        "vm",
        &Event::ReportBad {
            op: Op::Read,
            child: "b".into(),
            offset: 0,
            bytes: 100,
            error: None,
        },
    );
    t.event(
        "vm",
        &Event::ReportBad {
            op: Op::Write,
            child: "a".into(),
            offset: 0,
            bytes: 100,
            error: Some("EIO".into()),
        },
    );
    t.event(
        "vm",
        &Event::Rewrite {
            child: "b".into(),
            offset: 0,
            bytes: 100,
        },
    );
    let text = t.render(std::iter::empty());
    for line in [
        "quorum_requests_total{volume=\"vm\",op=\"read\",frontend=\"http\"} 1",
        "quorum_requests_total{volume=\"vm\",op=\"read\",frontend=\"nbd\"} 1",
        "quorum_requests_total{volume=\"vm\",op=\"write\",frontend=\"http\"} 0",
        "quorum_requests_total{volume=\"vm\",op=\"write\",frontend=\"nbd\"} 1",
        "quorum_request_bytes_total{volume=\"vm\",op=\"read\",frontend=\"http\"} 4096",
        "quorum_request_bytes_total{volume=\"vm\",op=\"read\",frontend=\"nbd\"} 512",
        "quorum_failures_total{volume=\"vm\",op=\"read\"} 0",
        "quorum_bad_reports_total{volume=\"vm\",child=\"b\",type=\"read\"} 1",
        "quorum_child_errors_total{volume=\"vm\",child=\"a\",op=\"write\"} 1",
        "quorum_corrupted_bytes_total{volume=\"vm\",child=\"b\"} 100",
        "quorum_repaired_bytes_total{volume=\"vm\",child=\"b\"} 100",
        "quorum_volume_size_bytes{volume=\"vm\"} 1024",
        "quorum_request_duration_seconds_bucket{volume=\"vm\",op=\"read\",frontend=\"nbd\",le=\"0.0005\"} 1",
        "# TYPE quorum_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let stats = |child| t.child_stats("vm", child).expect("a child's counters");
    assert_eq!(stats("b").corrupted_bytes, 100);
    assert_eq!(stats("a").errors, 1);
    assert_eq!(t.volume_stats("vm").read_bytes, 4096 + 512);
}

/// The lines of `text` that are samples of `child` of volume vm.
fn child_lines<'a>(text: &'a str, child: &str) -> Vec<&'a str> {
    let label = format!("volume=\"vm\",child=\"{child}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

#[test]
fn a_removed_child_leaves_no_series_and_starts_at_zero_when_added_again() {
    let t = Telemetry::new([("vm", vec!["a", "b"])]);
    let bad = |child: &str| Event::ReportBad {
        op: Op::Read,
        child: child.into(),
        offset: 0,
        bytes: 100,
        error: None,
    };
    t.event("vm", &bad("a"));
    t.event("vm", &bad("b"));
    let before = t.render(std::iter::empty());
    let per_child = child_lines(&before, "b").len();
    assert_eq!(per_child, child_lines(&before, "a").len());
    // errors by op, bad reports by type, corrupted, repaired, healthy,
    // stale, damaged, state by state.
    assert_eq!(
        per_child,
        OPS + REPORT_TYPES.len() + 5 + ChildState::VARIANTS.len(),
        "{before}"
    );
    assert!(
        before.contains("# TYPE quorum_child_state gauge\n"),
        "{before}"
    );
    assert!(before.contains("quorum_child_state{volume=\"vm\",child=\"b\",state=\"healthy\"} 1\n"));

    t.remove_child("vm", "b");
    let after = t.render(std::iter::empty());
    assert!(child_lines(&after, "b").is_empty(), "{after}");
    assert_eq!(child_lines(&after, "a").len(), per_child);
    assert!(after.contains("quorum_corrupted_bytes_total{volume=\"vm\",child=\"a\"} 100\n"));
    assert_eq!(t.child_stats("vm", "b"), None);
    // Events about it after its removal count nothing.
    t.event("vm", &bad("b"));

    // A thousand children added and removed leave /metrics as it was.
    for i in 0..1000 {
        let name = format!("c{i}");
        t.add_child("vm", &name);
        t.remove_child("vm", &name);
    }
    assert_eq!(t.render(std::iter::empty()).len(), after.len());

    t.add_child("vm", "b");
    let again = t.render(std::iter::empty());
    assert_eq!(child_lines(&again, "b").len(), per_child);
    assert!(again.contains("quorum_corrupted_bytes_total{volume=\"vm\",child=\"b\"} 0\n"));
    assert_eq!(t.child_stats("vm", "b").map(|c| c.bad_reports), Some(0));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a.b-c_d"), "a.b-c_d");
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
