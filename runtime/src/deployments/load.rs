//! The one way a function becomes runnable on this host: its manifest parsed, its secrets
//! resolved here, its component compiled (or read from the compile cache). Functions come
//! from manifests on disk (`eddy up --functions`, [`from_manifests`]) or from the registry
//! (deployed, [`version`], [`current`], [`canary`]); both build the function's spec from its
//! manifest and hand it to [`Engine::load`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::engine::{Engine, Function, FunctionSpec};
use crate::manifest::{self, Manifest};
use crate::registry;

/// A function ready to run: its manifest and its loaded component.
#[derive(Clone)]
pub struct LoadedFunction {
    /// Where it came from and its triggers.
    pub manifest: Manifest,
    /// The loaded component.
    pub function: Function,
}

/// Compiles `bytes` (or finds them in the compile cache) for `spec`, off the async workers:
/// compiling blocks for up to seconds.
async fn compile(
    engine: &Engine,
    spec: FunctionSpec,
    bytes: Vec<u8>,
) -> Result<Function, LoadVersionError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || engine.load(spec, &bytes))
        .await
        .map_err(|e| LoadVersionError::Task(e.to_string()))?
        .map_err(LoadVersionError::Load)
}

/// Loads every manifest found under `paths` and its component. Fails on the first problem,
/// naming the file; checks that no two functions share a name or a stream's consumer group.
pub fn from_manifests(engine: &Engine, paths: &[PathBuf]) -> anyhow::Result<Vec<LoadedFunction>> {
    let mut files = Vec::new();
    for path in paths {
        let found = manifest::discover(path)
            .with_context(|| format!("cannot read functions from {}", path.display()))?;
        if found.is_empty() {
            bail!(
                "no manifest in {}: expected an eddy.toml file or a folder holding some",
                path.display()
            );
        }
        files.extend(found);
    }
    let mut loaded: Vec<LoadedFunction> = Vec::new();
    let mut groups = BTreeMap::new();
    for file in files {
        let manifest = manifest::load(&file)?;
        if let Some(other) = loaded.iter().find(|f| f.manifest.name == manifest.name) {
            bail!(
                "{}: function name {:?} is already used by {}",
                file.display(),
                manifest.name,
                other.manifest.path.display()
            );
        }
        for ticker in &manifest.tickers {
            if let Some(other) = loaded
                .iter()
                .find(|f| f.manifest.tickers.iter().any(|t| t.name == ticker.name))
            {
                bail!(
                    "{}: cron trigger name {:?} is already used by function {:?}: give it a \
                     `name` of its own",
                    file.display(),
                    ticker.name,
                    other.manifest.name
                );
            }
        }
        for trigger in &manifest.streams {
            let key = (trigger.stream.clone(), trigger.group.clone());
            if let Some(other) = groups.insert(key, manifest.name.clone()) {
                bail!(
                    "{}: stream {:?} group {:?} is already read by function {other:?}; two \
                     functions in one group would split its events between them (give each its \
                     own group)",
                    file.display(),
                    trigger.stream,
                    trigger.group
                );
            }
        }
        let bytes = manifest.read_component()?;
        let spec = manifest.function_spec(None, engine.secret_dirs())?;
        let function = engine.load(spec, &bytes).with_context(|| {
            format!(
                "{}: cannot load component {}",
                file.display(),
                manifest.component.display()
            )
        })?;
        tracing::info!(
            function = %manifest.name,
            digest = function.digest(),
            triggers = manifest.streams.len(),
            "function loaded"
        );
        loaded.push(LoadedFunction { manifest, function });
    }
    Ok(loaded)
}

/// Why a deployed version could not be loaded on this host.
#[derive(Debug, thiserror::Error)]
pub enum LoadVersionError {
    /// Its manifest is invalid, or names a secret this host cannot resolve.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// Its component is not in the registry.
    #[error("component {0} is missing from the registry")]
    MissingComponent(String),
    /// The registry could not be read.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The component does not load.
    #[error(transparent)]
    Load(#[from] crate::engine::LoadError),
    /// The version asked for is not in the registry (a canary rolled back meanwhile).
    #[error("version {0} is not in the registry")]
    NoSuchVersion(u32),
    /// The compile task died (a bug in the host).
    #[error("the compile task failed: {0}")]
    Task(String),
}

/// Loads `version` of deployed function `name`: its manifest, its secrets on this host, its
/// component from the registry, compiled off the async workers.
pub async fn version(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
    version: &registry::Version,
) -> Result<LoadedFunction, LoadVersionError> {
    let manifest = manifest::parse_deployed(name, &version.manifest)?;
    let bytes = registry::get_component(conn, &version.digest)
        .await?
        .ok_or_else(|| LoadVersionError::MissingComponent(version.digest.clone()))?;
    let spec = manifest.function_spec(Some(version.version), engine.secret_dirs())?;
    let function = compile(engine, spec, bytes).await?;
    Ok(LoadedFunction { manifest, function })
}

/// Loads the current version of deployed function `name` from the registry.
pub async fn current(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
) -> Result<Option<(u32, LoadedFunction)>, LoadVersionError> {
    let Some(version) = registry::current(conn, name).await? else {
        return Ok(None);
    };
    let loaded = self::version(engine, conn, name, &version).await?;
    Ok(Some((version.version, loaded)))
}

/// Loads version `version` of deployed function `name`, for a canary.
pub async fn canary(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
    version: u32,
) -> Result<Function, LoadVersionError> {
    let (versions, _) = registry::versions(conn, name).await?;
    let record = versions
        .into_iter()
        .find(|v| v.version == version)
        .ok_or(LoadVersionError::NoSuchVersion(version))?;
    Ok(self::version(engine, conn, name, &record).await?.function)
}
