//! The listener: accepts connections and runs each one as a reader and a writer.
//!
//! The reader keeps reading requests while earlier ones are handled (pipelining): every
//! request runs in its own task, and its join handle goes into a bounded queue that the
//! writer drains in order, so responses leave in request order. Requests that change state
//! (Produce, OffsetCommit, CreateTopics, DeleteTopics) additionally run one after another in
//! arrival order, as Kafka does per connection, so a producer's pipelined batches are
//! appended in its sequence order. A frame over `max_request_bytes`, a malformed header or
//! body, or a handler failure closes the connection; nothing a client sends panics the
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backend::Backend;
use crate::codec::{self, FrameError};
use crate::config::KafkaConfig;
use crate::group::{Coordinator, GroupLimits};
use crate::handlers::{self, Ctx, HandleError, Reply};

/// How long [`serve`] waits for open connections after shutdown.
const DRAIN: Duration = Duration::from_secs(10);

fn ms(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// Builds the handler context for `cfg` on a listener bound to `local_port`.
pub fn context(backend: Arc<dyn Backend>, cfg: KafkaConfig, local_port: u16) -> Arc<Ctx> {
    let port = if cfg.advertised_port == 0 {
        local_port
    } else {
        cfg.advertised_port
    };
    let groups = Arc::new(Coordinator::new(GroupLimits {
        session_min: ms(cfg.group_session_min_ms),
        session_max: ms(cfg.group_session_max_ms),
        initial_delay: Duration::from_millis(cfg.group_initial_rebalance_delay_ms),
    }));
    Arc::new(Ctx {
        backend,
        cfg,
        port: i32::from(port),
        groups,
    })
}

/// Serves Kafka clients on `listener` until `shutdown` is cancelled, then waits (at most
/// 10 s) for open connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    cfg: KafkaConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let ctx = context(backend, cfg, local.port());
    tracing::info!(addr = %local, advertised_host = %ctx.cfg.advertised_host,
        advertised_port = ctx.port, "kafka listener started");
    let tracker = TaskTracker::new();
    let acceptor = ctx.cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    {
        let groups = ctx.groups.clone();
        let token = shutdown.clone();
        tracker.spawn(
            async move { groups.run_expiry(token).await }
                .instrument(tracing::info_span!("kafka.group_expiry")),
        );
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let span = tracing::info_span!("kafka.connection", %peer);
                    match &acceptor {
                        None => {
                            tracker.spawn(connection(ctx.clone(), stream, peer, shutdown.clone()).instrument(span));
                        }
                        Some(acceptor) => {
                            let (ctx, acceptor, shutdown) = (ctx.clone(), acceptor.clone(), shutdown.clone());
                            tracker.spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => connection(ctx, tls, peer, shutdown).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
                                    Err(_) => tracing::debug!("tls handshake timed out"),
                                }
                            }.instrument(span));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("kafka connections still open after the drain period");
    }
    tracing::info!("kafka listener stopped");
    Ok(())
}

/// Whether requests of `key` must run in arrival order on their connection.
fn serialized(key: Option<ApiKey>) -> bool {
    matches!(
        key,
        Some(ApiKey::Produce | ApiKey::OffsetCommit | ApiKey::CreateTopics | ApiKey::DeleteTopics)
    )
}

type Pending = JoinHandle<Result<Reply, HandleError>>;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Runs one connection (plain TCP or TLS) until the peer closes it, it misbehaves, or
/// shutdown. With SASL on, nothing but ApiVersions is served before it authenticates (see
/// [`crate::sasl`]).
pub async fn connection<S>(ctx: Arc<Ctx>, stream: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    tracing::debug!(%peer, "connection opened");
    let (mut rd, wr) = tokio::io::split(stream);
    let mut sasl = crate::sasl::State::default();
    let closing = shutdown.child_token();
    let (tx, rx) = mpsc::channel::<Pending>(ctx.cfg.max_in_flight_per_connection.max(1));
    let writer = tokio::spawn(write_loop(wr, rx, closing.clone()).in_current_span());
    let mut chain: Option<oneshot::Receiver<()>> = None;
    loop {
        let frame = tokio::select! {
            _ = closing.cancelled() => break,
            f = codec::read_frame(&mut rd, ctx.cfg.max_request_bytes) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e @ FrameError::TooLarge { .. }) => {
                tracing::info!(error = %e, "closing connection");
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "closing connection");
                break;
            }
        };
        let mut req = match codec::parse_request(frame) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "closing connection");
                break;
            }
        };
        req.client_host = format!("/{}", peer.ip());
        if let Some(auth) = &ctx.cfg.sasl {
            req.read_only = sasl.read_only();
            use crate::sasl::Gate;
            let (reply, close) = match crate::sasl::gate(&mut sasl, auth, &req) {
                Ok(Gate::Pass) => (None, false),
                Ok(Gate::Reply(r)) => (Some(Ok(r)), false),
                Ok(Gate::ReplyAndClose(r)) => (Some(Ok(r)), true),
                Ok(Gate::Close) => break,
                Err(e) => (Some(Err(e)), true),
            };
            if let Some(reply) = reply {
                if tx.send(tokio::spawn(async move { reply })).await.is_err() || close {
                    break;
                }
                continue;
            }
        }
        let (prev, done) = if serialized(req.key()) {
            let (done_tx, done_rx) = oneshot::channel::<()>();
            (chain.replace(done_rx), Some(done_tx))
        } else {
            (None, None)
        };
        let ctx = ctx.clone();
        let task = tokio::spawn(
            async move {
                if let Some(prev) = prev {
                    // Resolves when the previous serialized request finished (its sender
                    // is dropped), whatever its outcome.
                    let _ = prev.await;
                }
                // A produce releases the next serialized request once its batches are
                // appended (before it waits for durability); the rest once they finish.
                handlers::handle(&ctx, req, done).await
            }
            .in_current_span(),
        );
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    // Let the writer send what was already asked unless the server is stopping.
    tokio::select! {
        _ = writer => {}
        _ = shutdown.cancelled() => {}
    }
    tracing::debug!(%peer, "connection closed");
}

/// Writes replies in request order; closes the connection (via `closing`) on a write
/// error, a malformed request or a failed handler.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Pending>,
    closing: CancellationToken,
) {
    let _guard = closing.clone().drop_guard();
    while let Some(task) = rx.recv().await {
        let reply = tokio::select! {
            r = task => r,
            _ = closing.cancelled() => return,
        };
        match reply {
            Ok(Ok(Some(bytes))) => {
                if let Err(e) = wr.write_all(&bytes).await {
                    tracing::debug!(error = %e, "write response failed");
                    return;
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(
                e @ (HandleError::Malformed { .. } | HandleError::UnacknowledgedFailure(_)),
            )) => {
                tracing::info!(error = %e, "closing connection");
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "failed to answer request");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "request handler panicked");
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}
