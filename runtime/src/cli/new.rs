//! `eddy new`: scaffolds a function project anywhere on disk, in Rust, JavaScript or Python,
//! that `eddy build` builds and `eddy deploy --build` ships with no checkout of this repository.
//!
//! What a project needs from Eddy travels inside the `eddy` binary: the JavaScript and Python
//! SDK layers are written into each build's scratch folder (see `build`), and a Rust project
//! gets the `eddy-sdk` crate and the WIT contract written under its own `vendor/`, so it builds
//! with cargo alone, offline from any Eddy checkout, against the contract this `eddy` speaks.
//! The project is written into a scratch folder beside its destination and renamed into place
//! at the end, so a failure leaves nothing half-written.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::names;
use crate::triggers::cron::Schedule;

/// The `eddy-sdk` crate's files, written under a Rust project's `vendor/eddy-sdk`.
const RUST_SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/error.rs", include_str!("../../../sdk/src/error.rs")),
    ("src/event.rs", include_str!("../../../sdk/src/event.rs")),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    ("src/kv.rs", include_str!("../../../sdk/src/kv.rs")),
    (
        "src/response.rs",
        include_str!("../../../sdk/src/response.rs"),
    ),
];
/// The JavaScript toolchain `eddy build` is tested with (`sdk/js/package.json`): its pinned
/// `dependencies` become a new project's `devDependencies`, so the versions live in one place.
const JS_TOOLS_PACKAGE: &str = include_str!("../../../sdk/js/package.json");

/// Arguments of `eddy new`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    eddy new greeter --lang rust\n  \
    eddy new send-mail --lang javascript --trigger stream:orders ~/code/send-mail\n  \
    eddy new nightly --lang python --trigger cron:\"0 0 3 * * *\"\n  \
    eddy new place-order --lang javascript --style openwhisk\n\n\
    Then, in the new folder: `eddy build`, `eddy invoke` the component, `eddy deploy --build`;\n\
    its README.md says how, and what to install first.")]
pub struct NewArgs {
    /// The function's name: 1 to 64 lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create it (default: ./NAME). Must not exist yet, or be an empty folder.
    pub dir: Option<PathBuf>,
    /// What runs it: `stream:NAME` (events of a Redis stream) or `cron:"SCHEDULE"` (6 fields
    /// with seconds, e.g. `cron:"0 */5 * * * *"`). Repeatable; default `stream:events`.
    #[arg(long = "trigger", value_name = "KIND:VALUE")]
    pub triggers: Vec<String>,
    /// The code's shape: `eddy` (`handle(event)` with the SDK) or `openwhisk` (`main(params)`
    /// returning `{statusCode, body}`, JavaScript and Python only; see sdk/openwhisk.md).
    #[arg(long, value_enum, default_value_t = Style::Eddy)]
    pub style: Style,

    /// How to say what was made: human lines, or one JSON object (`dir`, `files`).
    #[arg(long, short = 'o', value_enum, default_value_t = super::OutputFormat::Human)]
    pub output: super::OutputFormat,
}

/// A language `eddy new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Rust crate using `eddy-sdk`, built with cargo.
    Rust,
    /// A JavaScript module, built with esbuild and componentize-js.
    #[value(alias = "js")]
    Javascript,
    /// A Python module, built with componentize-py.
    #[value(alias = "py")]
    Python,
}

/// The shape of a new function's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Style {
    /// `handle(event)` returning a Response, with Eddy's SDK.
    Eddy,
    /// `main(params)` returning `{statusCode, body}`, an OpenWhisk action.
    Openwhisk,
}

/// A trigger of the new function, as `--trigger` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    Stream(String),
    Cron(String),
}

impl Trigger {
    /// Reads one `--trigger` value, with one message naming the value and what is accepted.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let expected = "expected stream:NAME or cron:\"SCHEDULE\"";
        let Some((kind, value)) = text.split_once(':') else {
            bail!("--trigger {text:?}: {expected}");
        };
        match kind {
            "stream" => {
                names::stream(value).map_err(|e| anyhow::anyhow!("--trigger {text:?}: {e}"))?;
                Ok(Self::Stream(value.to_owned()))
            }
            "cron" => {
                let schedule = value.trim();
                Schedule::parse(schedule, "UTC")
                    .map_err(|e| anyhow::anyhow!("--trigger {text:?}: {e}"))?;
                Ok(Self::Cron(schedule.to_owned()))
            }
            _ => bail!("--trigger {text:?}: unknown kind {kind:?}: {expected}"),
        }
    }
}

/// Runs `eddy new`.
pub fn run(args: NewArgs) -> anyhow::Result<u8> {
    names::identifier(&args.name).map_err(|e| anyhow::anyhow!("NAME {:?}: {e}", args.name))?;
    if args.lang == Lang::Rust && args.name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "NAME {:?}: a Rust crate's name cannot start with a digit: start it with a letter",
            args.name
        );
    }
    if args.style == Style::Openwhisk && args.lang == Lang::Rust {
        bail!(
            "--style openwhisk: the OpenWhisk shape (`main(params)`) is for javascript and \
             python; a Rust function uses `handle(event)`"
        );
    }
    let mut triggers = args
        .triggers
        .iter()
        .map(|t| Trigger::parse(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if triggers.is_empty() {
        triggers.push(Trigger::Stream("events".to_owned()));
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let files = project(&args.name, args.lang, args.style, &triggers);
    write_project(&dir, &files)?;
    if args.output == super::OutputFormat::Json {
        let paths: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
        println!(
            "{}",
            serde_json::json!({ "dir": dir, "name": args.name, "files": paths })
        );
        return Ok(super::EXIT_OK);
    }
    println!(
        "created {} ({}{}): {}",
        dir.display(),
        lang_name(args.lang),
        match (args.style, args.lang) {
            (Style::Openwhisk, _) => ", OpenWhisk shape",
            (_, Lang::Rust) => ", with the SDK and WIT contract in vendor/",
            _ => "",
        },
        files
            .iter()
            .map(|(path, _)| path.as_str())
            .filter(|p| !p.starts_with("vendor/"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("next: cd {} && see README.md", shell_word(&dir));
    Ok(super::EXIT_OK)
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Javascript => "JavaScript",
        Lang::Python => "Python",
    }
}

/// `path` as one shell word, quoted when it holds anything a shell would split or expand.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./~".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Writes `files` into a scratch folder beside `dir`, then renames it to `dir`: an existing
/// non-empty folder is refused, and a failure part way leaves nothing behind.
fn write_project(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty: give another DIR or NAME",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} is a file: give another DIR or NAME", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    // An existing empty folder is filled in place (keeping its owner and mode, and a shell
    // standing in it): the scratch folder goes inside it and its entries are moved up.
    let existing = dir.is_dir();
    let parent = match dir.parent() {
        _ if existing => dir.to_path_buf(),
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".eddy-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch folder in {}", parent.display()))?;
    for (path, text) in files {
        let file = scratch.path().join(path);
        if let Some(folder) = file.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    if existing {
        let mut moved = Vec::new();
        for entry in std::fs::read_dir(scratch.path())? {
            let entry = entry?;
            let to = dir.join(entry.file_name());
            if let Err(error) = std::fs::rename(entry.path(), &to) {
                for done in moved {
                    let _ = std::fs::remove_dir_all(&done).or_else(|_| std::fs::remove_file(&done));
                }
                return Err(error).with_context(|| format!("moving into {}", dir.display()));
            }
            moved.push(to);
        }
        return Ok(());
    }
    let kept = scratch.keep();
    std::fs::rename(&kept, dir).with_context(|| {
        let _ = std::fs::remove_dir_all(&kept);
        format!("moving the new project to {}", dir.display())
    })?;
    Ok(())
}

/// Every file of the new project, by path relative to its folder.
fn project(name: &str, lang: Lang, style: Style, triggers: &[Trigger]) -> Vec<(String, String)> {
    let crate_name = name.replace('-', "_");
    let (component, source_file) = match (lang, style) {
        (Lang::Rust, _) => (
            format!("${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{crate_name}.wasm"),
            "src/lib.rs",
        ),
        (Lang::Javascript, Style::Eddy) => ("app.wasm".to_owned(), "app.js"),
        (Lang::Javascript, Style::Openwhisk) => ("app.wasm".to_owned(), "index.js"),
        (Lang::Python, Style::Eddy) => ("app.wasm".to_owned(), "app.py"),
        (Lang::Python, Style::Openwhisk) => ("app.wasm".to_owned(), "main.py"),
    };
    let mut files = vec![
        (
            "eddy.toml".to_owned(),
            manifest(name, &component, style, triggers),
        ),
        (source_file.to_owned(), source(name, lang, style)),
        (
            "README.md".to_owned(),
            readme(name, lang, &component, triggers),
        ),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".to_owned(), cargo_toml(name)));
            files.push((".gitignore".to_owned(), "/target\n".to_owned()));
            for (path, text) in RUST_SDK {
                files.push((format!("vendor/eddy-sdk/{path}"), (*text).to_owned()));
            }
            for (path, text) in super::build::WIT {
                files.push((format!("vendor/wit/{path}"), (*text).to_owned()));
            }
        }
        Lang::Javascript => {
            files.push(("package.json".to_owned(), package_json(name, style)));
            files.push((
                ".gitignore".to_owned(),
                "/node_modules\n/*.wasm\n".to_owned(),
            ));
        }
        Lang::Python => {
            files.push((
                ".gitignore".to_owned(),
                "/*.wasm\n__pycache__/\n".to_owned(),
            ));
        }
    }
    files
}

fn manifest(name: &str, component: &str, style: Style, triggers: &[Trigger]) -> String {
    let mut text = format!(
        "# The function's manifest: what to run, its limits and settings, and what runs it.\n\
         # Every field: the `manifest` section of Eddy's README.\n\
         name = \"{name}\"\n\
         component = \"{component}\"\n\
         # Streams it may publish to.\n\
         publish = [\"{name}-out\"]\n"
    );
    if style == Style::Openwhisk {
        text.push_str(&format!(
            "\n# Where publishEvent(type, data) publishes: every type to this stream.\n\
             [event_bus]\ndefault = \"{name}-out\"\n"
        ));
    }
    text.push_str("\n# Read by the function (");
    text.push_str(match style {
        Style::Eddy => "config(key)",
        Style::Openwhisk => "default parameters of main",
    });
    text.push_str(").\n[config]\ngreeting = \"Hello\"\n");
    for trigger in triggers {
        match trigger {
            Trigger::Stream(stream) => text.push_str(&format!(
                "\n[[triggers.stream]]\nstream = {stream:?}\n\
                 # types = [\"order.placed\"]   # default: every type\n"
            )),
            Trigger::Cron(schedule) => text.push_str(&format!(
                "\n[[triggers.cron]]\nschedule = {schedule:?}   # sec min hour day month weekday\n"
            )),
        }
    }
    text.push_str(
        "\n# What it may reach, when it needs to:\n\
         # [outbound]\n\
         # http = [\"https://api.example.com\"]   # origins it may call; none by default\n\
         # [secrets]\n\
         # api_key = \"env:API_KEY\"               # or \"file:/run/secrets/api_key\"\n",
    );
    text
}

fn source(name: &str, lang: Lang, style: Style) -> String {
    match (lang, style) {
        (Lang::Rust, _) => format!(
            "//! {name}: an Eddy function. It greets whoever the event names and publishes the\n\
             //! greeting; a 2xx answer is done, 4xx rejected (dead-lettered), 5xx retried.\n\n\
             use eddy_sdk::{{Error, Event, Response, config, log, publish}};\n\
             use serde::Deserialize;\n\n\
             #[derive(Deserialize)]\n\
             struct Greet {{\n    name: String,\n}}\n\n\
             fn handle(event: Event) -> Result<Response, Error> {{\n\
             \x20   let Ok(greet) = event.json::<Greet>() else {{\n\
             \x20       return Ok(Response::bad_request(\"expected {{\\\"name\\\": \\\"...\\\"}}\"));\n\
             \x20   }};\n\
             \x20   let greeting = config(\"greeting\").unwrap_or_else(|| \"Hello\".to_owned());\n\
             \x20   let text = format!(\"{{greeting}}, {{}}!\", greet.name);\n\
             \x20   log::info(&text);\n\
             \x20   publish(\"{name}-out\", \"greeted\", &serde_json::json!({{ \"text\": text }}))?;\n\
             \x20   Ok(Response::json(200, &serde_json::json!({{ \"text\": text }})))\n\
             }}\n\n\
             eddy_sdk::export!(handle);\n"
        ),
        (Lang::Javascript, Style::Eddy) => format!(
            "// {name}: an Eddy function. It greets whoever the event names and publishes the\n\
             // greeting; a 2xx answer is done, 4xx rejected (dead-lettered), 5xx retried.\n\
             import {{ Response, Rejected, config, publish, log }} from \"eddy\";\n\n\
             export function handle(event) {{\n\
             \x20 const {{ name }} = event.json();\n\
             \x20 if (typeof name !== \"string\") throw new Rejected('expected {{\"name\": \"...\"}}');\n\
             \x20 const text = `${{config(\"greeting\", \"Hello\")}}, ${{name}}!`;\n\
             \x20 log.info(text);\n\
             \x20 publish(\"{name}-out\", \"greeted\", {{ text }});\n\
             \x20 return Response.ok({{ text }});\n\
             }}\n"
        ),
        (Lang::Javascript, Style::Openwhisk) => format!(
            "// {name}: an OpenWhisk-shaped action. params holds the event's data fields, the\n\
             // manifest's [config] as defaults, and the event's attributes under __eddy.\n\
             // The result table: sdk/openwhisk.md in Eddy's repository.\n\
             const {{ publishEvent }} = require(\"eddy-events\");\n\n\
             const main = async (params) => {{\n\
             \x20 if (typeof params.name !== \"string\") {{\n\
             \x20   return {{ statusCode: 400, body: JSON.stringify({{ error: 'expected {{\"name\": \"...\"}}' }}) }};\n\
             \x20 }}\n\
             \x20 const text = `${{params.greeting ?? \"Hello\"}}, ${{params.name}}!`;\n\
             \x20 publishEvent(\"greeted\", {{ text }});\n\
             \x20 return {{ statusCode: 200, body: JSON.stringify({{ text }}) }};\n\
             }};\n\n\
             module.exports = {{ main }};\n"
        ),
        (Lang::Python, Style::Eddy) => format!(
            "\"\"\"{name}: an Eddy function. It greets whoever the event names and publishes the\n\
             greeting; a 2xx answer is done, 4xx rejected (dead-lettered), 5xx retried.\"\"\"\n\n\
             import eddy\n\n\n\
             def handle(event):\n\
             \x20   name = event.json().get(\"name\")\n\
             \x20   if not isinstance(name, str):\n\
             \x20       raise eddy.Rejected('expected {{\"name\": \"...\"}}')\n\
             \x20   text = f\"{{eddy.config('greeting', 'Hello')}}, {{name}}!\"\n\
             \x20   eddy.log.info(text)\n\
             \x20   eddy.publish(\"{name}-out\", \"greeted\", {{\"text\": text}})\n\
             \x20   return eddy.Response.ok({{\"text\": text}})\n"
        ),
        (Lang::Python, Style::Openwhisk) => format!(
            "\"\"\"{name}: an OpenWhisk-shaped action. params holds the event's data fields, the\n\
             manifest's [config] as defaults, and the event's attributes under __eddy. The result\n\
             table: sdk/openwhisk.md in Eddy's repository.\"\"\"\n\n\
             import json\n\n\
             from eddy_events import publish_event\n\n\n\
             def main(params):\n\
             \x20   name = params.get(\"name\")\n\
             \x20   if not isinstance(name, str):\n\
             \x20       return {{\"statusCode\": 400, \"body\": json.dumps({{\"error\": 'expected {{\"name\": \"...\"}}'}})}}\n\
             \x20   text = f\"{{params.get('greeting', 'Hello')}}, {{name}}!\"\n\
             \x20   publish_event(\"greeted\", {{\"text\": text}})\n\
             \x20   return {{\"statusCode\": 200, \"body\": json.dumps({{\"text\": text}})}}\n"
        ),
    }
}

fn cargo_toml(name: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A function crate stands alone: not part of any surrounding workspace.\n[workspace]\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\n\
         # The SDK, written here by `eddy new` for the contract this eddy speaks.\n\
         eddy-sdk = {{ path = \"vendor/eddy-sdk\" }}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\
         serde_json = \"1\"\n\n\
         [profile.release]\nopt-level = \"s\"\nstrip = \"debuginfo\"\n"
    )
}

fn package_json(name: &str, style: Style) -> String {
    let tools: serde_json::Value =
        serde_json::from_str(JS_TOOLS_PACKAGE).expect("sdk/js/package.json is JSON");
    let mut package = serde_json::json!({
        "name": name,
        "private": true,
        "description": "An Eddy function: `eddy build` bundles it with esbuild and builds a component with componentize-js.",
        "devDependencies": tools["dependencies"],
    });
    match style {
        Style::Eddy => {
            package["type"] = "module".into();
            package["main"] = "app.js".into();
        }
        Style::Openwhisk => package["main"] = "index.js".into(),
    }
    let mut text = serde_json::to_string_pretty(&package).expect("a package.json serializes");
    text.push('\n');
    text
}

fn readme(name: &str, lang: Lang, component: &str, triggers: &[Trigger]) -> String {
    let stream = triggers
        .iter()
        .find_map(|t| match t {
            Trigger::Stream(s) => Some(s.as_str()),
            Trigger::Cron(_) => None,
        })
        .unwrap_or("events");
    let install = match lang {
        Lang::Rust => {
            "rustup target add wasm32-wasip2          # once: the WebAssembly target".to_owned()
        }
        Lang::Javascript => {
            "npm install                              # once: componentize-js and esbuild, pinned"
                .to_owned()
        }
        Lang::Python => format!(
            "pip install componentize-py=={}      # once",
            super::build::COMPONENTIZE_PY_VERSION
        ),
    };
    format!(
        "# {name}\n\n\
         An Eddy function in {lang}. `eddy.toml` says what runs it and what it may reach.\n\n\
         ```sh\n\
         {install}\n\
         eddy build                               # 1. build it into {component}\n\
         eddy invoke . --data '{{\"name\":\"Ada\"}}'    # 2. run it once, here, no Redis\n\
         eddy deploy --build --host http://127.0.0.1:7070   # 3. ship it to running hosts\n\
         ```\n\n\
         `eddy up` in another terminal starts a host (with its own private Redis) to deploy to;\n\
         `eddy dev` builds, runs and rebuilds this folder on every change. Then:\n\n\
         ```sh\n\
         eddy publish {stream} --type greet --data '{{\"name\":\"Ada\"}}'\n\
         eddy logs {name}\n\
         ```\n",
        lang = lang_name(lang)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_javascript_project_pins_the_tools_eddy_build_is_tested_with() {
        let text = package_json("my-fn", Style::Openwhisk);
        let package: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tools = &package["devDependencies"];
        for tool in ["@bytecodealliance/componentize-js", "esbuild"] {
            let version = tools[tool].as_str().unwrap_or_default();
            assert!(
                version.starts_with(|c: char| c.is_ascii_digit()),
                "{tool}: {text}"
            );
        }
        assert_eq!(package["main"], "index.js");
    }

    #[test]
    fn triggers_are_read_with_a_named_error() {
        assert_eq!(
            Trigger::parse("stream:orders").unwrap(),
            Trigger::Stream("orders".into())
        );
        assert_eq!(
            Trigger::parse("cron:0 * * * * *").unwrap(),
            Trigger::Cron("0 * * * * *".into())
        );
        for (bad, says) in [
            ("orders", "expected stream:NAME"),
            ("queue:orders", "unknown kind \"queue\""),
            ("stream:eddy:x", "eddy:"),
            ("cron:every minute", "cron:every minute"),
        ] {
            let err = Trigger::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn every_manifest_written_parses() {
        let triggers = [
            Trigger::Stream("orders".into()),
            Trigger::Cron("0 */5 * * * *".into()),
        ];
        for lang in [Lang::Rust, Lang::Javascript, Lang::Python] {
            for style in [Style::Eddy, Style::Openwhisk] {
                if lang == Lang::Rust && style == Style::Openwhisk {
                    continue;
                }
                let files = project("my-fn", lang, style, &triggers);
                let (_, text) = files.iter().find(|(p, _)| p == "eddy.toml").unwrap();
                let manifest = crate::manifest::parse(Path::new("/tmp/p/eddy.toml"), text).unwrap();
                assert_eq!(manifest.name, "my-fn");
                assert_eq!(manifest.tickers.len(), 1, "{lang:?}");
                assert!(manifest.streams.iter().any(|s| s.stream == "orders"));
            }
        }
    }

    #[test]
    fn a_non_empty_folder_is_refused_and_nothing_is_left_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("keep"), "mine").unwrap();
        let files = vec![("eddy.toml".to_owned(), "x".to_owned())];
        let err = write_project(&taken, &files).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(std::fs::read_to_string(taken.join("keep")).unwrap(), "mine");

        let fresh = dir.path().join("fresh");
        write_project(&fresh, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(fresh.join("eddy.toml")).unwrap(),
            "x"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".eddy-new-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
