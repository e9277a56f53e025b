//! `eddy deploy --build`: builds a function from source into its component, for the three
//! languages Eddy has SDKs for. The project kind is told by what sits next to the manifest:
//!
//! | found          | kind       | how                                                        |
//! |----------------|------------|------------------------------------------------------------|
//! | `Cargo.toml`   | Rust       | `cargo build --release --target wasm32-wasip2`             |
//! | `package.json` | JavaScript | esbuild, then componentize-js (the SDK's `build.mjs`, node) |
//! | `app.py`, `main.py` | Python | `componentize-py … componentize eddy_entry`               |
//!
//! A JavaScript or Python function is written in one of two shapes, told apart by what its
//! module exports: `handle(event)` returning a `Response` (Eddy's SDK), or `main(params)`
//! returning `{statusCode, body}` (an OpenWhisk action, as the seeds of this project write
//! them). The build writes an entry module that imports the project's module and exports the
//! component's `handler` for whichever it finds, and fails, naming the file, when it finds
//! neither. JavaScript projects are bundled with esbuild first, so CommonJS (`require`,
//! `module.exports`) and npm packages from the project's `node_modules` work.
//!
//! The WIT contract and the JavaScript and Python SDK layers are compiled into the `eddy`
//! binary and written into a scratch folder for each build, so a project needs only its own
//! files and the language's toolchain, and always builds against the contract this `eddy`
//! speaks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::engine::WORLD;
use crate::manifest::Manifest;

/// The componentize-py release the Python SDK is written and tested against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The WIT contract: `eddy.wit` and the parts of the WASI packages it refers to.
pub(crate) const WIT: &[(&str, &str)] = &[
    ("eddy.wit", include_str!("../../../wit/eddy.wit")),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "deps/keyvalue/keyvalue.wit",
        include_str!("../../../wit/deps/keyvalue/keyvalue.wit"),
    ),
];
const PYTHON_SDK: &str = include_str!("../../../sdk/python/eddy.py");
const PYTHON_EVENTS: &str = include_str!("../../../sdk/python/eddy_events.py");
const JS_SDK: &str = include_str!("../../../sdk/js/eddy.js");
const JS_EVENTS: &str = include_str!("../../../sdk/js/eddy-events.js");
const JS_BUILD: &str = include_str!("../../../sdk/js/build.mjs");
/// The file name of the JavaScript entry the build writes beside the project's modules.
const JS_ENTRY_FILE: &str = "__eddy_entry.js";
/// The module name of the Python entry the build writes beside the SDK.
const PYTHON_ENTRY_MODULE: &str = "eddy_entry";
/// Python modules a function's code may be in, tried in this order.
const PYTHON_MODULES: &[&str] = &["app", "main"];
/// JavaScript entry files tried, in this order, when `package.json` names no `main`.
const JS_ENTRIES: &[&str] = &["app.js", "index.js", "main.js"];

/// The JavaScript entry for the project's module `entry`: exports the component's `handler`,
/// for `handle(event)` or an OpenWhisk `main(params)`, and throws at build time (which fails
/// componentize-js's pre-initialisation, so the build) when the module exports neither.
fn js_entry(entry: &str) -> String {
    format!(
        "// Written by `eddy build`: the component's export for {entry}.\n\
         import * as user from {path:?};\n\
         import {{ handler as wrapHandle, openwhisk }} from \"./eddy.js\";\n\
         const inner = user.default !== null && typeof user.default === \"object\" ? user.default : {{}};\n\
         const handle = user.handle ?? inner.handle;\n\
         const main = user.main ?? inner.main ?? (typeof user.default === \"function\" ? user.default : undefined);\n\
         if (typeof handle !== \"function\" && typeof main !== \"function\") {{\n\
         \x20 throw new Error({message:?});\n\
         }}\n\
         export const handler = typeof handle === \"function\" ? wrapHandle(handle) : openwhisk(main);\n",
        path = format!("./{entry}"),
        message = format!(
            "{entry} exports no function `main` (OpenWhisk shape: `module.exports = {{ main }}`, \
             `export const main` or `export default`) and no `handle` (Eddy's SDK)"
        ),
    )
}

/// The Python entry for the project's module `module`: `Handler` for `handle(event)` or an
/// OpenWhisk `main(params)`, or an ImportError at build time naming what is missing.
fn python_entry(module: &str) -> String {
    format!(
        "\"\"\"Written by `eddy build`: the component's export for {module}.py.\"\"\"\n\
         import eddy\n\
         import {module} as _user\n\n\
         if hasattr(_user, \"Handler\"):\n    Handler = _user.Handler\n\
         elif callable(getattr(_user, \"handle\", None)):\n    Handler = eddy.handler(_user.handle)\n\
         elif callable(getattr(_user, \"main\", None)):\n    Handler = eddy.openwhisk(_user.main)\n\
         else:\n    raise ImportError(\n        \"{module}.py defines no function main(params) (OpenWhisk shape) \"\n        \
         \"and no handle(event) (Eddy's SDK)\"\n    )\n"
    )
}

/// The JavaScript project's entry file: `package.json`'s `main`, else the first of
/// [`JS_ENTRIES`] present.
fn js_entry_file(dir: &Path) -> anyhow::Result<String> {
    let package = dir.join("package.json");
    let text = std::fs::read_to_string(&package)
        .with_context(|| format!("reading {}", package.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", package.display()))?;
    if let Some(main) = json.get("main") {
        let Some(main) = main.as_str().filter(|m| !m.is_empty()) else {
            bail!(
                "{}: field `main` = {main}: expected the entry module's path, e.g. \"index.js\"",
                package.display()
            );
        };
        let main = main.trim_start_matches("./");
        let path = Path::new(main);
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || !dir.join(path).is_file()
        {
            bail!(
                "{}: field `main` = {main:?}: expected a file inside the project",
                package.display()
            );
        }
        return Ok(main.to_owned());
    }
    JS_ENTRIES
        .iter()
        .find(|name| dir.join(name).is_file())
        .map(|name| (*name).to_owned())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--build: {} has no entry module: expected package.json's `main`, or one of {}",
                dir.display(),
                JS_ENTRIES.join(", ")
            )
        })
}

/// Arguments of `eddy build`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    eddy build examples/order-saga/inventory      # Python: app.py -> app.wasm\n  \
    eddy build sdk/templates/javascript           # JavaScript: app.js -> app.wasm\n  \
    eddy build sdk/templates/rust                 # Rust: cargo for wasm32-wasip2\n\n\
    The component goes where the manifest's `component` points; `eddy invoke FILE.wasm` runs\n\
    it once locally, `eddy deploy` ships it.")]
pub struct BuildArgs {
    /// The manifest (eddy.toml) or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// Runs `eddy build`.
pub fn run(args: BuildArgs) -> anyhow::Result<u8> {
    let manifest = crate::manifest::load(&args.path)?;
    build(&manifest)?;
    Ok(super::EXIT_OK)
}

/// What a function project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A crate using `eddy-sdk`.
    Rust,
    /// `app.js` using the SDK's `eddy.js`.
    JavaScript,
    /// `app.py` using the SDK's `eddy` module.
    Python,
}

impl Kind {
    /// The kind of the project in `dir`.
    pub fn detect(dir: &Path) -> anyhow::Result<Self> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Self::Rust)
        } else if dir.join("package.json").is_file() {
            Ok(Self::JavaScript)
        } else if PYTHON_MODULES
            .iter()
            .any(|m| dir.join(format!("{m}.py")).is_file())
        {
            Ok(Self::Python)
        } else {
            bail!(
                "--build: {} holds no Cargo.toml (Rust), package.json (JavaScript) or app.py or \
                 main.py (Python): build the component yourself and point `component` at it",
                dir.display()
            )
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::JavaScript => "JavaScript",
            Self::Python => "Python",
        }
    }
}

/// Builds the function of `manifest` from the sources next to it.
pub fn build(manifest: &Manifest) -> anyhow::Result<()> {
    let dir = manifest
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let kind = Kind::detect(&dir)?;
    eprintln!("building {} ({}) …", dir.display(), kind.name());
    let started = std::time::Instant::now();
    match kind {
        Kind::Rust => run_tool(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(&dir),
            "cargo (is the Rust toolchain installed?)",
        )?,
        Kind::Python => {
            let scratch = scratch()?;
            let sdk = scratch.path().join("sdk");
            std::fs::create_dir_all(&sdk)?;
            std::fs::write(sdk.join("eddy.py"), PYTHON_SDK)?;
            std::fs::write(sdk.join("eddy_events.py"), PYTHON_EVENTS)?;
            let module = PYTHON_MODULES
                .iter()
                .find(|m| dir.join(format!("{m}.py")).is_file())
                .expect("detect found a module");
            std::fs::write(
                sdk.join(format!("{PYTHON_ENTRY_MODULE}.py")),
                python_entry(module),
            )?;
            run_tool(
                Command::new(tool("EDDY_COMPONENTIZE_PY", "componentize-py"))
                    .arg("-d")
                    .arg(wit_dir(&scratch)?)
                    // The SDK first, so a stale copy of eddy.py in the project cannot shadow it.
                    .args(["-w", WORLD, "componentize", "-p"])
                    .arg(&sdk)
                    .arg("-p")
                    .arg(&dir)
                    .arg(PYTHON_ENTRY_MODULE)
                    .arg("-o")
                    .arg(&manifest.component),
                &format!(
                    "componentize-py (install it: pip install componentize-py=={COMPONENTIZE_PY_VERSION})"
                ),
            )?;
        }
        Kind::JavaScript => {
            let scratch = scratch()?;
            let root = dir
                .canonicalize()
                .with_context(|| format!("reading {}", dir.display()))?;
            copy_sources(&root, &dir, scratch.path())?;
            let entry = js_entry_file(&dir)?;
            std::fs::write(scratch.path().join("eddy.js"), JS_SDK)?;
            std::fs::write(scratch.path().join("eddy-events.js"), JS_EVENTS)?;
            std::fs::write(scratch.path().join(JS_ENTRY_FILE), js_entry(&entry))?;
            std::fs::write(scratch.path().join("build.mjs"), JS_BUILD)?;
            let out = std::path::absolute(&manifest.component)?;
            let mut node = Command::new(tool("EDDY_NODE", "node"));
            if let Some(tools) = js_tools() {
                node.env("EDDY_JS_TOOLS", tools);
            }
            run_tool(
                node.arg(scratch.path().join("build.mjs"))
                    .arg(&dir)
                    .arg(scratch.path().join(JS_ENTRY_FILE))
                    .arg(wit_dir(&scratch)?)
                    .arg(&out),
                "node (install Node.js 20 or later)",
            )?;
        }
    }
    eprintln!(
        "built {} in {:.1} s",
        manifest.component.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn scratch() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("eddy-build-")
        .tempdir()
        .context("creating a scratch folder for the build")
}

fn wit_dir(scratch: &tempfile::TempDir) -> anyhow::Result<PathBuf> {
    let wit = scratch.path().join("wit");
    for (path, text) in WIT {
        let file = wit.join(path);
        std::fs::create_dir_all(file.parent().expect("a WIT file lives in a folder"))?;
        std::fs::write(file, text)?;
    }
    Ok(wit)
}

/// A tool from `env_var`, else by name on the PATH, else where `scripts/test` and
/// `scripts/demo` install it (under `~/.cache/eddy`), so a fresh shell after them finds it.
fn tool(env_var: &str, name: &str) -> std::ffi::OsString {
    if let Some(path) = std::env::var_os(env_var) {
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    if !on_path && let Some(home) = std::env::var_os("HOME") {
        let installed = PathBuf::from(home).join(".cache/eddy/venv/bin").join(name);
        if installed.is_file() {
            return installed.into();
        }
    }
    name.into()
}

/// Where componentize-js and esbuild are, when not in the project: `EDDY_JS_TOOLS`, else the
/// link `scripts/test` and `scripts/demo` leave at `~/.cache/eddy/js-tools`.
fn js_tools() -> Option<std::ffi::OsString> {
    std::env::var_os("EDDY_JS_TOOLS").or_else(|| {
        let linked = PathBuf::from(std::env::var_os("HOME")?).join(".cache/eddy/js-tools");
        linked.is_dir().then(|| linked.into())
    })
}

fn run_tool(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("--build: cannot run {what}"))?;
    if !status.success() {
        bail!("--build: the build failed ({status}); nothing was deployed");
    }
    Ok(())
}

/// Copies a JavaScript project's module files (not `node_modules` or hidden folders) so the
/// SDK and the entry can sit beside them.
/// A link that leads out of the project (`root`) is refused: the build must not take in files
/// the project does not hold.
fn copy_sources(root: &Path, from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = path.canonicalize().ok();
            if !target.as_deref().is_some_and(|t| t.starts_with(root)) {
                bail!(
                    "--build: {} is a link that leads outside the project: copy the file in instead",
                    path.display()
                );
            }
        }
        if kind.is_dir() {
            if text != "node_modules" && !text.starts_with('.') {
                std::fs::create_dir_all(to.join(&name))?;
                copy_sources(root, &path, &to.join(&name))?;
            }
        } else if [".js", ".mjs", ".cjs", ".json"]
            .iter()
            .any(|ext| text.ends_with(ext))
        {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}
