//! The help and unit of every series in the exporter's registry.

use metrics::{KeyName, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

pub(super) fn describe(r: &PrometheusRecorder) {
    let counters: [(&'static str, Option<Unit>, &'static str); 5] = [
        (
            "quorum_job_bytes_total",
            Some(Unit::Bytes),
            "Bytes scanned by scrubs and copied by resyncs, by volume and kind.",
        ),
        (
            "quorum_requests_total",
            None,
            "Requests served, by volume, op and front end.",
        ),
        (
            "quorum_request_bytes_total",
            Some(Unit::Bytes),
            "Bytes asked for by requests, by volume, op and front end.",
        ),
        (
            "quorum_failures_total",
            None,
            "Requests that failed their quorum, by volume and op.",
        ),
        (
            "quorum_events_total",
            None,
            "Events recorded, by volume and event name.",
        ),
    ];
    for (name, unit, help) in counters {
        r.describe_counter(KeyName::from(name), unit, SharedString::from(help));
    }
    r.describe_histogram(
        KeyName::from("quorum_request_duration_seconds"),
        Some(Unit::Seconds),
        SharedString::from("Request latency, by volume, op and front end."),
    );
    r.describe_gauge(
        KeyName::from("quorum_volume_size_bytes"),
        Some(Unit::Bytes),
        SharedString::from("The volume's size."),
    );
    r.describe_gauge(
        KeyName::from("quorum_nbd_connections"),
        None,
        SharedString::from("NBD connections in transmission, by volume."),
    );
}
