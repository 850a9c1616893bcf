//! Protocol conformance support: sample messages for the golden vectors (`samples`), the
//! captured client traffic (`fixtures`) and the fuzz entry points (`fuzz`). The tests themselves live in `tests/`: golden vectors,
//! replay of captured client traffic, hostile input against a running broker, and the
//! inputs fuzzers once crashed on.

pub mod fixtures;
pub mod fuzz;
pub mod samples;
