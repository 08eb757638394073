//! The children a run drives: files named on the command line, or the
//! children of one volume of a server config, opened as the server opens
//! them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use quorum_backends::{ChildSource, Confinement, FileBackend, S3Backend};
use quorum_core::{ChildSpec, VolumeOptions};
use quorum_server::config::{ChildConfig, Config, VolumeConfig};

/// Existing files of equal size, as children `children.0`, `children.1`...
pub(crate) fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<ChildSpec>> {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let backend = FileBackend::open(path, None)
                .with_context(|| format!("child {i}: {}", path.display()))?;
            Ok(ChildSpec::new(format!("children.{i}"), Arc::new(backend)))
        })
        .collect()
}

/// One volume of a server config: its engine options and children, opened
/// (and created where missing) as the server opens its config's children.
pub(crate) fn configured(
    path: &Path,
    name: Option<&str>,
) -> anyhow::Result<(VolumeOptions, Vec<ChildSpec>)> {
    let (config, volume) = load(path, name)?;
    let mark = mark(&config, &volume)?;
    let children = volume
        .children
        .iter()
        .map(|child| {
            let backend = quorum_backends::open(source(&config, &volume, child, &mark))
                .with_context(|| format!("child {:?}", child.name))?;
            Ok(ChildSpec::new(child.name.clone(), backend))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((volume.options, children))
}

/// The first child of the volume `name` of the config at `path`, which
/// must be an s3 child, opened as the server opens it.
pub(crate) fn first_s3(path: &Path, name: Option<&str>) -> anyhow::Result<S3Backend> {
    let (config, volume) = load(path, name)?;
    let mark = mark(&config, &volume)?;
    let child = volume
        .children
        .first()
        .ok_or_else(|| anyhow!("volume {:?} has no child", volume.options.name))?;
    let source = source(&config, &volume, child, &mark);
    S3Backend::open(
        source.uri,
        source.options,
        source.size,
        source.mark,
        source.confine,
        source.create,
    )
    .with_context(|| format!("child {:?}", child.name))
}

/// The config at `path` and its volume `name` (its first when `None`).
fn load(path: &Path, name: Option<&str>) -> anyhow::Result<(Config, VolumeConfig)> {
    let mut config = Config::load(path)?;
    let index = match name {
        None if config.volumes.is_empty() => {
            return Err(anyhow!("{} has no volume", path.display()));
        }
        None => 0,
        Some(name) => config
            .volumes
            .iter()
            .position(|v| v.options.name == name)
            .ok_or_else(|| anyhow!("{} has no volume {name:?}", path.display()))?,
    };
    let volume = config.volumes.swap_remove(index);
    Ok((config, volume))
}

/// The mark of `volume`'s children, from the config's data directory (made
/// there when missing), as the server makes it.
fn mark(config: &Config, volume: &VolumeConfig) -> anyhow::Result<String> {
    Confinement::mark(&config.data_dir, &volume.options.name).with_context(|| {
        format!(
            "cannot read or make the server id in {}",
            config.data_dir.display()
        )
    })
}

/// How the server opens `child`, a child of the config file (trusted, and
/// created when missing).
fn source<'a>(
    config: &'a Config,
    volume: &VolumeConfig,
    child: &'a ChildConfig,
    mark: &'a str,
) -> ChildSource<'a> {
    ChildSource {
        uri: &child.uri,
        options: &child.options,
        base_dir: &config.base_dir,
        size: volume.size,
        faults: &child.faults,
        mark,
        confine: None,
        create: true,
    }
}
