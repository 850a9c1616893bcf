//! ApiVersions: the advertised table, and the KIP-511 answer to versions from the future.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::versions::SUPPORTED;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, r)| ApiVersion::default().with_api_key(*k as i16).with_min_version(r.min).with_max_version(r.max))
        .collect()
}

pub fn handle(_req: &ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(0).with_api_keys(api_keys())
}

/// UNSUPPORTED_VERSION with the supported ranges, to be encoded as v0.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}
