//! The engine library directly: fresh instances, publish through a caller's publisher, limits
//! validation, and many invocations of one loaded function.

use std::sync::Arc;
use std::time::Duration;

use eddy::engine::{
    Engine, EngineConfig, FunctionSpec, Limits, LoadError, MemoryPublisher, OnceClaim, Outcome,
    PublishError, PublishRequest, Publisher,
};
use eddy::event::{Delivery, Event, TriggerKind};
use eddy_tests::wasm_bytes;

fn engine() -> Engine {
    Engine::new(&EngineConfig {
        max_instances: 8,
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn event(id: &str, data: &str) -> Event {
    Event {
        id: id.into(),
        source: "test".into(),
        event_type: "Test".into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        data: data.as_bytes().to_vec(),
        extensions: vec![],
        delivery: Delivery {
            trigger: TriggerKind::Stream,
            stream: Some("orders".into()),
            entry_id: Some("1-0".into()),
            attempt: 2,
        },
    }
}

#[test]
fn one_loaded_function_serves_many_invocations_with_fresh_instances() {
    let function = engine()
        .load(FunctionSpec::new("echo"), &wasm_bytes("echo"))
        .unwrap();
    for n in 0..50 {
        let id = format!("e-{n}");
        let result =
            function.invoke_blocking(&event(&id, "{}"), Arc::new(MemoryPublisher::default()));
        assert_eq!(result.outcome, Outcome::Done);
        // Output is per invocation: each capture holds only this event's line.
        assert_eq!(result.output.stdout, format!("echo stdout {id}\n"));
        let body: serde_json::Value = serde_json::from_slice(&result.body).unwrap();
        assert_eq!(body["trigger"], "stream");
        assert_eq!(body["attempt"], 2);
    }
}

struct Refusing;

#[async_trait::async_trait]
impl Publisher for Refusing {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        Err(PublishError::Denied(format!(
            "{} may not claim",
            claim.function
        )))
    }

    async fn settle_once(&self, _claims: &[OnceClaim], _succeeded: bool) {}

    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        Err(PublishError::Denied(format!(
            "{} may not publish to {}",
            request.function, request.stream
        )))
    }
}

#[test]
fn a_refused_publish_reaches_the_guest_as_an_error_and_fails_it() {
    let function = engine()
        .load(FunctionSpec::new("publisher"), &wasm_bytes("publish-many"))
        .unwrap();
    let result = function.invoke_blocking(&event("e-1", r#"{"count":1}"#), Arc::new(Refusing));
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.status, Some(500));
    assert!(
        result
            .body_text()
            .contains("publisher may not publish to fanout"),
        "{}",
        result.body_text()
    );
}

#[test]
fn an_invalid_stream_name_is_refused_before_the_publisher() {
    let function = engine()
        .load(FunctionSpec::new("publisher"), &wasm_bytes("publish-many"))
        .unwrap();
    let publisher = Arc::new(MemoryPublisher::default());
    let result = function.invoke_blocking(
        &event("e-1", r#"{"count":1,"stream":""}"#),
        publisher.clone(),
    );
    assert_eq!(result.status, Some(500));
    assert!(
        result.body_text().contains("invalid: stream name"),
        "{}",
        result.body_text()
    );
    assert!(publisher.events().is_empty());
}

#[test]
fn unusable_limits_are_refused_at_load() {
    let spec = FunctionSpec {
        limits: Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        },
        ..FunctionSpec::new("echo")
    };
    let error = engine().load(spec, &wasm_bytes("echo")).err().unwrap();
    assert!(matches!(error, LoadError::Limits(_)), "{error}");
}

#[test]
fn invocations_run_in_parallel_on_one_function() {
    let function = engine()
        .load(FunctionSpec::new("echo"), &wasm_bytes("echo"))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let function = function.clone();
            std::thread::spawn(move || {
                for n in 0..20 {
                    let result = function.invoke_blocking(
                        &event(&format!("{t}-{n}"), "{}"),
                        Arc::new(MemoryPublisher::default()),
                    );
                    assert_eq!(result.outcome, Outcome::Done);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn concurrent_loads_of_one_component_leave_a_sound_cache_entry() {
    let cache = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        max_instances: 16,
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let engine = Engine::new(&config).unwrap();
    let bytes = Arc::new(wasm_bytes("echo"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (engine, bytes) = (engine.clone(), bytes.clone());
            std::thread::spawn(move || engine.load(FunctionSpec::new("echo"), &bytes).map(|_| ()))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    // A second engine must find one readable entry and no leftover temporary files.
    let function = Engine::new(&config)
        .unwrap()
        .load(FunctionSpec::new("echo"), &bytes)
        .unwrap();
    let result =
        function.invoke_blocking(&event("e-1", "{}"), Arc::new(MemoryPublisher::default()));
    assert_eq!(result.outcome, Outcome::Done);
    let mut files = Vec::new();
    for dir in std::fs::read_dir(cache.path()).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(file.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".cwasm"), "{files:?}");
}

#[test]
fn a_component_built_against_the_0_1_0_contract_still_runs() {
    // functions/fixtures/wit-0-1-0 imports and exports the @0.1.0 interfaces; the host links
    // @0.1.2, which semver-matches them.
    let spec = FunctionSpec {
        config: [("stream".to_owned(), "seen".to_owned())].into(),
        ..FunctionSpec::new("old")
    };
    let function = engine().load(spec, &wasm_bytes("wit-0-1-0")).unwrap();
    let publisher = Arc::new(MemoryPublisher::default());
    let result = function.invoke_blocking(&event("e-1", "{}"), publisher.clone());
    assert_eq!(result.outcome, Outcome::Done, "{result:?}");
    assert_eq!(result.body_text(), "e-1");
    let published = publisher.events();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1.stream, "seen");
    assert_eq!(published[0].1.event_type, "Seen");
    assert!(
        result
            .output
            .logs
            .iter()
            .any(|l| l.message.contains("0.1.0 fixture saw e-1")),
        "{:?}",
        result.output.logs
    );
    let bad = Event {
        event_type: "Bad".into(),
        ..event("e-2", "{}")
    };
    let rejected = function.invoke_blocking(&bad, Arc::new(MemoryPublisher::default()));
    assert_eq!(rejected.outcome, Outcome::Rejected);
    assert_eq!(rejected.status, Some(400));
}

#[test]
fn a_component_built_against_the_0_1_1_contract_still_runs() {
    // functions/fixtures/wit-0-1-1 uses every @0.1.1 import, `once` among them; the host links
    // @0.1.2 (outbound HTTP, key-value and secrets added), which semver-matches them.
    let spec = FunctionSpec {
        config: [("stream".to_owned(), "seen".to_owned())].into(),
        ..FunctionSpec::new("old")
    };
    let function = engine().load(spec, &wasm_bytes("wit-0-1-1")).unwrap();
    let publisher = Arc::new(MemoryPublisher::default());
    let first = function.invoke_blocking(&event("e-1", "{}"), publisher.clone());
    assert_eq!(first.outcome, Outcome::Done, "{first:?}");
    assert_eq!(first.body_text(), "e-1");
    let again = function.invoke_blocking(&event("e-1", "{}"), publisher.clone());
    assert_eq!(again.outcome, Outcome::Done, "{again:?}");
    let kinds: Vec<String> = publisher
        .events()
        .into_iter()
        .map(|(_, request)| request.event_type)
        .collect();
    assert_eq!(kinds, ["Seen", "Again"], "once kept the first claim");
    assert!(
        first
            .output
            .logs
            .iter()
            .any(|l| l.message.contains("0.1.1 fixture saw e-1"))
    );
}
