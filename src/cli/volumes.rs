//! `quorum volumes` and `quorum volume VOL`: the volumes and their children
//! as `GET /v1/volumes` shows them.

use quorum_core::ChildState;
use serde::Deserialize;

use super::output::{self, size};
use super::{Client, Error};

/// A volume as the API shows it (the fields the command line uses).
#[derive(Debug, Deserialize)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Votes a block needs.
    pub vote_threshold: u64,
    /// `quorum` or `fifo`.
    pub read_pattern: String,
    /// Whether lost votes are written back.
    #[serde(default)]
    pub rewrite_corrupted: bool,
    /// Whether it is in blkverify mode.
    #[serde(default)]
    pub blkverify: bool,
    /// Its children, in order.
    pub children: Vec<Child>,
}

/// A child as the API shows it.
#[derive(Debug, Deserialize)]
pub struct Child {
    /// Its name.
    pub name: String,
    /// Where it lives, without secrets.
    pub uri: String,
    /// `file`, `s3`, `http`, ...
    pub backend: String,
    /// Its state, in the words of [`ChildState`] (kept as text, so that a
    /// state a newer server adds is shown rather than refused).
    pub state: String,
    /// Bytes it missed that the resync has not copied yet.
    #[serde(default)]
    pub stale_bytes: u64,
    /// Bytes it lost votes on that are not repaired yet, when the server
    /// keeps that.
    #[serde(default)]
    pub damaged_bytes: Option<u64>,
    /// Its counters.
    #[serde(default)]
    pub stats: ChildStats,
}

/// A child's counters.
#[derive(Debug, Default, Deserialize)]
pub struct ChildStats {
    /// Requests that failed on it.
    #[serde(default)]
    pub errors: u64,
    /// Bytes it lost votes on, since the server started.
    #[serde(default)]
    pub corrupted_bytes: u64,
    /// Bytes written back over it.
    #[serde(default)]
    pub repaired_bytes: u64,
}

impl Child {
    /// Whether it is in `state`.
    pub fn is(&self, state: ChildState) -> bool {
        self.state == state.as_str()
    }
}

/// `GET /v1/volumes/VOL`.
///
/// # Errors
/// As [`Client::get_json`].
pub fn get(client: &Client, volume: &str) -> Result<Volume, Error> {
    client.get_json(&["v1", "volumes", volume], &[])
}

/// `quorum volumes`.
///
/// # Errors
/// As [`Client::get_json`].
pub fn list(client: &Client, json: bool) -> Result<(), Error> {
    if json {
        let value: serde_json::Value = client.get_json(&["v1", "volumes"], &[])?;
        return output::print_json(&value);
    }
    let volumes: Vec<Volume> = client.get_json(&["v1", "volumes"], &[])?;
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            let stale: u64 = v.children.iter().map(|c| c.stale_bytes).sum();
            vec![
                v.name.clone(),
                size(v.size),
                format!("{}/{}", v.vote_threshold, v.children.len()),
                v.read_pattern.clone(),
                states(&v.children),
                size(stale),
            ]
        })
        .collect();
    output::table(
        &["VOLUME", "SIZE", "THRESHOLD", "READ", "CHILDREN", "STALE"],
        &rows,
    )
}

/// `quorum volume VOL`.
///
/// # Errors
/// As [`Client::get_json`].
pub fn show(client: &Client, volume: &str, json: bool) -> Result<(), Error> {
    if json {
        let value: serde_json::Value = client.get_json(&["v1", "volumes", volume], &[])?;
        return output::print_json(&value);
    }
    let v = get(client, volume)?;
    let mut modes = vec![format!("read pattern {}", v.read_pattern)];
    if v.rewrite_corrupted {
        modes.push("rewrite_corrupted".into());
    }
    if v.blkverify {
        modes.push("blkverify".into());
    }
    println!(
        "volume {}: {} ({} bytes), vote threshold {} of {}, {}\n",
        v.name,
        size(v.size),
        v.size,
        v.vote_threshold,
        v.children.len(),
        modes.join(", ")
    );
    let damage = v.children.iter().any(|c| c.damaged_bytes.is_some());
    let mut header = vec!["CHILD", "BACKEND", "STATE", "STALE"];
    if damage {
        header.push("DAMAGED");
    }
    header.extend(["LOST VOTES", "REPAIRED", "ERRORS", "URI"]);
    let rows: Vec<Vec<String>> = v
        .children
        .iter()
        .map(|c| {
            let mut row = vec![
                c.name.clone(),
                c.backend.clone(),
                c.state.clone(),
                size(c.stale_bytes),
            ];
            if damage {
                row.push(c.damaged_bytes.map_or_else(|| "-".into(), size));
            }
            row.extend([
                size(c.stats.corrupted_bytes),
                size(c.stats.repaired_bytes),
                c.stats.errors.to_string(),
                c.uri.clone(),
            ]);
            row
        })
        .collect();
    output::table(&header, &rows)
}

/// `3 healthy` or `2 healthy, 1 syncing`: the children by state, in the
/// order states first appear.
fn states(children: &[Child]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in children {
        match counts.iter_mut().find(|(s, _)| *s == c.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((&c.state, 1)),
        }
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
