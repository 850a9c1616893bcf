//! The transport between nodes (issue 6, in progress): every raft group's messages between
//! two nodes travel over the same connections. `frame` is the wire format, `peer` the
//! connections with request/reply correlation. Nothing routes raft traffic over it yet:
//! single-node mode still uses `network::NoPeers`.

pub mod frame;
pub mod peer;
