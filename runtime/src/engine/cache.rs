//! The on-disk cache of compiled components, keyed by content hash and engine fingerprint.
//!
//! Compiling a component with Cranelift takes far longer than loading its machine code, so a
//! host restart (or a second `eddy invoke` of the same file) reuses the earlier compilation.
//! The key is the sha256 of the component bytes plus a fingerprint of the engine settings and
//! wasmtime version: a different wasmtime or different settings never load stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// The sha256 digest of component bytes, as lowercase hex; the component's identity.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A directory of precompiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// The cache under `root` for `engine`'s version and settings.
    pub fn new(root: &Path, engine: &wasmtime::Engine) -> Self {
        // The compatibility hash covers the wasmtime version and every setting that affects
        // code generation. `DefaultHasher::new()` uses fixed keys, so the fingerprint is stable
        // across runs of the same build, which is all the key needs.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());
        Self {
            dir: root.join(fingerprint),
        }
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Loads the compiled component for `bytes`, compiling and storing it on a miss. Returns
    /// the component and whether it came from the cache.
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, bool)> {
        let path = self.path_for(digest);
        if path.exists() {
            // SAFETY: the file is one this cache wrote with `precompile_component` for an engine
            // with the same compatibility hash (it is in the path); wasmtime also checks the
            // header. A file that fails to load is treated as a miss and rewritten.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "discarding unreadable cached component");
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(error) = self.store(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "could not cache compiled component");
        }
        // SAFETY: `compiled` was produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }

    /// Writes through a temporary file and a rename so a crash never leaves a torn entry.
    fn store(&self, path: &Path, compiled: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache dir {}", self.dir.display()))?;
        // Unique per process and per write: two threads of one host may compile the same
        // component at once, and a shared temporary name would interleave their bytes.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, compiled).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
