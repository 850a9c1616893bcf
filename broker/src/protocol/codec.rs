//! Frames to typed requests and typed responses to frames, with the `kafka-protocol` crate.
//!
//! Pure functions over `Bytes`: no sockets here (see `server`), no request handling (see
//! `handlers`). The KIP-511 ApiVersions fallback is decided here, because it depends only
//! on the bytes of the request header.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::{legacy, versions};

/// Why a frame could not be turned into a request. Every variant closes the connection,
/// as Kafka does, except that an ApiVersions request of an unknown version is answered.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame too short for a request header ({0} bytes)")]
    ShortFrame(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
}

/// A decoded request: its header fields and typed body.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: RequestKind,
}

/// What the connection should do with a frame.
#[derive(Debug)]
// A request is the common case and lives only until it is dispatched; boxing it would cost
// an allocation per request to shrink the rare fallback.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A supported request.
    Request(Request),
    /// An ApiVersions request of a version newer than supported (KIP-511): answer
    /// UNSUPPORTED_VERSION with a v0 body listing the supported ranges.
    ApiVersionsFallback { correlation_id: i32, requested_version: i16 },
}

/// Decodes one frame (the bytes after the 4-byte length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::ShortFrame(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| ProtocolError::UnknownApiKey(raw_key))?;
    let Some(range) = versions::advertised(api_key) else {
        return Err(ProtocolError::UnknownApiKey(raw_key));
    };
    if api_key == ApiKey::ApiVersions && version > range.max {
        // Parse only as much of the header as every version shares: the correlation id.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(Decoded::ApiVersionsFallback { correlation_id, requested_version: version });
    }
    if version < range.min || version > range.max {
        return Err(ProtocolError::UnsupportedVersion { api: api_key, version });
    }
    let malformed = |reason: String| ProtocolError::Malformed { api: api_key, version, reason };
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| malformed(format!("header: {e:#}")))?;
    let (body_version, mut frame) = legacy::request_as_supported(api_key, version, frame);
    let body = RequestKind::decode(api_key, &mut frame, body_version).map_err(|e| malformed(format!("{e:#}")))?;
    if frame.has_remaining() {
        // As Kafka: bytes after the body are ignored. librdkafka 2.x sends Metadata v9+ "all
        // topics" with a 4-byte null array where a 1-byte compact one belongs (its #5049).
        tracing::debug!(?api_key, version, trailing = frame.remaining(), "ignoring bytes after the request body");
    }
    Ok(Decoded::Request(Request {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        body,
    }))
}

/// Encodes a response frame, 4-byte length prefix included.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, ProtocolError> {
    let enc_err = |reason: String| ProtocolError::Encode { api: api_key, version, reason };
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| enc_err(format!("header: {e:#}")))?;
    match body {
        ResponseKind::DescribeConfigs(r) if legacy::is_legacy(api_key, version) => {
            legacy::encode_describe_configs_v0(r, &mut buf).map_err(enc_err)?
        }
        ResponseKind::Produce(r) if legacy::is_legacy(api_key, version) => {
            legacy::encode_produce_v0_2(r, version, &mut buf).map_err(enc_err)?
        }
        _ => body.encode(&mut buf, legacy::body_version(api_key, version)).map_err(|e| enc_err(format!("{e:#}")))?,
    }
    let len = i32::try_from(buf.len() - 4).map_err(|_| enc_err("response over 2 GiB".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    fn frame(api: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, api.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        buf.freeze()
    }

    #[test]
    fn api_versions_v3_request_decodes_with_client_id() {
        let body = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("x"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        match decode_request(frame(ApiKey::ApiVersions, 3, &body)).expect("decodes") {
            Decoded::Request(r) => {
                assert_eq!(r.correlation_id, 42);
                assert_eq!(r.client_id.as_deref(), Some("test"));
                assert_eq!(r.version, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn api_versions_from_the_future_falls_back() {
        let mut f = BytesMut::new();
        f.put_i16(ApiKey::ApiVersions as i16);
        f.put_i16(99);
        f.put_i32(7);
        f.put_slice(b"\x00\x00garbage of a future version");
        match decode_request(f.freeze()).expect("fallback") {
            Decoded::ApiVersionsFallback { correlation_id, requested_version } => {
                assert_eq!((correlation_id, requested_version), (7, 99));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_api_key_and_unsupported_version_are_errors() {
        let mut f = BytesMut::new();
        f.put_i16(9999);
        f.put_i16(0);
        f.put_i32(1);
        assert!(matches!(decode_request(f.freeze()), Err(ProtocolError::UnknownApiKey(9999))));
        let mut f = BytesMut::new();
        f.put_i16(ApiKey::Metadata as i16);
        f.put_i16(99);
        f.put_i32(1);
        assert!(matches!(decode_request(f.freeze()), Err(ProtocolError::UnsupportedVersion { .. })));
    }

    #[test]
    fn truncated_body_is_malformed_not_a_panic() {
        let full = frame(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
        for cut in 0..full.len() {
            let _ = decode_request(full.slice(0..cut));
        }
    }

    #[test]
    fn metadata_all_topics_as_librdkafka_writes_it_is_accepted() {
        // Metadata v13 header, then librdkafka's body: a 4-byte -1 topics array where a
        // compact (1-byte) array belongs, allow_auto_topic_creation, include_topic_ops, tags.
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(13)
            .with_correlation_id(5)
            .encode(&mut f, ApiKey::Metadata.request_header_version(13))
            .expect("header");
        f.put_slice(&[0, 0, 0, 0, 0, 0, 0]);
        match decode_request(f.freeze()).expect("accepted as Kafka does") {
            Decoded::Request(r) => match r.body {
                RequestKind::Metadata(m) => assert!(m.topics.is_none(), "all topics"),
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn describe_configs_v0_is_decoded_through_v1() {
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::DescribeConfigs as i16)
            .with_request_api_version(0)
            .with_correlation_id(5)
            .encode(&mut f, 1)
            .expect("header");
        f.put_i32(0); // no resources
        match decode_request(f.freeze()).expect("decodes") {
            Decoded::Request(r) => {
                assert_eq!(r.version, 0);
                assert!(matches!(r.body, RequestKind::DescribeConfigs(_)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
