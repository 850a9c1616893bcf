//! One client connection: read frames, decode, hand each request to the dispatcher in
//! arrival order, and write the responses back in the same order while later requests are
//! still being processed (pipelining). Produce with acks=0 has no response.
//!
//! Bounds: a frame larger than `max_request_bytes` closes the connection before anything is
//! allocated for it; at most `max_inflight_requests` requests are in progress, after which
//! the connection is not read until responses have gone out (backpressure); a connection
//! with no request for `idle_timeout` is closed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::handlers::{Dispatcher, ResponseFuture};
use crate::protocol::codec::{decode_request, Decoded};

#[derive(Debug, Clone)]
pub(super) struct ConnectionLimits {
    pub max_request_bytes: usize,
    pub idle_timeout: Duration,
    pub max_inflight_requests: usize,
}

/// How reading the next frame ended.
enum ReadOutcome {
    Frame(Bytes),
    Closed,
}

async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<ReadOutcome> {
    let mut len_buf = [0u8; 4];
    // A clean close happens between frames: EOF on the first byte.
    match reader.read(&mut len_buf[..1]).await? {
        0 => return Ok(ReadOutcome::Closed),
        _ => reader.read_exact(&mut len_buf[1..]).await?,
    };
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as usize > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is outside 0..={max}"),
        ));
    }
    let mut buf = BytesMut::zeroed(len as usize);
    reader.read_exact(&mut buf).await?;
    Ok(ReadOutcome::Frame(buf.freeze()))
}

pub(super) async fn run_connection(
    stream: TcpStream,
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    // Kafka reports a member's host as "/<ip>".
    let client_host = stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default();
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<ResponseFuture>(limits.max_inflight_requests);
    let writer_task = tokio::spawn(write_responses(writer, rx, limits.max_inflight_requests));
    debug!("connection open");
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = tokio::time::timeout(limits.idle_timeout, read_frame(&mut reader, limits.max_request_bytes)) => r,
        };
        let frame = match next {
            Err(_) => {
                debug!("idle timeout; closing");
                break;
            }
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    warn!(error = %e, "closing connection");
                } else {
                    debug!(error = %e, "read failed; closing");
                }
                break;
            }
            Ok(Ok(ReadOutcome::Closed)) => break,
            Ok(Ok(ReadOutcome::Frame(f))) => f,
        };
        let pending = match decode_request(frame) {
            Ok(Decoded::Request(req)) => dispatcher.submit(req, &client_host).await,
            Ok(Decoded::ApiVersionsFallback { correlation_id, requested_version }) => {
                dispatcher.api_versions_fallback(correlation_id, requested_version)
            }
            Err(e) => {
                info!(error = %e, "bad request; closing connection");
                metrics::counter!("runnel_server_bad_requests_total").increment(1);
                break;
            }
        };
        if let Some(fut) = pending {
            if tx.send(fut).await.is_err() {
                break; // the writer failed: the peer is gone
            }
        }
    }
    drop(tx);
    // Let the writer send every response to requests already read, then close.
    let _ = writer_task.await;
    debug!("connection closed");
}

async fn write_responses(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<ResponseFuture>,
    max_inflight: usize,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut inflight: FuturesOrdered<ResponseFuture> = FuturesOrdered::new();
    let mut rx_open = true;
    loop {
        if !rx_open && inflight.is_empty() {
            break;
        }
        tokio::select! {
            next = rx.recv(), if rx_open && inflight.len() < max_inflight => {
                match next {
                    Some(f) => inflight.push_back(f),
                    None => rx_open = false,
                }
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                let bytes = match done {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "cannot encode a response; closing connection");
                        break;
                    }
                };
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
                // Flush when nothing else is ready, so pipelined responses share writes.
                if inflight.is_empty() && writer.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}
