//! The accept loop: bounded connection count, orderly shutdown, and no clients while the
//! node is cut off from its cluster.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use super::connection::{run_connection, ConnectionLimits};
use crate::handlers::Dispatcher;

/// Bounds of the listener, from the node configuration.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub max_request_bytes: usize,
    pub idle_timeout: Duration,
    pub request_read_timeout: Duration,
    pub max_inflight_requests: usize,
}

/// Accepts connections until `shutdown` turns true, then waits for every connection to
/// finish the requests it has already read. While `serving` is false (a node cut off from
/// its cluster) new connections are closed at once and open ones are closed.
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    serving: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let conn_limits = ConnectionLimits {
        max_request_bytes: limits.max_request_bytes,
        idle_timeout: limits.idle_timeout,
        request_read_timeout: limits.request_read_timeout,
        max_inflight_requests: limits.max_inflight_requests,
    };
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !*serving.borrow() {
                    metrics::counter!("runnel_server_connections_refused_cut_off_total").increment(1);
                    drop(stream);
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connection");
                    metrics::counter!("runnel_server_connections_rejected_total").increment(1);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let dispatcher = dispatcher.clone();
                let shutdown = shutdown.clone();
                let serving = serving.clone();
                let limits = conn_limits.clone();
                let span = tracing::info_span!("conn", %peer);
                tasks.spawn(async move {
                    metrics::gauge!("runnel_server_connections").increment(1.0);
                    run_connection(stream, dispatcher, limits, shutdown, serving).await;
                    metrics::gauge!("runnel_server_connections").decrement(1.0);
                    drop(permit);
                }.instrument(span));
                // Reap finished connection tasks so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    info!(open = tasks.len(), "listener closed; waiting for connections to finish in-flight requests");
    while tasks.join_next().await.is_some() {}
}
