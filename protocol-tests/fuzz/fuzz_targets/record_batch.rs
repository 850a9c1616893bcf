//! Record batch validation as Produce applies it, and what follows on a batch that passes.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The broker's own allocator, as in the `runnel` binary: allocations sized from counts
/// read off the wire must fail to decode, not abort (see `runnel::alloc`).
#[global_allocator]
static ALLOCATOR: runnel::alloc::BrokerAllocator = runnel::alloc::BrokerAllocator;

fuzz_target!(|data: &[u8]| {
    protocol_tests::fuzz::record_batch(data);
});
