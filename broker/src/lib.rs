//! Runnel: a broker that speaks the Apache Kafka wire protocol, with every partition
//! replicated through openraft.
//!
//! The path of a request: `server` (sockets, framing) -> `protocol` (decode) ->
//! `handlers` (one module per API family) -> `replication` / `log` / `cluster` -> `store`.

pub mod alloc;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod handlers;
pub mod log;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod store;
