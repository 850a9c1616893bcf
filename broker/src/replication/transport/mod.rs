//! The transport between nodes (issue 6, in progress): every raft group's messages between
//! two nodes travel over the same connections. `frame` is the wire format, `peer` the
//! connections with request/reply correlation, `raft` openraft's network over them and the
//! router of inbound RPCs to local groups. The node does not use it yet: single-node mode
//! still runs `network::NoPeers`.

pub mod frame;
pub mod peer;
pub mod raft;
