//! The Kafka wire protocol: frames to typed requests and back (`codec`), the advertised
//! API version table (`versions`) and the single map from errors to Kafka codes
//! (`errors`), and the few dropped versions old clients still send (`legacy`). Nothing here does I/O or handles a request.

pub mod codec;
pub mod errors;
pub mod legacy;
pub mod records;
pub mod versions;
