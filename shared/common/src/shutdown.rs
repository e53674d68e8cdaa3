//! Graceful shutdown: one CancellationToken cancelled on SIGINT or SIGTERM, a TaskTracker for
//! the work that must finish, and a bounded wait for it.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// Waits for tracked work after `tracker.close()`; `false` if it did not finish in time.
pub async fn drain(tracker: &TaskTracker, timeout: Duration) -> bool {
    tracker.close();
    let done = tokio::time::timeout(timeout, tracker.wait()).await.is_ok();
    if !done {
        tracing::warn!(
            timeout_secs = timeout.as_secs(),
            "shutdown timed out with work in flight"
        );
    }
    done
}

/// Runs `work` to completion, but once `cancel` fires gives it at most `timeout` more;
/// `None` when it had to be abandoned.
pub async fn bounded<T>(
    work: impl std::future::Future<Output = T>,
    cancel: &CancellationToken,
    timeout: Duration,
) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return Some(out),
        _ = cancel.cancelled() => {}
    }
    let out = tokio::time::timeout(timeout, work).await.ok();
    if out.is_none() {
        tracing::warn!(
            timeout_secs = timeout.as_secs(),
            "shutdown timed out with work in flight"
        );
    }
    out
}

/// The whole `main` of a service: `.env`, configuration, telemetry, signal handling, and
/// `run` bounded by the shutdown timeout once a signal arrives.
pub async fn service_main<F, Fut, E>(service: &'static str, run: F) -> Result<(), E>
where
    F: FnOnce(crate::Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: From<crate::config::ConfigError>,
{
    dotenvy::dotenv().ok();
    let config = crate::Config::load()?;
    let _telemetry = crate::telemetry::init(service, &config);
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let timeout = config.shutdown_timeout();
    bounded(run(config, cancel.clone()), &cancel, timeout)
        .await
        .unwrap_or(Ok(()))
}
