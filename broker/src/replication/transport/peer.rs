//! Connections between nodes: requests to a peer and the handling of a peer's requests,
//! for every raft group at once (`frame` says which group a message belongs to).
//!
//! Each node dials each peer it sends to, so a pair of nodes shares two connections, one
//! per direction; requests go out on one's own connection and their replies come back on
//! it, correlated by request id, many in flight at once. A connection opens with a Hello
//! naming both ends, and a node refuses one meant for another node id (a stale address or
//! a misrouted proxy). A lost connection fails its pending requests at once; the next
//! request dials again, no sooner than `reconnect_backoff` after the last failed dial.
//!
//! Heartbeats (AppendEntries without entries, most of the traffic when many groups are
//! idle) of every group to a peer share frames (`Kind::HeartbeatBatch`), and so do their
//! replies; each is still a request of its own with its own id and deadline, answered as
//! soon as its group answers. A connection sends at most one batch per `heartbeat_linger`:
//! a heartbeat that finds the last batch older than that leaves at once, so a lone
//! heartbeat never waits, and under load they leave together.
//!
//! Bounds: frames above `max_frame_bytes` close the connection; at most
//! `max_inflight_per_connection` requests are handled at once for one inbound connection,
//! four times as many are read ahead of them, after which it is not read (pings are
//! answered as they are read); every request has a deadline.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, warn};

use super::frame::{Frame, FrameError, GroupId, Kind};

/// Version of this protocol, exchanged in Hello. 2: heartbeat batches.
const PROTOCOL_VERSION: u16 = 2;

/// At most this many heartbeats share a batch frame (fewer when they would be over
/// `max_frame_bytes`); more held at once leave in several.
const MAX_HEARTBEATS_PER_BATCH: usize = 1024;

/// Answers the requests peers send.
pub trait InboundHandler: Send + Sync + 'static {
    /// The reply body to a request of `kind` for `group` from node `from`.
    fn handle(&self, from: u64, kind: Kind, group: GroupId, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

#[derive(Debug, Clone)]
pub struct TransportLimits {
    pub max_frame_bytes: usize,
    pub max_inflight_per_connection: usize,
    pub connect_timeout: Duration,
    pub reconnect_backoff: Duration,
    /// A connection sends at most one heartbeat batch per this long (see the module doc).
    pub heartbeat_linger: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_frame_bytes: 64 << 20,
            max_inflight_per_connection: 1024,
            connect_timeout: Duration::from_secs(1),
            reconnect_backoff: Duration::from_millis(100),
            heartbeat_linger: Duration::from_millis(2),
        }
    }
}

/// Why a request to a peer got no reply. All mean "unreachable" to raft, which retries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("no address for node {0}")]
    UnknownPeer(u64),
    #[error("node {peer} unreachable: {reason}")]
    Unreachable { peer: u64, reason: String },
    #[error("node {0} did not answer in time")]
    Timeout(u64),
    #[error("node {peer} could not handle the request: {reason}")]
    Remote { peer: u64, reason: String },
}

/// Status byte that starts every reply body.
const REPLY_OK: u8 = 0;
const REPLY_ERROR: u8 = 1;

/// The replies a connection awaits; `closed` once it is lost, after which nothing waits.
#[derive(Default)]
struct Waiters {
    closed: bool,
    by_request: HashMap<u64, oneshot::Sender<Bytes>>,
}

type Pending = Arc<Mutex<Waiters>>;

/// A frame for a connection's writer; heartbeats are held to leave in batches.
struct Outgoing {
    frame: Frame,
    heartbeat: bool,
}

impl Outgoing {
    fn now(frame: Frame) -> Outgoing {
        Outgoing { frame, heartbeat: false }
    }
}

/// Heartbeats this node sent (requests and replies) and the batch frames they took.
#[derive(Default)]
struct HeartbeatCounts {
    heartbeats: std::sync::atomic::AtomicU64,
    frames: std::sync::atomic::AtomicU64,
}

impl HeartbeatCounts {
    fn add(&self, heartbeats: usize, frames: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.heartbeats.fetch_add(heartbeats as u64, Relaxed);
        self.frames.fetch_add(frames as u64, Relaxed);
        metrics::counter!("runnel_raft_heartbeats_sent_total").increment(heartbeats as u64);
        metrics::counter!("runnel_raft_heartbeat_frames_sent_total").increment(frames as u64);
    }

    fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.heartbeats.load(Relaxed), self.frames.load(Relaxed))
    }
}

/// An open outbound connection: frames to write, and the replies awaited.
struct Link {
    frames: mpsc::Sender<Outgoing>,
    pending: Pending,
}

/// What this node knows about reaching one peer.
#[derive(Default)]
struct PeerState {
    link: Option<Arc<Link>>,
    last_failed_dial: Option<Instant>,
}

/// This node's end of the transport.
pub struct PeerTransport {
    node_id: u64,
    local_addr: SocketAddr,
    addresses: Mutex<HashMap<u64, SocketAddr>>,
    /// Per peer, so that dialling one peer never holds up requests to another.
    peers: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<PeerState>>>>,
    next_request_id: std::sync::atomic::AtomicU64,
    limits: TransportLimits,
    /// Set by `shutdown`: the listener and every inbound connection stop.
    stop: tokio::sync::watch::Sender<bool>,
    /// When each peer was last heard from: an answer to a request of ours (raft,
    /// forwarded, ping) or a request of its own.
    heard: Heard,
    counts: Arc<HeartbeatCounts>,
}

/// What serving inbound connections needs.
struct Inbound {
    node_id: u64,
    handler: Arc<dyn InboundHandler>,
    limits: TransportLimits,
    heard: Heard,
    counts: Arc<HeartbeatCounts>,
}

/// When each peer was last heard from, shared with the inbound connections.
type Heard = Arc<Mutex<HashMap<u64, Instant>>>;

fn note_heard(heard: &Heard, peer: u64) {
    if let Ok(mut h) = heard.lock() {
        h.insert(peer, Instant::now());
    }
}

impl PeerTransport {
    /// Listens on `listen` for peers' connections, answering their requests with `handler`.
    pub async fn start(
        node_id: u64,
        listen: SocketAddr,
        addresses: HashMap<u64, SocketAddr>,
        handler: Arc<dyn InboundHandler>,
        limits: TransportLimits,
    ) -> std::io::Result<Arc<PeerTransport>> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let transport = Arc::new(PeerTransport {
            node_id,
            local_addr,
            addresses: Mutex::new(addresses),
            peers: Mutex::new(HashMap::new()),
            next_request_id: std::sync::atomic::AtomicU64::new(1),
            limits: limits.clone(),
            stop,
            heard: Heard::default(),
            counts: Arc::default(),
        });
        let inbound = Inbound { node_id, handler, limits, heard: transport.heard.clone(), counts: transport.counts.clone() };
        tokio::spawn(accept_loop(listener, Arc::new(inbound), stopped));
        Ok(transport)
    }

    /// A transport that listens for nobody and knows no peer (single-node mode): every
    /// request fails as `UnknownPeer`, which raft treats as unreachable.
    pub fn outbound_only(node_id: u64, limits: TransportLimits) -> Arc<PeerTransport> {
        let (stop, _) = tokio::sync::watch::channel(false);
        Arc::new(PeerTransport {
            node_id,
            local_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            addresses: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            next_request_id: std::sync::atomic::AtomicU64::new(1),
            limits,
            stop,
            heard: Heard::default(),
            counts: Arc::default(),
        })
    }

    /// Stops listening, closes inbound connections and drops outbound ones; requests
    /// after this fail as unreachable.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let (heartbeats, frames) = self.heartbeats_sent();
        if heartbeats > 0 {
            info!(heartbeats, frames, "raft heartbeats sent to peers (requests and replies) and the batch frames they took");
        }
        let slots: Vec<_> = self.peers.lock().map(|mut p| p.drain().map(|(_, s)| s).collect()).unwrap_or_default();
        for slot in slots {
            slot.lock().await.link = None;
        }
        if let Ok(mut a) = self.addresses.lock() {
            a.clear();
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets or changes where node `peer` listens; an open connection to it is kept.
    pub fn set_address(&self, peer: u64, addr: SocketAddr) {
        if let Ok(mut a) = self.addresses.lock() {
            a.insert(peer, addr);
        }
    }

    /// Heartbeats sent so far, requests and replies, and the batch frames they took.
    pub fn heartbeats_sent(&self) -> (u64, u64) {
        self.counts.get()
    }

    /// Sends a request to `peer` and waits for its reply body, at most `timeout`.
    pub async fn request(&self, peer: u64, kind: Kind, group: GroupId, body: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        self.send(peer, Outgoing::now(Frame { kind, response: false, request_id: 0, group, body }), timeout).await
    }

    /// Sends a raft heartbeat (an AppendEntries without entries) of `group` to `peer`, in a
    /// batch with other groups' heartbeats, and waits for its own reply, at most `timeout`.
    pub async fn heartbeat(&self, peer: u64, group: GroupId, body: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        let frame = Frame { kind: Kind::AppendEntries, response: false, request_id: 0, group, body };
        self.send(peer, Outgoing { frame, heartbeat: true }, timeout).await
    }

    async fn send(&self, peer: u64, mut out: Outgoing, timeout: Duration) -> Result<Bytes, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let link = tokio::time::timeout_at(deadline, self.link(peer)).await.map_err(|_| TransportError::Timeout(peer))??;
        let request_id = self.next_request_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let unreachable = |reason: &str| TransportError::Unreachable { peer, reason: reason.to_string() };
        {
            let mut p = link.pending.lock().map_err(|_| unreachable("connection state poisoned"))?;
            if p.closed {
                return Err(unreachable("connection lost"));
            }
            p.by_request.insert(request_id, tx);
        }
        out.frame.request_id = request_id;
        if tokio::time::timeout_at(deadline, link.frames.send(out)).await.is_err() {
            forget(&link.pending, request_id);
            return Err(TransportError::Timeout(peer));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                forget(&link.pending, request_id);
                Err(TransportError::Timeout(peer))
            }
            Ok(Err(_)) => Err(unreachable("connection lost")),
            Ok(Ok(mut reply)) => {
                self.record_heard(peer);
                match reply.first().copied() {
                    Some(REPLY_OK) => {
                        reply.advance(1);
                        Ok(reply)
                    }
                    Some(REPLY_ERROR) => Err(TransportError::Remote { peer, reason: String::from_utf8_lossy(&reply[1..]).into_owned() }),
                    _ => Err(unreachable("malformed reply")),
                }
            }
        }
    }

    fn record_heard(&self, peer: u64) {
        note_heard(&self.heard, peer);
    }

    /// Whether `peer` answered a request within the last `within`.
    pub fn heard_within(&self, peer: u64, within: Duration) -> bool {
        self.heard_ago(peer).is_some_and(|ago| ago < within)
    }

    /// How long ago `peer` was last heard from; `None`: never.
    pub fn heard_ago(&self, peer: u64) -> Option<Duration> {
        self.heard.lock().ok().and_then(|h| h.get(&peer).copied()).map(|t| t.elapsed())
    }

    /// The other nodes whose address is known.
    fn peer_ids(&self) -> Vec<u64> {
        self.addresses.lock().map(|a| a.keys().copied().filter(|p| *p != self.node_id).collect()).unwrap_or_default()
    }

    /// Peers with a known address that have not answered within `within`.
    pub fn silent_peers(&self, within: Duration) -> BTreeSet<u64> {
        self.peer_ids().into_iter().filter(|p| !self.heard_within(*p, within)).collect()
    }

    /// Pings every peer with a known address every `every`, so that `heard_within` knows
    /// which nodes are up even when no raft group sends them anything (quiet groups).
    pub fn start_pings(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return,
                }
                let Some(transport) = weak.upgrade() else { return };
                let pings = transport.peer_ids().into_iter().map(|peer| {
                    let transport = transport.clone();
                    async move {
                        let _ = transport.request(peer, Kind::Ping, GroupId::Controller, Bytes::new(), every * 3).await;
                    }
                });
                // Each ping records its answer; the round does not wait for slow peers.
                tokio::spawn(futures::future::join_all(pings));
            }
        });
    }

    /// The open link to `peer`, dialling it if there is none.
    async fn link(&self, peer: u64) -> Result<Arc<Link>, TransportError> {
        let slot = {
            let mut peers = self.peers.lock().map_err(|_| TransportError::Unreachable { peer, reason: "state poisoned".into() })?;
            peers.entry(peer).or_default().clone()
        };
        let mut state = slot.lock().await;
        if let Some(link) = state.link.as_ref().filter(|l| l.is_open()) {
            return Ok(link.clone());
        }
        state.link = None;
        if state.last_failed_dial.is_some_and(|t| t.elapsed() < self.limits.reconnect_backoff) {
            return Err(TransportError::Unreachable { peer, reason: "reconnecting".into() });
        }
        let addr = self.addresses.lock().ok().and_then(|a| a.get(&peer).copied()).ok_or(TransportError::UnknownPeer(peer))?;
        match self.dial(peer, addr).await {
            Ok(link) => {
                if state.last_failed_dial.take().is_some() {
                    info!(peer, %addr, "peer reachable again");
                }
                state.link = Some(link.clone());
                Ok(link)
            }
            Err(reason) => {
                // Once per outage at warn; every retry at debug.
                if state.last_failed_dial.is_none() {
                    warn!(peer, %addr, %reason, "cannot reach peer; retrying");
                } else {
                    debug!(peer, %addr, %reason, "cannot reach peer");
                }
                state.last_failed_dial = Some(Instant::now());
                Err(TransportError::Unreachable { peer, reason })
            }
        }
    }

    async fn dial(&self, peer: u64, addr: SocketAddr) -> Result<Arc<Link>, String> {
        let limits = &self.limits;
        let mut stream = tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut buf = BytesMut::new();
        hello(self.node_id, peer, false).encode(&mut buf, limits.max_frame_bytes).map_err(|e| e.to_string())?;
        stream.write_all(&buf).await.map_err(|e| e.to_string())?;
        buf.clear();
        let reply = tokio::time::timeout(limits.connect_timeout, read_frame(&mut stream, &mut buf, limits.max_frame_bytes))
            .await
            .map_err(|_| "no hello from the peer".to_string())?
            .map_err(|e| e.to_string())?;
        match reply {
            Some(f) if f.kind == Kind::Hello && f.response && parse_hello(&f.body) == Some((peer, self.node_id)) => {}
            _ => return Err(format!("{addr} is not node {peer}")),
        }
        let (reader, writer) = stream.into_split();
        let (frames, rx) = mpsc::channel(limits.max_inflight_per_connection);
        let pending: Pending = Arc::default();
        tokio::spawn(write_frames(writer, rx, limits.clone(), self.counts.clone()));
        tokio::spawn(read_replies(reader, buf, pending.clone(), limits.max_frame_bytes, frames.clone()));
        Ok(Arc::new(Link { frames, pending }))
    }
}

impl Link {
    fn is_open(&self) -> bool {
        !self.frames.is_closed() && self.pending.lock().is_ok_and(|p| !p.closed)
    }
}

fn forget(pending: &Pending, request_id: u64) {
    if let Ok(mut p) = pending.lock() {
        p.by_request.remove(&request_id);
    }
}

fn hello(from: u64, to: u64, response: bool) -> Frame {
    let mut body = BytesMut::with_capacity(18);
    body.put_u64(from);
    body.put_u64(to);
    body.put_u16(PROTOCOL_VERSION);
    Frame { kind: Kind::Hello, response, request_id: 0, group: GroupId::Controller, body: body.freeze() }
}

/// (from, to) of a Hello of our protocol version.
fn parse_hello(body: &[u8]) -> Option<(u64, u64)> {
    let mut b = body;
    if b.len() != 18 {
        return None;
    }
    let (from, to, version) = (b.get_u64(), b.get_u64(), b.get_u16());
    (version == PROTOCOL_VERSION).then_some((from, to))
}

/// Reads the next frame; `None` at a clean end of the stream.
async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R, buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, std::io::Error> {
    loop {
        match Frame::decode(buf, max) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
    }
}

/// Writes a connection's frames, several per write when they queue up. Heartbeats are held
/// and leave as batch frames, at most one batch per `heartbeat_linger` (sooner when
/// `MAX_HEARTBEATS_PER_BATCH` are held); see the module doc.
async fn write_frames(mut writer: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, limits: TransportLimits, counts: Arc<HeartbeatCounts>) {
    enum Wake {
        Frame(Outgoing),
        Closed,
        Due,
    }
    let max = limits.max_frame_bytes;
    let mut buf = BytesMut::new();
    // Held heartbeat requests and held heartbeat replies (a connection carries one or the other).
    let mut held: [Vec<Frame>; 2] = [Vec::new(), Vec::new()];
    let mut last_batch: Option<tokio::time::Instant> = None;
    let take = |o: Outgoing, buf: &mut BytesMut, held: &mut [Vec<Frame>; 2]| {
        // (A heartbeat too large for a batch is sent, or refused, as a frame of its own.)
        if o.heartbeat && o.frame.kind == Kind::AppendEntries && o.frame.encoded_len() + 64 <= max {
            held[usize::from(o.frame.response)].push(o.frame);
        } else if let Err(e) = o.frame.encode(buf, max) {
            warn!(error = %e, "dropping a frame too large to send");
        }
    };
    loop {
        let holding = held.iter().any(|h| !h.is_empty());
        let due = last_batch.map(|t| t + limits.heartbeat_linger).filter(|_| holding);
        let wake = match due {
            Some(at) => tokio::select! {
                o = rx.recv() => o.map_or(Wake::Closed, Wake::Frame),
                () = tokio::time::sleep_until(at) => Wake::Due,
            },
            None => rx.recv().await.map_or(Wake::Closed, Wake::Frame),
        };
        let closed = matches!(wake, Wake::Closed);
        if let Wake::Frame(o) = wake {
            take(o, &mut buf, &mut held);
        }
        // Send what else is already queued in the same write.
        while buf.len() < 1 << 20 && held.iter().all(|h| h.len() < MAX_HEARTBEATS_PER_BATCH) {
            match rx.try_recv() {
                Ok(o) => take(o, &mut buf, &mut held),
                Err(_) => break,
            }
        }
        let now = tokio::time::Instant::now();
        let full = held.iter().any(|h| h.len() >= MAX_HEARTBEATS_PER_BATCH);
        let lingered = last_batch.is_none_or(|t| now >= t + limits.heartbeat_linger);
        if held.iter().any(|h| !h.is_empty()) && (closed || full || lingered) {
            for (response, beats) in held.iter_mut().enumerate() {
                let mut frames = 0;
                for chunk in beats.chunks(MAX_HEARTBEATS_PER_BATCH) {
                    match Frame::encode_heartbeats(chunk, response == 1, &mut buf, max) {
                        Ok(n) => frames += n,
                        Err(e) => warn!(error = %e, "dropping heartbeats that cannot be sent"),
                    }
                }
                if frames > 0 {
                    counts.add(beats.len(), frames);
                }
                beats.clear();
            }
            last_batch = Some(now);
        }
        if !buf.is_empty() {
            if writer.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
        if closed {
            return;
        }
    }
}

async fn read_replies(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    pending: Pending,
    max: usize,
    frames: mpsc::Sender<Outgoing>,
) {
    let deliver = |f: Frame| {
        let waiter = pending.lock().ok().and_then(|mut p| p.by_request.remove(&f.request_id));
        if let Some(w) = waiter {
            let _ = w.send(f.body);
        }
    };
    loop {
        match read_frame(&mut reader, &mut buf, max).await {
            Ok(Some(f)) if f.response && f.kind == Kind::HeartbeatBatch => match f.heartbeats() {
                Ok(replies) => replies.into_iter().for_each(&deliver),
                Err(e) => {
                    warn!(error = %e, "malformed heartbeat replies from a peer; closing the connection");
                    break;
                }
            },
            Ok(Some(f)) if f.response => deliver(f),
            Ok(Some(_)) => {
                warn!("peer sent a request on our connection; closing it");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "peer connection lost");
                break;
            }
        }
    }
    // Dropping the senders fails every waiter at once; `closed` makes the next request
    // dial again, and dropping our queue handle lets the writer end with the link.
    if let Ok(mut p) = pending.lock() {
        p.closed = true;
        p.by_request.clear();
    }
    drop(frames);
}

async fn accept_loop(listener: TcpListener, inbound: Arc<Inbound>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer_addr)) => {
                let (inbound, mut stopped) = (inbound.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => {}
                        r = serve_peer(stream, inbound) => if let Err(e) = r {
                            debug!(%peer_addr, error = %e, "peer connection closed");
                        }
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one inbound connection: Hello, then requests handled concurrently, replies
/// written as they complete. Every frame counts as hearing from the peer, and pings are
/// answered at once, never behind requests in progress: they tell whether the peer's
/// node is reachable, not how busy this one is. Each heartbeat of a batch is a request of
/// its own, and its reply joins the next batch of replies.
async fn serve_peer(stream: TcpStream, inbound: Arc<Inbound>) -> Result<(), String> {
    let (node_id, limits) = (inbound.node_id, &inbound.limits);
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut reader, writer) = stream.into_split();
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(limits.connect_timeout, read_frame(&mut reader, &mut buf, limits.max_frame_bytes))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| e.to_string())?;
    let from = match first.filter(|f| f.kind == Kind::Hello && !f.response).and_then(|f| parse_hello(&f.body)) {
        Some((from, to)) if to == node_id => from,
        Some((_, to)) => return Err(format!("hello for node {to}, this is node {node_id}")),
        None => return Err("the first frame was not a hello".into()),
    };
    let (replies, rx) = mpsc::channel(limits.max_inflight_per_connection);
    tokio::spawn(write_frames(writer, rx, limits.clone(), inbound.counts.clone()));
    let closed = |_| "connection closed".to_string();
    replies.send(Outgoing::now(hello(node_id, from, true))).await.map_err(closed)?;
    // At most `max_inflight_per_connection` requests are handled at once, and at most
    // `QUEUED_PER_SLOT` times as many are read ahead of them; reading on past busy slots
    // lets a ping through. Each heartbeat of a batch counts as one request.
    let slots = Arc::new(Semaphore::new(limits.max_inflight_per_connection));
    let read_ahead = Arc::new(Semaphore::new(limits.max_inflight_per_connection.saturating_mul(QUEUED_PER_SLOT)));
    loop {
        let queued = read_ahead.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let Some(frame) = read_frame(&mut reader, &mut buf, limits.max_frame_bytes).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        note_heard(&inbound.heard, from);
        if frame.response || frame.kind == Kind::Hello {
            return Err(FrameError::UnknownKind(frame.kind as u8).to_string());
        }
        match frame.kind {
            Kind::Ping => {
                let reply = Frame { kind: Kind::Ping, response: true, request_id: frame.request_id, group: frame.group, body: Bytes::from_static(&[REPLY_OK]) };
                replies.send(Outgoing::now(reply)).await.map_err(closed)?;
            }
            Kind::HeartbeatBatch => {
                let mut queued = Some(queued);
                for heartbeat in frame.heartbeats().map_err(|e| e.to_string())? {
                    let permit = match queued.take() {
                        Some(p) => p,
                        None => read_ahead.clone().acquire_owned().await.map_err(|e| e.to_string())?,
                    };
                    handle_request(&inbound, from, heartbeat, true, &replies, &slots, permit);
                }
            }
            _ => handle_request(&inbound, from, frame, false, &replies, &slots, queued),
        }
    }
}

/// Handles one request in a task of its own once a slot is free, and queues its reply;
/// `queued` is its read-ahead permit, given back when the reply is queued.
fn handle_request(
    inbound: &Arc<Inbound>,
    from: u64,
    frame: Frame,
    heartbeat: bool,
    replies: &mpsc::Sender<Outgoing>,
    slots: &Arc<Semaphore>,
    queued: tokio::sync::OwnedSemaphorePermit,
) {
    let (inbound, replies, slots) = (inbound.clone(), replies.clone(), slots.clone());
    tokio::spawn(async move {
        let Ok(_permit) = slots.acquire_owned().await else { return };
        let body = match inbound.handler.handle(from, frame.kind, frame.group, frame.body).await {
            Ok(b) => {
                let mut out = BytesMut::with_capacity(1 + b.len());
                out.put_u8(REPLY_OK);
                out.put_slice(&b);
                out
            }
            Err(reason) => {
                let mut out = BytesMut::with_capacity(1 + reason.len());
                out.put_u8(REPLY_ERROR);
                out.put_slice(reason.as_bytes());
                out
            }
        };
        let reply = Frame { kind: frame.kind, response: true, request_id: frame.request_id, group: frame.group, body: body.freeze() };
        let _ = replies.send(Outgoing { frame: reply, heartbeat }).await;
        drop(queued);
    });
}

/// Requests read ahead of the ones in progress, per request slot (see `serve_peer`).
const QUEUED_PER_SLOT: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes the request back with the group and the sender prepended; "fail" fails,
    /// "slow" answers after a second.
    struct Echo;

    impl InboundHandler for Echo {
        fn handle(&self, from: u64, kind: Kind, group: GroupId, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
            Box::pin(async move {
                if &body[..] == b"fail" {
                    return Err("asked to fail".into());
                }
                if &body[..] == b"slow" {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(Bytes::from(format!("{from}:{kind:?}:{group:?}:{}", String::from_utf8_lossy(&body))))
            })
        }
    }

    const T: Duration = Duration::from_secs(5);

    async fn node(id: u64, peers: &[(u64, SocketAddr)]) -> Arc<PeerTransport> {
        PeerTransport::start(id, "127.0.0.1:0".parse().expect("addr"), peers.iter().copied().collect(), Arc::new(Echo), TransportLimits::default())
            .await
            .expect("start")
    }

    fn partition(p: i32) -> GroupId {
        GroupId::Partition { topic: uuid::Uuid::from_u128(42), partition: p }
    }

    #[tokio::test]
    async fn many_concurrent_requests_get_their_own_replies() {
        let b = node(2, &[]).await;
        let a = node(1, &[(2, b.local_addr())]).await;
        let calls = (0..2_000).map(|i| {
            let a = a.clone();
            async move { (i, a.request(2, Kind::AppendEntries, partition(i % 7), Bytes::from(format!("req-{i}")), T).await) }
        });
        for (i, reply) in futures::future::join_all(calls).await {
            let expected = format!("1:AppendEntries:{:?}:req-{i}", partition(i % 7));
            assert_eq!(reply.expect("reply"), Bytes::from(expected));
        }
        let err = a.request(2, Kind::Vote, GroupId::Controller, Bytes::from_static(b"fail"), T).await;
        assert_eq!(err, Err(TransportError::Remote { peer: 2, reason: "asked to fail".into() }));
    }

    #[tokio::test]
    async fn pings_are_answered_while_every_request_slot_is_busy_and_requests_count_as_heard() {
        let limits = TransportLimits { max_inflight_per_connection: 2, ..TransportLimits::default() };
        let start = |id: u64, peers: Vec<(u64, SocketAddr)>| {
            PeerTransport::start(id, "127.0.0.1:0".parse().expect("addr"), peers.into_iter().collect(), Arc::new(Echo), limits.clone())
        };
        let b = start(2, vec![]).await.expect("start");
        let a = start(1, vec![(2, b.local_addr())]).await.expect("start");
        // Two slow requests hold both of b's slots for a second, a third waits behind them.
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.request(2, Kind::AppendEntries, partition(0), Bytes::from_static(b"slow"), T).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let pong = a.request(2, Kind::Ping, GroupId::Controller, Bytes::new(), Duration::from_millis(500)).await;
        assert_eq!(pong, Ok(Bytes::new()), "a ping does not wait for a request slot");
        assert!(started.elapsed() < Duration::from_millis(500));
        // b never asked a anything, yet heard from it: a's requests count.
        assert!(b.heard_within(1, Duration::from_secs(1)));
        for s in slow {
            assert!(s.await.expect("joined").is_ok());
        }
    }

    #[tokio::test]
    async fn a_connection_to_the_wrong_node_is_refused() {
        let b = node(2, &[]).await;
        // Node 1 believes node 3 listens where node 2 does.
        let a = node(1, &[(3, b.local_addr())]).await;
        let err = a.request(3, Kind::Vote, GroupId::Controller, Bytes::new(), T).await.expect_err("wrong node");
        assert!(matches!(err, TransportError::Unreachable { peer: 3, .. }), "{err:?}");
        assert_eq!(a.request(4, Kind::Vote, GroupId::Controller, Bytes::new(), T).await, Err(TransportError::UnknownPeer(4)));
    }

    /// A hand-written node 2 that node 1 dials: accepts the connection and answers its
    /// Hello; returns the stream and what was read past the Hello.
    async fn accept_as_node_2(listener: &TcpListener) -> (TcpStream, BytesMut) {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = BytesMut::new();
        let first = read_frame(&mut s, &mut buf, 1 << 20).await.expect("read").expect("hello");
        assert_eq!(parse_hello(&first.body), Some((1, 2)));
        let mut out = BytesMut::new();
        hello(2, 1, true).encode(&mut out, 1 << 20).expect("encode");
        s.write_all(&out).await.expect("write");
        (s, buf)
    }

    #[tokio::test]
    async fn a_lost_peer_fails_pending_requests_at_once_and_is_dialled_again_when_back() {
        // The peer is a plain listener we control: Hello, then read one request and vanish.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let a = node(1, &[(2, addr)]).await;
        let fake_peer = tokio::spawn(async move {
            let (mut s, mut buf) = accept_as_node_2(&listener).await;
            let _ = read_frame(&mut s, &mut buf, 1 << 20).await;
            drop(s); // gone without replying
            listener
        });
        let started = Instant::now();
        let err = a.request(2, Kind::AppendEntries, partition(0), Bytes::from_static(b"x"), T).await.expect_err("peer vanished");
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "failed after {:?}, not at once", started.elapsed());
        drop(fake_peer.await.expect("fake peer"));

        // A real node 2 comes up at a new address; after the backoff node 1 dials it.
        let b = node(2, &[]).await;
        a.set_address(2, b.local_addr());
        tokio::time::sleep(TransportLimits::default().reconnect_backoff).await;
        let reply = a.request(2, Kind::Vote, GroupId::Coordinator, Bytes::from_static(b"again"), T).await.expect("reconnected");
        assert_eq!(reply, Bytes::from_static(b"1:Vote:Coordinator:again"));
    }

    #[tokio::test]
    async fn a_request_times_out_without_blocking_others() {
        let b = node(2, &[]).await;
        let a = node(1, &[(2, b.local_addr())]).await;
        let slow = a.request(2, Kind::Forward, GroupId::Controller, Bytes::from_static(b"slow"), Duration::from_millis(200));
        let fast = a.request(2, Kind::Forward, GroupId::Controller, Bytes::from_static(b"fast"), T);
        let (slow, fast) = tokio::join!(slow, fast);
        assert_eq!(slow, Err(TransportError::Timeout(2)));
        assert_eq!(fast.expect("fast"), Bytes::from_static(b"1:Forward:Controller:fast"));
    }

    #[tokio::test]
    async fn after_shutdown_a_node_neither_listens_nor_answers() {
        let b = node(2, &[]).await;
        let a = node(1, &[(2, b.local_addr())]).await;
        a.request(2, Kind::Vote, GroupId::Controller, Bytes::from_static(b"up"), T).await.expect("before");
        b.shutdown().await;
        let err = a.request(2, Kind::Vote, GroupId::Controller, Bytes::from_static(b"down"), T).await.expect_err("after");
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        tokio::time::sleep(TransportLimits::default().reconnect_backoff).await;
        assert!(TcpStream::connect(b.local_addr()).await.is_err(), "the listener is closed");
        a.shutdown().await;
        assert_eq!(a.request(2, Kind::Vote, GroupId::Controller, Bytes::new(), T).await, Err(TransportError::UnknownPeer(2)));
    }

    #[tokio::test]
    async fn an_inbound_hello_for_another_node_is_closed_unanswered() {
        let b = node(2, &[]).await;
        for first in [hello(1, 3, false), Frame { kind: Kind::Vote, ..hello(1, 2, false) }] {
            let mut s = TcpStream::connect(b.local_addr()).await.expect("connect");
            let mut out = BytesMut::new();
            first.encode(&mut out, 1 << 20).expect("encode");
            s.write_all(&out).await.expect("write");
            let mut buf = BytesMut::new();
            let end = tokio::time::timeout(T, read_frame(&mut s, &mut buf, 1 << 20)).await.expect("closed in time");
            assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_from_a_peer_closes_its_connection() {
        let b = node(2, &[]).await;
        let mut s = TcpStream::connect(b.local_addr()).await.expect("connect");
        let mut out = BytesMut::new();
        hello(1, 2, false).encode(&mut out, 1 << 20).expect("encode");
        out.put_u32(u32::MAX); // a frame of 4 GiB
        s.write_all(&out).await.expect("write");
        let mut buf = BytesMut::new();
        let reply = read_frame(&mut s, &mut buf, 1 << 20).await.expect("hello reply").expect("hello");
        assert!(reply.response);
        let end = tokio::time::timeout(T, read_frame(&mut s, &mut buf, 1 << 20)).await.expect("closed in time");
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    }

    async fn node_with(id: u64, peers: &[(u64, SocketAddr)], limits: TransportLimits) -> Arc<PeerTransport> {
        PeerTransport::start(id, "127.0.0.1:0".parse().expect("addr"), peers.iter().copied().collect(), Arc::new(Echo), limits).await.expect("start")
    }

    #[tokio::test]
    async fn thousands_of_heartbeats_share_few_frames_and_each_gets_its_own_reply() {
        let b = node(2, &[]).await;
        let a = node(1, &[(2, b.local_addr())]).await;
        let beats = (0..3_000).map(|i| {
            let a = a.clone();
            async move { (i, a.heartbeat(2, partition(i), Bytes::from(format!("hb-{i}")), T).await) }
        });
        for (i, reply) in futures::future::join_all(beats).await {
            assert_eq!(reply.expect("reply"), Bytes::from(format!("1:AppendEntries:{:?}:hb-{i}", partition(i))));
        }
        let (sent, frames) = a.heartbeats_sent();
        assert_eq!(sent, 3_000);
        assert!(frames < 300, "3,000 heartbeats took {frames} frames");
        let (answered, reply_frames) = b.heartbeats_sent();
        assert_eq!(answered, 3_000);
        assert!(reply_frames < 300, "3,000 heartbeat replies took {reply_frames} frames");
        // Other requests still go one frame each, and do not count as heartbeats.
        a.request(2, Kind::AppendEntries, partition(0), Bytes::from_static(b"entries"), T).await.expect("request");
        assert_eq!(a.heartbeats_sent().0, 3_000);
    }

    #[tokio::test]
    async fn a_slow_or_failing_group_delays_or_fails_only_its_own_heartbeat() {
        let linger = Duration::from_millis(100);
        let limits = TransportLimits { heartbeat_linger: linger, ..TransportLimits::default() };
        let b = node_with(2, &[], limits.clone()).await;
        let a = node_with(1, &[(2, b.local_addr())], limits).await;
        // A lone heartbeat leaves at once; the ones after it wait for the linger and leave
        // together.
        let started = Instant::now();
        a.heartbeat(2, partition(0), Bytes::from_static(b"warm-up"), T).await.expect("warm-up");
        assert!(started.elapsed() < linger, "a lone heartbeat waited {:?}", started.elapsed());
        let started = Instant::now();
        let slow = a.heartbeat(2, partition(1), Bytes::from_static(b"slow"), T);
        let fast = async {
            let r = a.heartbeat(2, partition(2), Bytes::from_static(b"fast"), T).await;
            (r, started.elapsed())
        };
        let failing = a.heartbeat(2, partition(3), Bytes::from_static(b"fail"), T);
        let timing_out = a.heartbeat(2, partition(4), Bytes::from_static(b"slow"), Duration::from_millis(500));
        let (slow, (fast, fast_after), failing, timing_out) = tokio::join!(slow, fast, failing, timing_out);
        assert_eq!(fast.expect("fast"), Bytes::from(format!("1:AppendEntries:{:?}:fast", partition(2))));
        assert!(fast_after < Duration::from_millis(700), "the fast heartbeat waited {fast_after:?} for the slow one");
        assert_eq!(failing, Err(TransportError::Remote { peer: 2, reason: "asked to fail".into() }));
        assert_eq!(timing_out, Err(TransportError::Timeout(2)));
        assert!(slow.is_ok(), "{slow:?}");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(a.heartbeats_sent(), (5, 2), "the four after the warm-up left in one batch");
    }

    #[tokio::test]
    async fn heartbeat_replies_may_come_back_in_any_order_and_in_any_batch() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let a = node(1, &[(2, addr)]).await;
        let fake_peer = tokio::spawn(async move {
            let (mut s, mut buf) = accept_as_node_2(&listener).await;
            // Read until all three heartbeats are in, each in a batch frame.
            let mut beats = Vec::new();
            while beats.len() < 3 {
                let f = read_frame(&mut s, &mut buf, 1 << 20).await.expect("read").expect("frame");
                assert_eq!((f.kind, f.response), (Kind::HeartbeatBatch, false));
                beats.extend(f.heartbeats().expect("heartbeats"));
            }
            // Answer them in reverse, the last alone and the other two in one batch.
            let replies: Vec<_> = beats
                .iter()
                .rev()
                .map(|h| {
                    let mut body = vec![REPLY_OK];
                    body.extend_from_slice(&h.body);
                    body.extend_from_slice(b" answered");
                    Frame { response: true, body: Bytes::from(body), ..h.clone() }
                })
                .collect();
            let mut out = BytesMut::new();
            Frame::encode_heartbeats(&replies[..1], true, &mut out, 1 << 20).expect("encode");
            Frame::encode_heartbeats(&replies[1..], true, &mut out, 1 << 20).expect("encode");
            s.write_all(&out).await.expect("write");
            s
        });
        let beats = (0..3).map(|i| {
            let a = a.clone();
            async move { (i, a.heartbeat(2, partition(i), Bytes::from(format!("hb-{i}")), T).await) }
        });
        for (i, reply) in futures::future::join_all(beats).await {
            assert_eq!(reply.expect("reply"), Bytes::from(format!("hb-{i} answered")));
        }
        drop(fake_peer.await.expect("fake peer"));
    }
}
