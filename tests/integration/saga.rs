//! The flagship example, `examples/order-saga`, end to end through a real host: five functions
//! in three languages (payment and shipping in Rust, inventory in Python, the order-state
//! projection in JavaScript, built from source by `eddy deploy --build`), choreographed by
//! events. Payment charges through the example's stand-in payments API (a real HTTP server) and
//! inventory takes stock from a shared key-value bucket. A good order completes; a declined
//! payment and an out-of-stock order are both cancelled, the second refunded; a duplicate of
//! every event changes nothing (no second charge), nor does `eddy replay` of the payment step;
//! the daily report's cronjob tick is answered.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use eddy_tests::fakes::FakeApis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{StreamEntry, add, entries, eventually, group_exists, manifest};
use eddy_tests::{eddy_bin, repo_dir, run, with_toolchains};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const STREAMS: [&str; 4] = ["orders", "payments", "inventory", "shipping"];

fn eddy(args: &[&str], host: &str, redis: &RedisServer) -> String {
    let functions_dir = eddy_tests::wasm("saga-payment")
        .parent()
        .unwrap()
        .to_path_buf();
    let out = run(with_toolchains(&mut Command::new(eddy_bin()))
        .args(args)
        .env("EDDY_HOST", host)
        .env("EDDY_REDIS_URL", redis.url())
        .env("EDDY_FUNCTIONS_DIR", functions_dir)
        .env_remove("EDDY_TOKEN"));
    assert_eq!(out.code, 0, "eddy {args:?}: {}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// The events of `stream` about `order`, as (type, data).
fn about(conn: &mut redis::Connection, stream: &str, order: &str) -> Vec<(String, Value)> {
    entries(conn, stream)
        .into_iter()
        .filter(|e| e.data()["orderId"] == order)
        .map(|e| (e.get("type").to_owned(), e.data()))
        .collect()
}

/// The order's status as a reader of `order-status` sees it: the highest-ranked change.
fn current_status(conn: &mut redis::Connection, order: &str) -> Option<String> {
    about(conn, "order-status", order)
        .into_iter()
        .max_by_key(|(_, d)| d["rank"].as_u64())
        .map(|(_, d)| d["status"].as_str().unwrap_or_default().to_owned())
}

fn statuses(conn: &mut redis::Connection, order: &str) -> Vec<String> {
    about(conn, "order-status", order)
        .into_iter()
        .map(|(_, d)| d["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// Every consumer group of the saga has read and settled everything.
fn settled(conn: &mut redis::Connection) -> bool {
    STREAMS.iter().all(|stream| {
        eddy_tests::streams::group_names(conn, stream)
            .iter()
            .all(|group| eddy_tests::streams::settled(conn, stream, group))
    })
}

fn counts(conn: &mut redis::Connection) -> BTreeMap<String, usize> {
    STREAMS
        .iter()
        .chain(["order-status"].iter())
        .map(|s| (s.to_string(), entries(conn, s).len()))
        .collect()
}

#[test]
fn the_order_saga_completes_compensates_and_ignores_duplicates() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    // A copy, so the JavaScript and Python builds do not write into the repository.
    let saga = dir.path().join("order-saga");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo_dir().join("examples/order-saga"))
        .arg(&saga)
        .status()
        .unwrap();
    assert!(copied.success());
    // Payment calls the stand-in payments API, with the key from its secret.
    let apis = FakeApis::start("payments-key-for-tests", 0);
    let payment = saga.join("payment.toml");
    let text = std::fs::read_to_string(&payment).unwrap();
    std::fs::write(&payment, text.replace("http://127.0.0.1:8081", apis.url())).unwrap();
    let mut host = Host::start_with_env(
        &redis.url(),
        &idle,
        &[],
        &[("PAYMENTS_KEY", "payments-key-for-tests")],
    );
    let url = host.api_url();
    // Stock, in the bucket inventory shares; chairs are out.
    for (sku, units) in [("book", "20"), ("lamp", "5")] {
        eddy(&["kv", "set", "stock", sku, units], &url, &redis);
    }
    let at = |p: &str| saga.join(p).display().to_string();
    for manifest in ["payment.toml", "shipping.toml", "daily-report.toml"] {
        eddy(&["deploy", &at(manifest)], &url, &redis);
    }
    eddy(&["deploy", "--build", &at("inventory")], &url, &redis);
    eddy(&["deploy", "--build", &at("order-state")], &url, &redis);
    eventually(WAIT, "every trigger's group", || {
        (group_exists(&mut conn, "orders", "payment")
            && group_exists(&mut conn, "payments", "inventory")
            && group_exists(&mut conn, "inventory", "shipping")
            && STREAMS
                .iter()
                .all(|s| group_exists(&mut conn, s, "order-state")))
        .then_some(())
    });

    for (id, file) in [
        ("o-1001", "good-order.json"),
        ("o-1002", "declined-order.json"),
        ("o-1003", "out-of-stock-order.json"),
    ] {
        let data = std::fs::read_to_string(saga.join("events").join(file)).unwrap();
        add(
            &mut conn,
            "orders",
            &[
                ("id", &format!("evt-{id}")),
                ("type", "OrderPlaced"),
                ("data", data.trim()),
            ],
        );
    }
    add(
        &mut conn,
        "orders",
        &[
            ("id", "evt-bad"),
            ("type", "OrderPlaced"),
            ("data", r#"{"orderId":"o-bad"}"#),
        ],
    );

    // The good order completes.
    eventually(WAIT, "o-1001 completed", || {
        (current_status(&mut conn, "o-1001").as_deref() == Some("COMPLETED")).then_some(())
    });
    let good = eventually(WAIT, "every status of o-1001", || {
        let s = statuses(&mut conn, "o-1001");
        (s.len() == 5).then_some(s)
    });
    let mut sorted = good.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "COMPLETED",
            "PAYMENT_OK",
            "PENDING",
            "RESERVED",
            "SCHEDULED"
        ],
        "{good:?}"
    );
    assert_eq!(
        types(&about(&mut conn, "shipping", "o-1001")),
        ["ShippingScheduled"]
    );

    // A declined payment cancels; nothing is reserved or shipped.
    eventually(WAIT, "o-1002 cancelled", || {
        (current_status(&mut conn, "o-1002").as_deref() == Some("CANCELLED")).then_some(())
    });
    let declined = statuses(&mut conn, "o-1002");
    assert!(!declined.contains(&"PAYMENT_OK".to_owned()), "{declined:?}");
    let payments = about(&mut conn, "payments", "o-1002");
    assert_eq!(types(&payments), ["PaymentFailed"]);
    assert!(
        payments[0].1["reason"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{payments:?}"
    );

    // Out of stock after payment: cancelled and refunded, never shipped.
    eventually(WAIT, "o-1003 refunded", || {
        types(&about(&mut conn, "payments", "o-1003"))
            .contains(&"PaymentRefunded")
            .then_some(())
    });
    eventually(WAIT, "o-1003 cancelled", || {
        (current_status(&mut conn, "o-1003").as_deref() == Some("CANCELLED")).then_some(())
    });
    let short = statuses(&mut conn, "o-1003");
    assert!(!short.contains(&"RESERVED".to_owned()), "{short:?}");
    let stock = about(&mut conn, "inventory", "o-1003");
    assert_eq!(types(&stock), ["OutOfStock"]);
    assert_eq!(stock[0].1["sku"], "chair");
    assert_eq!(
        types(&about(&mut conn, "orders", "o-1003")),
        ["OrderPlaced", "OrderCancelled"]
    );
    assert!(about(&mut conn, "shipping", "o-1003").is_empty());

    // The order without items is rejected by payment into the dead-letter stream.
    let dead = eventually(WAIT, "the bad order dead-lettered", || {
        entries(&mut conn, "orders.dlq").into_iter().next()
    });
    assert_eq!(dead.get("eddy.function"), "payment");
    assert_eq!(dead.get("eddy.reason"), "rejected");

    // Every event of the saga delivered a second time changes nothing.
    eventually(WAIT, "the saga settled", || {
        settled(&mut conn).then_some(())
    });
    let before = counts(&mut conn);
    let originals: Vec<(String, Vec<StreamEntry>)> = STREAMS
        .iter()
        .map(|s| (s.to_string(), entries(&mut conn, s)))
        .collect();
    for (stream, events) in &originals {
        for event in events {
            let fields: Vec<(&str, &str)> = event
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            add(&mut conn, stream, &fields);
        }
    }
    eventually(WAIT, "the duplicates settled", || {
        settled(&mut conn).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = counts(&mut conn);
    for stream in STREAMS {
        assert_eq!(
            after[stream],
            2 * before[stream],
            "{stream}: only the duplicates were added\n{}",
            host.log()
        );
    }
    assert_eq!(
        after["order-status"], before["order-status"],
        "no status changed twice"
    );
    // The payments API saw one charge for each paid order, and one refund.
    let charged = |kind: &str| {
        apis.charges()
            .iter()
            .filter(|c| c["kind"] == kind)
            .filter_map(|c| {
                c["orderId"]
                    .as_str()
                    .or(c["charge"].as_str())
                    .map(str::to_owned)
            })
            .collect::<Vec<_>>()
    };
    let mut charges = charged("charge");
    charges.sort();
    assert_eq!(charges, ["o-1001", "o-1003"], "no second charge");
    assert_eq!(charged("refund").len(), 1, "one refund");
    let left = eddy(&["kv", "get", "stock", "book"], &url, &redis);
    assert_eq!(left.trim(), "18", "o-1001's two books; o-1003's put back");

    // Re-running the deployed payment step over the whole of `orders` (its stream and group
    // found from the deployed manifest) charges and refunds nothing again.
    let replayed: Value = serde_json::from_str(&eddy(
        &["replay", "payment", "--from", "-", "-o", "json"],
        &url,
        &redis,
    ))
    .unwrap();
    assert_eq!(replayed["stream"], "orders");
    assert_eq!(replayed["group"], "payment");
    assert_eq!(replayed["read"], after["orders"]);
    // Only the types payment's trigger takes (not OrderCompleted) are scheduled.
    let taken = entries(&mut conn, "orders")
        .iter()
        .filter(|e| ["OrderPlaced", "OrderCancelled"].contains(&e.get("type")))
        .count();
    assert!(taken < after["orders"]);
    assert_eq!(replayed["scheduled"], taken);
    eventually(WAIT, "the replay settled", || {
        settled(&mut conn).then_some(())
    });
    assert_eq!(counts(&mut conn), after, "the replay had an effect");
    assert_eq!(apis.charges().len(), 3, "the replay charged nothing");

    // The daily report: a cronjob's tick (every second here, midnight in the example) answered.
    eddy(
        &[
            "cron",
            "create",
            "daily-report",
            "--schedule",
            "* * * * * *",
            "--stream",
            "reports",
            "--type",
            "DailyReportRequired",
        ],
        &url,
        &redis,
    );
    let report = eventually(WAIT, "a daily report", || {
        entries(&mut conn, "reports")
            .into_iter()
            .find(|e| e.get("type") == "DailyReportGenerated")
    });
    assert!(
        report.data()["tick"]
            .as_str()
            .unwrap()
            .starts_with("cron:daily-report:")
    );
    eddy(&["cron", "rm", "daily-report"], &url, &redis);
    host.terminate(WAIT);
}
