//! Following something that may fail (the store's watch, Docker's events, a
//! listener's accepts): when it fails or ends, it is followed again after a
//! pause, until stopped.

use std::fmt::Display;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Runs `once` until `stop`, again after `pause` each time it ends; when
/// it fails, logs `failed` with the error.
pub async fn until_stopped<F, E>(stop: &CancellationToken, pause: Duration, failed: &str, mut once: impl FnMut() -> F)
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    loop {
        let followed = tokio::select! {
            followed = once() => followed,
            () = stop.cancelled() => return,
        };
        if let Err(err) = followed {
            warn!(error = %err, "{failed}");
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How long a listener waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Logs a failed accept on `listener` and pauses before the next: out of
/// file descriptors, say, accepting again at once would only spin.
pub async fn accept_failed(listener: &str, err: &std::io::Error) {
    warn!(error = %err, "{listener}: accept failed");
    tokio::time::sleep(ACCEPT_PAUSE).await;
}
