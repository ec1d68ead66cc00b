//! Graceful shutdown: the first SIGTERM or SIGINT cancels one token; a second one, or SIGQUIT,
//! exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM/SIGINT. Must be called inside a runtime.
pub fn signal_token() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = quit.recv() => {
                    tracing::warn!("SIGQUIT received, exiting now");
                    std::process::exit(131);
                }
            }
            received += 1;
            if received == 1 {
                tracing::info!("shutdown signal received, stopping gracefully");
                cancel.cancel();
            } else {
                tracing::warn!("second shutdown signal received, exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}
