//! One client connection: read frames, decode, hand each request to the dispatcher in
//! arrival order, and write the responses back in the same order while later requests are
//! still being processed (pipelining). Produce with acks=0 has no response.
//!
//! Bounds: a frame larger than `max_request_bytes` closes the connection before anything is
//! allocated for it; at most `max_inflight_requests` requests are in progress, after which
//! the connection is not read until responses have gone out (backpressure); a connection
//! with no request for `idle_timeout` is closed, and so is one that takes longer than
//! `request_read_timeout` to send the rest of a request it has begun. A request's buffer
//! grows with the bytes that actually arrive, never to its declared length up front.
//! A node cut off from its cluster closes its connections at once (`serving` turns false).

use std::time::Duration;

use bytes::Bytes;
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
    pub request_read_timeout: Duration,
    pub max_inflight_requests: usize,
}

/// How reading the next frame ended.
enum ReadOutcome {
    Frame(Bytes),
    Closed,
    /// No request began within the idle timeout.
    Idle,
}

/// Bytes a request buffer starts with; it grows (doubling) as more of the frame arrives.
const INITIAL_FRAME_BUFFER: usize = 256 * 1024;

/// Reads one frame. Waits up to `idle` for its first byte, then up to `deadline` for the rest.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: usize,
    idle: Duration,
    deadline: Duration,
) -> std::io::Result<ReadOutcome> {
    let mut len_buf = [0u8; 4];
    // A clean close happens between frames: EOF on the first byte.
    match tokio::time::timeout(idle, reader.read(&mut len_buf[..1])).await {
        Err(_) => return Ok(ReadOutcome::Idle),
        Ok(r) => {
            if r? == 0 {
                return Ok(ReadOutcome::Closed);
            }
        }
    }
    let rest = async {
        reader.read_exact(&mut len_buf[1..]).await?;
        let len = i32::from_be_bytes(len_buf);
        if len < 0 || len as usize > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is outside 0..={max}"),
            ));
        }
        let len = len as usize;
        let mut buf = Vec::with_capacity(len.min(INITIAL_FRAME_BUFFER));
        let got = reader.take(len as u64).read_to_end(&mut buf).await?;
        if got < len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside a frame"));
        }
        Ok(ReadOutcome::Frame(Bytes::from(buf)))
    };
    match tokio::time::timeout(deadline, rest).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("request not complete {} ms after its first byte", deadline.as_millis()),
        )),
    }
}

pub(super) async fn run_connection(
    stream: TcpStream,
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    mut serving: watch::Receiver<bool>,
) {
    // Kafka reports a member's host as "/<ip>".
    let client_host = stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default();
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<ResponseFuture>(limits.max_inflight_requests);
    let writer_task = tokio::spawn(write_responses(writer, rx, limits.max_inflight_requests));
    debug!("connection open");
    let mut cut_off = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = serving.wait_for(|s| !*s) => {
                cut_off = true;
                break;
            }
            r = read_frame(&mut reader, limits.max_request_bytes, limits.idle_timeout, limits.request_read_timeout) => r,
        };
        let frame = match next {
            Ok(ReadOutcome::Idle) => {
                debug!("idle timeout; closing");
                break;
            }
            Err(e) => {
                if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::TimedOut) {
                    warn!(error = %e, "closing connection");
                } else {
                    debug!(error = %e, "read failed; closing");
                }
                break;
            }
            Ok(ReadOutcome::Closed) => break,
            Ok(ReadOutcome::Frame(f)) => f,
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
    if cut_off {
        // The node is cut off from the cluster (`Node::serving_clients`): responses still
        // due may wait for commits that cannot happen; the client retries elsewhere.
        writer_task.abort();
        debug!("cut off from the cluster; connection closed");
        return;
    }
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
