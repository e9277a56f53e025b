//! `eddy deploy --build`: builds a function from source into its component, for the three
//! languages Eddy has SDKs for. The project kind is told by what sits next to the manifest:
//!
//! | found          | kind       | how                                                        |
//! |----------------|------------|------------------------------------------------------------|
//! | `Cargo.toml`   | Rust       | `cargo build --release --target wasm32-wasip2`             |
//! | `package.json` | JavaScript | componentize-js on `app.js` (the SDK's `build.mjs`, node)  |
//! | `app.py`       | Python     | `componentize-py … componentize app`                       |
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
const WIT: &[(&str, &str)] = &[
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
const JS_SDK: &str = include_str!("../../../sdk/js/eddy.js");
const JS_BUILD: &str = include_str!("../../../sdk/js/build.mjs");
const JS_ENTRY: &str = "// Written by `eddy deploy --build`: the component's export.\n\
    import { handle } from \"./app.js\";\n\
    import { handler as wrap } from \"./eddy.js\";\n\
    export const handler = wrap(handle);\n";

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
        } else if dir.join("app.py").is_file() {
            Ok(Self::Python)
        } else {
            bail!(
                "--build: {} holds no Cargo.toml (Rust), package.json (JavaScript) or app.py \
                 (Python): build the component yourself and point `component` at it",
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
            run_tool(
                Command::new(tool("EDDY_COMPONENTIZE_PY", "componentize-py"))
                    .arg("-d")
                    .arg(wit_dir(&scratch)?)
                    // The SDK first, so a stale copy of eddy.py in the project cannot shadow it.
                    .args(["-w", WORLD, "componentize", "-p"])
                    .arg(&sdk)
                    .arg("-p")
                    .arg(&dir)
                    .arg("app")
                    .arg("-o")
                    .arg(&manifest.component),
                &format!(
                    "componentize-py (install it: pip install componentize-py=={COMPONENTIZE_PY_VERSION})"
                ),
            )?;
        }
        Kind::JavaScript => {
            let scratch = scratch()?;
            copy_sources(&dir, scratch.path())?;
            std::fs::write(scratch.path().join("eddy.js"), JS_SDK)?;
            std::fs::write(scratch.path().join("main.js"), JS_ENTRY)?;
            std::fs::write(scratch.path().join("build.mjs"), JS_BUILD)?;
            if !scratch.path().join("app.js").is_file() {
                bail!(
                    "--build: no app.js in {}: a JavaScript function's entry is app.js",
                    dir.display()
                );
            }
            let out = std::path::absolute(&manifest.component)?;
            run_tool(
                Command::new(tool("EDDY_NODE", "node"))
                    .arg(scratch.path().join("build.mjs"))
                    .arg(&dir)
                    .arg(scratch.path().join("main.js"))
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

/// A tool from `env_var`, else by name on the PATH.
fn tool(env_var: &str, name: &str) -> std::ffi::OsString {
    std::env::var_os(env_var).unwrap_or_else(|| name.into())
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
fn copy_sources(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if text != "node_modules" && !text.starts_with('.') {
                std::fs::create_dir_all(to.join(&name))?;
                copy_sources(&path, &to.join(&name))?;
            }
        } else if text.ends_with(".js") || text.ends_with(".mjs") || text.ends_with(".json") {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}
