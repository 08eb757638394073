//! `quorum events`: the event log (`GET /v1/events`, paged with `since`),
//! and with `--follow` the live stream (`GET /v1/events/stream`), resumed
//! with `Last-Event-ID` after a dropped connection, with a bounded
//! back-off. Before resuming, the log is asked whether it still holds the
//! last event seen: a server restarted on a new `data_dir` numbers its
//! events from 1 again, and is then followed from its log's start.

use std::io::{BufReader, Write};
use std::thread;
use std::time::Duration;

use quorum_core::EventKind;
use reqwest::Method;
use serde::Deserialize;

use super::sse;
use super::{Client, Error};

/// The first wait before reconnecting a dropped stream; it doubles up to
/// [`MAX_BACKOFF`], and starts again once a connection is made.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The media type of a Server-Sent Events stream.
const EVENT_STREAM: &str = "text/event-stream";
/// Events asked for per page of the log (the server's largest page).
const PAGE: u32 = 10_000;

/// What `quorum events` was asked.
#[derive(Debug, Clone)]
pub struct Query {
    /// Only events after this id (`None`: the whole log, or with
    /// `follow` the events from now on).
    pub since: Option<u64>,
    /// Only the events of this volume.
    pub volume: Option<String>,
    /// Stay and print events as they come.
    pub follow: bool,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// One JSON object a line instead of text.
    pub json: bool,
}

/// An event as the API shows it (SPEC section 6).
#[derive(Debug, Deserialize)]
struct Event {
    id: u64,
    timestamp: String,
    event: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
}

/// Where the printing stands: the last id printed, the last event known
/// to be in the server's log (its id and timestamp, which tell it from
/// another log's event of that id) and how many are left.
struct Printer {
    json: bool,
    last: Option<u64>,
    anchor: Option<(u64, String)>,
    left: Option<u64>,
}

impl Printer {
    /// Prints one event; `false` once `--count` events were printed or
    /// stdout is closed (`quorum events | head`).
    fn print(&mut self, raw: &str, url: &str) -> Result<bool, Error> {
        let event: Event = serde_json::from_str(raw).map_err(|e| Error::Protocol {
            url: url.to_owned(),
            problem: format!("an event that is not SPEC 6's JSON: {e}"),
        })?;
        if self.last.is_some_and(|last| event.id <= last) {
            return Ok(true);
        }
        self.last = Some(event.id);
        if event.event.parse().is_ok_and(EventKind::is_logged) {
            self.anchor = Some((event.id, event.timestamp.clone()));
        }
        let line = if self.json {
            raw.to_owned()
        } else {
            text(&event)
        };
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(Error::io("cannot write to stdout", e)),
        }
        if let Some(left) = &mut self.left {
            *left -= 1;
            return Ok(*left > 0);
        }
        Ok(true)
    }
}

/// `17  2024-05-01T10:00:00Z  vm  QUORUM_REPORT_BAD  type=read node-name=c ...`
fn text(e: &Event) -> String {
    let data: Vec<String> = e
        .data
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!(
        "{}  {}  {}  {}  {}",
        e.id,
        e.timestamp,
        if e.volume.is_empty() { "-" } else { &e.volume },
        e.event,
        data.join(" ")
    )
    .trim_end()
    .to_owned()
}

/// `quorum events ...`.
///
/// # Errors
/// The server's refusal, a transport failure of the log (the stream is
/// reconnected instead), or stdout closed.
pub fn run(client: &Client, query: &Query) -> Result<(), Error> {
    let mut printer = Printer {
        json: query.json,
        last: None,
        anchor: None,
        left: query.count,
    };
    if query.count == Some(0) {
        return Ok(());
    }
    if !query.follow {
        page_through(client, query, query.since.unwrap_or(0), Some(&mut printer))?;
        return Ok(());
    }
    // From now on unless told otherwise: the newest id, so that a stream
    // dropped before its first event resumes without a gap.
    let (start, anchor) = match query.since {
        Some(since) => (since, None),
        None => page_through(client, query, 0, None)?,
    };
    printer.last = Some(start);
    printer.anchor = anchor;
    follow(client, query, &mut printer)
}

/// Reads the log after `since`, page by page, printing each event when a
/// printer is given; returns the last id seen (or `since`) and, if any
/// was seen, that event's id and timestamp.
fn page_through(
    client: &Client,
    query: &Query,
    since: u64,
    mut printer: Option<&mut Printer>,
) -> Result<(u64, Option<(u64, String)>), Error> {
    let mut last = since;
    let mut anchor = None;
    loop {
        let mut params = vec![("since", last.to_string()), ("limit", PAGE.to_string())];
        if let Some(v) = &query.volume {
            params.push(("volume", v.clone()));
        }
        let page: Vec<serde_json::Value> = client.get_json(&["v1", "events"], &params)?;
        if page.is_empty() {
            return Ok((last, anchor));
        }
        for raw in page {
            let id = raw["id"].as_u64().ok_or_else(|| Error::Protocol {
                url: client.url(&["v1", "events"]).to_string(),
                problem: "an event without an id".into(),
            })?;
            if id > last {
                last = id;
                anchor = raw["timestamp"].as_str().map(|t| (id, t.to_owned()));
            }
            if let Some(p) = printer.as_deref_mut() {
                let url = client.url(&["v1", "events"]).to_string();
                if !p.print(&raw.to_string(), &url)? {
                    return Ok((last, anchor));
                }
            }
        }
    }
}

/// The live stream, reconnected as long as the server can be reached
/// again; ends when `--count` events were printed or stdout closes.
fn follow(client: &Client, query: &Query, printer: &mut Printer) -> Result<(), Error> {
    // A stream has no overall timeout; a dead peer is found by TCP
    // keep-alive and by the server's own keep-alive comments.
    let stream = client.with_timeout(None)?;
    let url = client.url(&["v1", "events", "stream"]);
    let mut backoff = MIN_BACKOFF;
    let mut resuming = false;
    loop {
        let restarted = if resuming {
            restarted_log(client, printer.anchor.as_ref())
        } else {
            Ok(false)
        };
        let connected = restarted.and_then(|restarted| {
            if restarted {
                eprintln!(
                    "quorum: events: the server's event log no longer holds event {} (a new data_dir?): following the new log from its start",
                    printer.last.unwrap_or(0)
                );
                printer.last = Some(0);
                printer.anchor = None;
            }
            let mut request = stream.request(Method::GET, url.clone());
            if let Some(v) = &query.volume {
                request = request.query(&[("volume", v)]);
            }
            if let Some(last) = printer.last {
                request = request.header("last-event-id", last.to_string());
            }
            stream.send(request)
        });
        resuming = true;
        let garbage = |problem: String| Error::Protocol {
            url: url.to_string(),
            problem,
        };
        let cause = match connected {
            Ok(response) => {
                let kind = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                if !kind.starts_with(EVENT_STREAM) {
                    return Err(garbage(format!(
                        "not an event stream (content-type {kind}): is this a quorum-server?"
                    )));
                }
                backoff = MIN_BACKOFF;
                let mut reader = sse::Reader::new(BufReader::new(response));
                loop {
                    match reader.next_message() {
                        Ok(Some(message)) => {
                            if !printer.print(&message.data, url.as_str())? {
                                return Ok(());
                            }
                        }
                        Ok(None) => break "the server closed the stream".to_string(),
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            return Err(garbage(format!("not an event stream: {e}")));
                        }
                        Err(e) => break e.to_string(),
                    }
                }
            }
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => return Err(e),
        };
        eprintln!(
            "quorum: events: {cause}; reconnecting in {} (after event {})",
            humantime::format_duration(backoff),
            printer.last.unwrap_or(0)
        );
        thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the server's log has started again since `anchor`, an event
/// it held: it ends before that id, or holds another event under it.
/// (An anchor dropped from a full log is followed by newer events: not a
/// new log.)
///
/// # Errors
/// As [`Client::get_json`].
fn restarted_log(client: &Client, anchor: Option<&(u64, String)>) -> Result<bool, Error> {
    let Some((id @ 1.., timestamp)) = anchor else {
        return Ok(false);
    };
    let params = [("since", (id - 1).to_string()), ("limit", "1".to_string())];
    let page: Vec<Event> = client.get_json(&["v1", "events"], &params)?;
    Ok(match page.first() {
        None => true,
        Some(e) => e.id == *id && e.timestamp != *timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_one_line() {
        let e: Event = serde_json::from_str(
            r#"{"id":1,"timestamp":"2024-05-01T10:00:00Z","event":"QUORUM_REPORT_BAD","volume":"vm","data":{"type":"read","node-name":"c","offset":1000}}"#,
        )
        .expect("an event");
        assert_eq!(
            text(&e),
            "1  2024-05-01T10:00:00Z  vm  QUORUM_REPORT_BAD  type=read node-name=c offset=1000"
        );
    }
}
