//! Request handlers, one module per API family: typed request in, typed response out.
//! The `Dispatcher` routes a decoded request to its handler and encodes the answer; it
//! never touches sockets (see `server`) and never writes files (see `log`, `replication`).

mod admin;
mod api_versions;
mod cluster_admin;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod txn;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tracing::{debug, Instrument};

use crate::node::Node;
use crate::protocol::codec::{encode_response, ProtocolError, Request};

/// A response being worked out; resolves to the encoded frame.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Bytes, ProtocolError>> + Send>>;

/// Routes requests to handlers.
pub struct Dispatcher {
    node: Arc<Node>,
}

fn respond(api: ApiKey, version: i16, correlation_id: i32, fut: impl Future<Output = ResponseKind> + Send + 'static) -> ResponseFuture {
    Box::pin(async move {
        let body = fut.await;
        encode_response(api, version, correlation_id, &body)
    })
}

impl Dispatcher {
    pub fn new(node: Arc<Node>) -> Self {
        Dispatcher { node }
    }

    /// Starts handling `req`. Work that must happen in request order (handing produced
    /// batches to raft) is done before this returns; the rest runs in the returned future,
    /// concurrently with later requests. `None`: the request gets no response (acks=0).
    pub async fn submit(&self, req: Request, client_host: &str) -> Option<ResponseFuture> {
        let Request { api_key, version, correlation_id, client_id, body } = req;
        let span = tracing::debug_span!("request", api = ?api_key, version, correlation_id, client_id = client_id.as_deref().unwrap_or(""));
        debug!(parent: &span, "request");
        metrics::counter!("runnel_server_requests_total", "api" => format!("{api_key:?}")).increment(1);
        let node = self.node.clone();
        let fut: ResponseFuture = match body {
            RequestKind::ApiVersions(r) => {
                respond(api_key, version, correlation_id, async move { ResponseKind::ApiVersions(api_versions::handle(&r, version)) })
            }
            RequestKind::Metadata(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::Metadata(metadata::handle_metadata(&node, r, version).await)
            }.instrument(span)),
            RequestKind::DescribeCluster(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DescribeCluster(metadata::handle_describe_cluster(&node, r, version))
            }),
            RequestKind::CreateTopics(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::CreateTopics(admin::handle_create_topics(&node, r, version).await)
            }.instrument(span)),
            RequestKind::DeleteTopics(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DeleteTopics(admin::handle_delete_topics(&node, r, version).await)
            }.instrument(span)),
            RequestKind::DescribeConfigs(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DescribeConfigs(admin::handle_describe_configs(&node, r, version))
            }),
            RequestKind::Produce(r) => {
                let acks = r.acks;
                let pending = produce::submit(&node, r, version).instrument(span.clone()).await;
                if acks == 0 {
                    // No response; the writes still complete in the background.
                    tokio::spawn(async move { let _ = pending.await; }.instrument(span));
                    return None;
                }
                respond(api_key, version, correlation_id, async move { ResponseKind::Produce(pending.await) }.instrument(span))
            }
            RequestKind::Fetch(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::Fetch(fetch::handle_fetch(&node, r, version).await)
            }.instrument(span)),
            RequestKind::ListOffsets(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::ListOffsets(fetch::handle_list_offsets(&node, r, version))
            }),
            RequestKind::OffsetForLeaderEpoch(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::OffsetForLeaderEpoch(fetch::handle_offset_for_leader_epoch(&node, r, version))
            }),
            RequestKind::FindCoordinator(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::FindCoordinator(groups::handle_find_coordinator(&node, r, version))
            }),
            RequestKind::OffsetCommit(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::OffsetCommit(groups::handle_offset_commit(&node, r, version).await)
            }.instrument(span)),
            RequestKind::OffsetFetch(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::OffsetFetch(groups::handle_offset_fetch(&node, r, version))
            }),
            RequestKind::JoinGroup(r) => {
                let (client_id, client_host) = (client_id.clone().unwrap_or_default(), client_host.to_string());
                respond(api_key, version, correlation_id, async move {
                    ResponseKind::JoinGroup(groups::handle_join_group(&node, r, version, &client_id, &client_host).await)
                }.instrument(span))
            }
            RequestKind::SyncGroup(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::SyncGroup(groups::handle_sync_group(&node, r, version).await)
            }.instrument(span)),
            RequestKind::Heartbeat(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::Heartbeat(groups::handle_heartbeat(&node, r, version).await)
            }),
            RequestKind::LeaveGroup(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::LeaveGroup(groups::handle_leave_group(&node, r, version).await)
            }.instrument(span)),
            RequestKind::ListGroups(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::ListGroups(groups::handle_list_groups(&node, r, version).await)
            }),
            RequestKind::DescribeGroups(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DescribeGroups(groups::handle_describe_groups(&node, r, version).await)
            }),
            RequestKind::DeleteGroups(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DeleteGroups(groups::handle_delete_groups(&node, r, version).await)
            }.instrument(span)),
            RequestKind::OffsetDelete(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::OffsetDelete(groups::handle_offset_delete(&node, r, version).await)
            }.instrument(span)),
            RequestKind::InitProducerId(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::InitProducerId(txn::handle_init_producer_id(&node, r, version).await)
            }.instrument(span)),
            RequestKind::AddPartitionsToTxn(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::AddPartitionsToTxn(txn::handle_add_partitions_to_txn(&node, r, version).await)
            }.instrument(span)),
            RequestKind::AddOffsetsToTxn(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::AddOffsetsToTxn(txn::handle_add_offsets_to_txn(&node, r, version).await)
            }.instrument(span)),
            RequestKind::TxnOffsetCommit(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::TxnOffsetCommit(txn::handle_txn_offset_commit(&node, r, version).await)
            }.instrument(span)),
            RequestKind::EndTxn(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::EndTxn(txn::handle_end_txn(&node, r, version).await)
            }.instrument(span)),
            RequestKind::ListTransactions(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::ListTransactions(txn::handle_list_transactions(&node, r, version).await)
            }),
            RequestKind::DescribeTransactions(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DescribeTransactions(txn::handle_describe_transactions(&node, r, version).await)
            }),
            RequestKind::AlterPartitionReassignments(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::AlterPartitionReassignments(cluster_admin::handle_alter_partition_reassignments(&node, r, version).await)
            }.instrument(span)),
            RequestKind::ListPartitionReassignments(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::ListPartitionReassignments(cluster_admin::handle_list_partition_reassignments(&node, r, version))
            }),
            RequestKind::ElectLeaders(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::ElectLeaders(cluster_admin::handle_elect_leaders(&node, r, version).await)
            }.instrument(span)),
            RequestKind::UnregisterBroker(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::UnregisterBroker(cluster_admin::handle_unregister_broker(&node, r, version).await)
            }.instrument(span)),
            RequestKind::AddRaftVoter(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::AddRaftVoter(cluster_admin::handle_add_raft_voter(&node, r, version).await)
            }.instrument(span)),
            RequestKind::DescribeQuorum(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::DescribeQuorum(cluster_admin::handle_describe_quorum(&node, r, version).await)
            }.instrument(span)),
            RequestKind::RemoveRaftVoter(r) => respond(api_key, version, correlation_id, async move {
                ResponseKind::RemoveRaftVoter(cluster_admin::handle_remove_raft_voter(&node, r, version).await)
            }.instrument(span)),
            other => {
                // `codec` only lets advertised APIs through, so this is a missing match arm.
                tracing::error!(api = ?api_key, "advertised api has no handler: {other:?}");
                return Some(Box::pin(async move {
                    Err(ProtocolError::Malformed { api: api_key, version, reason: "no handler".into() })
                }));
            }
        };
        Some(fut)
    }

    /// KIP-511: an ApiVersions request newer than supported.
    pub fn api_versions_fallback(&self, correlation_id: i32, requested_version: i16) -> Option<ResponseFuture> {
        debug!(requested_version, "ApiVersions fallback to v0");
        let body = ResponseKind::ApiVersions(api_versions::unsupported_version_response());
        Some(Box::pin(async move { encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) }))
    }
}
