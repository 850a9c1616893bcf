//! The request path: a connection's bytes, cut into frames, decoded and dispatched to a
//! broker node in a temporary directory (no sockets); every response must decode.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The broker's own allocator, as in the `runnel` binary: allocations sized from counts
/// read off the wire must fail to decode, not abort (see `runnel::alloc`).
#[global_allocator]
static ALLOCATOR: runnel::alloc::BrokerAllocator = runnel::alloc::BrokerAllocator;
use protocol_tests::fuzz::DispatchHarness;

static HARNESS: OnceLock<DispatchHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS.get_or_init(DispatchHarness::new).connection(data);
});
