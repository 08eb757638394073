//! `quorum scrub`, `quorum jobs` and `quorum cancel`: a volume's background
//! jobs (scrubs and the resync) through `.../scrub` and `.../jobs`.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use quorum_core::{JobKind, JobState};
use reqwest::Method;
use serde::Deserialize;

use super::output::{self, size};
use super::{Client, Error, Outcome, client};

/// How often `--wait` asks for a job's progress.
const POLL: Duration = Duration::from_millis(500);

/// A job as the API shows it: the resync or a scrub (the scrub's own
/// fields are absent for the resync).
#[derive(Debug, Deserialize)]
pub struct Job {
    /// Its id within the volume (0 is the resync).
    pub id: u64,
    /// In the words of [`JobKind`].
    pub kind: String,
    /// In the words of [`JobState`].
    pub state: String,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes to do.
    pub bytes_total: u64,
    /// Bytes a second, as the server measures it.
    #[serde(default)]
    pub rate_bytes_per_sec: f64,
    /// Seconds left at that rate, when known.
    #[serde(default)]
    pub eta_seconds: Option<f64>,
    /// Whether a scrub repairs.
    #[serde(default)]
    pub repair: Option<bool>,
    /// Bytes a scrub wrote back.
    #[serde(default)]
    pub bytes_repaired: Option<u64>,
    /// Bytes each child lost votes on, in a scrub.
    #[serde(default)]
    pub mismatches: BTreeMap<String, u64>,
    /// Blocks without a majority, in a scrub.
    #[serde(default)]
    pub unrecoverable: Vec<Unrecoverable>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Blocks no version of which reached the threshold.
#[derive(Debug, Deserialize)]
pub struct Unrecoverable {
    /// Where they start.
    pub offset: u64,
    /// How many bytes.
    pub bytes: u64,
}

impl Job {
    /// Whether it is in `state`.
    pub fn is(&self, state: JobState) -> bool {
        self.state == state.as_str()
    }

    /// Whether it is of `kind`.
    pub fn is_a(&self, kind: JobKind) -> bool {
        self.kind == kind.as_str()
    }
}

/// `quorum scrub VOL [--repair] [--wait] [--json]`.
///
/// # Errors
/// The server's refusal, a transport failure, or a scrub that failed or
/// was cancelled while waited for.
pub fn scrub(
    client: &Client,
    volume: &str,
    repair: bool,
    wait: bool,
    json: bool,
) -> Result<Outcome, Error> {
    let url = client.url(&["v1", "volumes", volume, "scrub"]);
    let body = serde_json::json!({ "repair": repair }).to_string();
    let started: serde_json::Value = client::json(
        client.send(
            client
                .request(Method::POST, url)
                .header("content-type", "application/json")
                .body(body),
        )?,
    )?;
    let job: Job = parse(client, volume, started.clone())?;
    if !wait {
        if json {
            output::print_json(&started)?;
        } else {
            println!(
                "scrub {} of {volume} started{}; follow it with: quorum jobs {volume}",
                job.id,
                if repair { " (with repair)" } else { "" }
            );
        }
        return Ok(Outcome::Ok);
    }
    let (last, value) = wait_for(client, volume, job.id)?;
    if json {
        output::print_json(&value)?;
    } else {
        report(volume, &last);
    }
    if !last.is(JobState::Completed) {
        return Err(Error::JobEnded(format!(
            "scrub {} of {volume} ended {}{}",
            last.id,
            last.state,
            last.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    Ok(if last.unrecoverable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Unrecoverable
    })
}

/// Polls job `id` with a progress bar until it is no longer running.
fn wait_for(client: &Client, volume: &str, id: u64) -> Result<(Job, serde_json::Value), Error> {
    let id_text = id.to_string();
    let mut bar = None;
    loop {
        let value: serde_json::Value =
            client.get_json(&["v1", "volumes", volume, "jobs", &id_text], &[])?;
        let job: Job = parse(client, volume, value.clone())?;
        let bar = bar.get_or_insert_with(|| {
            output::job_bar(job.bytes_total, &format!("scrub {id} of {volume}"))
        });
        bar.set_length(job.bytes_total);
        bar.set_position(job.bytes_done);
        bar.set_message(output::job_message(job.rate_bytes_per_sec, job.eta_seconds));
        if !job.is(JobState::Running) {
            bar.finish_and_clear();
            return Ok((job, value));
        }
        thread::sleep(POLL);
    }
}

/// What a finished scrub found, for people.
fn report(volume: &str, job: &Job) {
    println!(
        "scrub {} of {volume} {}: {} scanned, {} repaired",
        job.id,
        job.state,
        size(job.bytes_done),
        size(job.bytes_repaired.unwrap_or(0))
    );
    if job.mismatches.is_empty() {
        println!("  lost votes: none");
    } else {
        let lost: Vec<String> = job
            .mismatches
            .iter()
            .map(|(child, bytes)| format!("{child} {}", size(*bytes)))
            .collect();
        println!("  lost votes: {}", lost.join(", "));
    }
    if job.unrecoverable.is_empty() {
        println!("  unrecoverable: none");
    } else {
        let total: u64 = job.unrecoverable.iter().map(|u| u.bytes).sum();
        println!(
            "  unrecoverable: {} in {} range(s), not repaired (no version has the threshold's votes):",
            size(total),
            job.unrecoverable.len()
        );
        for u in &job.unrecoverable {
            println!("    offset {} length {}", u.offset, u.bytes);
        }
    }
}

/// `quorum jobs VOL [--json]`.
///
/// # Errors
/// As [`Client::get_json`].
pub fn list(client: &Client, volume: &str, json: bool) -> Result<(), Error> {
    let value: serde_json::Value = client.get_json(&["v1", "volumes", volume, "jobs"], &[])?;
    if json {
        return output::print_json(&value);
    }
    let jobs: Vec<Job> = parse(client, volume, value)?;
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let percent = if j.bytes_total == 0 {
                100.0
            } else {
                j.bytes_done as f64 * 100.0 / j.bytes_total as f64
            };
            let kind = match (j.is_a(JobKind::Scrub), j.repair) {
                (true, Some(true)) => format!("{} (repair)", j.kind),
                _ => j.kind.clone(),
            };
            vec![
                j.id.to_string(),
                kind,
                j.state.clone(),
                format!("{percent:.0}% of {}", size(j.bytes_total)),
                if j.is(JobState::Running) {
                    output::job_message(j.rate_bytes_per_sec, j.eta_seconds)
                } else {
                    "-".into()
                },
                found(j),
            ]
        })
        .collect();
    output::table(&["ID", "KIND", "STATE", "DONE", "RATE", "FOUND"], &rows)
}

/// What a scrub found so far, in a few words.
fn found(job: &Job) -> String {
    if !job.is_a(JobKind::Scrub) {
        return "-".into();
    }
    let lost: u64 = job.mismatches.values().sum();
    let unrecoverable: u64 = job.unrecoverable.iter().map(|u| u.bytes).sum();
    format!(
        "{} lost votes, {} repaired, {} unrecoverable",
        size(lost),
        size(job.bytes_repaired.unwrap_or(0)),
        size(unrecoverable)
    )
}

/// `quorum cancel VOL ID`.
///
/// # Errors
/// The server's refusal (`404 no_such_job`, `409 conflict` for the resync
/// or a job that ended) or a transport failure.
pub fn cancel(client: &Client, volume: &str, id: u64) -> Result<(), Error> {
    let url = client.url(&["v1", "volumes", volume, "jobs", &id.to_string()]);
    client.send(client.request(Method::DELETE, url))?;
    println!("cancelled job {id} of {volume}");
    Ok(())
}

/// A JSON answer as the type it should be.
fn parse<T: serde::de::DeserializeOwned>(
    client: &Client,
    volume: &str,
    value: serde_json::Value,
) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::Protocol {
        url: client.url(&["v1", "volumes", volume, "jobs"]).to_string(),
        problem: e.to_string(),
    })
}
