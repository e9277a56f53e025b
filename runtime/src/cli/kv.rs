//! `eddy kv get|set|del|ls BUCKET [KEY]`: look at and fix functions' key-value state. Talks to
//! Redis directly (`--redis`, or the private Redis of a host in `--data-dir`).
//!
//! A bucket is named as functions see it from outside: `NAME` is the shared bucket `NAME`
//! (`[keyvalue] shared` in the manifests that share it), `FUNCTION/NAME` is a function's own.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::broker::RedisKeyValue;
use crate::engine::{BucketId, KeyValue, check_key, check_value};

/// Arguments of `eddy kv`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy kv ls inventory                      # keys of the shared bucket `inventory`\n  \
    eddy kv get inventory book-1\n  \
    eddy kv set inventory book-1 12           # stock for update-inventory\n  \
    eddy kv ls payment/default                # keys of function payment's own bucket\n  \
    eddy kv del payment/default charge:o-1\n\n\
    BUCKET is NAME for a shared bucket, FUNCTION/NAME for a function's own.")]
pub struct KvArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KvCommand,

    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The kv subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Every key of a bucket.
    Ls {
        /// NAME (shared) or FUNCTION/NAME (a function's own).
        bucket: String,
    },
    /// The value of a key.
    Get {
        /// NAME (shared) or FUNCTION/NAME.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Sets a key (as text).
    Set {
        /// NAME (shared) or FUNCTION/NAME.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes a key.
    Del {
        /// NAME (shared) or FUNCTION/NAME.
        bucket: String,
        /// The key.
        key: String,
    },
}

/// The bucket `NAME` or `FUNCTION/NAME` names.
pub fn parse_bucket(text: &str) -> anyhow::Result<BucketId> {
    let check = |what: &str, name: &str| {
        crate::names::identifier(name).map_err(|e| anyhow::anyhow!("bucket {text:?}: {what} {e}"))
    };
    match text.split_once('/') {
        Some((function, name)) => {
            check("function name", function)?;
            check("bucket name", name)?;
            Ok(BucketId::private(function, name))
        }
        None => {
            check("bucket name", text)?;
            Ok(BucketId::shared(text))
        }
    }
}

/// Runs `eddy kv`.
pub fn run(args: KvArgs) -> anyhow::Result<u8> {
    let json = args.redis.output == OutputFormat::Json;
    super::with_redis(args.redis.clone(), |conn| async move {
        let store = RedisKeyValue::over(conn);
        let show = |value: Option<Vec<u8>>| value.map(|v| String::from_utf8_lossy(&v).into_owned());
        match &args.command {
            KvCommand::Ls { bucket } => {
                let id = parse_bucket(bucket)?;
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let (page, next) = store.keys(&id, cursor).await?;
                    keys.extend(page);
                    match next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                keys.sort();
                if json {
                    println!("{}", json!({ "bucket": bucket, "keys": keys }));
                } else if keys.is_empty() {
                    println!("bucket {bucket} is empty");
                } else {
                    keys.iter().for_each(|k| println!("{k}"));
                }
            }
            KvCommand::Get { bucket, key } => {
                let value = show(store.get(&parse_bucket(bucket)?, key).await?);
                if json {
                    println!(
                        "{}",
                        json!({ "bucket": bucket, "key": key, "value": value })
                    );
                } else {
                    match value {
                        Some(value) => println!("{value}"),
                        None => bail!("no key {key:?} in bucket {bucket}"),
                    }
                }
            }
            KvCommand::Set { bucket, key, value } => {
                check_key(key)
                    .and_then(|()| check_value(value.as_bytes()))
                    .with_context(|| format!("bucket {bucket}"))?;
                store
                    .set(&parse_bucket(bucket)?, key, value.as_bytes())
                    .await?;
                if json {
                    println!("{}", json!({ "bucket": bucket, "key": key, "set": true }));
                } else {
                    println!("set {key} in {bucket}");
                }
            }
            KvCommand::Del { bucket, key } => {
                store
                    .delete(&parse_bucket(bucket)?, std::slice::from_ref(key))
                    .await?;
                if json {
                    println!(
                        "{}",
                        json!({ "bucket": bucket, "key": key, "deleted": true })
                    );
                } else {
                    println!("deleted {key} from {bucket}");
                }
            }
        }
        Ok(EXIT_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_named_shared_or_by_function() {
        assert_eq!(
            parse_bucket("inventory").unwrap(),
            BucketId::shared("inventory")
        );
        assert_eq!(
            parse_bucket("payment/default").unwrap(),
            BucketId::private("payment", "default")
        );
        assert!(parse_bucket("Bad").is_err());
        assert!(parse_bucket("a/b/c").is_err());
    }
}
