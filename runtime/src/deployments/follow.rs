//! The deployment follower: runs the deployed functions on this host and keeps them at the
//! registry's current version.
//!
//! At start it notes where the deployments stream ends, then loads every deployed function;
//! after that it blocks on the stream and, for each function an entry names, reads the
//! registry again and applies [`reconcile::decide`]'s answer (start, swap in place, restart,
//! stop), then [`reconcile::decide_canary`]'s for its canary. Reading the registry rather than
//! the entry makes a missed or repeated entry harmless: the registry is the truth, the stream
//! only says where to look. A version this host cannot load is logged and the previous one
//! keeps serving; a canary that does not load is tried again after the next wait.

use std::collections::BTreeMap;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::reconcile::{self, CanaryChange, Change};
use super::{Deployed, LoadedFunction, load, start};
use crate::backoff::Backoff;
use crate::broker::Conn;
use crate::engine::Engine;
use crate::manifest::Manifest;
use crate::registry;
use crate::triggers::{CanaryRun, FunctionSlot, Lifecycle, TriggerServices};

/// A deployed function running here.
struct Running {
    version: u32,
    manifest: Manifest,
    slot: FunctionSlot,
    stop: CancellationToken,
    /// The canary's version and the stop of its judge, while one runs here.
    judge: Option<(u32, CancellationToken)>,
}

/// The follower's state between two reads of the deployments stream.
struct Follower {
    engine: Engine,
    services: TriggerServices,
    life: Lifecycle,
    conn: Conn,
    /// Names of the functions loaded from manifests: a deployed one of the same name is ignored.
    static_names: Vec<String>,
    /// What the API's invoke runs.
    deployed: Deployed,
    running: BTreeMap<String, Running>,
    tasks: JoinSet<()>,
}

/// Runs deployed functions until `life.stop`: loads every current one (then sets `loaded`, the
/// host's readiness), then follows the deployments stream.
pub async fn follow(
    engine: Engine,
    services: TriggerServices,
    life: Lifecycle,
    static_names: Vec<String>,
    loaded: std::sync::Arc<std::sync::atomic::AtomicBool>,
    deployed: Deployed,
) {
    let stop = life.stop.clone();
    let Some(mut reader) =
        crate::backoff::retry_until_ok(&stop, "connecting the deployments reader", || {
            let broker = services.broker.clone();
            async move { broker.dedicated().await }
        })
        .await
    else {
        return;
    };
    let mut follower = Follower {
        conn: services.broker.shared(),
        engine,
        services,
        life,
        static_names,
        deployed,
        running: BTreeMap::new(),
        tasks: JoinSet::new(),
    };
    // Where the stream stands before the registry is read: nothing after it is missed.
    let mut last_id = follower.stream_end().await;
    let mut pending: Vec<String> = registry::names(&mut follower.conn)
        .await
        .unwrap_or_default();
    let mut backoff = Backoff::redis();
    loop {
        // Functions whose canary did not load here: tried again after the next wait.
        let mut again = Vec::new();
        for name in pending.drain(..) {
            if follower.static_names.contains(&name) {
                tracing::warn!(function = %name, "a deployed function has the name of a --functions one; ignored");
                continue;
            }
            follower.reconcile(&name).await;
            if !follower.reconcile_canary(&name).await {
                again.push(name);
            }
        }
        pending.extend(again);
        // The first pass over the registry is done: the host is ready.
        loaded.store(true, std::sync::atomic::Ordering::Release);
        let read = tokio::select! {
            read = changed_functions(&mut reader, &last_id) => read,
            _ = stop.cancelled() => break,
        };
        match read {
            Ok((names, last)) => {
                backoff.reset();
                if let Some(last) = last {
                    last_id = last;
                }
                for name in names {
                    if !pending.contains(&name) {
                        pending.push(name);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading deployments failed; retrying");
                if !backoff.wait(&stop).await {
                    break;
                }
            }
        }
        while follower.tasks.try_join_next().is_some() {}
    }
    while follower.tasks.join_next().await.is_some() {}
}

/// Blocks (up to [`crate::broker::READ_BLOCK`]) for deployments entries after `after`; the
/// functions they name, and the last entry's id.
async fn changed_functions(
    reader: &mut Conn,
    after: &str,
) -> Result<(Vec<String>, Option<String>), crate::wire::ReadError> {
    let reply: redis::Value = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(crate::broker::READ_BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(registry::DEPLOYMENTS_STREAM)
        .arg(after)
        .query_async(reader)
        .await?;
    let entries = crate::wire::read_reply_entries(reply)?;
    let last = entries.last().map(|e| e.id.clone());
    let names = entries
        .into_iter()
        .filter_map(|entry| {
            entry
                .fields?
                .into_iter()
                .find(|(k, _)| k == "function")
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        })
        .collect();
    Ok((names, last))
}

impl Follower {
    /// The id of the deployments stream's last entry, or `0-0`.
    async fn stream_end(&mut self) -> String {
        redis::cmd("XREVRANGE")
            .arg(registry::DEPLOYMENTS_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async::<Vec<(String, redis::Value)>>(&mut self.conn)
            .await
            .ok()
            .and_then(|entries| entries.into_iter().next().map(|(id, _)| id))
            .unwrap_or_else(|| "0-0".to_owned())
    }

    /// What the API's invoke runs for `name` from now on.
    fn publish(&self, name: &str, entry: Option<(u32, LoadedFunction)>) {
        let mut map = self.deployed.write().unwrap_or_else(|e| e.into_inner());
        match entry {
            Some(entry) => map.insert(name.to_owned(), entry),
            None => map.remove(name),
        };
    }

    /// Brings `name`'s triggers here to the registry's current version.
    async fn reconcile(&mut self, name: &str) {
        let current = match load::current(&self.engine, &mut self.conn, name).await {
            Ok(current) => current,
            Err(error) => {
                tracing::error!(function = %name, error = %format!("{error:#}"),
                    "cannot load the deployed version; the previous one keeps serving");
                return;
            }
        };
        let change = reconcile::decide(
            self.running.get(name).map(|r| (r.version, &r.manifest)),
            current.as_ref().map(|(v, l)| (*v, &l.manifest)),
        );
        self.publish(name, current.clone());
        match (change, current) {
            (Change::Unchanged, _) => {}
            (Change::SwapInPlace, Some((version, loaded))) => {
                let Some(run) = self.running.get_mut(name) else {
                    return;
                };
                *run.slot.current.write().unwrap_or_else(|e| e.into_inner()) =
                    loaded.function.clone();
                tracing::info!(function = %name, from = run.version, to = version,
                    digest = loaded.function.digest(), "switched version in place");
                crate::metrics::METRICS.deploy(name);
                crate::status::running_version(name, version);
                run.version = version;
                run.manifest = loaded.manifest;
            }
            (Change::Start | Change::Restart, Some((version, loaded))) => {
                self.start(name, version, loaded).await
            }
            (Change::Stop, _) => {
                if let Some(old) = self.running.remove(name) {
                    if let Some((_, judge)) = &old.judge {
                        judge.cancel();
                    }
                    old.stop.cancel();
                    tracing::info!(function = %name, version = old.version, "function removed");
                }
            }
            (_, None) => {}
        }
    }

    /// Starts `loaded`'s triggers; once its groups exist, stops the version running before.
    async fn start(&mut self, name: &str, version: u32, loaded: LoadedFunction) {
        let life = Lifecycle {
            stop: self.life.stop.child_token(),
            abandon: self.life.abandon.clone(),
        };
        let (slot, subscribed) =
            start::start_function(&loaded, &self.services, life.clone(), &mut self.tasks);
        // Announced as running once its groups exist, and only then.
        tokio::select! {
            _ = subscribed => {}
            _ = self.life.stop.cancelled() => {}
        }
        let digest = loaded.function.digest().to_owned();
        let fresh = Running {
            version,
            manifest: loaded.manifest,
            slot,
            stop: life.stop,
            judge: None,
        };
        crate::status::running_version(name, version);
        match self.running.insert(name.to_owned(), fresh) {
            Some(old) => {
                if let Some((_, judge)) = &old.judge {
                    judge.cancel();
                }
                old.stop.cancel();
                tracing::info!(function = %name, from = old.version, to = version, %digest,
                    "switched version, triggers restarted");
            }
            None => {
                tracing::info!(function = %name, version, %digest, "deployed function running")
            }
        }
        crate::metrics::METRICS.deploy(name);
    }

    /// Brings `name`'s canary here to the registry's; false when the wanted canary did not
    /// load here (try again later).
    async fn reconcile_canary(&mut self, name: &str) -> bool {
        let Some(run) = self.running.get(name) else {
            return true;
        };
        let wanted = crate::canary::state(&mut self.conn, name)
            .await
            .ok()
            .and_then(|(canary, _)| canary);
        let have = run.judge.as_ref().map(|(v, _)| *v);
        let change = reconcile::decide_canary(have, wanted.as_ref().map(|c| c.version));
        if change == CanaryChange::Keep {
            return true;
        }
        let loaded = match (&change, &wanted) {
            (CanaryChange::Begin(version), Some(_)) => {
                Some(load::canary(&self.engine, &mut self.conn, name, *version).await)
            }
            _ => None,
        };
        let Some(run) = self.running.get_mut(name) else {
            return true;
        };
        if let Some((_, judge)) = run.judge.take() {
            judge.cancel();
        }
        *run.slot.canary.write().unwrap_or_else(|e| e.into_inner()) = None;
        let (Some(canary), Some(loaded)) = (wanted, loaded) else {
            tracing::info!(function = %name, "canary ended: every event on the stable version");
            return true;
        };
        match loaded {
            Ok(function) => {
                *run.slot.canary.write().unwrap_or_else(|e| e.into_inner()) = Some(CanaryRun {
                    version: canary.version,
                    percent: canary.percent,
                    function,
                });
                let judge = self.life.stop.child_token();
                tokio::spawn(super::judge::judge_canary(
                    self.services.broker.shared(),
                    name.to_owned(),
                    run.version,
                    canary.clone(),
                    judge.clone(),
                ));
                run.judge = Some((canary.version, judge));
                tracing::info!(function = %name, stable = run.version,
                    canary = canary.version, percent = canary.percent,
                    "canary running: a share of events goes to the new version");
                true
            }
            Err(error) => {
                tracing::error!(function = %name, version = canary.version,
                    error = %format!("{error:#}"),
                    "cannot load the canary version; every event stays on the \
                     stable one here, trying again in a few seconds");
                false
            }
        }
    }
}
