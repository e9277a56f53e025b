//! `eddy kv get|set|del|ls BUCKET [KEY]`: look at and fix functions' key-value state. Talks to
//! Redis directly (`--redis`, or the private Redis of a host in `--data-dir`).
//!
//! A bucket is named as functions see it from outside: `NAME` is the shared bucket `NAME`
//! (`[keyvalue] shared` in the manifests that share it), `FUNCTION/NAME` is a function's own.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use std::io::IsTerminal as _;

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::broker::RedisKeyValue;
use crate::engine::{BucketId, KeyValue, MAX_VALUE_BYTES, check_key, check_value};
use crate::inputs::{read_capped, read_capped_from};
use crate::names::Escaped;

/// Arguments of `eddy kv`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy kv ls inventory                      # keys of the shared bucket `inventory`\n  \
    eddy kv get inventory book-1\n  \
    eddy kv set inventory book-1 12           # stock for update-inventory\n  \
    eddy kv set config rules --file rules.json  # a value from a file (- for stdin)\n  \
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
    /// Sets a key, to VALUE or to the content of --file.
    Set {
        /// NAME (shared) or FUNCTION/NAME.
        bucket: String,
        /// The key.
        key: String,
        /// The value, as text.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file instead (`-` for stdin), up to 1 MiB.
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
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
                    // Keys come from functions: a line break or an escape sequence in one
                    // must not pose as another line or drive the terminal.
                    keys.iter().for_each(|k| println!("{}", Escaped(k)));
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
                        // Escaped on a terminal; as stored when piped into a file or a tool.
                        Some(value) if std::io::stdout().is_terminal() => {
                            println!("{}", Escaped(&value))
                        }
                        Some(value) => println!("{value}"),
                        None => bail!("no key {key:?} in bucket {bucket}"),
                    }
                }
            }
            KvCommand::Set {
                bucket,
                key,
                value,
                file,
            } => {
                let value = match (value, file) {
                    (Some(value), _) => value.clone().into_bytes(),
                    (None, Some(path)) if path.as_os_str() == "-" => {
                        read_capped_from(std::io::stdin(), MAX_VALUE_BYTES as u64)
                            .context("reading the value from stdin")?
                    }
                    (None, Some(path)) => read_capped(path, MAX_VALUE_BYTES as u64)
                        .with_context(|| format!("reading the value from {}", path.display()))?,
                    (None, None) => bail!("give a VALUE or --file PATH"),
                };
                check_key(key)
                    .and_then(|()| check_value(&value))
                    .with_context(|| format!("bucket {bucket}"))?;
                store.set(&parse_bucket(bucket)?, key, &value).await?;
                if json {
                    println!("{}", json!({ "bucket": bucket, "key": key, "set": true }));
                } else {
                    println!("set {key} in {bucket}");
                }
            }
            KvCommand::Del { bucket, key } => {
                let id = parse_bucket(bucket)?;
                if !store.exists(&id, key).await? {
                    bail!("no key {key:?} in bucket {bucket}");
                }
                store.delete(&id, std::slice::from_ref(key)).await?;
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
