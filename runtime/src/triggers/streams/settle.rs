//! Applying a [`Settlement`] to Redis: one pipeline per batch, whatever it holds (one `XACK`
//! for every done entry, one script call per retry, reschedule, finished retry or dead letter).
//!
//! Every step is idempotent on its own (a schedule or dead letter happens only if its
//! acknowledgement removed a pending entry; a retry's steps check its lease token), so a
//! pipeline whose reply was lost is simply sent again. A pipeline that cannot land before the
//! grace period ends is given up: the events stay pending or leased and are delivered again.
//! Refreshing the leases of a batch still running is one pipeline too.

use crate::broker::Conn;
use tokio_util::sync::CancellationToken;

use super::StreamTriggerConfig;
use super::plan::{Delivery, Settlement, Source};
use crate::backoff::retry_until_ok;
use crate::delivery::{RetryKeys, forward_dead_letters, load_scripts, push_dead_letter_pending};

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
    /// The shared connection, or with `--wait-replicas` one of the trigger's own: `WAIT`
    /// blocks the connection it is sent on.
    conn: Conn,
    broker: crate::broker::Broker,
    /// Set while a forwarding round runs, so rounds never pile up.
    forwarding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    keys: RetryKeys,
    /// The ordering keys, on a trigger ordered by key.
    order: Option<super::order::OrderKeys>,
    stream: String,
    group: String,
    dead_letter: String,
    consumer: std::sync::Arc<str>,
}

impl Settler {
    /// A settler for `config`'s stream and group, as `consumer`.
    pub fn new(
        conn: Conn,
        broker: &crate::broker::Broker,
        config: &StreamTriggerConfig,
        consumer: std::sync::Arc<str>,
    ) -> Self {
        Self {
            conn,
            broker: broker.clone(),
            forwarding: Default::default(),
            keys: RetryKeys::new(&config.stream, &config.group),
            order: config
                .ordering
                .as_ref()
                .map(|_| super::order::OrderKeys::new(&config.stream, &config.group)),
            stream: config.stream.to_string(),
            group: config.group.to_string(),
            dead_letter: config.dead_letter.to_string(),
            consumer,
        }
    }

    /// The pipeline that writes `settlement`.
    fn pipeline(&self, settlement: &Settlement) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        // First, while the acknowledgements below have not yet removed the proof that this
        // host holds them: a key goes to its next event only if its head is still this host's.
        if let Some(order) = &self.order
            && !settlement.released.is_empty()
        {
            super::order::push_release(
                &mut pipe,
                &self.stream,
                &self.group,
                &self.consumer,
                order,
                &self.keys,
                super::now_ms(),
                &settlement.released,
            );
        }
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
        let mut pipe = self.pipeline(settlement);
        let waits = self.broker.push_wait(&mut pipe);
        let landed: Option<Vec<redis::Value>> =
            self.query(&pipe, abandon, "settling a batch").await;
        if waits
            && let Some(replies) = &landed
            && let Some(Ok(acked)) = replies.last().map(redis::from_redis_value_ref::<u32>)
            && self
                .broker
                .replicas_to_wait_for()
                .is_some_and(|n| acked < n)
        {
            self.broker.replicas_missing(acked);
        }
        if landed.is_some() && !settlement.dead_letters.is_empty() {
            self.forward_dead_letters();
        }
    }

    /// Takes the letters in this stream's outbox on to their dead-letter streams, in a task of
    /// its own (a dead-letter stream's master that is away must not hold up settles and lease
    /// refreshes), unless a round is running already. One that cannot be forwarded now stays
    /// in the outbox for the next round (of any host).
    pub fn forward_dead_letters(&self) {
        use std::sync::atomic::Ordering;
        if self.forwarding.swap(true, Ordering::AcqRel) {
            return;
        }
        let (mut conn, broker, stream) =
            (self.conn.clone(), self.broker.clone(), self.stream.clone());
        let forwarding = self.forwarding.clone();
        tokio::spawn(async move {
            match forward_dead_letters(&mut conn, &broker, &stream).await {
                Ok(done) if done.held > 0 => {
                    tracing::warn!(%stream, held = done.held, refused = done.refused,
                        last_error = done.last_error.as_deref().unwrap_or("-"),
                        "dead letters held in the outbox; retried on the next round");
                }
                Ok(_) => {}
                Err(error) => {
                    crate::broker::counted("dead_letter", &error);
                    tracing::warn!(%stream, %error, "forwarding dead letters failed; retried on the next round");
                }
            }
            forwarding.store(false, Ordering::Release);
        });
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
        let stream = self.stream.as_str();
        retry_until_ok(stop, what, || {
            let mut conn = conn.clone();
            async move {
                let sent = pipe.query_async::<T>(&mut conn).await;
                if let Err(error) = &sent {
                    crate::broker::counted("settle", error);
                    // Every step is idempotent: a pipeline redirected after a failover or a
                    // slot move is sent again once the client knows the stream's new node.
                    crate::broker::follow_redirect(&mut conn, stream, error).await;
                }
                if let Err(error) = &sent
                    && crate::broker::is_noscript(error)
                {
                    let loaded = async {
                        load_scripts(&mut conn).await?;
                        super::order::load_scripts(&mut conn).await?;
                        REFRESH_IF_MINE.load_async(&mut conn).await.map(drop)
                    };
                    if let Err(error) = loaded.await {
                        tracing::warn!(%error, "loading scripts failed");
                    }
                }
                sent
            }
        })
        .await
    }
}
