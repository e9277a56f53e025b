//! The web page at `/` in headless Chromium (Debian's, driven by playwright-core from
//! `tests/browser/page.mjs`): behind the token, it shows a deployed function, and a failure
//! appears without a reload after a failing event is published. Also the page's endpoints
//! through curl: 401 with a Basic challenge, the token as a Basic password, `/v1/status`,
//! `/v1/failures` and its `limit` checks.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{eventually, group_exists, manifest, unique};
use eddy_tests::{eddy_bin, wasm};
use serde_json::Value;

const TOKEN: &str = "page-token-for-tests";

/// curl's status, headers (lowercased) and body.
fn curl(args: &[&str]) -> (u16, String, String) {
    let reply = eddy_tests::http::curl(args);
    (reply.status, reply.head, reply.body)
}

#[test]
fn the_page_shows_functions_and_failures_live_in_a_real_browser() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let fns = dir.path().join("fns");
    std::fs::create_dir(&fns).unwrap();
    manifest(&fns, "idle", "echo", "");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut host = Host::start(
        &redis.url(),
        &fns,
        &["--token-file", token_file.to_str().unwrap()],
    );
    let url = host.api_url();

    // A function that fails every event, dead-lettered at once.
    let (stream, records) = (unique("orders"), unique("records"));
    let function = "billing";
    let manifest_path = dir.path().join("billing.toml");
    std::fs::write(
        &manifest_path,
        format!(
            "name = {function:?}\ncomponent = {:?}\npublish = [{records:?}]\n[config]\nrecord_stream = {records:?}\nstatus = \"503\"\n[[triggers.stream]]\nstream = {stream:?}\n[triggers.stream.retry]\nmax_attempts = 1\n",
            wasm("record").display().to_string()
        ),
    )
    .unwrap();
    let deployed = Command::new(eddy_bin())
        .args([
            "deploy",
            manifest_path.to_str().unwrap(),
            "--host",
            &url,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(deployed.status.success(), "{deployed:?}");
    eventually(
        Duration::from_secs(20),
        "the deployed trigger's group",
        || group_exists(&mut conn, &stream, function).then_some(()),
    );

    // Behind the token: browsers are asked for it, and may give it as a Basic password.
    let (status, head, _) = curl(&[&format!("{url}/")]);
    assert_eq!(status, 401);
    assert!(
        head.contains("www-authenticate: basic realm=\"eddy\""),
        "{head}"
    );
    let (status, _, _) = curl(&["-u", "eddy:wrong", &format!("{url}/")]);
    assert_eq!(status, 401);
    let (status, head, body) = curl(&["-u", &format!("eddy:{TOKEN}"), &format!("{url}/")]);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains("<title>Eddy</title>"), "{body}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, _, body) = curl(&["-H", &bearer, &format!("{url}/v1/status")]);
    assert_eq!(status, 200);
    let status_doc: Value = serde_json::from_str(&body).unwrap();
    assert!(
        status_doc["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == function && f["version"] == 1),
        "{status_doc}"
    );
    let (status, _, body) = curl(&["-H", &bearer, &format!("{url}/v1/failures?limit=0")]);
    assert_eq!(status, 400);
    assert!(body.contains("\"field\":\"limit\""), "{body}");

    // The browser. Its screenshot is kept as the test's artefact.
    let artefacts = std::env::var_os("EDDY_ARTIFACTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| eddy_tests::repo_dir().join("target"))
                .join("test-artifacts")
        });
    std::fs::create_dir_all(&artefacts).unwrap();
    let screenshot = artefacts.join("page.png");
    let _ = std::fs::remove_file(&screenshot);
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test (it runs `npm ci` in {})",
        browser_dir.display()
    );
    let out = Command::new("node")
        .arg(browser_dir.join("page.mjs"))
        .env("EDDY_PAGE_URL", &url)
        .env("EDDY_PAGE_TOKEN", TOKEN)
        .env("EDDY_PAGE_FUNCTION", function)
        .env("EDDY_PAGE_STREAM", &stream)
        .env("EDDY_PAGE_SCREENSHOT", &screenshot)
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", host.log());
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report line");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["title"], "Eddy");
    assert_eq!(report["functionShown"], true);
    assert_eq!(report["failuresBefore"], "no failures recorded", "{report}");
    assert_eq!(report["publishStatus"], 202);
    let row = report["failureRow"].as_str().unwrap();
    assert!(
        row.contains(function) && row.contains("failed") && row.contains("503"),
        "{row}"
    );
    assert!(
        report["hostsText"].as_str().unwrap().contains("alive"),
        "{report}"
    );
    assert_eq!(report["problem"], "", "{report}");
    assert_eq!(report["pageErrors"], serde_json::json!([]), "{report}");
    // The function's failure, with its error text, and on its chart.
    let error = report["failureError"].as_str().unwrap_or_default();
    assert!(error.contains("status 503"), "{report}");
    assert!(
        report["chartPoints"]["failed"].as_u64() >= Some(1),
        "{report}"
    );
    assert_eq!(report["chartPoints"]["done"], 0, "{report}");
    // Opened with the token in its URL, the page loads its data; with a wrong one it does not.
    assert_eq!(report["credentialsInUrl"], true, "{report}");
    assert_ne!(report["wrongToken"]["status"], 200, "{report}");
    let png = std::fs::read(&screenshot).expect("the page's screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    eprintln!("the page's screenshot: {}", screenshot.display());
}
