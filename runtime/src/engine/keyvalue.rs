//! Key-value state: what a function's `wasi:keyvalue` calls reach.
//!
//! A bucket a function opens by name is its own (`fn:<function>:<name>`) unless its manifest
//! lists the name under `[keyvalue] shared` (`shared:<name>`), so a function can never open
//! another function's private bucket: it has no name for it. The engine does not know where
//! buckets live; it calls a [`KeyValue`] store given with each invocation: a host's keeps them
//! in Redis (one hash per bucket, so one bucket is one key and one Cluster slot), `eddy invoke`
//! keeps them in memory ([`MemoryKeyValue`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value accepted: 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys one batch call may name.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Most buckets one invocation may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;
/// Most compare-and-swap handles one invocation may hold at once: 16. Each keeps a copy of the
/// value it read (up to [`MAX_VALUE_BYTES`]) in host memory.
pub const MAX_OPEN_CAS: usize = 16;
/// Most value bytes one `get-many` may return: 16 MiB. A larger answer is refused before it is
/// read, so one call cannot pull a whole bucket of large values into host memory.
pub const MAX_BATCH_READ_BYTES: u64 = 16 * 1024 * 1024;
/// Keys returned per `list-keys` page, at most.
pub const LIST_PAGE: usize = 100;

/// Where a bucket lives: its scope and name, as a store addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId(String);

impl BucketId {
    /// The bucket `name` as `function` opens it: shared if its manifest shares it, else its own.
    pub fn of(function: &str, name: &str, shared: &[String]) -> Self {
        if shared.iter().any(|s| s == name) {
            Self::shared(name)
        } else {
            Self(format!("fn:{function}:{name}"))
        }
    }

    /// The shared bucket `name`.
    pub fn shared(name: &str) -> Self {
        Self(format!("shared:{name}"))
    }

    /// Function `function`'s private bucket `name`.
    pub fn private(function: &str, name: &str) -> Self {
        Self(format!("fn:{function}:{name}"))
    }

    /// The scope and name, e.g. `shared:inventory` or `fn:payment:default`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// An argument is out of bounds (a key or value too large, too many keys); says which.
    #[error("{0}")]
    Invalid(String),
    /// The value is not what the operation needs (an increment of a non-number).
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached now.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Checks a key.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "key of {} bytes: expected 1 to {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value.
pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Invalid(format!(
            "value of {} bytes: expected at most {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// Checks the keys of a batch call.
pub fn check_keys<'a>(keys: impl ExactSizeIterator<Item = &'a str>) -> Result<(), KvError> {
    if keys.len() > MAX_BATCH_KEYS {
        return Err(KvError::Invalid(format!(
            "{} keys in one call: expected at most {MAX_BATCH_KEYS}",
            keys.len()
        )));
    }
    for key in keys {
        check_key(key)?;
    }
    Ok(())
}

/// Where buckets live. Calls are awaited inside a running invocation, so its deadline can drop
/// any of them: each must be one atomic step.
#[async_trait::async_trait]
pub trait KeyValue: Send + Sync {
    /// The value of `key`.
    async fn get(&self, bucket: &BucketId, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` to `value`.
    async fn set(&self, bucket: &BucketId, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `keys`.
    async fn delete(&self, bucket: &BucketId, keys: &[String]) -> Result<(), KvError>;
    /// Whether `key` has a value.
    async fn exists(&self, bucket: &BucketId, key: &str) -> Result<bool, KvError>;
    /// A page of keys from `cursor`, and where the next page starts.
    async fn keys(
        &self,
        bucket: &BucketId,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError>;
    /// Adds `delta` to the number at `key` (0 if absent); the new number.
    async fn increment(&self, bucket: &BucketId, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `key` to `value` if its value is still `expected` (`None`: absent); whether it did.
    async fn swap(
        &self,
        bucket: &BucketId,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError>;
    /// The values of `keys`, in order.
    async fn get_many(
        &self,
        bucket: &BucketId,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// Sets every pair.
    async fn set_many(&self, bucket: &BucketId, pairs: &[(String, Vec<u8>)])
    -> Result<(), KvError>;
}

/// Buckets in memory, for `eddy invoke` and tests.
#[derive(Debug, Default)]
pub struct MemoryKeyValue {
    buckets: Mutex<HashMap<BucketId, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKeyValue {
    fn with<T>(&self, bucket: &BucketId, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        f(buckets.entry(bucket.clone()).or_default())
    }

    /// Sets `key` of `bucket` before an invocation (`eddy invoke --kv`).
    pub fn seed(&self, bucket: &BucketId, key: &str, value: &[u8]) {
        self.with(bucket, |b| b.insert(key.to_owned(), value.to_vec()));
    }

    /// Every pair of `bucket`, to show after an invocation.
    pub fn contents(&self, bucket: &BucketId) -> BTreeMap<String, Vec<u8>> {
        self.with(bucket, |b| b.clone())
    }

    /// The buckets that hold anything.
    pub fn buckets(&self) -> Vec<BucketId> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The number a stored value holds, as `increment` reads it: decimal text exactly as Redis's
/// `HINCRBY` accepts it (an optional `-`, digits, no leading zero, space or `+`), so
/// `eddy invoke` agrees with a host.
pub fn parse_counter(key: &str, value: Option<&[u8]>) -> Result<i64, KvError> {
    let Some(value) = value else { return Ok(0) };
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && value != b"-0";
    std::str::from_utf8(value)
        .ok()
        .filter(|_| canonical)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| not_a_number(key))
}

/// The error of an increment that would pass the range of a 64-bit integer.
pub fn overflows(key: &str) -> KvError {
    KvError::Conflict(format!("incrementing {key:?} overflows"))
}

/// The error of a `get-many` whose values come to `total` bytes, over
/// [`MAX_BATCH_READ_BYTES`].
pub fn too_much_to_read(total: u64) -> KvError {
    KvError::Invalid(format!(
        "these values come to {total} bytes, more than one get-many returns \
         ({MAX_BATCH_READ_BYTES}): ask for fewer keys at once"
    ))
}

/// The error of an increment of a value that is not a number.
pub fn not_a_number(key: &str) -> KvError {
    KvError::Conflict(format!(
        "the value of key {key:?} is not a number: increment needs a decimal integer"
    ))
}

#[async_trait::async_trait]
impl KeyValue for MemoryKeyValue {
    async fn get(&self, bucket: &BucketId, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with(bucket, |b| b.get(key).cloned()))
    }

    async fn set(&self, bucket: &BucketId, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.with(bucket, |b| b.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    async fn delete(&self, bucket: &BucketId, keys: &[String]) -> Result<(), KvError> {
        self.with(bucket, |b| keys.iter().for_each(|k| drop(b.remove(k))));
        Ok(())
    }

    async fn exists(&self, bucket: &BucketId, key: &str) -> Result<bool, KvError> {
        Ok(self.with(bucket, |b| b.contains_key(key)))
    }

    async fn keys(
        &self,
        bucket: &BucketId,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        Ok(self.with(bucket, |b| {
            let start = match &cursor {
                Some(after) => std::ops::Bound::Excluded(after),
                None => std::ops::Bound::Unbounded,
            };
            let mut page: Vec<String> = b
                .range::<String, _>((start, std::ops::Bound::Unbounded))
                .map(|(k, _)| k.clone())
                .take(LIST_PAGE + 1)
                .collect();
            let next = (page.len() > LIST_PAGE).then(|| {
                page.truncate(LIST_PAGE);
                page.last().cloned().unwrap_or_default()
            });
            (page, next)
        }))
    }

    async fn increment(&self, bucket: &BucketId, key: &str, delta: i64) -> Result<i64, KvError> {
        self.with(bucket, |b| {
            let now = parse_counter(key, b.get(key).map(Vec::as_slice))?
                .checked_add(delta)
                .ok_or_else(|| overflows(key))?;
            b.insert(key.to_owned(), now.to_string().into_bytes());
            Ok(now)
        })
    }

    async fn swap(
        &self,
        bucket: &BucketId,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        Ok(self.with(bucket, |b| {
            if b.get(key).map(Vec::as_slice) != expected {
                return false;
            }
            b.insert(key.to_owned(), value.to_vec());
            true
        }))
    }

    async fn get_many(
        &self,
        bucket: &BucketId,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.with(bucket, |b| {
            let total: usize = keys.iter().filter_map(|k| b.get(k)).map(Vec::len).sum();
            if total as u64 > MAX_BATCH_READ_BYTES {
                return Err(too_much_to_read(total as u64));
            }
            Ok(keys.iter().map(|k| b.get(k).cloned()).collect())
        })
    }

    async fn set_many(
        &self,
        bucket: &BucketId,
        pairs: &[(String, Vec<u8>)],
    ) -> Result<(), KvError> {
        self.with(bucket, |b| {
            for (k, v) in pairs {
                b.insert(k.clone(), v.clone());
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_private_unless_shared() {
        let shared = vec!["inventory".to_owned()];
        assert_eq!(
            BucketId::of("payment", "inventory", &shared).as_str(),
            "shared:inventory"
        );
        assert_eq!(
            BucketId::of("payment", "default", &shared).as_str(),
            "fn:payment:default"
        );
        assert_ne!(
            BucketId::of("a", "default", &[]),
            BucketId::of("b", "default", &[])
        );
    }

    #[test]
    fn counters_parse_as_redis_reads_them() {
        for good in [
            "0",
            "5",
            "-5",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(parse_counter("k", Some(good.as_bytes())).is_ok(), "{good}");
        }
        for bad in [
            " 5",
            "5 ",
            "+5",
            "05",
            "-0",
            "-",
            "",
            "1e3",
            "9223372036854775808",
        ] {
            assert!(parse_counter("k", Some(bad.as_bytes())).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn memory_buckets_count_swap_and_page() {
        let store = MemoryKeyValue::default();
        let bucket = BucketId::shared("stock");
        assert_eq!(store.increment(&bucket, "sku", 5).await.unwrap(), 5);
        assert_eq!(store.increment(&bucket, "sku", -2).await.unwrap(), 3);
        assert!(!store.swap(&bucket, "sku", Some(b"4"), b"0").await.unwrap());
        assert!(store.swap(&bucket, "sku", Some(b"3"), b"0").await.unwrap());
        assert!(store.swap(&bucket, "new", None, b"x").await.unwrap());
        store.set(&bucket, "word", b"abc").await.unwrap();
        assert!(matches!(
            store.increment(&bucket, "word", 1).await,
            Err(KvError::Conflict(_))
        ));
        for n in 0..250 {
            store.set(&bucket, &format!("k{n:03}"), b"v").await.unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = store.keys(&bucket, cursor).await.unwrap();
            assert!(page.len() <= LIST_PAGE);
            seen.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 253);
    }

    #[test]
    fn keys_and_values_are_bounded() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
        assert!(check_key("order:1").is_ok());
    }
}
