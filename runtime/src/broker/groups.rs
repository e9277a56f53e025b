//! What a consumer group has left to do: its lag (entries not yet read) and pending count,
//! as `eddy status`, the page and `eddy_consumer_lag` report them, and as an autoscaler reads
//! them.
//!
//! Redis's own `lag` (from `XINFO GROUPS`) rests on an entries-read counter that can drift:
//! after a crash and an AOF reload it was seen at 1852 for a group whose last-delivered id was
//! the stream's last entry, and it is nil after some trims and `XGROUP SETID`s. A figure that
//! says work is waiting when none is keeps an autoscaler scaled up forever, and one that says
//! none is waiting when some is lets it scale down. So: a group whose last-delivered id is the
//! stream's last id has lag 0, whatever Redis says; a lag Redis does not give, one larger than
//! the stream, or a 0 for a group not at the stream's end, is counted from the entries after
//! the last-delivered id, at most [`MAX_COUNTED_LAG`] of them (their bodies come along, so the
//! count stays small: it is read at every scrape), and marked estimated; a longer lag reads as
//! that bound, enough for a scaler to act on.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use serde::Serialize;

/// Entries counted at most when Redis's lag cannot be trusted; a longer lag reads as this.
pub const MAX_COUNTED_LAG: u64 = 100;

/// A group's work left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupState {
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Whether `lag` was counted from ids because Redis's figure was missing or impossible.
    pub estimated: bool,
}

/// What Redis says, and what the lag decision needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The group's last-delivered id.
    pub last_delivered: String,
    /// The stream's last id (`last-generated-id`).
    pub last_id: String,
    /// The stream's length.
    pub length: u64,
    /// Redis's lag, if it gives one.
    pub lag: Option<u64>,
}

/// How the lag is to be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// This value, from Redis or known by the ids.
    Known(u64),
    /// Count the entries after the last-delivered id.
    Count,
}

/// Decides the lag from what Redis reported, without I/O.
pub fn decide(reported: &Reported) -> Lag {
    if reported.last_delivered == reported.last_id {
        return Lag::Known(0);
    }
    match reported.lag {
        // Not at the end, yet nothing to read: the counter drifted past the truth (or the
        // entries after the group were deleted; counting tells which).
        Some(0) => Lag::Count,
        Some(lag) if lag <= reported.length => Lag::Known(lag),
        _ => Lag::Count,
    }
}

/// The state of `group` on `stream`; `None` when the stream or the group does not exist.
pub async fn state<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> redis::RedisResult<Option<GroupState>> {
    let groups: Vec<HashMap<String, redis::Value>> = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
    {
        Ok(groups) => groups,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let text = |g: &HashMap<String, redis::Value>, name: &str| {
        g.get(name)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
    };
    let Some(g) = groups
        .iter()
        .find(|g| text(g, "name").as_deref() == Some(group))
    else {
        return Ok(None);
    };
    let number = |name: &str| {
        g.get(name)
            .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
    };
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await?;
    let stream_text = |name: &str| {
        info.get(name)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .unwrap_or_default()
    };
    let last_delivered = text(g, "last-delivered-id").unwrap_or_default();
    let reported = Reported {
        last_delivered: last_delivered.clone(),
        last_id: stream_text("last-generated-id"),
        length: info
            .get("length")
            .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
            .unwrap_or(0),
        lag: number("lag"),
    };
    let (lag, estimated) = match decide(&reported) {
        Lag::Known(lag) => (lag, false),
        Lag::Count => {
            let after: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(format!("({last_delivered}"))
                .arg("+")
                .arg("COUNT")
                .arg(MAX_COUNTED_LAG)
                .query_async(conn)
                .await?;
            (after.len() as u64, true)
        }
    };
    Ok(Some(GroupState {
        lag,
        pending: number("pending").unwrap_or(0),
        estimated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(last_delivered: &str, last_id: &str, length: u64, lag: Option<u64>) -> Reported {
        Reported {
            last_delivered: last_delivered.into(),
            last_id: last_id.into(),
            length,
            lag,
        }
    }

    #[test]
    fn a_group_at_the_end_has_no_lag_whatever_redis_says() {
        assert_eq!(
            decide(&reported("5-0", "5-0", 100, Some(1852))),
            Lag::Known(0)
        );
        assert_eq!(decide(&reported("5-0", "5-0", 100, None)), Lag::Known(0));
    }

    #[test]
    fn a_missing_or_impossible_lag_is_counted() {
        assert_eq!(decide(&reported("4-0", "5-0", 100, None)), Lag::Count);
        assert_eq!(decide(&reported("4-0", "5-0", 100, Some(101))), Lag::Count);
        assert_eq!(decide(&reported("4-0", "5-0", 100, Some(3))), Lag::Known(3));
        assert_eq!(decide(&reported("4-0", "5-0", 100, Some(0))), Lag::Count);
    }
}
