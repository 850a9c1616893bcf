//! Topic-level settings by their Kafka names: types, defaults, validation and the broker
//! settings that supply their defaults. DescribeConfigs and CreateTopics read this table;
//! the controller stores only the values a user set explicitly.

use std::collections::BTreeMap;

/// Kafka's ConfigType codes (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// How a value is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    Long { min: i64 },
    Int { min: i64 },
    Bool,
    Double { min: f64, max: f64 },
    OneOf(&'static [&'static str]),
    /// A comma-separated list whose items are each one of these.
    ListOf(&'static [&'static str]),
    /// Free text (throttled replica lists and similar).
    Any,
}

/// One topic setting.
#[derive(Debug, Clone, Copy)]
pub struct TopicSetting {
    pub name: &'static str,
    /// Kafka's default, used unless the broker setting named in `broker_synonym` overrides it.
    pub default: &'static str,
    /// The broker-level setting that supplies the default, as Kafka names it.
    pub broker_synonym: Option<&'static str>,
    pub config_type: ConfigType,
    pub doc: &'static str,
    check: Check,
}

const MAX_LONG: &str = "9223372036854775807";

/// Every topic setting Runnel accepts, with Kafka 4.0's defaults.
pub const TOPIC_SETTINGS: &[TopicSetting] = &[
    TopicSetting { name: "cleanup.policy", default: "delete", broker_synonym: Some("log.cleanup.policy"), config_type: ConfigType::List, doc: "delete, compact, or both: how old log segments are discarded.", check: Check::ListOf(&["delete", "compact"]) },
    TopicSetting { name: "compression.type", default: "producer", broker_synonym: Some("compression.type"), config_type: ConfigType::String, doc: "Final compression of the topic's data; `producer` keeps what the producer sent.", check: Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]) },
    TopicSetting { name: "delete.retention.ms", default: "86400000", broker_synonym: Some("log.cleaner.delete.retention.ms"), config_type: ConfigType::Long, doc: "How long tombstones are kept in compacted topics.", check: Check::Long { min: 0 } },
    TopicSetting { name: "file.delete.delay.ms", default: "60000", broker_synonym: Some("log.segment.delete.delay.ms"), config_type: ConfigType::Long, doc: "Delay before a deleted segment's files are removed.", check: Check::Long { min: 0 } },
    TopicSetting { name: "flush.messages", default: MAX_LONG, broker_synonym: Some("log.flush.interval.messages"), config_type: ConfigType::Long, doc: "Accepted for compatibility; Runnel's fsync policy is the node setting log_fsync.", check: Check::Long { min: 1 } },
    TopicSetting { name: "flush.ms", default: MAX_LONG, broker_synonym: Some("log.flush.interval.ms"), config_type: ConfigType::Long, doc: "Accepted for compatibility; Runnel's fsync policy is the node setting log_fsync.", check: Check::Long { min: 0 } },
    TopicSetting { name: "follower.replication.throttled.replicas", default: "", broker_synonym: None, config_type: ConfigType::List, doc: "Accepted for compatibility; not enforced.", check: Check::Any },
    TopicSetting { name: "index.interval.bytes", default: "4096", broker_synonym: Some("log.index.interval.bytes"), config_type: ConfigType::Int, doc: "Bytes of log between entries of the time index.", check: Check::Int { min: 0 } },
    TopicSetting { name: "leader.replication.throttled.replicas", default: "", broker_synonym: None, config_type: ConfigType::List, doc: "Accepted for compatibility; not enforced.", check: Check::Any },
    TopicSetting { name: "local.retention.bytes", default: "-2", broker_synonym: Some("log.local.retention.bytes"), config_type: ConfigType::Long, doc: "Tiered storage: local retention by size (-2: use retention.bytes).", check: Check::Long { min: -2 } },
    TopicSetting { name: "local.retention.ms", default: "-2", broker_synonym: Some("log.local.retention.ms"), config_type: ConfigType::Long, doc: "Tiered storage: local retention by time (-2: use retention.ms).", check: Check::Long { min: -2 } },
    TopicSetting { name: "max.compaction.lag.ms", default: MAX_LONG, broker_synonym: Some("log.cleaner.max.compaction.lag.ms"), config_type: ConfigType::Long, doc: "Longest time a record stays uncompacted.", check: Check::Long { min: 1 } },
    TopicSetting { name: "max.message.bytes", default: "1048588", broker_synonym: Some("message.max.bytes"), config_type: ConfigType::Int, doc: "Largest record batch accepted, in bytes.", check: Check::Int { min: 0 } },
    TopicSetting { name: "message.timestamp.after.max.ms", default: "3600000", broker_synonym: Some("log.message.timestamp.after.max.ms"), config_type: ConfigType::Long, doc: "How far in the future a CreateTime timestamp may be.", check: Check::Long { min: 0 } },
    TopicSetting { name: "message.timestamp.before.max.ms", default: MAX_LONG, broker_synonym: Some("log.message.timestamp.before.max.ms"), config_type: ConfigType::Long, doc: "How far in the past a CreateTime timestamp may be.", check: Check::Long { min: 0 } },
    TopicSetting { name: "message.timestamp.type", default: "CreateTime", broker_synonym: Some("log.message.timestamp.type"), config_type: ConfigType::String, doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock.", check: Check::OneOf(&["CreateTime", "LogAppendTime"]) },
    TopicSetting { name: "min.cleanable.dirty.ratio", default: "0.5", broker_synonym: Some("log.cleaner.min.cleanable.ratio"), config_type: ConfigType::Double, doc: "Dirty ratio above which a compacted log is cleaned.", check: Check::Double { min: 0.0, max: 1.0 } },
    TopicSetting { name: "min.compaction.lag.ms", default: "0", broker_synonym: Some("log.cleaner.min.compaction.lag.ms"), config_type: ConfigType::Long, doc: "Shortest time a record stays uncompacted.", check: Check::Long { min: 0 } },
    TopicSetting { name: "min.insync.replicas", default: "1", broker_synonym: Some("min.insync.replicas"), config_type: ConfigType::Int, doc: "Replicas that must take part in an acks=all write.", check: Check::Int { min: 1 } },
    TopicSetting { name: "preallocate", default: "false", broker_synonym: Some("log.preallocate"), config_type: ConfigType::Boolean, doc: "Accepted for compatibility; segments are not preallocated.", check: Check::Bool },
    TopicSetting { name: "remote.storage.enable", default: "false", broker_synonym: None, config_type: ConfigType::Boolean, doc: "Tiered storage; Runnel has none, so only false is accepted.", check: Check::OneOf(&["false"]) },
    TopicSetting { name: "retention.bytes", default: "-1", broker_synonym: Some("log.retention.bytes"), config_type: ConfigType::Long, doc: "Largest size of a partition's log before old segments are deleted (-1: no limit).", check: Check::Long { min: -1 } },
    TopicSetting { name: "retention.ms", default: "604800000", broker_synonym: Some("log.retention.ms"), config_type: ConfigType::Long, doc: "How long records are kept (-1: forever).", check: Check::Long { min: -1 } },
    TopicSetting { name: "segment.bytes", default: "1073741824", broker_synonym: Some("log.segment.bytes"), config_type: ConfigType::Int, doc: "Size at which a log segment is closed and a new one started.", check: Check::Int { min: 14 } },
    TopicSetting { name: "segment.index.bytes", default: "10485760", broker_synonym: Some("log.index.size.max.bytes"), config_type: ConfigType::Int, doc: "Accepted for compatibility; Runnel's indexes grow as needed.", check: Check::Int { min: 4 } },
    TopicSetting { name: "segment.jitter.ms", default: "0", broker_synonym: Some("log.roll.jitter.ms"), config_type: ConfigType::Long, doc: "Accepted for compatibility; no jitter is applied.", check: Check::Long { min: 0 } },
    TopicSetting { name: "segment.ms", default: "604800000", broker_synonym: Some("log.roll.ms"), config_type: ConfigType::Long, doc: "Age at which a log segment is closed and a new one started.", check: Check::Long { min: 1 } },
    TopicSetting { name: "unclean.leader.election.enable", default: "false", broker_synonym: Some("unclean.leader.election.enable"), config_type: ConfigType::Boolean, doc: "Accepted for compatibility; raft never elects an out-of-date leader.", check: Check::Bool },
];

/// The setting called `name`, if Runnel knows it.
pub fn setting(name: &str) -> Option<&'static TopicSetting> {
    TOPIC_SETTINGS.iter().find(|s| s.name == name)
}

/// Why a topic setting was refused (Kafka answers INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config {0}")]
    Unknown(String),
    #[error("invalid value {value:?} for topic config {name}: {reason}")]
    Invalid { name: String, value: String, reason: String },
}

/// Checks one value against its setting.
pub fn validate(name: &str, value: &str) -> Result<(), TopicConfigError> {
    let s = setting(name).ok_or_else(|| TopicConfigError::Unknown(name.to_string()))?;
    let bad = |reason: &str| TopicConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let v = value.trim();
    match s.check {
        Check::Long { min } => match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            Ok(_) => Err(bad(&format!("must be at least {min}"))),
            Err(_) => Err(bad("expected a whole number")),
        },
        Check::Int { min } => match v.parse::<i32>() {
            Ok(n) if i64::from(n) >= min => Ok(()),
            Ok(_) => Err(bad(&format!("must be at least {min}"))),
            Err(_) => Err(bad("expected a 32-bit whole number")),
        },
        Check::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(bad("expected true or false")),
        },
        Check::Double { min, max } => match v.parse::<f64>() {
            Ok(n) if n >= min && n <= max => Ok(()),
            _ => Err(bad(&format!("expected a number from {min} to {max}"))),
        },
        Check::OneOf(allowed) => {
            if allowed.contains(&v) {
                Ok(())
            } else {
                Err(bad(&format!("expected one of {}", allowed.join(", "))))
            }
        }
        Check::ListOf(allowed) => {
            let items: Vec<&str> = v.split(',').map(str::trim).collect();
            if !items.is_empty() && items.iter().all(|i| allowed.contains(i)) {
                Ok(())
            } else {
                Err(bad(&format!("expected a list of {}", allowed.join(", "))))
            }
        }
        Check::Any => Ok(()),
    }
}

/// Validates a whole set of topic settings, as CreateTopics and AlterConfigs receive them.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), TopicConfigError> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

/// Where a topic setting's effective value comes from (Kafka's ConfigSource codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// The effective value of every topic setting for one topic, with its source and its
/// broker-level synonym value when the broker sets one.
pub fn effective(
    topic_configs: &BTreeMap<String, String>,
    broker_overrides: &BTreeMap<&'static str, String>,
) -> Vec<(&'static TopicSetting, String, ConfigSource)> {
    TOPIC_SETTINGS
        .iter()
        .map(|s| {
            if let Some(v) = topic_configs.get(s.name) {
                (s, v.clone(), ConfigSource::DynamicTopic)
            } else if let Some(v) = s.broker_synonym.and_then(|b| broker_overrides.get(b)) {
                (s, v.clone(), ConfigSource::StaticBroker)
            } else {
                (s, s.default.to_string(), ConfigSource::Default)
            }
        })
        .collect()
}

/// Typed view of the settings the log and the write path use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: u32,
    pub log_append_time: bool,
    pub min_insync_replicas: i32,
}

impl LogSettings {
    /// Reads the typed values from the effective settings; values were validated on the
    /// way in, so a parse failure falls back to Kafka's default.
    pub fn resolve(topic_configs: &BTreeMap<String, String>, broker_overrides: &BTreeMap<&'static str, String>) -> Self {
        let eff = effective(topic_configs, broker_overrides);
        let get = |name: &str| -> (&str, &str) {
            eff.iter()
                .find(|(s, _, _)| s.name == name)
                .map(|(s, v, _)| (v.as_str(), s.default))
                .unwrap_or(("", ""))
        };
        fn num<T: std::str::FromStr>(pair: (&str, &str), fallback: T) -> T {
            pair.0.trim().parse().or_else(|_| pair.1.parse()).unwrap_or(fallback)
        }
        LogSettings {
            segment_bytes: num(get("segment.bytes"), 1 << 30),
            segment_ms: num(get("segment.ms"), 604_800_000),
            index_interval_bytes: num(get("index.interval.bytes"), 4096),
            max_message_bytes: num(get("max.message.bytes"), 1_048_588),
            log_append_time: get("message.timestamp.type").0 == "LogAppendTime",
            min_insync_replicas: num(get("min.insync.replicas"), 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_settings_accept_good_values_and_refuse_bad_ones() {
        assert!(validate("retention.ms", "3600000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert_eq!(validate("no.such.config", "1"), Err(TopicConfigError::Unknown("no.such.config".into())));
    }

    #[test]
    fn every_default_passes_its_own_validation() {
        for s in TOPIC_SETTINGS {
            if s.default.is_empty() {
                continue;
            }
            assert!(validate(s.name, s.default).is_ok(), "{} default {}", s.name, s.default);
        }
    }

    #[test]
    fn effective_values_prefer_topic_then_broker_then_default() {
        let mut topic = BTreeMap::new();
        topic.insert("retention.ms".to_string(), "1000".to_string());
        let mut broker = BTreeMap::new();
        broker.insert("message.max.bytes", "2000000".to_string());
        let eff = effective(&topic, &broker);
        let find = |n: &str| eff.iter().find(|(s, _, _)| s.name == n).cloned().expect("present");
        assert_eq!(find("retention.ms").1, "1000");
        assert_eq!(find("retention.ms").2, ConfigSource::DynamicTopic);
        assert_eq!(find("max.message.bytes").1, "2000000");
        assert_eq!(find("max.message.bytes").2, ConfigSource::StaticBroker);
        assert_eq!(find("cleanup.policy").2, ConfigSource::Default);
        let ls = LogSettings::resolve(&topic, &broker);
        assert_eq!(ls.max_message_bytes, 2_000_000);
        assert!(!ls.log_append_time);
    }
}
