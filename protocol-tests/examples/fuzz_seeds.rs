//! Writes seed corpora for the fuzz targets from the captured client traffic:
//! `request` gets every connection's request stream (length-prefixed frames, as a socket
//! carries them) and every single request; `record_batch` gets the records of every
//! partition of every captured Produce request.
//!
//! `cargo run --release -p protocol-tests --example fuzz_seeds -- protocol-tests/fuzz/corpus`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use runnel::protocol::codec::{decode_request, Decoded};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn write(dir: &Path, name: String, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "protocol-tests/fuzz/corpus".into()));
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let (mut requests, mut batches) = (0, 0);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&fixtures).expect("fixtures").filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "jsonl")) {
        let client = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fixture").to_string();
        let text = std::fs::read_to_string(path).expect("fixture");
        let mut streams: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (n, line) in text.lines().skip(1).enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            if v["dir"] != "req" {
                continue;
            }
            let frame = unhex(v["frame"].as_str().expect("frame"));
            let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&frame);
            write(&out.join("request"), format!("{client}-{n:04}"), &framed);
            streams.entry(v["conn"].as_u64().expect("conn")).or_default().extend_from_slice(&framed);
            requests += 1;
            if let Ok(Decoded::Request(r)) = decode_request(Bytes::from(frame)) {
                if let RequestKind::Produce(p) = r.body {
                    for (t, topic) in p.topic_data.iter().enumerate() {
                        for part in &topic.partition_data {
                            if let Some(records) = &part.records {
                                // The target's first byte is its mode: 1 re-signs the CRCs.
                                let mut seed = vec![1u8];
                                seed.extend_from_slice(records);
                                write(&out.join("record_batch"), format!("{client}-{n:04}-{t}-{}", part.index), &seed);
                                batches += 1;
                            }
                        }
                    }
                }
            }
        }
        for (conn, stream) in streams {
            write(&out.join("request"), format!("{client}-conn{conn:02}"), &stream);
        }
    }
    println!("{requests} requests and {batches} record batches from {} fixtures into {}", paths.len(), out.display());
}
