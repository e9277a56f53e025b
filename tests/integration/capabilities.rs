//! Functions that reach the world (issue 13): outbound HTTP through `wasi:http` to real servers
//! on loopback (HTTP, and HTTPS with a certificate authority made for the test), key-value
//! state in a real Redis shared by real hosts, and secrets that never leave the host.
//!
//! The `reach` fixture (Rust) does the calls; JavaScript and Python functions written here and
//! built with the real toolchains make the same call.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use eddy_tests::host::Host;
use eddy_tests::http::curl;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, manifest, settled, unique};
use eddy_tests::web::{Reply, TestCa, WebServer};
use eddy_tests::{eddy_bin, eddy_redis, invoke_json, repo_dir, run, wasm, with_toolchains};
use redis::Commands as _;
use serde_json::{Value, json};

/// `eddy invoke` of component `path` on `data` with `extra` flags: (exit code, result, stderr).
fn invoke_file(path: &Path, data: &Value, extra: &[&str]) -> (i32, Value, String) {
    let data = data.to_string();
    let run = invoke_json(path, &[&["--data", data.as_str()], extra].concat());
    let document = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, document, run.stderr)
}

/// The reach fixture's answer: its status and its JSON body.
fn reach(data: Value, extra: &[&str]) -> (u16, Value, Value) {
    let (_, document, stderr) = invoke_file(&wasm("reach"), &data, extra);
    let result = &document["result"];
    let status = result["status"].as_u64().unwrap_or(0) as u16;
    let body =
        serde_json::from_str(result["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert!(document.is_object(), "no result: {stderr}");
    (status, body, document)
}

/// A server answering `/hello`, a slow `/slow`, an 11 MiB `/big`, and echoing the
/// `traceparent` it received.
fn api_server() -> WebServer {
    WebServer::start(|request| {
        let echo = request.header("traceparent").unwrap_or("").to_owned();
        match request.path.as_str() {
            "/hello" => Reply::new(200, "hi").header("x-seen-traceparent", &echo),
            "/slow" => Reply::new(200, "late").after(Duration::from_secs(5)),
            "/big" => Reply::new(200, vec![b'x'; 11 * 1024 * 1024]),
            "/big-chunked" => {
                Reply::new(200, vec![b'x'; 11 * 1024 * 1024]).header("transfer-encoding", "chunked")
            }
            _ => Reply::new(404, "no"),
        }
    })
}

#[test]
fn outbound_http_reaches_allowed_origins_within_limits_and_the_deadline() {
    let server = api_server();
    let origin = format!("http://127.0.0.1:{}", server.port());
    let get = |path: &str| json!({ "do": "get", "url": format!("{}{path}", server.url()) });

    // Allowed: the call goes out, with the invocation's trace context.
    let (status, body, document) = reach(get("/hello"), &["--allow-http", &origin]);
    assert_eq!(status, 200, "{document}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "hi");
    assert!(
        body["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-")),
        "{body}"
    );
    assert_eq!(document["result"]["outbound"]["calls"], 1, "{document}");

    // Not allowed: another host, another port, no allow-list at all.
    for allow in [
        vec!["--allow-http", "http://localhost:*"],
        vec!["--allow-http", "http://127.0.0.1:1"],
        vec![],
    ] {
        let (status, body, document) = reach(get("/hello"), &allow);
        assert_eq!(status, 502, "{allow:?}: {document}");
        assert_eq!(body["code"], "HTTP-request-denied", "{allow:?}: {body}");
        assert_eq!(document["result"]["outbound"]["denied"], 1);
    }
    let before = server.requests().len();

    // A response body over the limit fails the read, naming the limit.
    // Whether the server says the length up front or streams the body in chunks.
    for path in ["/big", "/big-chunked"] {
        let (status, body, document) = reach(get(path), &["--allow-http", &origin]);
        assert_eq!(status, 502, "{path}: {document}");
        assert_eq!(body["code"], "HTTP-response-body-size", "{path}: {body}");
        assert!(
            !body.to_string().contains("backtrace"),
            "{path}: no host detail reaches the guest: {body}"
        );
        assert_eq!(
            document["result"]["outbound"]["limits"],
            json!(["http_response_bytes"])
        );
    }

    // A slow API is cut at the invocation's deadline.
    let started = Instant::now();
    let (_, _, document) = reach(get("/slow"), &["--allow-http", &origin, "--timeout", "1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 1 s deadline must cut a 5 s response"
    );
    assert_eq!(
        document["result"]["failure"]["kind"], "timeout",
        "{document}"
    );
    assert_eq!(document["result"]["outbound"]["limits"], json!(["timeout"]));
    let paths: Vec<String> = server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["/big", "/big-chunked", "/slow"],
        "denied requests never reached the server"
    );
}

#[test]
fn a_private_ca_is_trusted_only_with_ca_file() {
    let ca = TestCa::new();
    let server = WebServer::start_tls(&ca, |_| Reply::new(200, "secure"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let data = json!({ "do": "get", "url": format!("{}/", server.url()) });
    let origin = format!("https://localhost:{}", server.port());

    let (status, body, _) = reach(data.clone(), &["--allow-http", &origin]);
    assert_eq!(status, 502, "an unknown CA is refused: {body}");
    assert_eq!(body["code"], "TLS-certificate-error", "{body}");
    let (status, body, _) = reach(
        data.clone(),
        &[
            "--allow-http",
            &origin,
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body"], "secure");
    // https is only ever TLS: the same origin over plain http is another origin, refused.
    let plain = json!({ "do": "get", "url": format!("http://localhost:{}/", server.port()) });
    let (status, body, _) = reach(plain, &["--allow-http", &origin]);
    assert_eq!(
        (status, &body["code"]),
        (502, &json!("HTTP-request-denied"))
    );
}

/// Builds the function `source` (an `app.js` or `app.py`) with the real toolchain; returns the
/// component's path.
fn build_function(dir: &Path, file: &str, source: &str) -> std::path::PathBuf {
    if file == "app.js" {
        std::fs::copy(
            repo_dir().join("sdk/templates/javascript/package.json"),
            dir.join("package.json"),
        )
        .unwrap();
    }
    std::fs::write(dir.join(file), source).unwrap();
    std::fs::write(
        dir.join("eddy.toml"),
        "name = \"caller\"\ncomponent = \"app.wasm\"\n",
    )
    .unwrap();
    let built = run(with_toolchains(&mut Command::new(eddy_bin()))
        .arg("build")
        .arg(dir));
    assert_eq!(built.code, 0, "{file}: {}\n{}", built.stdout, built.stderr);
    dir.join("app.wasm")
}

#[test]
fn javascript_fetch_and_the_python_helper_make_the_same_call() {
    let server = api_server();
    let origin = format!("http://127.0.0.1:{}", server.port());
    let url = format!("{}/hello", server.url());
    let js = tempfile::tempdir().unwrap();
    let js = build_function(
        js.path(),
        "app.js",
        "import { Response } from \"./eddy.js\";\n\
         export async function handle(event) {\n\
           const response = await fetch(event.json().url);\n\
           return Response.ok({ status: response.status, body: await response.text() });\n\
         }\n",
    );
    let py = tempfile::tempdir().unwrap();
    let py = build_function(
        py.path(),
        "app.py",
        "import eddy\n\n\ndef handle(event):\n\
         \x20   response = eddy.http.get(event.json()[\"url\"])\n\
         \x20   return eddy.Response.ok({\"status\": response.status, \"body\": response.text()})\n\n\n\
         Handler = eddy.handler(handle)\n",
    );
    for component in [&js, &py] {
        let (code, document, stderr) = invoke_file(
            component,
            &json!({ "url": url }),
            &["--allow-http", &origin],
        );
        assert_eq!(code, 0, "{}: {document} {stderr}", component.display());
        let body: Value =
            serde_json::from_str(document["result"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, json!({ "status": 200, "body": "hi" }));
        // Refused like any other function's call.
        let (code, document, _) = invoke_file(component, &json!({ "url": url }), &[]);
        assert_eq!(code, 4, "{}: {document}", component.display());
        assert_eq!(document["result"]["outbound"]["denied"], 1);
    }
    assert_eq!(
        server.requests().len(),
        2,
        "one call from each language, none of the refused ones"
    );
}

/// A `reach` function `name` reading `stream`, with `rest` added to its manifest.
fn reach_function(dir: &Path, name: &str, stream: &str, rest: &str) {
    manifest(
        dir,
        name,
        "reach",
        &format!("{rest}\n[[triggers.stream]]\nstream = {stream:?}\nconcurrency = 32\n"),
    );
}

#[test]
fn two_hosts_increment_one_shared_counter_exactly() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, cas) = (unique("counts"), unique("cas"));
    reach_function(
        dir.path(),
        "counter",
        &stream,
        "[keyvalue]\nshared = [\"tally\"]",
    );
    reach_function(
        dir.path(),
        "swapper",
        &cas,
        "[keyvalue]\nshared = [\"tally\"]",
    );
    let _a = Host::start(&redis.url(), dir.path(), &[]);
    let _b = Host::start(&redis.url(), dir.path(), &[]);
    let increment = json!({ "do": "increment", "bucket": "tally", "key": "n" }).to_string();
    let swap = json!({ "do": "cas-add", "bucket": "tally", "key": "m" }).to_string();
    let mut pipe = redis::pipe();
    for _ in 0..2000 {
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("data")
            .arg(&increment);
    }
    for _ in 0..400 {
        pipe.cmd("XADD").arg(&cas).arg("*").arg("data").arg(&swap);
    }
    let _: () = pipe.query(&mut conn).unwrap();
    eventually(Duration::from_secs(60), "every event handled", || {
        (settled(&mut conn, &stream, "counter") && settled(&mut conn, &cas, "swapper"))
            .then_some(())
    });
    let get = |key: &str| {
        eddy_redis(&["kv", "get", "tally", key], &redis.url())
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(get("n"), "2000", "increments are atomic across hosts");
    assert_eq!(
        get("m"),
        "400",
        "compare-and-swap loses no update under contention"
    );
    // Both hosts took part.
    let records = eddy_redis(&["logs", "counter", "--output", "json"], &redis.url()).stdout;
    let hosts: std::collections::BTreeSet<String> = records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["host"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
}

#[test]
fn a_function_cannot_open_another_functions_private_bucket() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream_a, stream_b) = (unique("a"), unique("b"));
    reach_function(dir.path(), "owner", &stream_a, "");
    // B opens the same bucket name and reads the same key: its answer is its dead letter.
    reach_function(dir.path(), "prober", &stream_b, "");
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    let data = |what: &str| json!({ "do": what, "bucket": "default", "key": "k" }).to_string();
    add(&mut conn, &stream_a, &[("data", &data("increment"))]);
    eventually(Duration::from_secs(10), "the owner's increment", || {
        settled(&mut conn, &stream_a, "owner").then_some(())
    });
    add(
        &mut conn,
        &stream_b,
        &[("id", "probe"), ("data", &data("get-key"))],
    );
    let dead = eventually(Duration::from_secs(10), "the probe's answer", || {
        entries(&mut conn, &format!("{stream_b}.dlq"))
            .into_iter()
            .next()
    });
    assert_eq!(
        dead.get("eddy.status"),
        "404",
        "B sees its own, empty bucket"
    );
    let own = eddy_redis(&["kv", "get", "owner/default", "k"], &redis.url());
    assert_eq!(own.stdout.trim(), "1");
    let other = eddy_redis(&["kv", "get", "prober/default", "k"], &redis.url());
    assert_eq!(other.code, 1, "{other:?}");
}

/// Every key and value in Redis, as text, for a leak search.
fn dump_redis(conn: &mut redis::Connection) -> String {
    let keys: Vec<String> = conn.keys("*").unwrap();
    let mut all = String::new();
    for key in keys {
        all.push_str(&key);
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(&key).unwrap()],
            "hash" => conn
                .hgetall::<_, Vec<(Vec<u8>, Vec<u8>)>>(&key)
                .unwrap()
                .into_iter()
                .flat_map(|(k, v)| [k, v])
                .collect(),
            "list" => conn.lrange(&key, 0, -1).unwrap(),
            "set" => conn.smembers(&key).unwrap(),
            "zset" => conn.zrange(&key, 0, -1).unwrap(),
            "stream" => {
                let raw: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query(conn)
                    .unwrap();
                vec![format!("{raw:?}").into_bytes()]
            }
            _ => Vec::new(),
        };
        for value in values {
            all.push_str(&String::from_utf8_lossy(&value));
        }
    }
    all
}

/// A secret with a quote, a backslash and a non-ASCII letter, so its JSON-escaped form differs.
const SECRET: &str = "mg-key-01234\"56789\\abcdéf";

#[test]
fn secrets_never_leave_the_host() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("secrets");
    let deployed = dir.path().join("deployed");
    std::fs::create_dir(&deployed).unwrap();
    manifest(
        &deployed,
        "careless",
        "reach",
        &format!(
            "[secrets]\nkey = \"env:SECRETS_TEST_KEY\"\n[[triggers.stream]]\nstream = {stream:?}\n\
             concurrency = 32\n[triggers.stream.retry]\nmax_attempts = 1\n"
        ),
    );
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    let mut host = Host::start_with_env(
        &redis.url(),
        &idle,
        &["--token-file", &token_file(dir.path())],
        &[("SECRETS_TEST_KEY", SECRET)],
    );
    let url = host.api_url();
    let deploy = run(Command::new(eddy_bin())
        .args([
            "deploy",
            deployed.join("careless.toml").to_str().unwrap(),
            "--host",
            &url,
        ])
        .env("EDDY_TOKEN", TOKEN));
    assert_eq!(deploy.code, 0, "{deploy:?}");
    host.wait_for_log("deployed function running", Duration::from_secs(10));
    let data = json!({ "do": "secret", "name": "key" }).to_string();
    for n in 0..100 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("s-{n}")), ("data", &data)],
        );
    }
    // The ways a careless function's output hides a secret from a plain search: cut by the
    // host log's line limit or the output budget, inside a body that is not UTF-8, escaped in
    // the SDK's JSON error body (dead-lettered: max_attempts = 1).
    for (n, how) in [
        json!({ "pad": 1000 }),
        json!({ "pad": 65_500 }),
        json!({ "binary": true }),
        json!({ "error": true }),
    ]
    .into_iter()
    .enumerate()
    {
        let mut data = json!({ "do": "secret", "name": "key" });
        data.as_object_mut()
            .unwrap()
            .extend(how.as_object().unwrap().clone());
        add(
            &mut conn,
            &stream,
            &[("id", &format!("odd-{n}")), ("data", &data.to_string())],
        );
    }
    eventually(Duration::from_secs(30), "100 invocations", || {
        settled(&mut conn, &stream, "careless").then_some(())
    });
    let auth = format!("Authorization: Bearer {TOKEN}");
    let invoked = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-d",
        &json!({ "data": { "do": "secret", "name": "key" } }).to_string(),
        &format!("{url}/v1/functions/careless/invoke"),
    ]);
    assert_eq!(invoked.status, 200, "{invoked:?}");
    assert!(invoked.body.contains("[redacted]"), "{}", invoked.body);
    // A body cut at the 1 MiB the host keeps, inside the secret.
    let cut = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-d",
        &json!({ "data": { "do": "secret", "name": "key", "pad": 1024 * 1024 - 12 } }).to_string(),
        &format!("{url}/v1/functions/careless/invoke"),
    ]);
    assert_eq!(cut.status, 200, "{}", &cut.body[..cut.body.len().min(300)]);
    let mut seen = vec![invoked.body, cut.body];
    for path in [
        "/v1/functions",
        "/v1/functions/careless",
        "/v1/status",
        "/v1/failures",
        "/metrics",
    ] {
        seen.push(curl(&["-H", &auth, &format!("{url}{path}")]).body);
    }
    seen.push(eddy_redis(&["logs", "careless", "--output", "json"], &redis.url()).stdout);
    seen.push(dump_redis(&mut conn));
    seen.push(host.log());
    let escaped = serde_json::to_string(SECRET).unwrap();
    let forms = [SECRET, &escaped[1..escaped.len() - 1], &SECRET[..8]];
    for text in &seen {
        for form in forms {
            if let Some(at) = text.find(form) {
                let around: String = text[at..].chars().take(200).collect();
                panic!("the secret leaked as {form:?}: {around}…");
            }
        }
    }
    assert!(
        seen.iter().any(|t| t.contains("the secret is [redacted]")),
        "the guest's log line is kept, redacted"
    );
}

const TOKEN: &str = "capabilities-token-for-tests";

fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_secret_a_host_cannot_resolve_refuses_the_load_and_the_old_version_keeps_serving() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    let (stream, v1, v2) = (unique("orders"), unique("seen-v1"), unique("seen-v2"));
    let write = |file: &str, records: &str, secret: &str| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "name = \"rec\"\ncomponent = {:?}\npublish = [{v1:?}, {v2:?}]\n[config]\n\
                 record_stream = {records:?}\n{secret}\n[[triggers.stream]]\nstream = {stream:?}\n",
                wasm("record").display().to_string()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let first = write("v1.toml", &v1, "");
    let second = write(
        "v2.toml",
        &v2,
        "[secrets]\ntoken = \"env:SECRETS_TEST_ONLY_ON_A\"",
    );
    // Host A has the secret; host B does not.
    let mut a = Host::start_with_env(
        &redis.url(),
        &idle,
        &[],
        &[("SECRETS_TEST_ONLY_ON_A", SECRET)],
    );
    let mut b = Host::start(&redis.url(), &idle, &[]);
    let (url_a, url_b) = (a.api_url(), b.api_url());
    let deploy = |url: &str, path: &str| {
        run(Command::new(eddy_bin())
            .args(["deploy", path, "--host", url])
            .env_remove("EDDY_TOKEN"))
    };
    assert_eq!(deploy(&url_a, &first).code, 0);
    b.wait_for_log("deployed function running", Duration::from_secs(10));
    // Through B, which cannot resolve it: refused, with the secret and its source named.
    let refused = deploy(&url_b, &second);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("secret `token` from env:SECRETS_TEST_ONLY_ON_A"),
        "{}",
        refused.stderr
    );
    // Through A: stored; A switches, B refuses the load and keeps version 1.
    assert_eq!(deploy(&url_a, &second).code, 0);
    a.wait_for_log("to=2", Duration::from_secs(10));
    b.wait_for_log("cannot load the deployed version", Duration::from_secs(10));
    assert!(b.log().contains("SECRETS_TEST_ONLY_ON_A"), "{}", b.log());
    for n in 0..20 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("e-{n}")), ("data", "{}")],
        );
    }
    eventually(Duration::from_secs(20), "every event handled", || {
        (entries(&mut conn, &v1).len() + entries(&mut conn, &v2).len() >= 20).then_some(())
    });
    assert!(
        !entries(&mut conn, &v1).is_empty(),
        "B still serves version 1"
    );
}

#[test]
fn deployed_functions_read_secrets_only_where_the_host_allows() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    let allowed = dir.path().join("secrets");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::write(allowed.join("mail_key"), "a-secret-from-a-file\n").unwrap();
    std::fs::write(dir.path().join("elsewhere"), "a-file-the-host-keeps").unwrap();
    let fifo = allowed.join("fifo");
    let fifo_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our own temporary folder.
    assert_eq!(unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o600) }, 0);
    let mut host = Host::start_with_env(
        &redis.url(),
        &idle,
        &[
            "--token-file",
            &token_file(dir.path()),
            "--secret-dir",
            allowed.to_str().unwrap(),
        ],
        &[("SECRETS_TEST_PLAIN", "a-secret-from-the-env")],
    );
    let url = host.api_url();
    let deploy = |source: &str| {
        let project = tempfile::tempdir().unwrap();
        manifest(
            project.path(),
            "peek",
            "reach",
            &format!("[secrets]\nkey = {source:?}\n"),
        );
        run(Command::new(eddy_bin())
            .args([
                "deploy",
                project.path().join("peek.toml").to_str().unwrap(),
                "--host",
                &url,
            ])
            .env("EDDY_TOKEN", TOKEN))
    };
    let elsewhere = format!("file:{}", dir.path().join("elsewhere").display());
    let escape = format!("file:{}/../elsewhere", allowed.display());
    for (source, why) in [
        (elsewhere.as_str(), "--secret-dir"),
        (escape.as_str(), "--secret-dir"),
        ("file:relative/key", "absolute"),
        ("env:EDDY_REDIS_URL", "EDDY_*"),
        (&format!("file:{}", fifo.display()), "not a regular file"),
    ] {
        let refused = deploy(source);
        assert_eq!(refused.code, 1, "{source}: {refused:?}");
        assert!(
            refused.stderr.contains(why) && refused.stderr.contains("secret `key`"),
            "{source}: {}",
            refused.stderr
        );
        assert!(!refused.stderr.contains("a-file-the-host-keeps"));
    }
    assert_eq!(curl(&[&format!("{url}/healthz")]).status, 200);
    for source in [
        format!("file:{}", allowed.join("mail_key").display()),
        "env:SECRETS_TEST_PLAIN".to_owned(),
    ] {
        let deployed = deploy(&source);
        assert_eq!(deployed.code, 0, "{source}: {deployed:?}");
    }
    host.wait_for_log("deployed function running", Duration::from_secs(10));
}

/// POSTs `data` to `/v1/functions/{name}/invoke`; the function's status and body as JSON.
fn invoke_over_api(url: &str, name: &str, data: Value) -> (u64, Value, Value) {
    let reply = curl(&[
        "-X",
        "POST",
        "-d",
        &json!({ "data": data }).to_string(),
        &format!("{url}/v1/functions/{name}/invoke"),
    ]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    let body = serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap_or_default();
    (answer["status"].as_u64().unwrap_or(0), body, answer)
}

#[test]
fn a_guest_cannot_exhaust_the_host_through_its_capabilities() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    let greedy = manifest(
        dir.path(),
        "greedy",
        "reach",
        "[limits]\nkv_write_bytes = \"1MiB\"\n",
    );
    let mut host = Host::start(&redis.url(), &idle, &[]);
    let url = host.api_url();
    let deployed = run(Command::new(eddy_bin())
        .args(["deploy", greedy.to_str().unwrap(), "--host", &url])
        .env_remove("EDDY_TOKEN"));
    assert_eq!(deployed.code, 0, "{deployed:?}");

    // Writes stop at the invocation's key-value write budget, naming it.
    let (status, body, _) = invoke_over_api(
        &url,
        "greedy",
        json!({ "do": "fill", "bucket": "b", "size": 400_000, "count": 5 }),
    );
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["done"], 2, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("kv_write_bytes"),
        "{body}"
    );

    // Compare-and-swap handles, each holding a value in host memory, are counted.
    let (status, body, _) = invoke_over_api(
        &url,
        "greedy",
        json!({ "do": "hoard", "bucket": "b", "key": "fill-0", "count": 100 }),
    );
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["done"], 16, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("compare-and-swap"),
        "{body}"
    );

    // One get-many cannot pull more than 16 MiB into the host: 17 values of 1 MiB, set by
    // an operator from a file.
    let value = dir.path().join("value");
    std::fs::write(&value, vec![b'x'; 1024 * 1024]).unwrap();
    let keys: Vec<String> = (0..17).map(|n| format!("big-{n}")).collect();
    for key in &keys {
        let set = eddy_redis(
            &[
                "kv",
                "set",
                "greedy/big",
                key,
                "--file",
                value.to_str().unwrap(),
            ],
            &redis.url(),
        );
        assert_eq!(set.code, 0, "{set:?}");
    }
    let (status, body, _) = invoke_over_api(
        &url,
        "greedy",
        json!({ "do": "get-many", "bucket": "big", "keys": keys }),
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("get-many"),
        "{body}"
    );
    let (status, body, _) = invoke_over_api(
        &url,
        "greedy",
        json!({ "do": "get-many", "bucket": "big", "keys": keys[..3] }),
    );
    assert_eq!((status, body["done"].as_u64()), (200, Some(3)), "{body}");

    // Handles of any kind: past the cap the invocation fails, and the next one runs.
    let (status, _, answer) =
        invoke_over_api(&url, "greedy", json!({ "do": "handles", "count": 5000 }));
    assert_eq!(answer["outcome"], "failed", "{answer}");
    assert_eq!(status, 0, "{answer}");
    let (status, body, _) =
        invoke_over_api(&url, "greedy", json!({ "do": "handles", "count": 100 }));
    assert_eq!((status, body["done"].as_u64()), (200, Some(100)), "{body}");
    assert_eq!(curl(&[&format!("{url}/healthz")]).status, 200);
    drop(host);

    // The operator's tools: a missing key is an error, and keys a guest chose are shown
    // escaped, so they cannot pose as other lines or drive a terminal.
    let missing = eddy_redis(&["kv", "del", "greedy/b", "no-such-key"], &redis.url());
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("no key"), "{missing:?}");
    let forged = "x\u{1b}]0;owned\u{7}\nforged-line";
    assert_eq!(
        eddy_redis(&["kv", "set", "greedy/b", forged, "1"], &redis.url()).code,
        0
    );
    let listed = eddy_redis(&["kv", "ls", "greedy/b"], &redis.url());
    assert!(!listed.stdout.contains('\u{1b}'), "{listed:?}");
    assert!(
        !listed.stdout.lines().any(|l| l == "forged-line"),
        "{listed:?}"
    );
}
