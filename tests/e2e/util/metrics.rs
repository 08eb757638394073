//! Reading `/metrics`: the text exposition parsed by `prometheus-parse`,
//! a sample looked up by its name and its whole label set.
//!
//! Tests name a series the way it is exported, `name{label="value",...}`;
//! the same parser reads that name, so labels may come in any order but
//! must all be there (`{child="a"}` does not match a series that also has
//! a `volume`). The one exception is `frontend` (`http`, `nbd`): a series
//! named without it is the sum over it, as PromQL's `sum without
//! (frontend)`, since most tests count every request whatever way it came;
//! a test that cares names it. A histogram's bucket is
//! `NAME_bucket{...,le="BOUND"}`, as exported.

use std::collections::HashMap;

use prometheus_parse::{Sample, Scrape, Value};

use super::Server;

/// Labels a test may leave out of a series: the samples that differ only
/// in them are summed.
const SUMMED: [&str; 1] = ["frontend"];

/// Whether a sample's `have` labels are the series' `want`, but for
/// [`SUMMED`] labels that `want` leaves out.
fn matches(have: &HashMap<String, String>, want: &HashMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
        && have
            .keys()
            .all(|k| want.contains_key(k) || SUMMED.contains(&k.as_str()))
}

/// A parsed `/metrics` exposition.
pub struct Metrics {
    samples: Vec<Sample>,
}

/// A series as written in a test, read as a one-line exposition.
#[track_caller]
fn parse_series(series: &str) -> (String, HashMap<String, String>) {
    let line = format!("{series} 0");
    let scrape = Scrape::parse(std::iter::once(Ok(line))).expect("parse a series name");
    let sample = scrape.samples.into_iter().next().unwrap_or_else(|| {
        panic!("`{series}` is not a series: write it as name{{label=\"value\",...}}")
    });
    (sample.metric, (*sample.labels).clone())
}

impl Metrics {
    /// Parses an exposition in the text format.
    pub fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        // Reading lines from memory cannot fail; a line the parser does not
        // understand is skipped, as Prometheus would refuse the scrape
        // instead (observability.rs runs promtool on the live text).
        let scrape = Scrape::parse(lines).expect("parse the exposition");
        Metrics {
            samples: scrape.samples,
        }
    }

    /// The value of `series` (see the module docs), or `None` when it is
    /// absent.
    #[track_caller]
    pub fn get(&self, series: &str) -> Option<f64> {
        let (name, labels) = parse_series(series);
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.metric == name && matches(&s.labels, &labels))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                Value::Histogram(_) | Value::Summary(_) => None,
            })
            .collect();
        if !values.is_empty() {
            return Some(values.iter().sum());
        }
        // A bucket: the histogram's sample, without `le`, has it.
        let base = name.strip_suffix("_bucket")?;
        let mut rest = labels;
        let le: f64 = rest.remove("le")?.to_ascii_lowercase().parse().ok()?;
        self.histogram(base, &rest)?
            .iter()
            .find(|(bound, _)| *bound == le)
            .map(|(_, count)| *count)
    }

    /// The buckets of histogram `series` (its name and labels, without
    /// `le`) as (upper bound, count), in the order exported.
    #[track_caller]
    pub fn buckets(&self, series: &str) -> Option<Vec<(f64, f64)>> {
        let (name, labels) = parse_series(series);
        self.histogram(&name, &labels)
    }

    /// The buckets of the histograms that match, summed bound by bound.
    fn histogram(&self, name: &str, labels: &HashMap<String, String>) -> Option<Vec<(f64, f64)>> {
        let mut matched = self.samples.iter().filter_map(|s| match &s.value {
            Value::Histogram(counts) if s.metric == name && matches(&s.labels, labels) => Some(
                counts
                    .iter()
                    .map(|c| (c.less_than, c.count))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });
        let mut sum = matched.next()?;
        for other in matched {
            let bounds = |h: &[(f64, f64)]| h.iter().map(|(b, _)| *b).collect::<Vec<_>>();
            assert_eq!(
                bounds(&sum),
                bounds(&other),
                "{name}: histograms summed over {SUMMED:?} have different buckets"
            );
            for (total, (_, count)) in sum.iter_mut().zip(other) {
                total.1 += count;
            }
        }
        Some(sum)
    }

    /// The series named `name` (any labels), for messages.
    fn family(&self, name: &str) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| format!("{name}{{{}}} {:?}", s.labels, s.value))
            .collect()
    }
}

/// The value of `series` in the exposition `text` (see the module docs).
#[track_caller]
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    Metrics::parse(text).get(series)
}

impl Server {
    /// `/metrics`, parsed.
    #[track_caller]
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics").expect_status(200).text())
    }

    /// The value of one series of `/metrics`, e.g.
    /// `quorum_child_errors_total{volume="vm",child="a",op="read"}`; panics if
    /// the series is absent.
    #[track_caller]
    pub fn metric(&self, series: &str) -> f64 {
        let metrics = self.metrics();
        metrics.get(series).unwrap_or_else(|| {
            let (name, _) = parse_series(series);
            panic!(
                "no series {series} in /metrics; the series named {name}:\n{}",
                metrics.family(&name).join("\n")
            )
        })
    }

    /// The value of one series of `/metrics`, or `None` when it is absent
    /// (a counter nothing has counted yet).
    #[track_caller]
    pub fn metric_if_any(&self, series: &str) -> Option<f64> {
        self.metrics().get(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE quorum_child_errors_total counter
quorum_child_errors_total{volume="vm",child="a",op="read"} 3
quorum_child_errors_total{volume="vm",child="a",op="write"} 0
# TYPE quorum_volume_size_bytes gauge
quorum_volume_size_bytes{volume="vm"} 1048576
# TYPE quorum_request_duration_seconds histogram
quorum_request_duration_seconds_bucket{volume="vm",op="read",le="0.005"} 1
quorum_request_duration_seconds_bucket{volume="vm",op="read",le="+Inf"} 2
quorum_request_duration_seconds_sum{volume="vm",op="read"} 0.25
quorum_request_duration_seconds_count{volume="vm",op="read"} 2
"#;

    const FRONTENDS: &str = r#"# TYPE quorum_requests_total counter
quorum_requests_total{volume="vm",op="read",frontend="http"} 3
quorum_requests_total{volume="vm",op="read",frontend="nbd"} 4
quorum_requests_total{volume="vm",op="write",frontend="http"} 0
# TYPE quorum_request_duration_seconds histogram
quorum_request_duration_seconds_bucket{volume="vm",op="read",frontend="http",le="0.005"} 1
quorum_request_duration_seconds_bucket{volume="vm",op="read",frontend="http",le="+Inf"} 3
quorum_request_duration_seconds_sum{volume="vm",op="read",frontend="http"} 0.5
quorum_request_duration_seconds_count{volume="vm",op="read",frontend="http"} 3
quorum_request_duration_seconds_bucket{volume="vm",op="read",frontend="nbd",le="0.005"} 2
quorum_request_duration_seconds_bucket{volume="vm",op="read",frontend="nbd",le="+Inf"} 4
quorum_request_duration_seconds_sum{volume="vm",op="read",frontend="nbd"} 0.25
quorum_request_duration_seconds_count{volume="vm",op="read",frontend="nbd"} 4
"#;

    #[test]
    fn a_series_without_its_frontend_is_the_sum_over_it() {
        let m = Metrics::parse(FRONTENDS);
        let nbd = r#"quorum_requests_total{volume="vm",op="read",frontend="nbd"}"#;
        assert_eq!(m.get(nbd), Some(4.0));
        assert_eq!(
            m.get(r#"quorum_requests_total{volume="vm",op="read"}"#),
            Some(7.0)
        );
        assert_eq!(
            m.get(r#"quorum_requests_total{volume="vm",op="write"}"#),
            Some(0.0)
        );
        // Only `frontend` is summed over.
        assert_eq!(m.get(r#"quorum_requests_total{volume="vm"}"#), None);
        assert_eq!(
            m.get(r#"quorum_requests_total{volume="vm",op="read",frontend="ftp"}"#),
            None
        );
        let inf = r#"quorum_request_duration_seconds_bucket{volume="vm",op="read",le="+Inf"}"#;
        assert_eq!(m.get(inf), Some(7.0));
        let sum = r#"quorum_request_duration_seconds_sum{volume="vm",op="read"}"#;
        assert_eq!(m.get(sum), Some(0.75));
        let buckets = m.buckets(r#"quorum_request_duration_seconds{volume="vm",op="read"}"#);
        assert_eq!(buckets, Some(vec![(0.005, 3.0), (f64::INFINITY, 7.0)]));
        let http =
            m.buckets(r#"quorum_request_duration_seconds{volume="vm",op="read",frontend="http"}"#);
        assert_eq!(http, Some(vec![(0.005, 1.0), (f64::INFINITY, 3.0)]));
    }

    #[test]
    fn samples_are_found_by_name_and_every_label_in_any_order() {
        let m = Metrics::parse(TEXT);
        let errors = r#"quorum_child_errors_total{op="read",child="a",volume="vm"}"#;
        assert_eq!(m.get(errors), Some(3.0));
        assert_eq!(
            m.get(r#"quorum_child_errors_total{volume="vm",child="a",op="write"}"#),
            Some(0.0)
        );
        assert_eq!(m.get(r#"quorum_child_errors_total{child="a"}"#), None);
        assert_eq!(
            m.get(r#"quorum_child_errors_total{volume="vm",child="b",op="read"}"#),
            None
        );
        assert_eq!(
            m.get(r#"quorum_volume_size_bytes{volume="vm"}"#),
            Some(1048576.0)
        );
        assert_eq!(m.get("quorum_volume_size_bytes"), None);
    }

    #[test]
    fn histograms_answer_for_their_buckets_sum_and_count() {
        let m = Metrics::parse(TEXT);
        let h = r#"quorum_request_duration_seconds_bucket{volume="vm",op="read",le="+Inf"}"#;
        assert_eq!(m.get(h), Some(2.0));
        let h = r#"quorum_request_duration_seconds_bucket{volume="vm",op="read",le="0.005"}"#;
        assert_eq!(m.get(h), Some(1.0));
        let h = r#"quorum_request_duration_seconds_sum{volume="vm",op="read"}"#;
        assert_eq!(m.get(h), Some(0.25));
        let buckets = m.buckets(r#"quorum_request_duration_seconds{op="read",volume="vm"}"#);
        assert_eq!(buckets, Some(vec![(0.005, 1.0), (f64::INFINITY, 2.0)]));
    }
}
