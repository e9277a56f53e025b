//! Stamps the binary with what `eddy --version` reports beside the crate version: the commit it
//! was built from (`EDDY_COMMIT` if set, as a container build without `.git` may pass it; else
//! `git rev-parse`; else `unknown`) and the WIT contract version (the `package` line of
//! `wit/eddy.wit`, the contract's single source).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=EDDY_COMMIT");
    println!("cargo:rerun-if-changed=../wit/eddy.wit");
    // Only what exists: a path cargo cannot find counts as changed, so a clone without
    // packed-refs would rebuild the crate on every cargo command.
    for git in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(git).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
    let commit = std::env::var("EDDY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let wit = std::fs::read_to_string("../wit/eddy.wit").unwrap_or_default();
    let contract = wit
        .lines()
        .find_map(|line| line.trim().strip_prefix("package "))
        .map(|p| p.trim_end_matches(';').trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=EDDY_COMMIT={commit}");
    println!("cargo:rustc-env=EDDY_CONTRACT={contract}");
}
