//! Versions that Kafka 4.0 dropped but clients still in use send, and that the
//! `kafka-protocol` crate no longer has schemas for. Each is mapped onto the oldest
//! version the crate does have, so handlers see one typed request.
//!
//! DescribeConfigs v0 (sarama 1.22, Debian's Go package, uses it for every
//! `ClusterAdmin.DescribeConfig` and `ListTopics`): the request is v1 without the trailing
//! `include_synonyms` flag; the response has `is_default` where v1 has `config_source`,
//! and no synonyms.
//!
//! OffsetCommit v1 (sarama 1.22's consumer groups commit with it unless
//! `Consumer.Offsets.Retention` is set): the request carries a commit timestamp per
//! partition and no retention time; it is rewritten as v2. The v1 response is v2's.
//!
//! Produce v0-v2 (message format v0/v1): as Kafka 4.0 does (KAFKA-18659), the range is
//! advertised from 0 because librdkafka before 2.10 turns compression off against a broker
//! whose Produce minimum is above 0 (librdkafka #4956), but such a request is answered
//! UNSUPPORTED_VERSION for every partition and nothing is written. The request is v3
//! without the leading transactional id; the response is v3's minus later fields.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, DescribeConfigsResponse, ProduceResponse};

/// Kafka's config source DEFAULT_CONFIG, which v0 reports as `is_default`.
const SOURCE_DEFAULT: i8 = 5;

/// True when `version` of `api` is coded here rather than by the crate.
pub fn is_legacy(api: ApiKey, version: i16) -> bool {
    matches!((api, version), (ApiKey::DescribeConfigs, 0) | (ApiKey::OffsetCommit, 1) | (ApiKey::Produce, 0..=2))
}

/// The version whose schema the crate uses for the body of `version` of `api`.
pub fn body_version(api: ApiKey, version: i16) -> i16 {
    match (api, version) {
        (ApiKey::DescribeConfigs, 0) => 1,
        (ApiKey::OffsetCommit, 1) => 2,
        (ApiKey::Produce, 0..=2) => 3,
        _ => version,
    }
}

/// The version the crate decodes a legacy body as, and the body bytes to decode; a body
/// that is not even a well-formed legacy body is passed on for the crate to refuse.
pub fn request_as_supported(api: ApiKey, version: i16, body: Bytes) -> (i16, Bytes) {
    match (api, version) {
        (ApiKey::DescribeConfigs, 0) => {
            // v1 = v0 + include_synonyms (boolean, false).
            let mut b = BytesMut::with_capacity(body.len() + 1);
            b.put_slice(&body);
            b.put_u8(0);
            (1, b.freeze())
        }
        (ApiKey::Produce, 0..=2) => {
            // v3 = a null transactional id, then v0's fields.
            let mut b = BytesMut::with_capacity(body.len() + 2);
            b.put_i16(-1);
            b.put_slice(&body);
            (3, b.freeze())
        }
        (ApiKey::OffsetCommit, 1) => match offset_commit_v1_as_v2(&body) {
            Some(v2) => (2, v2),
            None => (2, Bytes::new()),
        },
        _ => (version, body),
    }
}

/// Reads big-endian fields off a body without trusting any length beyond its end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The bytes of a (nullable) string; a null string reads as empty.
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.i16()?;
        if len < 0 {
            return Some(&[]);
        }
        self.take(usize::from(len as u16))
    }
}

fn put_raw_string(out: &mut BytesMut, s: &[u8], null: bool) {
    if null {
        out.put_i16(-1);
    } else {
        // `s` came from a string of at most i16::MAX bytes.
        out.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
        out.put_slice(s);
    }
}

/// OffsetCommit v1 body rewritten as v2: retention time -1 ("broker default") after the
/// member id, and no per-partition commit timestamp.
fn offset_commit_v1_as_v2(body: &[u8]) -> Option<Bytes> {
    let mut r = Reader { buf: body };
    let mut out = BytesMut::with_capacity(body.len() + 8);
    let group = r.string()?;
    put_raw_string(&mut out, group, false);
    out.put_i32(r.i32()?); // generation id
    let member = r.string()?;
    put_raw_string(&mut out, member, false);
    out.put_i64(-1); // retention_time_ms
    let topics = r.i32()?;
    out.put_i32(topics);
    for _ in 0..topics.max(0) {
        let name = r.string()?;
        put_raw_string(&mut out, name, false);
        let partitions = r.i32()?;
        out.put_i32(partitions);
        for _ in 0..partitions.max(0) {
            out.put_slice(r.take(4 + 8)?); // partition index, committed offset
            r.take(8)?; // commit timestamp: Kafka ignores it from v1 on too
            let null = r.buf.len() >= 2 && i16::from_be_bytes([r.buf[0], r.buf[1]]) < 0;
            let metadata = r.string()?;
            put_raw_string(&mut out, metadata, null);
        }
    }
    // As everywhere else, bytes after the body are ignored.
    Some(out.freeze())
}

fn put_string(buf: &mut BytesMut, s: &str) -> Result<(), String> {
    let len = i16::try_from(s.len()).map_err(|_| format!("string of {} bytes", s.len()))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) -> Result<(), String> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

fn put_len(buf: &mut BytesMut, n: usize) -> Result<(), String> {
    buf.put_i32(i32::try_from(n).map_err(|_| format!("array of {n} items"))?);
    Ok(())
}

/// Encodes a DescribeConfigs response body at v0.
pub fn encode_describe_configs_v0(r: &DescribeConfigsResponse, buf: &mut BytesMut) -> Result<(), String> {
    buf.put_i32(r.throttle_time_ms);
    put_len(buf, r.results.len())?;
    for res in &r.results {
        buf.put_i16(res.error_code);
        put_nullable_string(buf, res.error_message.as_deref())?;
        buf.put_i8(res.resource_type);
        put_string(buf, &res.resource_name)?;
        put_len(buf, res.configs.len())?;
        for c in &res.configs {
            put_string(buf, &c.name)?;
            put_nullable_string(buf, c.value.as_deref())?;
            buf.put_u8(u8::from(c.read_only));
            buf.put_u8(u8::from(c.config_source == SOURCE_DEFAULT));
            buf.put_u8(u8::from(c.is_sensitive));
        }
    }
    Ok(())
}

/// Encodes a Produce response body at v0, v1 or v2: per partition index, error code and
/// base offset, then log_append_time from v2; throttle time after the topics from v1.
pub fn encode_produce_v0_2(r: &ProduceResponse, version: i16, buf: &mut BytesMut) -> Result<(), String> {
    put_len(buf, r.responses.len())?;
    for t in &r.responses {
        put_string(buf, &t.name)?;
        put_len(buf, t.partition_responses.len())?;
        for p in &t.partition_responses {
            buf.put_i32(p.index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.base_offset);
            if version >= 2 {
                buf.put_i64(p.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::protocol::{Decodable, StrBytes};

    #[test]
    fn a_v0_request_decodes_as_v1_without_synonyms() {
        // resources: [ {type 2, name "t", keys ["retention.ms"]} ]
        let mut v0 = BytesMut::new();
        v0.put_i32(1);
        v0.put_i8(2);
        v0.put_i16(1);
        v0.put_slice(b"t");
        v0.put_i32(1);
        v0.put_i16(12);
        v0.put_slice(b"retention.ms");
        let (version, mut body) = request_as_supported(ApiKey::DescribeConfigs, 0, v0.freeze());
        assert_eq!(version, 1);
        let req = DescribeConfigsRequest::decode(&mut body, version).expect("decode");
        assert!(!body.has_remaining());
        assert!(!req.include_synonyms);
        let expected = DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")]));
        assert_eq!(req.resources, vec![expected]);
    }

    #[test]
    fn an_offset_commit_v1_request_decodes_as_v2() {
        use kafka_protocol::messages::OffsetCommitRequest;
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_slice(b"g");
        v1.put_i32(4); // generation
        v1.put_i16(3);
        v1.put_slice(b"m-1");
        v1.put_i32(1); // topics
        v1.put_i16(1);
        v1.put_slice(b"t");
        v1.put_i32(2); // partitions
        v1.put_i32(0);
        v1.put_i64(42);
        v1.put_i64(1_700_000_000_000);
        v1.put_i16(-1); // null metadata
        v1.put_i32(1);
        v1.put_i64(7);
        v1.put_i64(-1);
        v1.put_i16(2);
        v1.put_slice(b"md");
        let (version, mut body) = request_as_supported(ApiKey::OffsetCommit, 1, v1.freeze());
        assert_eq!(version, 2);
        let req = OffsetCommitRequest::decode(&mut body, version).expect("decode");
        assert!(!body.has_remaining());
        assert_eq!(req.group_id.as_str(), "g");
        assert_eq!(req.generation_id_or_member_epoch, 4);
        assert_eq!(req.member_id.as_str(), "m-1");
        assert_eq!(req.retention_time_ms, -1);
        let p = &req.topics[0].partitions;
        assert_eq!((p[0].partition_index, p[0].committed_offset, p[0].committed_metadata.is_none()), (0, 42, true));
        assert_eq!((p[1].partition_index, p[1].committed_offset), (1, 7));
        assert_eq!(p[1].committed_metadata.as_deref(), Some("md"));
    }

    #[test]
    fn a_truncated_offset_commit_v1_request_does_not_decode() {
        let (version, mut body) = request_as_supported(ApiKey::OffsetCommit, 1, Bytes::from_static(&[0, 5, b'g']));
        assert!(kafka_protocol::messages::OffsetCommitRequest::decode(&mut body, version).is_err());
    }

    #[test]
    fn a_v0_response_reports_is_default_from_the_source() {
        let entry = |name: &'static str, source: i8| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(StrBytes::from_static_str("1")))
                .with_config_source(source)
        };
        let r = DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
            .with_error_message(None)
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![entry("a", 5), entry("b", 1)])]);
        let mut buf = BytesMut::new();
        encode_describe_configs_v0(&r, &mut buf).expect("encode");
        let mut b = buf.freeze();
        assert_eq!(b.get_i32(), 0); // throttle
        assert_eq!(b.get_i32(), 1); // results
        assert_eq!(b.get_i16(), 0); // error code
        assert_eq!(b.get_i16(), -1); // null message
        assert_eq!(b.get_i8(), 2);
        assert_eq!(b.get_i16(), 1);
        b.advance(1);
        assert_eq!(b.get_i32(), 2);
        for (name, is_default) in [(b'a', 1), (b'b', 0)] {
            assert_eq!(b.get_i16(), 1);
            assert_eq!(b.get_u8(), name);
            assert_eq!(b.get_i16(), 1);
            b.advance(1);
            assert_eq!(b.get_u8(), 0, "read_only");
            assert_eq!(b.get_u8(), is_default, "is_default");
            assert_eq!(b.get_u8(), 0, "is_sensitive");
        }
        assert!(!b.has_remaining());
    }

    #[test]
    fn a_produce_v2_request_decodes_as_v3_and_its_response_has_v2_fields() {
        use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
        use kafka_protocol::messages::{ProduceRequest, TopicName};
        let mut v2 = BytesMut::new();
        v2.put_i16(1); // acks
        v2.put_i32(1500); // timeout
        v2.put_i32(1); // topics
        v2.put_i16(1);
        v2.put_slice(b"t");
        v2.put_i32(1); // partitions
        v2.put_i32(3);
        v2.put_i32(4); // message set bytes
        v2.put_slice(b"abcd");
        let (version, mut body) = request_as_supported(ApiKey::Produce, 2, v2.freeze());
        let req = ProduceRequest::decode(&mut body, version).expect("decode");
        assert!(!body.has_remaining());
        assert_eq!((req.acks, req.timeout_ms, req.transactional_id.is_none()), (1, 1500, true));
        assert_eq!(req.topic_data[0].partition_data[0].index, 3);

        let r = ProduceResponse::default().with_throttle_time_ms(9).with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(3)
                .with_error_code(35)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)])]);
        for (version, len) in [(0, 4 + 2 + 1 + 4 + 4 + 2 + 8), (1, 4 + 2 + 1 + 4 + 4 + 2 + 8 + 4), (2, 4 + 2 + 1 + 4 + 4 + 2 + 8 + 8 + 4)] {
            let mut buf = BytesMut::new();
            encode_produce_v0_2(&r, version, &mut buf).expect("encode");
            assert_eq!(buf.len(), len, "v{version}");
            let mut b = buf.freeze();
            b.advance(4 + 2 + 1 + 4);
            assert_eq!((b.get_i32(), b.get_i16(), b.get_i64()), (3, 35, -1));
            if version >= 2 {
                assert_eq!(b.get_i64(), -1);
            }
            if version >= 1 {
                assert_eq!(b.get_i32(), 9);
            }
        }
    }
}
