//! State that outlives an invocation: key-value buckets over the standard `wasi:keyvalue`.
//!
//! ```no_run
//! use eddy_sdk::{Error, kv::Bucket};
//!
//! fn reserve(sku: &str, quantity: i64) -> Result<bool, Error> {
//!     let stock = Bucket::open("inventory")?;       // shared if the manifest says so
//!     let left = stock.increment(sku, -quantity)?;  // atomic across every host
//!     if left < 0 {
//!         stock.increment(sku, quantity)?;          // not enough: put it back
//!         return Ok(false);
//!     }
//!     Ok(true)
//! }
//! ```
//!
//! A bucket is the function's own unless its manifest lists the name under
//! `[keyvalue] shared`; the host keeps buckets in its Redis. Keys are at most 512 bytes, values
//! at most 1 MiB. Errors come back as [`Error`]s: returned with `?` they fail the invocation
//! (a 500, retried).

use crate::Error;
use crate::bindings::wasi::keyvalue::{atomics, store};

fn failed(what: &str, error: store::Error) -> Error {
    let reason = match error {
        store::Error::NoSuchStore => "no such bucket".to_owned(),
        store::Error::AccessDenied => "access denied".to_owned(),
        store::Error::Other(message) => message,
    };
    Error::new(format!("key-value {what} failed: {reason}"))
}

/// An open bucket.
pub struct Bucket {
    inner: store::Bucket,
}

impl Bucket {
    /// Opens bucket `name` (lowercase letters, digits, `-` and `_`).
    pub fn open(name: &str) -> Result<Self, Error> {
        store::open(name)
            .map(|inner| Self { inner })
            .map_err(|e| failed(&format!("open {name:?}"), e))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key).map_err(|e| failed("get", e))
    }

    /// The value of `key` parsed as JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::new(format!(
                    "the value of {key:?} is not the JSON expected: {e}"
                ))
            }),
        }
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.inner.set(key, value).map_err(|e| failed("set", e))
    }

    /// Sets `key` to `value` as JSON.
    pub fn set_json<T: serde::Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("the value for {key:?} is not serializable: {e}")))?;
        self.set(key, &bytes)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key).map_err(|e| failed("delete", e))
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.inner.exists(key).map_err(|e| failed("exists", e))
    }

    /// Every key, page by page.
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .inner
                .list_keys(cursor.as_deref())
                .map_err(|e| failed("list-keys", e))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the number at `key` (0 if absent) and returns the new number, atomically
    /// however many invocations do it at once.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        atomics::increment(&self.inner, key, delta).map_err(|e| failed("increment", e))
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: absent), atomically; whether it
    /// did. False means another invocation changed it first: read it again and decide.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        let cas = atomics::Cas::new(&self.inner, key).map_err(|e| failed("cas", e))?;
        let current = cas.current().map_err(|e| failed("cas", e))?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(failed("swap", e)),
        }
    }
}
