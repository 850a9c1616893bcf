//! Topic administration: CreateTopics (validate_only, assignments, configs), DeleteTopics
//! (by name and by topic id) and DescribeConfigs for topics and brokers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, TopicName,
};
use uuid::Uuid;

use super::metadata::str;
use crate::cluster::topic_config::{self, ConfigSource, ConfigType};
use crate::cluster::{ControllerCommand, TopicMeta};
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Refuses a command that would take the node past its partition capacity (every
/// partition is hosted here while Runnel runs as one node).
fn check_partition_capacity(node: &Node, cmd: &ControllerCommand) -> Result<(), BrokerError> {
    let hosted: usize = node.cluster().topics.values().map(|t| t.partitions.len()).sum();
    let adding = cmd.partitions_added();
    if hosted.saturating_add(adding) > node.partition_capacity {
        return Err(BrokerError::PolicyViolation(format!(
            "{adding} more partitions would exceed this node's limit of {} ({hosted} hosted); raise max_partitions",
            node.partition_capacity
        )));
    }
    Ok(())
}

/// Proposes a topic creation within the node's partition capacity; the check and the
/// proposal happen under one lock so that concurrent creations cannot both pass.
async fn propose_topic(node: &Node, cmd: ControllerCommand) -> Result<(), BrokerError> {
    let _creating = node.topic_creation.lock().await;
    check_partition_capacity(node, &cmd)?;
    node.controller.propose(cmd).await?;
    Ok(())
}

/// Creates `name` with the broker's defaults (auto-creation) and returns it.
pub(super) async fn create_topic_with_defaults(node: &Node, name: &str) -> Result<TopicMeta, BrokerError> {
    let cmd = ControllerCommand::CreateTopic {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions: node.config.num_partitions,
        replication_factor: node.config.default_replication_factor,
        assignments: None,
        configs: BTreeMap::new(),
    };
    propose_topic(node, cmd).await?;
    node.reconcile().await.map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
    node.cluster().topics.get(name).cloned().ok_or(BrokerError::LeaderNotAvailable)
}

fn created_configs(node: &Node, topic_configs: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    topic_config::effective(topic_configs, &node.broker_overrides)
        .into_iter()
        .map(|(s, v, src)| {
            CreatableTopicConfigs::default()
                .with_name(str(s.name))
                .with_value(Some(str(&v)))
                .with_read_only(false)
                .with_config_source(src as i8)
                .with_is_sensitive(false)
        })
        .collect()
}

pub async fn handle_create_topics(node: &Node, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    let mut created = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let fail = |err: ResponseError, msg: String| {
            CreatableTopicResult::default()
                .with_name(TopicName(str(&name)))
                .with_error_code(err.code())
                .with_error_message(Some(str(&msg)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None)
        };
        if counts.get(&name).copied().unwrap_or(0) > 1 {
            results.push(fail(ResponseError::InvalidRequest, format!("topic {name} is listed more than once")));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut config_error = None;
        for c in &t.configs {
            match &c.value {
                None => config_error = Some(format!("null value for config {}", c.name)),
                Some(v) => {
                    if let Err(e) = topic_config::validate(&c.name, v) {
                        config_error = Some(e.to_string());
                    }
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        if let Some(msg) = config_error {
            results.push(fail(ResponseError::InvalidConfig, msg));
            continue;
        }
        let assignments = if t.assignments.is_empty() {
            None
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                results.push(fail(
                    ResponseError::InvalidRequest,
                    "both assignments and num_partitions/replication_factor were given".into(),
                ));
                continue;
            }
            let mut a = t.assignments.clone();
            a.sort_by_key(|x| x.partition_index);
            if a.iter().enumerate().any(|(i, x)| x.partition_index != i as i32) {
                results.push(fail(ResponseError::InvalidReplicaAssignment, "partitions must be numbered 0..n".into()));
                continue;
            }
            Some(a.iter().map(|x| x.broker_ids.iter().map(|b| b.0 as u64).collect::<Vec<u64>>()).collect::<Vec<_>>())
        };
        let partitions = match (&assignments, t.num_partitions) {
            (Some(a), _) => a.len() as i32,
            (None, -1) => node.config.num_partitions,
            (None, n) => n,
        };
        let replication_factor = match (&assignments, t.replication_factor) {
            (Some(a), _) => a.first().map(|r| r.len() as i16).unwrap_or(0),
            (None, -1) => node.config.default_replication_factor,
            (None, n) => n,
        };
        let cmd = ControllerCommand::CreateTopic {
            name: name.clone(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            assignments,
            configs: configs.clone(),
        };
        let outcome = if req.validate_only {
            let mut scratch = (*node.cluster()).clone();
            check_partition_capacity(node, &cmd).and_then(|()| scratch.apply(cmd).map(|_| ()).map_err(BrokerError::from))
        } else {
            propose_topic(node, cmd).await
        };
        match outcome {
            Err(e) => results.push(fail(kafka_error(&e), e.to_string())),
            Ok(()) => {
                let topic_id = if req.validate_only {
                    Uuid::nil()
                } else {
                    node.cluster().topics.get(&name).map(|t| t.id).unwrap_or_else(Uuid::nil)
                };
                if !req.validate_only {
                    created.push(name.clone());
                }
                let mut r = CreatableTopicResult::default()
                    .with_name(TopicName(str(&name)))
                    .with_topic_id(topic_id)
                    .with_error_code(0)
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor);
                if version >= 5 {
                    r = r.with_configs(Some(created_configs(node, &configs)));
                }
                results.push(r);
            }
        }
    }
    if !created.is_empty() {
        if let Err(e) = node.reconcile().await {
            tracing::warn!(error = %e, "opening new partitions failed");
        }
        let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 30_000) as u64);
        let state = node.cluster();
        for name in created {
            if let Some(t) = state.topics.get(&name) {
                node.wait_for_leaders(t, timeout).await;
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn handle_delete_topics(node: &Node, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    let mut deleted_any = false;
    for (name, id) in wanted {
        let state = node.cluster();
        let topic = match &name {
            Some(n) => state.topics.get(n.as_str()).cloned(),
            None => state.topic_by_id(&id).cloned(),
        };
        let result = DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(str(&n)))).with_topic_id(id);
        let Some(topic) = topic else {
            let err = if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
            responses.push(result.with_error_code(err.code()).with_error_message(Some(str(&err.to_string()))));
            continue;
        };
        let result = result.with_name(Some(TopicName(str(&topic.name)))).with_topic_id(topic.id);
        match node.controller.propose(ControllerCommand::DeleteTopic { id: topic.id }).await {
            Ok(_) => {
                deleted_any = true;
                responses.push(result.with_error_code(0));
            }
            Err(e) => {
                let e = BrokerError::from(e);
                responses.push(result.with_error_code(kafka_error(&e).code()).with_error_message(Some(str(&e.to_string()))));
            }
        }
    }
    if deleted_any {
        if let Err(e) = node.reconcile().await {
            tracing::warn!(error = %e, "closing deleted partitions failed");
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

fn config_entry(
    name: &str,
    value: &str,
    source: ConfigSource,
    read_only: bool,
    config_type: ConfigType,
    doc: Option<&str>,
    synonyms: Vec<DescribeConfigsSynonym>,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str(name))
        .with_value(Some(str(value)))
        .with_read_only(read_only)
        .with_config_source(source as i8)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(config_type as i8)
        .with_documentation(doc.map(str))
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default().with_name(str(name)).with_value(Some(str(value))).with_source(source as i8)
}

fn wanted(keys: &Option<Vec<kafka_protocol::protocol::StrBytes>>, name: &str) -> bool {
    keys.as_ref().is_none_or(|k| k.is_empty() || k.iter().any(|x| x.as_str() == name))
}

/// Broker-level settings as Kafka names them: (name, value, type, is overridden).
fn broker_settings(node: &Node) -> Vec<(String, String, ConfigType, bool, &'static str)> {
    let c = &node.config;
    let d = crate::config::NodeConfig::default();
    let mut out = vec![
        ("node.id".to_string(), c.node_id.to_string(), ConfigType::Int, true, "This node's id."),
        ("broker.id".to_string(), c.node_id.to_string(), ConfigType::Int, true, "This node's id."),
        ("listeners".to_string(), format!("PLAINTEXT://{}", c.listen), ConfigType::List, true, "Addresses the node listens on."),
        (
            "advertised.listeners".to_string(),
            format!("PLAINTEXT://{}:{}", c.advertise_host, c.advertise_port),
            ConfigType::List,
            true,
            "Addresses clients are told to use.",
        ),
        ("log.dirs".to_string(), c.data_dir.join("partitions").display().to_string(), ConfigType::String, true, "Where partition logs live."),
        (
            "auto.create.topics.enable".to_string(),
            c.auto_create_topics_enable.to_string(),
            ConfigType::Boolean,
            c.auto_create_topics_enable != d.auto_create_topics_enable,
            "Create unknown topics on first use.",
        ),
        ("num.partitions".to_string(), c.num_partitions.to_string(), ConfigType::Int, c.num_partitions != d.num_partitions, "Partitions of auto-created topics."),
        ("default.replication.factor".to_string(), node.config.default_replication_factor.to_string(), ConfigType::Int, false, "Replication factor of auto-created topics."),
        (
            "socket.request.max.bytes".to_string(),
            c.max_request_bytes.to_string(),
            ConfigType::Int,
            c.max_request_bytes != d.max_request_bytes,
            "Largest request accepted.",
        ),
        (
            "connections.max.idle.ms".to_string(),
            c.connections_max_idle.as_millis().to_string(),
            ConfigType::Long,
            c.connections_max_idle != d.connections_max_idle,
            "Idle connections are closed after this long.",
        ),
        ("log.retention.hours".to_string(), "168".to_string(), ConfigType::Int, false, "Default retention in hours."),
    ];
    for s in topic_config::TOPIC_SETTINGS {
        if let Some(b) = s.broker_synonym {
            if out.iter().any(|(n, ..)| n == b) {
                continue;
            }
            let (v, overridden) = match node.broker_overrides.get(b) {
                Some(v) => (v.clone(), true),
                None => (s.default.to_string(), false),
            };
            out.push((b.to_string(), v, s.config_type, overridden, s.doc));
        }
    }
    out
}

pub fn handle_describe_configs(node: &Node, req: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let state = node.cluster();
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let result = DescribeConfigsResult::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        match res.resource_type {
            RESOURCE_TOPIC => {
                let Some(topic) = state.topics.get(res.resource_name.as_str()) else {
                    results.push(
                        result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str(&format!("unknown topic {}", res.resource_name)))),
                    );
                    continue;
                };
                let configs = topic_config::effective(&topic.configs, &node.broker_overrides)
                    .into_iter()
                    .filter(|(s, _, _)| wanted(&res.configuration_keys, s.name))
                    .map(|(s, v, src)| {
                        let mut syn = Vec::new();
                        if req.include_synonyms {
                            if let Some(tv) = topic.configs.get(s.name) {
                                syn.push(synonym(s.name, tv, ConfigSource::DynamicTopic));
                            }
                            if let Some(b) = s.broker_synonym {
                                if let Some(bv) = node.broker_overrides.get(b) {
                                    syn.push(synonym(b, bv, ConfigSource::StaticBroker));
                                }
                                syn.push(synonym(b, s.default, ConfigSource::Default));
                            }
                        }
                        let doc = req.include_documentation.then_some(s.doc);
                        config_entry(s.name, &v, src, false, s.config_type, doc, syn)
                    })
                    .collect();
                results.push(result.with_error_code(0).with_configs(configs));
            }
            RESOURCE_BROKER => {
                let name = res.resource_name.as_str();
                if !name.is_empty() && name.parse::<i32>().ok() != Some(node.node_id()) {
                    results.push(
                        result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str(&format!("this is broker {}, not {name}", node.node_id())))),
                    );
                    continue;
                }
                let configs = broker_settings(node)
                    .into_iter()
                    .filter(|(n, ..)| wanted(&res.configuration_keys, n))
                    .map(|(n, v, t, overridden, doc)| {
                        let src = if overridden { ConfigSource::StaticBroker } else { ConfigSource::Default };
                        let syn = if req.include_synonyms { vec![synonym(&n, &v, src)] } else { vec![] };
                        config_entry(&n, &v, src, true, t, req.include_documentation.then_some(doc), syn)
                    })
                    .collect();
                results.push(result.with_error_code(0).with_configs(configs));
            }
            other => results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str(&format!("resource type {other} is not supported")))),
            ),
        }
    }
    DescribeConfigsResponse::default().with_results(results)
}
