//! The ApiVersions table: exactly the API keys and version ranges Runnel implements.
//!
//! A range is listed here only when every version in it is handled by `handlers`; the
//! table is also the source of `docs/compatibility.md` (a test keeps the two in step).

use kafka_protocol::messages::ApiKey;

/// An inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i16,
    pub max: i16,
}

/// Every implemented API with its advertised version range.
pub const SUPPORTED: &[(ApiKey, Range)] = &[
    (ApiKey::Produce, Range { min: 0, max: 13 }),
    (ApiKey::Fetch, Range { min: 4, max: 17 }),
    (ApiKey::ListOffsets, Range { min: 1, max: 10 }),
    (ApiKey::Metadata, Range { min: 0, max: 13 }),
    (ApiKey::ApiVersions, Range { min: 0, max: 4 }),
    (ApiKey::CreateTopics, Range { min: 2, max: 7 }),
    (ApiKey::DeleteTopics, Range { min: 1, max: 6 }),
    (ApiKey::OffsetForLeaderEpoch, Range { min: 2, max: 4 }),
    (ApiKey::DescribeConfigs, Range { min: 0, max: 4 }),
    (ApiKey::DescribeCluster, Range { min: 0, max: 2 }),
    (ApiKey::FindCoordinator, Range { min: 0, max: 6 }),
    (ApiKey::OffsetCommit, Range { min: 1, max: 9 }),
    (ApiKey::OffsetFetch, Range { min: 1, max: 9 }),
    (ApiKey::OffsetDelete, Range { min: 0, max: 0 }),
    (ApiKey::JoinGroup, Range { min: 0, max: 9 }),
    (ApiKey::SyncGroup, Range { min: 0, max: 5 }),
    (ApiKey::Heartbeat, Range { min: 0, max: 4 }),
    (ApiKey::LeaveGroup, Range { min: 0, max: 5 }),
    (ApiKey::ListGroups, Range { min: 0, max: 5 }),
    (ApiKey::DescribeGroups, Range { min: 0, max: 5 }),
    (ApiKey::DeleteGroups, Range { min: 0, max: 2 }),
    (ApiKey::InitProducerId, Range { min: 0, max: 4 }),
    (ApiKey::AddPartitionsToTxn, Range { min: 0, max: 3 }),
    (ApiKey::AddOffsetsToTxn, Range { min: 0, max: 3 }),
    (ApiKey::TxnOffsetCommit, Range { min: 0, max: 3 }),
    (ApiKey::EndTxn, Range { min: 0, max: 3 }),
    (ApiKey::ListTransactions, Range { min: 0, max: 1 }),
    (ApiKey::DescribeTransactions, Range { min: 0, max: 0 }),
    (ApiKey::ElectLeaders, Range { min: 0, max: 2 }),
    (ApiKey::AlterPartitionReassignments, Range { min: 0, max: 1 }),
    (ApiKey::ListPartitionReassignments, Range { min: 0, max: 0 }),
    (ApiKey::UnregisterBroker, Range { min: 0, max: 0 }),
    (ApiKey::AddRaftVoter, Range { min: 0, max: 0 }),
    (ApiKey::RemoveRaftVoter, Range { min: 0, max: 0 }),
    (ApiKey::DescribeQuorum, Range { min: 0, max: 2 }),
];

/// The advertised range of `api`, or `None` when Runnel does not implement it.
pub fn advertised(api: ApiKey) -> Option<Range> {
    SUPPORTED.iter().find(|(k, _)| *k == api).map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_within_what_the_codec_supports() {
        for (api, r) in SUPPORTED {
            let crate_range = api.valid_versions();
            let min = (r.min..=r.max).find(|v| !super::super::legacy::is_legacy(*api, *v)).unwrap_or(r.max);
            assert!(min >= crate_range.min && r.max <= crate_range.max, "{api:?} {r:?} vs {crate_range:?}");
            assert!(r.min <= r.max);
        }
    }

    #[test]
    fn compatibility_doc_lists_every_advertised_range() {
        let doc = include_str!("../../../docs/compatibility.md");
        for (api, r) in SUPPORTED {
            let row = format!("| {} | {:?} | {}-{} |", *api as i16, api, r.min, r.max);
            assert!(doc.contains(&row), "docs/compatibility.md lacks the row `{row}`");
        }
        // And no row claims an API that is not advertised.
        for line in doc.lines().filter(|l| l.starts_with("| ") && l.matches('|').count() >= 4) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let Ok(key) = cells[1].parse::<i16>() {
                let api = ApiKey::try_from(key).expect("doc names a real api key");
                assert!(advertised(api).is_some(), "docs/compatibility.md lists unadvertised {api:?}");
            }
        }
    }
}
