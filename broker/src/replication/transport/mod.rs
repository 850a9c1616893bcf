//! The transport between nodes (issue 6, in progress): every raft group's messages between
//! two nodes travel over the same connections. `frame` is the wire format, `peer` the
//! connections with request/reply correlation, `raft` openraft's network over them and the
//! router of inbound RPCs to local groups. In single-node mode the transport listens for
//! nobody and knows no peer.

pub mod frame;
pub mod peer;
pub mod raft;
