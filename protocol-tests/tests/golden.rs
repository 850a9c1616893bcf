//! Golden byte vectors for every API key and version that ApiVersions advertises: the
//! request frame (header and body, tagged fields included) and the response frame that
//! Runnel's codec produces for the samples in `protocol_tests::samples`, pinned in
//! `protocol-tests/vectors/<Api>.txt`. A vector that changes is a wire-format change: a
//! kafka-protocol upgrade, or a bug in Runnel's codec. To write the files afresh after a
//! deliberate change: `RUNNEL_BLESS_VECTORS=1 cargo test -p protocol-tests --test golden`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use protocol_tests::samples;
use runnel::protocol::codec::{decode_request, encode_response, Decoded};
use runnel::protocol::{legacy, versions};

const CORRELATION_ID: i32 = 0x0102_0304;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn to_hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// A request frame (without the length prefix) as a client writes it.
fn request_frame(api: ApiKey, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("golden")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header encodes");
    samples::request(api, version).encode(&mut buf, version).expect("sample request encodes");
    buf.freeze()
}

/// Every advertised version's vectors, checked through Runnel's own codec both ways.
fn vectors_of(api: ApiKey, min: i16, max: i16) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for version in min..=max {
        if legacy::is_legacy(api, version) {
            continue; // coded by hand in `protocol::legacy`, with its own layout tests
        }
        let frame = request_frame(api, version);
        match decode_request(frame.clone()).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}")) {
            Decoded::Request(r) => {
                assert_eq!((r.api_key, r.version, r.correlation_id), (api, version, CORRELATION_ID));
                assert_eq!(r.client_id.as_deref(), Some("golden"));
                assert_eq!(r.body, samples::request(api, version), "{api:?} v{version} request decodes to the sample");
            }
            other => panic!("{api:?} v{version}: {other:?}"),
        }
        let response = samples::response(api, version);
        let mut resp = encode_response(api, version, CORRELATION_ID, &response).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
        let whole = resp.clone();
        assert_eq!(resp.get_i32() as usize, resp.remaining(), "{api:?} v{version} length prefix");
        let header = ResponseHeader::decode(&mut resp, api.response_header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, CORRELATION_ID);
        let decoded = ResponseKind::decode(api, &mut resp, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e:#}"));
        assert!(!resp.has_remaining(), "{api:?} v{version} response has trailing bytes");
        assert_eq!(decoded, response, "{api:?} v{version} response decodes to the sample");
        out.insert(format!("request v{version:02}"), to_hex(&frame));
        out.insert(format!("response v{version:02}"), to_hex(&whole));
    }
    out
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.rsplitn(2, ' ');
            let hex = parts.next()?;
            Some((parts.next()?.to_string(), hex.to_string()))
        })
        .collect()
}

#[test]
fn every_advertised_version_matches_its_golden_vectors() {
    let bless = std::env::var_os("RUNNEL_BLESS_VECTORS").is_some();
    let mut failures = Vec::new();
    for (api, range) in versions::SUPPORTED {
        let actual = vectors_of(*api, range.min, range.max);
        let path = vectors_dir().join(format!("{api:?}.txt"));
        if bless {
            let mut text = format!("# {api:?} (key {}): request frames without the length prefix, response frames with it.\n", *api as i16);
            for (k, v) in &actual {
                let _ = writeln!(text, "{k} {v}");
            }
            std::fs::create_dir_all(vectors_dir()).expect("vectors dir");
            std::fs::write(&path, text).expect("write vectors");
            continue;
        }
        let expected = std::fs::read_to_string(&path).map(|t| parse(&t)).unwrap_or_default();
        for (k, v) in &actual {
            match expected.get(k) {
                None => failures.push(format!("{api:?} {k}: no golden vector in {}", path.display())),
                Some(e) if e != v => failures.push(format!("{api:?} {k}: bytes differ\n  golden {e}\n  actual {v}")),
                Some(_) => {}
            }
        }
        for k in expected.keys().filter(|k| !actual.contains_key(*k)) {
            failures.push(format!("{api:?} {k}: golden vector for a version no longer advertised"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden vector mismatches (bless with RUNNEL_BLESS_VECTORS=1 only after a deliberate change):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_advertised_api_has_a_vectors_file_and_no_other_file_exists() {
    let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
        .expect("protocol-tests/vectors")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    files.sort();
    let mut expected: Vec<String> = versions::SUPPORTED.iter().map(|(api, _)| format!("{api:?}.txt")).collect();
    expected.sort();
    assert_eq!(files, expected);
}
