//! Reading the captured client traffic in `protocol-tests/fixtures/` (written by
//! `capture/capture.py`; the format is in `capture/README.md`), for the replay test and
//! the fuzz seeds. Panics on a malformed fixture: fixtures are committed test data.

use std::path::{Path, PathBuf};

/// One frame as the recording proxy saw it.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// Seconds since the capture started.
    pub t: f64,
    /// Connection number, from 0 in accept order.
    pub conn: usize,
    /// Client to broker (a request) or back (a response).
    pub request: bool,
    /// The frame without its 4-byte length prefix.
    pub bytes: Vec<u8>,
}

/// A fixture: which client it recorded, and its frames in the order the proxy saw them.
pub struct Fixture {
    pub client: String,
    pub frames: Vec<CapturedFrame>,
}

/// Every committed fixture file, sorted.
pub fn paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
}

/// The fixture of `client` (its file stem, e.g. "kcat").
pub fn load(client: &str) -> Fixture {
    read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(format!("{client}.jsonl")))
}

pub fn read(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().expect("header line")).expect("header json");
    let frames = lines
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("frame json");
            CapturedFrame {
                t: v["t"].as_f64().expect("t"),
                conn: v["conn"].as_u64().expect("conn") as usize,
                request: match v["dir"].as_str() {
                    Some("req") => true,
                    Some("resp") => false,
                    other => panic!("unknown dir {other:?}"),
                },
                bytes: unhex(v["frame"].as_str().expect("frame")),
            }
        })
        .collect();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fixture");
    Fixture { client: header["client"].as_str().unwrap_or(stem).to_string(), frames }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}
