//! The transport between nodes (issue 6, in progress): one TCP connection per pair of
//! nodes carries the messages of every raft group. So far only the framing exists
//! (`frame`); single-node mode still uses `network::NoPeers`.

pub mod frame;
