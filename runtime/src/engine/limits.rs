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

/// Default number of events one invocation may publish: 1000. The next `publish` fails with
/// `denied`, naming the limit.
pub const DEFAULT_PUBLISH_COUNT: u32 = 1000;

/// Default bytes of event data one invocation may publish in all: 16 MiB.
pub const DEFAULT_PUBLISH_BYTES: u64 = 16 * 1024 * 1024;

/// Default cap on one outbound HTTP response body: 10 MiB. Past it the guest's read fails with
/// `HTTP-response-body-size`.
pub const DEFAULT_HTTP_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

/// Default number of outbound HTTP requests one invocation may have in flight: 16. Past it
/// `handle` fails with `connection-limit-reached`.
pub const DEFAULT_HTTP_CONCURRENCY: u32 = 16;

/// Default bytes one invocation may write to key-value buckets in all (keys and values of
/// `set`, `set-many` and `swap`): 16 MiB. Past it writes fail, naming the limit, so one event
/// cannot fill the Redis every function shares.
pub const DEFAULT_KV_WRITE_BYTES: u64 = 16 * 1024 * 1024;

/// Most key-value bytes one invocation may be allowed to write: 1 GiB.
pub const MAX_KV_WRITE_BYTES: u64 = 1024 * 1024 * 1024;

/// Most handles one invocation may hold in the host at once: 1,024. Streams, pollables, HTTP
/// requests, responses and header sets, buckets and compare-and-swap handles each take one, and
/// each lives in host memory, outside the guest's memory limit; real guests hold a few dozen.
pub const MAX_HOST_RESOURCES: usize = 1024;

/// Largest header set a guest may build for an outbound request: 32 KiB (more than servers
/// accept). With [`MAX_HOST_RESOURCES`] it bounds what header sets hold in host memory.
pub const MAX_HTTP_FIELDS_BYTES: usize = 32 * 1024;

/// Largest outbound response body a function may be allowed: 256 MiB.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Most outbound requests in flight a function may be allowed: 256.
pub const MAX_HTTP_CONCURRENCY: u32 = 256;

/// Largest data of one published event: 1 MiB, what the HTTP ingress accepts in one request, so
/// a function cannot put into a stream what a producer could not. Fixed, not per function.
pub const MAX_PUBLISHED_EVENT_BYTES: usize = 1024 * 1024;

/// Most bytes of a function's response body the host keeps: 1 MiB; the rest is cut. Bodies
/// are for short answers and error messages, which records and dead letters cut further.
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024 * 1024;

/// Largest component accepted, from a file or an upload: 64 MiB (a JavaScript or Python
/// component is about 20 MB).
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// Default number of instances alive at once on a host, across all functions: 256. The pool
/// reserves address space (not memory) for this many up front.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Pool slots kept for the instantiation check of a component being loaded or deployed, beyond
/// `max_instances`: a deploy never waits for (or fails on) invocations holding the pool.
pub const LOAD_CHECK_INSTANCES: u32 = 2;

/// How long the load-time instantiation check may run (a component's start functions): 10 s.
pub const LOAD_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest memory limit a function may ask for: 4 GiB, the most a 32-bit memory can address.
pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Longest wall-time limit a function may ask for: 15 minutes. Longer work belongs in several
/// events (a saga), not one invocation holding an instance.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Largest output budget a function may ask for: 16 MiB, held in host memory per invocation.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Most events one invocation may be allowed to publish: 100,000.
pub const MAX_PUBLISH_COUNT: u32 = 100_000;

/// Most bytes of event data one invocation may be allowed to publish: 1 GiB.
pub const MAX_PUBLISH_BYTES: u64 = 1024 * 1024 * 1024;

/// Most `once` keys one invocation may claim: 1000. Each is settled in Redis when the
/// invocation ends, so this also bounds that work.
pub const MAX_ONCE_KEYS: usize = 1000;

/// Guest log lines of one invocation echoed into the host's own log: 20. Every line still
/// counts against the output budget and is kept in the invocation's record; beyond this many
/// the host's log says how many more there were, once.
pub const MAX_ECHOED_LOG_LINES: usize = 20;

/// Longest guest log line echoed into the host's log: 1 KiB (cut at a character boundary).
pub const MAX_ECHOED_LOG_BYTES: usize = 1024;

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
    /// Events one invocation may publish ([`DEFAULT_PUBLISH_COUNT`]).
    pub publish_count: u32,
    /// Bytes of event data one invocation may publish in all ([`DEFAULT_PUBLISH_BYTES`]).
    pub publish_bytes: u64,
    /// Bytes of one outbound HTTP response body ([`DEFAULT_HTTP_RESPONSE_BYTES`]).
    pub http_response_bytes: u64,
    /// Outbound HTTP requests in flight per invocation ([`DEFAULT_HTTP_CONCURRENCY`]).
    pub http_concurrency: u32,
    /// Key-value bytes one invocation may write ([`DEFAULT_KV_WRITE_BYTES`]).
    pub kv_write_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            publish_count: DEFAULT_PUBLISH_COUNT,
            publish_bytes: DEFAULT_PUBLISH_BYTES,
            http_response_bytes: DEFAULT_HTTP_RESPONSE_BYTES,
            http_concurrency: DEFAULT_HTTP_CONCURRENCY,
            kv_write_bytes: DEFAULT_KV_WRITE_BYTES,
        }
    }
}

impl Limits {
    /// Checks each limit is within its range (more than zero, at most its ceiling), naming the
    /// limit and the range when not.
    pub fn validate(&self) -> Result<(), String> {
        check_range("memory limit", self.memory_bytes, 1, MAX_MEMORY_BYTES)?;
        check_range(
            "timeout (ms)",
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            1,
            MAX_TIMEOUT.as_millis() as u64,
        )?;
        check_range(
            "output limit",
            self.output_bytes as u64,
            0,
            MAX_OUTPUT_BYTES as u64,
        )?;
        check_range(
            "publish count",
            u64::from(self.publish_count),
            0,
            u64::from(MAX_PUBLISH_COUNT),
        )?;
        check_range("publish bytes", self.publish_bytes, 0, MAX_PUBLISH_BYTES)?;
        check_range(
            "HTTP response bytes",
            self.http_response_bytes,
            1,
            MAX_HTTP_RESPONSE_BYTES,
        )?;
        check_range(
            "key-value write bytes",
            self.kv_write_bytes,
            0,
            MAX_KV_WRITE_BYTES,
        )?;
        check_range(
            "HTTP concurrency",
            u64::from(self.http_concurrency),
            1,
            u64::from(MAX_HTTP_CONCURRENCY),
        )?;
        Ok(())
    }

    /// The epoch deadline, in ticks of [`EPOCH_TICK`], that enforces `timeout` (rounded up).
    pub fn timeout_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        let ticks = self.timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

fn check_range(what: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{what} {value} is out of range: expected at least {min} and at most {max}"
        ))
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
    /// A PEM file of extra certificate authorities outbound HTTPS trusts, beside the usual web
    /// roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Folders whose files functions deployed through the API may name as secrets
    /// (`--secret-dir`); none by default, so a deploy cannot read the host's files.
    pub secret_dirs: Vec<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            cache_dir: default_cache_dir(),
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT_BYTES,
            ca_file: None,
            secret_dirs: Vec::new(),
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

/// The engine's part of a manifest's `[limits]`, as written (the cluster-wide part is the
/// stream triggers': [`crate::triggers::streams::limits::ClusterLimits::from_settings`]).
#[derive(Debug, Clone, Default)]
pub struct LimitsSettings {
    /// `memory`, a size.
    pub memory: Option<String>,
    /// `timeout`, a duration.
    pub timeout: Option<String>,
    /// `output`, a size.
    pub output: Option<String>,
    /// `publish_count`, a count.
    pub publish_count: Option<i64>,
    /// `publish_bytes`, a size.
    pub publish_bytes: Option<String>,
    /// `http_response_bytes`, a size.
    pub http_response_bytes: Option<String>,
    /// `http_concurrency`, a count.
    pub http_concurrency: Option<i64>,
    /// `kv_write_bytes`, a size.
    pub kv_write_bytes: Option<String>,
}

impl Limits {
    /// The limits a `[limits]` section asks for (every one defaulted), or the field at fault.
    pub fn from_settings(raw: &LimitsSettings) -> Result<Limits, crate::settings::FieldError> {
        use crate::settings;
        let mut limits = Limits::default();
        if let Some(memory) = &raw.memory {
            limits.memory_bytes = settings::size_where(
                "limits.memory",
                memory,
                |bytes| bytes > 0 && bytes <= MAX_MEMORY_BYTES,
                "a size from 1 byte to at most 4GiB, e.g. \"64MiB\"",
            )?;
        }
        if let Some(timeout) = &raw.timeout {
            limits.timeout = settings::duration_where(
                "limits.timeout",
                timeout,
                |d| !d.is_zero() && d <= MAX_TIMEOUT,
                "a duration greater than zero and at most 15m, e.g. \"30s\"",
            )?;
        }
        if let Some(output) = &raw.output {
            limits.output_bytes = settings::size_where(
                "limits.output",
                output,
                |bytes| bytes <= MAX_OUTPUT_BYTES as u64,
                "a size of at most 16MiB, e.g. \"64KiB\"",
            )? as usize;
        }
        if let Some(count) = raw.publish_count {
            limits.publish_count = settings::range(
                "limits.publish_count",
                Some(count),
                0,
                0,
                MAX_PUBLISH_COUNT as usize,
            )? as u32;
        }
        if let Some(bytes) = &raw.publish_bytes {
            limits.publish_bytes = settings::size_where(
                "limits.publish_bytes",
                bytes,
                |b| b <= MAX_PUBLISH_BYTES,
                "a size of at most 1GiB, e.g. \"16MiB\"",
            )?;
        }
        if let Some(bytes) = &raw.http_response_bytes {
            limits.http_response_bytes = settings::size_where(
                "limits.http_response_bytes",
                bytes,
                |b| (1..=MAX_HTTP_RESPONSE_BYTES).contains(&b),
                "a size greater than zero and at most 256MiB, e.g. \"10MiB\"",
            )?;
        }
        if let Some(bytes) = &raw.kv_write_bytes {
            limits.kv_write_bytes = settings::size_where(
                "limits.kv_write_bytes",
                bytes,
                |b| b <= MAX_KV_WRITE_BYTES,
                "a size of at most 1GiB, e.g. \"16MiB\"",
            )?;
        }
        if let Some(count) = raw.http_concurrency {
            limits.http_concurrency = settings::range(
                "limits.http_concurrency",
                Some(count),
                0,
                1,
                MAX_HTTP_CONCURRENCY as usize,
            )? as u32;
        }
        Ok(limits)
    }
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
        let endless = Limits {
            timeout: MAX_TIMEOUT + Duration::from_millis(1),
            ..Limits::default()
        };
        assert!(endless.validate().unwrap_err().contains("at most"));
        let greedy = Limits {
            output_bytes: MAX_OUTPUT_BYTES + 1,
            ..Limits::default()
        };
        assert!(greedy.validate().unwrap_err().contains("output limit"));
        assert!(Limits::default().validate().is_ok());
    }
}
