//! `quorum-server check --config FILE [--offline]`: a config checked
//! without serving it, as `nginx -t` or `promtool check config` do.
//!
//! It refuses what a start would refuse (SPEC section 2), with the same
//! one line and exit code: the config itself ([`Config::load`], the
//! `QUORUM_TOKEN` a start would take), then, unless `--offline`, the
//! `data_dir`, the `[nbd]` TLS files and socket path (not bound), and
//! every child, looked at with
//! [`quorum_backends::probe()`]: files opened for reading, remote servers
//! and S3 prefixes asked what they hold. Children of the same volume must
//! have one size and no two children (of any volume) one storage. Nothing
//! is created, marked or locked: neither child files nor `data_dir`, so a
//! running server's own config can be checked beside it. A child added at
//! run time (saved under `data_dir/membership/`) replaces the config's
//! list as at start; one that cannot be opened is a note, since the server
//! starts without it.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use quorum_backends::{ChildSource, Confinement, Probe};

use crate::config::{ChildConfig, Config, VolumeConfig};
use crate::membership;
use crate::origins::{self, Origins};

/// The arguments of `quorum-server check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The config file (TOML) to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the config alone: open no child and look at no data_dir (for a
    /// config written for another machine).
    #[arg(long)]
    pub offline: bool,
}

/// What a check found in a config it accepts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The volumes.
    pub volumes: usize,
    /// Their children, in all.
    pub children: usize,
    /// What a start would say but not refuse.
    pub notes: Vec<String>,
}

/// Runs `quorum-server check`: the notes on stderr, `config ok: N volumes,
/// M children` on stdout.
///
/// # Errors
/// The first thing a start would refuse, as one line naming the volume,
/// the child and the problem.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let report = check(&args.config, args.offline)?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    println!(
        "config ok: {} volume{}, {} child{}{}",
        report.volumes,
        if report.volumes == 1 { "" } else { "s" },
        report.children,
        if report.children == 1 { "" } else { "ren" },
        if args.offline {
            " (offline: no child opened)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Checks the config at `path`; see the module doc.
///
/// # Errors
/// As [`run`].
pub fn check(path: &Path, offline: bool) -> anyhow::Result<Report> {
    let config = Config::load(path)?;
    config
        .check_listeners()
        .map_err(|e| anyhow!("config {}: {e}", path.display()))?;
    if config.token.is_none() {
        if let Some(token) = std::env::var("QUORUM_TOKEN").ok().filter(|t| !t.is_empty()) {
            crate::config::check_token(&token).context("QUORUM_TOKEN")?;
        }
    }
    for vc in &config.volumes {
        let mut names = HashSet::new();
        for child in &vc.children {
            if !names.insert(&child.name) {
                bail!(
                    "volume {:?}: the child name {:?} is used twice",
                    vc.options.name,
                    child.name
                );
            }
        }
    }
    let mut report = Report {
        volumes: config.volumes.len(),
        children: config.volumes.iter().map(|v| v.children.len()).sum(),
        notes: Vec::new(),
    };
    if offline {
        return Ok(report);
    }
    check_data_dir(&config.data_dir)?;
    if let Some(nbd) = &config.nbd {
        crate::nbd_listen::NbdListeners::check(nbd)?;
    }
    // Storage -> (volume, child) that uses it.
    let mut claimed: BTreeMap<String, (String, String)> = BTreeMap::new();
    report.children = 0;
    for vc in &config.volumes {
        report.children += check_volume(&config, vc, &mut claimed, &mut report.notes)?;
    }
    Ok(report)
}

/// Checks one volume's children as a start opens them; returns how many
/// it has.
fn check_volume(
    config: &Config,
    vc: &VolumeConfig,
    claimed: &mut BTreeMap<String, (String, String)>,
    notes: &mut Vec<String>,
) -> anyhow::Result<usize> {
    let name = &vc.options.name;
    let saved_at = membership::saved_path(&config.data_dir, name);
    let saved = membership::load(&saved_at)
        .with_context(|| format!("volume {name:?}: cannot read {}", saved_at.display()))?;
    let children: Vec<ChildConfig> = match saved {
        Some(saved) => saved
            .children
            .into_iter()
            .map(|c| ChildConfig {
                faults: vc
                    .children
                    .iter()
                    .find(|k| k.name == c.name)
                    .map(|k| k.faults.clone())
                    .unwrap_or_default(),
                name: c.name,
                uri: c.uri,
                options: c.options,
            })
            .collect(),
        None => vc.children.clone(),
    };
    // Files missing or replaced since the server last wrote to the volume
    // (its journal exists, and so does the server id the mark is made of).
    let journal = origins::journal_path(&config.data_dir, name);
    if journal.exists() {
        let mark = Confinement::mark(&config.data_dir, name).with_context(|| {
            format!("cannot read the server id in {}", config.data_dir.display())
        })?;
        let mut found = Origins::default();
        for child in &children {
            let from_config = vc.names(child);
            found.survey(
                &child.name,
                &ChildSource {
                    uri: &child.uri,
                    options: &child.options,
                    base_dir: &config.base_dir,
                    size: vc.size,
                    faults: &child.faults,
                    mark: &mark,
                    confine: None,
                    create: false,
                },
                from_config,
            );
        }
        found.check(name, &journal, children.len(), vc.options.vote_threshold)?;
    }
    let mut first: Option<(u64, &str)> = None;
    for child in &children {
        let from_config = vc.names(child);
        let probed = quorum_backends::probe(ChildSource {
            uri: &child.uri,
            options: &child.options,
            base_dir: &config.base_dir,
            size: vc.size,
            faults: &child.faults,
            mark: "",
            confine: None,
            create: from_config,
        });
        let Probe { size, identity } = match probed {
            Ok(probe) => probe,
            Err(e) if !from_config => {
                notes.push(format!(
                    "volume {name:?}, child {:?} (added at run time) cannot be opened, so the volume would start without it: {e}",
                    child.name
                ));
                continue;
            }
            Err(e) => return Err(anyhow!("volume {name:?}, child {:?}: {e}", child.name)),
        };
        if let Some((other, owner)) = claimed.get(&identity) {
            bail!(
                "volume {name:?}, child {:?}: it uses the same storage as volume {other:?}, child {owner:?}",
                child.name
            );
        }
        claimed.insert(identity, (name.clone(), child.name.clone()));
        match (size, first) {
            (Some(size), None) => first = Some((size, &child.name)),
            (Some(size), Some((expected, first))) if size != expected => bail!(
                "volume {name:?}, child {:?}: it has {size} bytes but child {first:?} has {expected}",
                child.name
            ),
            _ => {}
        }
    }
    if vc.size.is_none() && first.is_none() {
        bail!("volume {name:?}: no child could be opened to learn the volume's size");
    }
    Ok(children.len())
}

/// The `data_dir` a start would create and lock: an existing one must be a
/// directory this process may write; a missing one, below a directory
/// where it may be made.
fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    let writable = |path: &Path| {
        rustix::fs::access(
            path,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .map_err(io::Error::from)
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            writable(dir).with_context(|| format!("data_dir {} cannot be written", dir.display()))
        }
        Ok(_) => bail!("data_dir {} is not a directory", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut parent = dir.parent();
            while let Some(p) = parent {
                let p = if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                };
                match std::fs::metadata(p) {
                    Ok(meta) if meta.is_dir() => {
                        return writable(p).with_context(|| {
                            format!(
                                "cannot create data_dir {}: {} cannot be written",
                                dir.display(),
                                p.display()
                            )
                        });
                    }
                    Ok(_) => bail!(
                        "cannot create data_dir {}: {} is not a directory",
                        dir.display(),
                        p.display()
                    ),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => parent = p.parent(),
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot create data_dir {}", dir.display()));
                    }
                }
            }
            bail!(
                "cannot create data_dir {}: no parent directory",
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot read data_dir {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, config: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, config).expect("write the config");
        path
    }

    const THREE: &str = "[[volume]]\nname = \"vm\"\nsize = \"1MiB\"\nvote_threshold = 2\n\
        [[volume.child]]\nname = \"a\"\nuri = \"a.img\"\n\
        [[volume.child]]\nname = \"b\"\nuri = \"b.img\"\n\
        [[volume.child]]\nname = \"c\"\nuri = \"c.img\"\n";

    #[test]
    fn a_good_config_passes_and_nothing_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), THREE);
        let report = check(&path, false).expect("a good config");
        assert_eq!((report.volumes, report.children), (1, 3));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec!["config.toml"], "check created files");
    }

    #[test]
    fn children_of_two_sizes_and_one_file_twice_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::File::create(dir.path().join("a.img"))
            .and_then(|f| f.set_len(1 << 20))
            .expect("a.img");
        std::fs::File::create(dir.path().join("b.img"))
            .and_then(|f| f.set_len(2 << 20))
            .expect("b.img");
        let sizes = "[[volume]]\nname = \"vm\"\nvote_threshold = 1\n\
            [[volume.child]]\nname = \"a\"\nuri = \"a.img\"\n\
            [[volume.child]]\nname = \"b\"\nuri = \"b.img\"\n";
        let e = check(&write(dir.path(), sizes), false).expect_err("two sizes");
        assert!(e.to_string().contains("\"b\""), "{e}");
        assert!(check(&write(dir.path(), sizes), true).is_ok(), "offline");
        let twice = "[[volume]]\nname = \"vm\"\nvote_threshold = 1\n\
            [[volume.child]]\nname = \"a\"\nuri = \"a.img\"\n\
            [[volume.child]]\nname = \"again\"\nuri = \"./a.img\"\n";
        let e = check(&write(dir.path(), twice), false).expect_err("one file twice");
        assert!(e.to_string().contains("same storage"), "{e}");
    }
}
