//! Starting one function's triggers on this host: its stream triggers and cron tickers, the
//! retention it declares, and its entry in the host's list of running functions (heartbeats,
//! metrics), removed when it stops.

use std::time::Duration;

use tokio::task::JoinSet;

use super::LoadedFunction;
use crate::manifest::Manifest;
use crate::triggers::streams;
use crate::triggers::{FunctionSlot, Lifecycle, TriggerServices};

/// Longest a host waits for a function's consumer groups before announcing it anyway.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// Starts every trigger of one function (stream triggers and cron tickers) until `life.stop`:
/// cancelling it stops their reads; invocations in flight finish and are settled. Returns the
/// slot the triggers read the function from (to swap in a new version with the same triggers,
/// or set a canary), and a future that ends when every stream trigger's consumer group exists
/// (or a trigger stopped before that).
pub fn start_function(
    loaded: &LoadedFunction,
    services: &TriggerServices,
    life: Lifecycle,
    tasks: &mut JoinSet<()>,
) -> (FunctionSlot, impl Future<Output = ()> + use<>) {
    let slot = FunctionSlot::new(
        loaded.function.clone(),
        services.publisher_for(loaded.manifest.publish_streams()),
    );
    let stop = life.stop.clone();
    let mut subscriptions = Vec::new();
    for trigger in &loaded.manifest.streams {
        let (subscribed, on_subscribed) = tokio::sync::oneshot::channel();
        subscriptions.push(on_subscribed);
        tasks.spawn(streams::run(
            slot.clone(),
            trigger.clone(),
            services.clone(),
            life.clone(),
            subscribed,
        ));
    }
    for ticker in &loaded.manifest.tickers {
        tasks.spawn(ticker.clone().run(services.broker.shared(), stop.clone()));
    }
    let declared = loaded
        .manifest
        .streams
        .iter()
        .map(|t| crate::retention::Declared {
            stream: t.stream.to_string(),
            group: t.group.to_string(),
            dead_letter: t.dead_letter.to_string(),
            policy: t.retention,
        })
        .collect();
    tasks.spawn(crate::retention::declare(
        services.broker.shared(),
        declared,
        stop.clone(),
    ));
    // A trigger that stopped first drops its sender; that ends the wait as well. The wait is
    // bounded: a group Redis keeps refusing (the trigger logs why and retries) must not hold
    // back the host's other functions and deployments.
    let generation = crate::status::running_started(crate::status::RunningFunction {
        name: loaded.manifest.name.to_string(),
        source: if loaded.manifest.deployed {
            "deployed"
        } else {
            "manifest"
        }
        .to_owned(),
        version: None,
        triggers: describe_triggers(&loaded.manifest),
        groups: loaded
            .manifest
            .streams
            .iter()
            .map(|t| (t.stream.to_string(), t.group.to_string()))
            .collect(),
    });
    crate::metrics::METRICS.function_loaded(&loaded.manifest.name);
    tasks.spawn({
        let (name, stop) = (loaded.manifest.name.clone(), stop.clone());
        async move {
            stop.cancelled().await;
            crate::status::running_stopped(&name, generation);
        }
    });
    let name = loaded.manifest.name.clone();
    let subscribed = async move {
        let all = async {
            for on_subscribed in subscriptions {
                let _ = on_subscribed.await;
            }
        };
        if tokio::time::timeout(SUBSCRIBE_WAIT, all).await.is_err() {
            tracing::warn!(function = %name, wait_s = SUBSCRIBE_WAIT.as_secs(),
                "a consumer group is not created yet; announcing the function anyway");
        }
    };
    (slot, subscribed)
}

/// A function's triggers as people read them: its cron schedules, and the streams it reads
/// other than its own tick streams.
fn describe_triggers(manifest: &Manifest) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .tickers
        .iter()
        .map(|t| {
            format!(
                "cron {} ({})",
                t.schedule.expression(),
                t.schedule.timezone()
            )
        })
        .collect();
    out.extend(
        manifest
            .streams
            .iter()
            .filter(|s| !manifest.tickers.iter().any(|t| t.stream == s.stream))
            .map(|s| format!("stream {} (group {})", s.stream, s.group)),
    );
    out
}
