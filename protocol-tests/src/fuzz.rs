//! Fuzz entry points: the bodies of the cargo-fuzz targets in `protocol-tests/fuzz/`, kept
//! here so that they build with the workspace and so that `tests/fuzz_regressions.rs` can
//! replay every input a fuzzer ever crashed on. Each function panics exactly when it finds
//! a bug: a broker panic, or a broken invariant stated next to its check.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use runnel::config::NodeConfig;
use runnel::handlers::Dispatcher;
use runnel::log::{parse_header, validate_produce_records, with_log_append_time};
use runnel::node::Node;
use runnel::protocol::codec::{decode_request, Decoded, ProtocolError};
use runnel::protocol::legacy;
use runnel::protocol::records::decode_batch_bounded;

/// Record batch validation, as Produce applies it to the records of one partition. The
/// first input byte picks a mode: bit 1 compresses the first batch's records with codec
/// `(mode >> 2) % 4 + 1` (so that arbitrary record bytes reach the streaming walk of
/// compressed batches), bit 0 recomputes every batch's CRC (so that mutations reach the
/// checks behind it instead of all failing at it).
pub fn record_batch(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else { return };
    let mut rest = rest.to_vec();
    if mode & 2 == 2 {
        compress_first_batch(&mut rest, (mode >> 2) % 4 + 1);
    }
    if mode & 1 == 1 {
        resign_batches(&mut rest);
    }
    let records = Bytes::from(rest);
    let Ok(batches) = validate_produce_records(&records, u32::MAX) else { return };
    for b in batches {
        // A batch that passed is exactly one whole batch whose header parses the same again.
        let header = parse_header(&b.bytes).expect("a validated batch's header parses");
        assert_eq!(header, b.header, "re-parsed header differs");
        assert_eq!(b.bytes.len() as u64, header.total_size(), "validated slice is not one whole batch");
        // Switching it to LogAppendTime (topic config) re-signs it into a batch that passes too.
        let rewritten = with_log_append_time(&b.bytes, 1_700_000_000_000).expect("a validated batch can be re-signed");
        let again = validate_produce_records(&Bytes::from(rewritten), u32::MAX).expect("a re-signed batch still validates");
        assert_eq!(again.len(), 1);
        // Decoding its records (ListOffsets by timestamp does) may fail, but must not panic.
        let _ = decode_batch_bounded(&b.bytes, 1 << 20);
    }
}

/// Replaces the records of the batch at the start of `buf` (as far as its declared length
/// reaches) with their compression by `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd), and sets
/// the codec bits and the length to match.
fn compress_first_batch(buf: &mut Vec<u8>, codec: u8) {
    use std::io::Write;
    let Some(len) = buf.get(8..12).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { return };
    let Some(end) = usize::try_from(len).ok().map(|l| (12 + l).min(buf.len())).filter(|e| *e >= 61) else { return };
    let plain = &buf[61..end];
    let packed = match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).and_then(|()| e.finish()).ok()
        }
        2 => snap::raw::Encoder::new().compress_vec(plain).ok(),
        3 => lz4::EncoderBuilder::new().build(Vec::new()).ok().and_then(|mut e| {
            e.write_all(plain).ok()?;
            let (out, result) = e.finish();
            result.ok().map(|()| out)
        }),
        _ => zstd::encode_all(plain, 1).ok(),
    };
    let Some(packed) = packed else { return };
    let tail = buf.split_off(end);
    buf.truncate(61);
    buf.extend_from_slice(&packed);
    let new_len = i32::try_from(buf.len() - 12).unwrap_or(i32::MAX);
    buf[8..12].copy_from_slice(&new_len.to_be_bytes());
    buf[22] = (buf[22] & !7) | codec;
    buf.extend_from_slice(&tail);
}

/// Recomputes the CRC-32C of each batch whose declared length fits in `buf`.
fn resign_batches(buf: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(len) = buf.get(pos + 8..pos + 12).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
        let Some(end) = usize::try_from(len).ok().and_then(|l| (pos + 12).checked_add(l)).filter(|e| *e <= buf.len() && *e >= pos + 61) else { return };
        let crc = crc32c::crc32c(&buf[pos + 21..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// A broker node in a temporary directory, driven without sockets: frames go through the
/// same decoder and dispatcher as a connection's, and each response must encode and decode.
pub struct DispatchHarness {
    runtime: tokio::runtime::Runtime,
    dispatcher: Dispatcher,
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

/// How long one request may take before the harness drops it (long polls, rebalances);
/// dropping a response future mid-way is also what a closing connection does.
const REQUEST_BUDGET: Duration = Duration::from_millis(100);

impl DispatchHarness {
    pub fn new() -> DispatchHarness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let config = NodeConfig {
            data_dir: dir.path().join("data"),
            group_initial_rebalance_delay_ms: 0,
            ..NodeConfig::default()
        };
        let node = runtime.block_on(async {
            let node = Node::start(config).await.expect("node starts");
            node.wait_for_all_leaders(Duration::from_secs(10)).await;
            node
        });
        DispatchHarness { runtime, dispatcher: Dispatcher::new(node.clone()), node, _dir: dir }
    }

    /// Handles `stream` as a connection's bytes: length-prefixed frames, one request each,
    /// in order, until the stream ends or a frame would close the connection.
    pub fn connection(&self, mut stream: &[u8]) {
        while let Some((len, rest)) = stream.split_first_chunk::<4>() {
            let len = i32::from_be_bytes(*len);
            let Some(frame) = usize::try_from(len).ok().and_then(|n| rest.get(..n)) else { return };
            if !self.request(frame) {
                return;
            }
            stream = &rest[frame.len()..];
        }
    }

    /// Handles one request frame (without its length prefix); false when the connection
    /// would be closed.
    pub fn request(&self, frame: &[u8]) -> bool {
        let req = match decode_request(Bytes::copy_from_slice(frame)) {
            Ok(Decoded::Request(r)) => r,
            // Anything else closes the connection or is answered by the server alone.
            Ok(Decoded::ApiVersionsFallback { .. }) => return true,
            Err(_) => return false,
        };
        let (api, version, correlation_id) = (req.api_key, req.version, req.correlation_id);
        let encoded = self.runtime.block_on(async {
            let fut = tokio::time::timeout(REQUEST_BUDGET, self.dispatcher.submit(req, "/127.0.0.1")).await.ok()??;
            tokio::time::timeout(REQUEST_BUDGET, fut).await.ok()
        });
        match encoded {
            None => {}
            Some(Ok(response)) => check_response(api, version, correlation_id, response),
            Some(Err(ProtocolError::Encode { reason, .. })) => panic!("{api:?} v{version} response does not encode: {reason}"),
            Some(Err(e)) => panic!("{api:?} v{version}: unexpected {e}"),
        }
        true
    }
}

impl Default for DispatchHarness {
    fn default() -> Self {
        DispatchHarness::new()
    }
}

impl Drop for DispatchHarness {
    fn drop(&mut self) {
        self.runtime.block_on(async {
            self.node.begin_shutdown().await;
            self.node.shutdown().await;
        });
    }
}

/// A response frame must be what a client of that version can read: a length prefix that
/// matches, the request's correlation id and a body that decodes to its last byte.
fn check_response(api: ApiKey, version: i16, correlation_id: i32, mut frame: Bytes) {
    assert!(frame.len() >= 4, "response shorter than its length prefix");
    let len = frame.get_i32();
    assert_eq!(len as usize, frame.len(), "length prefix disagrees with the frame");
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("response header decodes");
    assert_eq!(header.correlation_id, correlation_id);
    if legacy::is_legacy(api, version) {
        return; // coded by hand; its own unit tests check the layout
    }
    if let Err(e) = ResponseKind::decode(api, &mut frame, version) {
        panic!("{api:?} v{version} response does not decode: {e:#}");
    }
    assert!(!frame.has_remaining(), "{api:?} v{version} response has trailing bytes");
}
