//! Applying a [`Settlement`] to Redis: one pipeline per batch, whatever it holds (one `XACK`
//! for every done entry, one script call per retry, reschedule, finished retry or dead letter).
//!
//! Every step is idempotent on its own (a schedule or dead letter happens only if its
//! acknowledgement removed a pending entry; a retry's steps check its lease token), so a
//! pipeline whose reply was lost is simply sent again. A pipeline that cannot land before the
//! grace period ends is given up: the events stay pending or leased and are delivered again.
//! Refreshing the leases of a batch still running is one pipeline too.

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::StreamTriggerConfig;
use super::plan::{Delivery, Settlement, Source};
use crate::delivery::{RetryKeys, load_scripts, push_dead_letter_pending};
use crate::triggers::retry_until_ok;

/// KEYS: stream. ARGV: group, consumer, then entry ids. For each id, resets its idle time only
/// if it is still pending for this consumer (1), else touches nothing (0): a refresh must never
/// take an entry back from a host that claimed it.
static REFRESH_IF_MINE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local out = {}
        for i = 3, #ARGV do
            local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
            if #pending == 0 then
                out[#out + 1] = 0
            else
                redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
                out[#out + 1] = 1
            end
        end
        return out
        ",
    )
});

/// Writes settlements and lease refreshes for one stream trigger.
pub(super) struct Settler {
    conn: ConnectionManager,
    keys: RetryKeys,
    stream: String,
    group: String,
    dead_letter: String,
    consumer: std::sync::Arc<str>,
}

impl Settler {
    /// A settler for `config`'s stream and group, as `consumer`.
    pub fn new(
        conn: ConnectionManager,
        config: &StreamTriggerConfig,
        consumer: std::sync::Arc<str>,
    ) -> Self {
        Self {
            conn,
            keys: RetryKeys::new(&config.stream, &config.group),
            stream: config.stream.clone(),
            group: config.group.clone(),
            dead_letter: config.dead_letter.clone(),
            consumer,
        }
    }

    /// The pipeline that writes `settlement`.
    fn pipeline(&self, settlement: &Settlement) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if !settlement.acks.is_empty() {
            pipe.cmd("XACK")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&settlement.acks)
                .ignore();
        }
        for leased in &settlement.finished {
            self.keys.push_finish(&mut pipe, leased);
        }
        for first in &settlement.first_retries {
            self.keys.push_schedule_first(
                &mut pipe,
                &self.stream,
                &self.group,
                &first.entry_id,
                first.due_ms,
                first.attempts,
                &first.record,
            );
        }
        for again in &settlement.reschedules {
            self.keys
                .push_reschedule(&mut pipe, &again.leased, again.due_ms, &again.record);
        }
        for letter in &settlement.dead_letters {
            match &letter.leased {
                None => push_dead_letter_pending(
                    &mut pipe,
                    &self.dead_letter,
                    &letter.fields,
                    &letter.letter,
                ),
                Some(leased) => {
                    self.keys
                        .push_dead_letter(&mut pipe, &self.dead_letter, leased, &letter.letter)
                }
            }
        }
        pipe
    }

    /// Writes `settlement`, retrying until it lands or `abandon` fires.
    pub async fn apply(&self, settlement: &Settlement, abandon: &CancellationToken) {
        if settlement.is_empty() {
            return;
        }
        let pipe = self.pipeline(settlement);
        let _: Option<()> = self.query(&pipe, abandon, "settling a batch").await;
    }

    /// Confirms that this host still holds each of `deliveries` and pushes their leases to
    /// `lease_until_ms` (retries) or resets their idle time (pending entries). One flag per
    /// delivery, in order: false means another host holds it now. `None`: Redis did not answer.
    pub async fn refresh(
        &self,
        deliveries: &[&Delivery],
        lease_until_ms: i64,
    ) -> Option<Vec<bool>> {
        let mut pipe = redis::pipe();
        let pending: Vec<&str> = deliveries
            .iter()
            .filter(|d| d.is_pending())
            .map(|d| d.entry_id.as_str())
            .collect();
        if !pending.is_empty() {
            let mut invocation = REFRESH_IF_MINE.prepare_invoke();
            invocation
                .key(&self.stream)
                .arg(&self.group)
                .arg(&*self.consumer)
                .arg(&pending);
            pipe.invoke_script(&invocation);
        }
        for delivery in deliveries {
            if let Source::Retry(leased) = &delivery.source {
                self.keys
                    .push_extend_lease(&mut pipe, leased, lease_until_ms);
            }
        }
        // A refresh that cannot land now is tried again at the next tick, not retried here.
        let once = CancellationToken::new();
        once.cancel();
        let replies: Vec<redis::Value> = self.query(&pipe, &once, "refreshing leases").await?;
        let mut replies = replies.into_iter();
        let pending_flags: Vec<i64> = if pending.is_empty() {
            Vec::new()
        } else {
            redis::from_redis_value(replies.next()?).ok()?
        };
        let mut pending_flags = pending_flags.into_iter();
        let mut out = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let mine = if delivery.is_pending() {
                pending_flags.next()? == 1
            } else {
                redis::from_redis_value::<i64>(replies.next()?).ok()? == 1
            };
            out.push(mine);
        }
        Some(out)
    }

    /// Sends `pipe` until it lands or `stop` fires; a cancelled `stop` still allows one try.
    /// When Redis forgot the scripts (it restarted, or they were flushed) they are loaded
    /// before the next try: every step is idempotent, so the whole pipeline is sent again.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        stop: &CancellationToken,
        what: &str,
    ) -> Option<T> {
        let conn = self.conn.clone();
        retry_until_ok(stop, what, || {
            let mut conn = conn.clone();
            async move {
                let sent = pipe.query_async::<T>(&mut conn).await;
                if let Err(error) = &sent {
                    crate::broker::counted("settle", error);
                }
                if let Err(error) = &sent
                    && error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                {
                    if let Err(error) = load_scripts(&mut conn).await {
                        tracing::warn!(%error, "loading scripts failed");
                    } else if let Err(error) = REFRESH_IF_MINE.load_async(&mut conn).await {
                        tracing::warn!(%error, "loading scripts failed");
                    }
                }
                sent
            }
        })
        .await
    }
}
