//! Every limit the engine enforces, with its named default, in one place.
//!
//! [`Limits`] applies per function (its manifest or `eddy invoke` flags may lower or raise each
//! value); [`EngineConfig`] applies to the whole host (the instance pool is sized once, at start).
//! Nothing else in the engine holds a literal limit.

use std::path::PathBuf;
use std::time::Duration;

/// Default memory one instance may grow to: 64 MiB. Beyond it a `memory.grow` fails (a Rust
/// guest then aborts with an allocation failure, which is reported as the memory limit).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// Default wall time one invocation may take: 30 s. Beyond it the guest is interrupted at its
/// next epoch check and the invocation fails with a timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on captured output per invocation (stdout, stderr and log lines together):
/// 64 KiB. Output beyond it is dropped and counted, never an error for the guest.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;

/// Default number of instances alive at once on a host, across all functions: 256. The pool
/// reserves address space (not memory) for this many up front.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Largest memory limit a function may ask for: 4 GiB, the most a 32-bit memory can address.
pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// How often the engine's epoch advances: 5 ms. Timeouts are enforced to this granularity; a
/// shorter tick costs a little more host CPU.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each pooled memory kept mapped between instances: 4 MiB. Within it, wasmtime resets
/// only the pages the instance dirtied (found with Linux's PAGEMAP_SCAN) instead of unmapping
/// them, so the next instance neither pays `madvise` nor page faults. Measured on the echo
/// benchmark with a 1 MiB guest stack: 1 MiB 83 µs, 4 MiB 56 µs, 64 MiB 51 µs per event.
/// 4 MiB bounds the resident cost of a full pool (256 slots) to 1 GiB.
pub const DEFAULT_KEEP_RESIDENT_BYTES: usize = 4 * 1024 * 1024;

/// Most memories a single component may define (Rust guests use one; other languages more).
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;

/// Most core instances inside one component (bigger toolchain outputs nest several).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// Limits of one function's invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory one instance may grow to, in bytes ([`DEFAULT_MEMORY_BYTES`]).
    pub memory_bytes: u64,
    /// Wall time of one invocation ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Captured stdout, stderr and log bytes kept per invocation ([`DEFAULT_OUTPUT_BYTES`]).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

impl Limits {
    /// Checks each limit is usable, naming the field and the accepted range when not.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(format!(
                "memory limit {} is out of range: expected more than 0 and at most {}",
                self.memory_bytes, MAX_MEMORY_BYTES
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be greater than 0".to_owned());
        }
        Ok(())
    }

    /// The epoch deadline, in ticks of [`EPOCH_TICK`], that enforces `timeout` (rounded up).
    pub fn timeout_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        let ticks = self.timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// Host-wide engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances alive at once across all functions ([`DEFAULT_MAX_INSTANCES`]).
    pub max_instances: u32,
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of each pooled memory kept resident between instances
    /// ([`DEFAULT_KEEP_RESIDENT_BYTES`]).
    pub keep_resident_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            cache_dir: default_cache_dir(),
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT_BYTES,
        }
    }
}

/// The default compiled-component cache: `$XDG_CACHE_HOME/eddy/components`, else
/// `$HOME/.cache/eddy/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("eddy").join("components"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_ticks_round_up_and_never_reach_zero() {
        let limits = |timeout| Limits {
            timeout,
            ..Limits::default()
        };
        assert_eq!(limits(Duration::from_millis(5)).timeout_ticks(), 1);
        assert_eq!(limits(Duration::from_millis(6)).timeout_ticks(), 2);
        assert_eq!(limits(Duration::from_nanos(1)).timeout_ticks(), 1);
        assert_eq!(Limits::default().timeout_ticks(), 6000);
    }

    #[test]
    fn validate_names_the_bad_limit() {
        let zero_memory = Limits {
            memory_bytes: 0,
            ..Limits::default()
        };
        assert!(
            zero_memory
                .validate()
                .unwrap_err()
                .contains("memory limit 0")
        );
        let zero_timeout = Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(zero_timeout.validate().unwrap_err().contains("timeout"));
        assert!(Limits::default().validate().is_ok());
    }
}
