//! Following something that may fail (the store's watch, Docker's events):
//! when it fails or ends, it is followed again after a pause, until stopped.

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
