//! Versions that Kafka 4.0 dropped but clients still in use send, and that the
//! `kafka-protocol` crate no longer has schemas for. Each is mapped onto the oldest
//! version the crate does have, so handlers see one typed request.
//!
//! DescribeConfigs v0 (sarama 1.22, Debian's Go package, uses it for every
//! `ClusterAdmin.DescribeConfig` and `ListTopics`): the request is v1 without the trailing
//! `include_synonyms` flag; the response has `is_default` where v1 has `config_source`,
//! and no synonyms.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, DescribeConfigsResponse};

/// Kafka's config source DEFAULT_CONFIG, which v0 reports as `is_default`.
const SOURCE_DEFAULT: i8 = 5;

/// True when `version` of `api` is coded here rather than by the crate.
pub fn is_legacy(api: ApiKey, version: i16) -> bool {
    api == ApiKey::DescribeConfigs && version == 0
}

/// The version the crate decodes a legacy body as, and the body bytes to decode.
pub fn request_as_supported(api: ApiKey, version: i16, body: Bytes) -> (i16, Bytes) {
    if is_legacy(api, version) {
        // v1 = v0 + include_synonyms (boolean, false).
        let mut b = BytesMut::with_capacity(body.len() + 1);
        b.put_slice(&body);
        b.put_u8(0);
        return (1, b.freeze());
    }
    (version, body)
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
}
