//! The canary judge: while a canary deploy runs, every host compares the canary's failures
//! with the stable version's and ends the canary when it fails more by the margin
//! ([`crate::canary::judge`] is the rule; this is the loop around it).

use tokio_util::sync::CancellationToken;

/// Judges a canary every [`crate::canary::JUDGE_EVERY`] until `stop`: ends it, with the
/// reason, once it fails more than the stable version by the margin. Every host runs one; the
/// first to end it wins.
pub async fn judge_canary(
    mut conn: crate::broker::Conn,
    name: String,
    stable: u32,
    canary: crate::canary::Canary,
    stop: CancellationToken,
) {
    while crate::backoff::sleep_or_cancel(crate::canary::JUDGE_EVERY, &stop).await {
        let counts = async {
            let s = crate::canary::counts(&mut conn, &name, stable, canary.window_s).await?;
            let c =
                crate::canary::counts(&mut conn, &name, canary.version, canary.window_s).await?;
            redis::RedisResult::Ok((s, c))
        };
        let (stable_counts, canary_counts) = match counts.await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(function = %name, %error, "reading canary outcomes failed");
                continue;
            }
        };
        let Some(reason) = crate::canary::judge(&canary, stable_counts, canary_counts) else {
            continue;
        };
        match crate::canary::end(&mut conn, &name, Some(canary.version), &reason).await {
            Ok(Some(_)) => {
                crate::metrics::METRICS.canary_rolled_back(&name);
                tracing::warn!(function = %name, version = canary.version, %reason,
                    "canary rolled back automatically");
                return;
            }
            Ok(None) => return,
            Err(error) => tracing::warn!(function = %name, %error, "ending the canary failed"),
        }
    }
}
