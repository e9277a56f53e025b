//! Benchmark: the per-event cost of a function in each SDK language. The three templates
//! (`sdk/templates/{rust,javascript,python}`) are built by the real toolchains (`eddy build`),
//! compiled by the engine without its cache (timed), then each handles the same order event
//! `EDDY_BENCH_EVENTS` times (default 300) in a fresh instance, as a host would, and again in
//! batches of 64 sharing one instance each (a stream trigger's `instance = "per-batch"`).
//!
//! Run after `scripts/test` (which installs the toolchains and builds `eddy`):
//! `cargo bench -p eddy-tests --bench languages`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::engine::{Engine, EngineConfig, MemoryPublisher, Outcome};
use eddy::event::{Delivery, Event};
use eddy_tests::{eddy_bin, repo_dir, with_toolchains};

fn event(data: &str) -> Event {
    Event {
        id: "bench-1".into(),
        source: "bench".into(),
        event_type: "OrderPlaced".into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        data: data.as_bytes().to_vec(),
        extensions: Vec::new(),
        delivery: Delivery::invoked(1),
    }
}

/// Events per instance in the per-batch measurement: the streams trigger's usual read size.
const BATCH: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let repo = repo_dir();
    let events: usize = std::env::var("EDDY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let scratch = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo.join("sdk/templates"))
        .arg(scratch.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let templates = scratch.path().join("templates");
    let cargo_toml = templates.join("rust/Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml).unwrap();
    let sdk = format!("path = {:?}", repo.join("sdk").display().to_string());
    std::fs::write(&cargo_toml, text.replace("path = \"../..\"", &sdk)).unwrap();

    let engine = Engine::new(&EngineConfig {
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    println!(
        "per-event cost by SDK language, {events} events each, fresh instance per event, no compile cache"
    );
    println!(
        "  {:<11} {:>9} {:>10} {:>9} {:>9} {:>9} {:>13} {:>15} {:>8}",
        "language",
        "size",
        "compile",
        "p50",
        "p99",
        "mean",
        "instantiate",
        "per-batch mean",
        "gain"
    );
    for (language, payload) in [
        ("rust", r#"{"orderId":"o-1"}"#),
        ("javascript", r#"{"orderId":"o-1","email":"a@example.com"}"#),
        ("python", r#"{"orderId":"o-1"}"#),
    ] {
        let dir = templates.join(language);
        let built = with_toolchains(&mut Command::new(eddy_bin()))
            .arg("build")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let manifest = eddy::manifest::load(&dir).unwrap();
        let bytes = std::fs::read(&manifest.component).unwrap();
        let started = Instant::now();
        let function = engine
            .load(manifest.function_spec(None, &[]).unwrap(), &bytes)
            .unwrap();
        let compile = started.elapsed();
        let event = event(payload);
        let mut times = Vec::with_capacity(events);
        let mut instantiation = Duration::ZERO;
        for _ in 0..events {
            let result = function.invoke_blocking(&event, Arc::new(MemoryPublisher::default()));
            assert_eq!(result.outcome, Outcome::Done, "{language}: {result:?}");
            times.push(result.duration);
            instantiation += result.instantiation;
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / events as u32;
        // The same events through `instance = "per-batch"`: batches of BATCH in one instance
        // each, timed whole (instantiation, every call and the teardown), per event.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let mut done = 0;
        while done < events {
            let n = BATCH.min(events - done);
            let jobs = (0..n).map(|_| {
                (
                    &event,
                    eddy::engine::RunHooks::default(),
                    tracing::Span::none(),
                )
            });
            runtime.block_on(function.run_each(
                jobs,
                eddy::engine::Services::in_memory(),
                |_, result| {
                    let result = result.expect("runs without hooks always run");
                    assert_eq!(result.outcome, Outcome::Done, "{language}: {result:?}");
                },
            ));
            done += n;
        }
        let batched = started.elapsed() / events as u32;
        println!(
            "  {:<11} {:>6} KiB {:>8.2} s {:>9.2?} {:>9.2?} {:>9.2?} {:>13.2?} {:>15.2?} {:>7.1}x",
            language,
            bytes.len() / 1024,
            compile.as_secs_f64(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            mean,
            instantiation / events as u32,
            batched,
            mean.as_secs_f64() / batched.as_secs_f64(),
        );
    }
}
