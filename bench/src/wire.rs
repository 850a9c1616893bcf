//! The Kafka wire protocol as this benchmark speaks it: size-prefixed frames over TCP,
//! request encoding and response decoding with `kafka-protocol`, one blocking-style
//! request/response client for admin calls, and split halves for pipelined senders.
//! No retries, no reconnects: a benchmark run that loses its connection fails loudly.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Versions used for each API: the newest that still name topics (Produce v13 and Fetch
/// v13 switch to topic ids) and that both Runnel and Kafka 3.x/4.x accept.
pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
pub const METADATA_VERSION: i16 = 12;
pub const CREATE_TOPICS_VERSION: i16 = 7;
pub const LIST_OFFSETS_VERSION: i16 = 7;
const API_VERSIONS_VERSION: i16 = 3;

/// Largest response frame accepted: a fetch asks for at most 256 MiB, so anything above
/// this is a framing error, refused before allocating.
pub const MAX_RESPONSE_BYTES: usize = 300 * 1024 * 1024;

const CLIENT_ID: &str = "runnel-bench";

/// Encodes `body` as one complete frame (length prefix, request header, body).
pub fn encode_request<R: Request>(version: i16, correlation_id: i32, body: &R) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).context("request larger than 2 GiB")?);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// Decodes one response frame (without its length prefix) and checks the correlation id.
pub fn decode_response<R: Request>(version: i16, expected_correlation: i32, mut frame: Bytes) -> Result<R::Response> {
    let header = ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version))?;
    if header.correlation_id != expected_correlation {
        bail!("response correlation id {} where {} was expected", header.correlation_id, expected_correlation);
    }
    let response = <R::Response as Decodable>::decode(&mut frame, version)?;
    Ok(response)
}

/// Reads one frame; the length prefix is checked against [`MAX_RESPONSE_BYTES`] first.
pub async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> Result<Bytes> {
    let len = reader.read_i32().await.context("reading a response length (broker closed the connection?)")?;
    let len = usize::try_from(len).map_err(|_| anyhow!("negative response length {len}"))?;
    if len > MAX_RESPONSE_BYTES {
        bail!("response frame of {len} bytes exceeds the {MAX_RESPONSE_BYTES}-byte limit");
    }
    let mut buf = BytesMut::zeroed(len);
    reader.read_exact(&mut buf).await.context("reading a response body")?;
    Ok(buf.freeze())
}

/// One connection used one request at a time (metadata, admin, fetch loops).
pub struct Connection {
    stream: TcpStream,
    correlation: i32,
    pub addr: String,
}

impl Connection {
    pub async fn connect(addr: &str) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, correlation: 0, addr: addr.to_string() })
    }

    /// Sends `body` and waits for its response.
    pub async fn request<R: Request>(&mut self, version: i16, body: &R) -> Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let frame = encode_request(version, self.correlation, body)?;
        self.stream.write_all(&frame).await.with_context(|| format!("sending to {}", self.addr))?;
        let response = read_frame(&mut self.stream).await?;
        decode_response::<R>(version, self.correlation, response)
    }

    /// Checks with ApiVersions that the broker accepts every version this client uses.
    pub async fn check_api_versions(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = self.request(API_VERSIONS_VERSION, &req).await?;
        if resp.error_code != 0 {
            bail!("ApiVersions failed with error code {}", resp.error_code);
        }
        for (api, version) in [
            (ApiKey::Produce, PRODUCE_VERSION),
            (ApiKey::Fetch, FETCH_VERSION),
            (ApiKey::Metadata, METADATA_VERSION),
            (ApiKey::CreateTopics, CREATE_TOPICS_VERSION),
            (ApiKey::ListOffsets, LIST_OFFSETS_VERSION),
        ] {
            let ok = resp
                .api_keys
                .iter()
                .any(|k| k.api_key == api as i16 && k.min_version <= version && version <= k.max_version);
            if !ok {
                bail!("broker at {} does not accept {api:?} v{version}", self.addr);
            }
        }
        Ok(())
    }

    /// The two halves, for a sender that writes requests while another task reads responses.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.stream.into_split()
    }
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
