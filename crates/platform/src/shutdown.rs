//! The shutdown signal: SIGTERM (Kubernetes, docker stop) or Ctrl-C.

/// Resolves when the process receives SIGTERM or SIGINT.
///
/// # Panics
/// If the signal handlers cannot be installed, which happens only when the process
/// has no tokio runtime with signal support: a start-up bug, not input.
pub async fn signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.expect("install the SIGINT handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
