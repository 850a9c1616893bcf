//! The network edge: the listener, per-connection framing, request pipelining and ordered
//! responses. Requests are decoded by `protocol` and handled by `handlers`; nothing here
//! knows what a request means.

mod connection;
mod listener;

pub use listener::{serve, ListenerLimits};
