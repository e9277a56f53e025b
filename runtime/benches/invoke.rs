//! Benchmark: instantiate + handle + drop of the `echo` fixture on a small JSON event, the
//! per-event cost of the engine. Run `scripts/bench` (it builds the fixtures first).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use eddy::engine::{Engine, EngineConfig, FunctionSpec, MemoryPublisher, Outcome};
use eddy::event::{Delivery, Event};

fn echo_component() -> Vec<u8> {
    let dir = std::env::var_os("EDDY_FUNCTIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            target.join("wasm32-wasip2/release")
        });
    // `EDDY_BENCH_FUNCTION` swaps in another fixture, to tell engine cost from guest cost.
    let name = std::env::var("EDDY_BENCH_FUNCTION").unwrap_or_else(|_| "echo".to_owned());
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the fixtures first (scripts/bench does)",
            path.display()
        )
    })
}

fn invoke(c: &mut Criterion) {
    let mut config = EngineConfig {
        cache_dir: None,
        ..EngineConfig::default()
    };
    // Lets a sweep of the pool's resident-memory setting run without rebuilding.
    if let Some(bytes) = std::env::var("EDDY_BENCH_KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.keep_resident_bytes = bytes;
    }
    let engine = Engine::new(&config).expect("engine");
    let function = engine
        .load(FunctionSpec::new("echo"), &echo_component())
        .expect("loading echo");
    let event = Event {
        id: "bench-1".into(),
        source: "bench".into(),
        event_type: "OrderPlaced".into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        data: br#"{"orderId":"o-1","userId":"u-1"}"#.to_vec(),
        extensions: vec![],
        delivery: Delivery::invoked(1),
    };
    let publisher = Arc::new(MemoryPublisher::default());
    // One runtime for every iteration, as a host has: the invocation is a future.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    c.bench_function("invoke echo (instantiate + handle + drop)", |b| {
        b.iter(|| {
            let result = runtime.block_on(function.invoke(&event, publisher.clone()));
            assert_ne!(result.outcome, Outcome::Failed);
        })
    });
}

criterion_group!(benches, invoke);
criterion_main!(benches);
