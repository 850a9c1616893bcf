//! Every input a fuzzer ever crashed on (`protocol-tests/fuzz/regressions/<target>/`), run
//! through the same entry point as the fuzz target, so a fixed crash stays fixed.

use std::path::PathBuf;

use protocol_tests::fuzz::{record_batch, DispatchHarness};

/// As in the `runnel` binary and the fuzz targets (see `runnel::alloc`).
#[global_allocator]
static ALLOCATOR: runnel::alloc::BrokerAllocator = runnel::alloc::BrokerAllocator;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).expect("read input"))).collect()
}

#[test]
fn record_batch_regressions_stay_fixed() {
    for (name, data) in inputs("record_batch") {
        eprintln!("{name}");
        record_batch(&data);
    }
}

#[test]
fn request_regressions_stay_fixed() {
    let harness = DispatchHarness::new();
    for (name, data) in inputs("request") {
        eprintln!("{name}");
        harness.connection(&data);
    }
}
