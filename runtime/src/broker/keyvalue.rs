//! Functions' key-value buckets in Redis: one hash per bucket, `eddy:kv:<scope>:<name>`
//! (`eddy:kv:fn:payment:default`, `eddy:kv:shared:inventory`). One bucket is one key, so it
//! lives in one Redis Cluster slot and every operation on it is a single command or script:
//! atomic, and harmless if the invocation's deadline drops it half-way.

use std::sync::LazyLock;

use crate::broker::Conn;

use crate::engine::{
    BucketId, KeyValue, KvError, MAX_BATCH_READ_BYTES, not_a_number, overflows, too_much_to_read,
};

/// The Redis key of a bucket.
pub fn bucket_key(bucket: &BucketId) -> String {
    format!("eddy:kv:{}", bucket.as_str())
}

/// Fields returned per `HSCAN` round, a hint to Redis.
const SCAN_COUNT: usize = 100;

/// KEYS: the bucket. ARGV: field, 1 if a value was read (else 0), the value read, the new value.
/// Sets the field only if it still holds what was read; 1 if it did.
static SWAP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local now = redis.call('HGET', KEYS[1], ARGV[1])
        if ARGV[2] == '1' then
            if now ~= ARGV[3] then return 0 end
        elseif now then
            return 0
        end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
        return 1
        ",
    )
});

/// KEYS: the bucket. ARGV: the most value bytes to return, then the fields. Their values
/// (`HMGET`) if they come to no more than that, else their size in bytes: the check and the
/// read are one step, so nothing larger than the cap is ever sent to the host.
static GET_MANY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local total = 0
        for i = 2, #ARGV do
            total = total + redis.call('HSTRLEN', KEYS[1], ARGV[i])
        end
        if total > tonumber(ARGV[1]) then return total end
        return redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
        ",
    )
});

/// Buckets in the hosts' Redis.
pub struct RedisKeyValue {
    conn: Conn,
}

impl RedisKeyValue {
    /// Buckets over `broker`'s shared connection.
    pub fn new(broker: &super::Broker) -> Self {
        Self::over(broker.shared())
    }

    /// Buckets over `conn`.
    pub fn over(conn: Conn) -> Self {
        Self { conn }
    }
}

fn unavailable(error: redis::RedisError) -> KvError {
    KvError::Unavailable(format!("redis: {error}"))
}

#[async_trait::async_trait]
impl KeyValue for RedisKeyValue {
    async fn get(&self, bucket: &BucketId, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        redis::cmd("HGET")
            .arg(bucket_key(bucket))
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn set(&self, bucket: &BucketId, key: &str, value: &[u8]) -> Result<(), KvError> {
        redis::cmd("HSET")
            .arg(bucket_key(bucket))
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, bucket: &BucketId, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        redis::cmd("HDEL")
            .arg(bucket_key(bucket))
            .arg(keys)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn exists(&self, bucket: &BucketId, key: &str) -> Result<bool, KvError> {
        redis::cmd("HEXISTS")
            .arg(bucket_key(bucket))
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn keys(
        &self,
        bucket: &BucketId,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let cursor = cursor.unwrap_or_else(|| "0".to_owned());
        if cursor.parse::<u64>().is_err() {
            return Err(KvError::Invalid(format!(
                "cursor {cursor:?}: expected one a list-keys call returned"
            )));
        }
        let (next, pairs): (String, Vec<(String, redis::Value)>) = redis::cmd("HSCAN")
            .arg(bucket_key(bucket))
            .arg(&cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let keys = pairs.into_iter().map(|(key, _)| key).collect();
        Ok((keys, (next != "0").then_some(next)))
    }

    async fn increment(&self, bucket: &BucketId, key: &str, delta: i64) -> Result<i64, KvError> {
        // HINCRBY is atomic and refuses a value that is not a decimal integer.
        let incremented = redis::cmd("HINCRBY")
            .arg(bucket_key(bucket))
            .arg(key)
            .arg(delta)
            .query_async(&mut self.conn.clone())
            .await;
        // Redis refuses both with the generic `ERR` code; only the detail tells them apart. It
        // is Redis's own wording, read in this one place, before anything else sees the error.
        let detail = |e: &redis::RedisError| e.detail().unwrap_or_default().to_owned();
        match incremented {
            Ok(n) => Ok(n),
            Err(error) if detail(&error).contains("not an integer") => Err(not_a_number(key)),
            Err(error) if detail(&error).contains("overflow") => Err(overflows(key)),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn swap(
        &self,
        bucket: &BucketId,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        let mut invocation = SWAP.prepare_invoke();
        invocation
            .key(bucket_key(bucket))
            .arg(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value);
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(swapped == 1)
    }

    async fn get_many(
        &self,
        bucket: &BucketId,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = GET_MANY.prepare_invoke();
        invocation.key(bucket_key(bucket)).arg(MAX_BATCH_READ_BYTES);
        for key in keys {
            invocation.arg(key);
        }
        let answer: redis::Value = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if let redis::Value::Int(total) = answer {
            return Err(too_much_to_read(total as u64));
        }
        redis::from_redis_value(answer).map_err(|e| KvError::Unavailable(format!("redis: {e}")))
    }

    async fn set_many(
        &self,
        bucket: &BucketId,
        pairs: &[(String, Vec<u8>)],
    ) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("HSET");
        command.arg(bucket_key(bucket));
        for (key, value) in pairs {
            command.arg(key).arg(value.as_slice());
        }
        command
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
