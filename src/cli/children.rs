//! `quorum child add` and `quorum child remove`: a volume's membership
//! through `.../children`, waiting for a new child's sync.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use quorum_core::{ChildState, JobKind};
use reqwest::Method;

use super::jobs::Job;
use super::output;
use super::{Client, Error, volumes};

/// How often the wait for a sync asks for progress.
const POLL: Duration = Duration::from_millis(500);

/// `quorum child add VOL NAME URI [--option K=V ...] [--no-wait]
/// [--stall-timeout D]`: waits for the sync unless `wait` is `None`, and
/// gives up once the child has been failed for `wait` with no progress.
///
/// # Errors
/// The server's refusal (403 `forbidden`, 409 `conflict`, ...), a
/// transport failure, the child gone while waited for, or failed and
/// stalled for the stall timeout.
pub fn add(
    client: &Client,
    volume: &str,
    name: &str,
    uri: &str,
    options: &[(String, String)],
    wait: Option<Duration>,
) -> Result<(), Error> {
    let options: BTreeMap<&str, &str> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = serde_json::json!({ "name": name, "uri": uri, "options": options });
    let url = client.url(&["v1", "volumes", volume, "children"]);
    client.send(
        client
            .request(Method::POST, url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )?;
    let Some(stall_timeout) = wait else {
        println!("added child {name} to {volume}; it syncs before it votes");
        return Ok(());
    };
    wait_for_sync(client, volume, name, stall_timeout)?;
    println!("added child {name} to {volume}: synced and healthy");
    Ok(())
}

/// Polls the volume until `name` is healthy with nothing stale, showing
/// its copy's progress and the resync's rate; gives up when the child has
/// been failed for `stall_timeout` while its stale bytes did not shrink.
fn wait_for_sync(
    client: &Client,
    volume: &str,
    name: &str,
    stall_timeout: Duration,
) -> Result<(), Error> {
    let mut bar = None;
    // The least stale seen, and since when the child is failed with no
    // progress below it.
    let mut least = u64::MAX;
    let mut stalled_since: Option<Instant> = None;
    loop {
        let v = volumes::get(client, volume)?;
        let child = v.children.iter().find(|c| c.name == name).ok_or_else(|| {
            Error::JobEnded(format!("child {name} left {volume} while it synced"))
        })?;
        let bar = bar.get_or_insert_with(|| output::job_bar(v.size, &format!("sync of {name}")));
        bar.set_position(v.size.saturating_sub(child.stale_bytes));
        if child.is(ChildState::Healthy) && child.stale_bytes == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        if child.stale_bytes < least || !child.is(ChildState::Failed) {
            least = least.min(child.stale_bytes);
            stalled_since = None;
        } else if stalled_since.get_or_insert_with(Instant::now).elapsed() >= stall_timeout {
            bar.abandon();
            return Err(Error::JobEnded(format!(
                "child {name} of {volume} has been failed for {} with {} stale and no progress; \
                 the server keeps retrying it (see `quorum volume {volume}`)",
                humantime::format_duration(stall_timeout),
                output::size(child.stale_bytes)
            )));
        }
        let jobs: Vec<Job> = client.get_json(&["v1", "volumes", volume, "jobs"], &[])?;
        let resync = jobs.iter().find(|j| j.is_a(JobKind::Resync));
        let speed = resync
            .map(|j| output::job_message(j.rate_bytes_per_sec, j.eta_seconds))
            .unwrap_or_default();
        bar.set_message(format!("{}, {speed}", child.state));
        thread::sleep(POLL);
    }
}

/// `quorum child remove VOL NAME`.
///
/// # Errors
/// The server's refusal (409 `below_threshold`, `last_copy`, 404
/// `no_such_child`) or a transport failure.
pub fn remove(client: &Client, volume: &str, name: &str) -> Result<(), Error> {
    let url = client.url(&["v1", "volumes", volume, "children", name]);
    client.send(client.request(Method::DELETE, url))?;
    println!("removed child {name} from {volume}");
    Ok(())
}

/// `KEY=VALUE` of `--option`.
///
/// # Errors
/// A text without `=` or with an empty key.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_key_value() {
        assert_eq!(
            key_value("aws_region=us-east-1"),
            Ok(("aws_region".into(), "us-east-1".into()))
        );
        assert_eq!(key_value("token=a=b"), Ok(("token".into(), "a=b".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=v").is_err());
    }
}
