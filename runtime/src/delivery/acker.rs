//! Batched acknowledgements.
//!
//! Handled entries are queued to one task per stream trigger, which sends them as one `XACK`
//! with many ids: whatever queued up while the previous `XACK` was in flight. Under load the
//! batches grow by themselves; when idle each ack goes out at once, with no timer adding delay.
//! A failed `XACK` is retried with backoff until it succeeds or the host gives up at the end of
//! its grace period; an ack that never lands only means the entry is delivered again later.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most ids sent in one `XACK`.
pub const MAX_ACK_BATCH: usize = 1024;
/// First wait after a failed `XACK`; doubled per failure up to [`MAX_ACK_BACKOFF`].
const ACK_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two tries of the same `XACK`.
const MAX_ACK_BACKOFF: Duration = Duration::from_secs(2);

/// The sending side: queue an entry id to be acknowledged.
pub struct Acker {
    sender: mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

impl Acker {
    /// Starts the ack task for `stream` read through `group`. `abandon` stops retrying a
    /// failing `XACK` (at the end of the shutdown grace period).
    pub fn spawn(
        conn: ConnectionManager,
        stream: String,
        group: String,
        abandon: CancellationToken,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(conn, stream, group, receiver, abandon));
        Self { sender, task }
    }

    /// A handle that queues acks; cheap to clone.
    pub fn handle(&self) -> AckHandle {
        AckHandle(self.sender.clone())
    }

    /// Sends what is queued and stops; returns once the last `XACK` landed or was abandoned.
    pub async fn close(self) {
        drop(self.sender);
        let _ = self.task.await;
    }
}

/// Queues entry ids for acknowledgement.
#[derive(Clone)]
pub struct AckHandle(mpsc::UnboundedSender<String>);

impl AckHandle {
    /// Queues `entry_id`.
    pub fn ack(&self, entry_id: String) {
        // The receiver only goes away after every handle is dropped.
        let _ = self.0.send(entry_id);
    }
}

async fn run(
    mut conn: ConnectionManager,
    stream: String,
    group: String,
    mut receiver: mpsc::UnboundedReceiver<String>,
    abandon: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    while receiver.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        let mut backoff = ACK_BACKOFF;
        loop {
            let result: redis::RedisResult<i64> = redis::cmd("XACK")
                .arg(&stream)
                .arg(&group)
                .arg(&batch)
                .query_async(&mut conn)
                .await;
            match result {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%stream, %group, ids = batch.len(), %error, "XACK failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = abandon.cancelled() => {
                            tracing::warn!(%stream, %group, ids = batch.len(),
                                "giving up on acks at shutdown; the entries stay pending and will be delivered again");
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(MAX_ACK_BACKOFF);
                }
            }
        }
        batch.clear();
    }
}
