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
use protocol_tests::fixtures;
use runnel::protocol::codec::{decode_request, Decoded};

fn write(dir: &Path, name: String, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "protocol-tests/fuzz/corpus".into()));
    let (mut requests, mut batches) = (0, 0);
    let paths = fixtures::paths();
    for path in &paths {
        let client = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fixture").to_string();
        let mut streams: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for (n, f) in fixtures::read(path).frames.into_iter().enumerate().filter(|(_, f)| f.request) {
            let frame = f.bytes;
            let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&frame);
            write(&out.join("request"), format!("{client}-{n:04}"), &framed);
            streams.entry(f.conn).or_default().extend_from_slice(&framed);
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
