//! Test support: start the real `runnel` binary on a free loopback port with a temporary
//! data directory, and a minimal Kafka client built on `kafka-protocol` to talk to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    produce_response, ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// A running broker process; killed when dropped.
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The broker binary: cargo's own path in the runnel package's tests; elsewhere (the
/// protocol-tests crate) `RUNNEL_BIN`, or `runnel` beside the test's profile directory
/// (`target/release/deps/<test>` -> `target/release/runnel`), which `cargo test
/// --workspace` builds.
pub fn runnel_binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_runnel") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("RUNNEL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test executable lives in <profile>/deps");
    profile_dir.join("runnel")
}

impl Broker {
    pub fn start(args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut b = Broker { child: None, port: free_port(), data_dir: dir, _tmp: Some(tmp), args: args.iter().map(|s| s.to_string()).collect() };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        self.spawn_with_retries(3)
    }

    fn spawn_with_retries(&mut self, retries: u32) {
        let child = Command::new(runnel_binary())
            .arg("serve")
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn runnel");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("runnel exited with {status} before listening on {}", self.addr());
            }
            // A connect to a free loopback port can pick that same port as its own source
            // port and connect to itself; that is not the broker listening.
            if TcpStream::connect(self.addr()).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok()) {
                // Another test's broker may have been given the same free port and be the
                // one answering; ours then fails to bind and exits at once. Take a new port.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    assert!(retries > 0, "runnel exited with {status} right after {} answered", self.addr());
                    self.child = None;
                    self.port = free_port();
                    return self.spawn_with_retries(retries - 1);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("runnel did not listen on {} within 20 s", self.addr());
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("runnel did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `n` nodes of one cluster on loopback (node ids 1..=n, all controller voters), each
/// listening for clients; returns once every node is registered.
pub fn cluster(n: usize, args: &[&str]) -> Vec<Broker> {
    // The raft ports are picked before the nodes start, one after another; meanwhile the
    // kernel may hand one out as the source port of an outgoing connection (other tests
    // run at the same time), and the node meant to listen there exits. Start again on new
    // ports then: the nodes already started are stopped when dropped.
    for attempt in 1.. {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start_cluster(n, args))) {
            Ok(nodes) => return nodes,
            Err(e) if attempt < 3 => eprintln!("starting a cluster failed ({:?}); again on new ports", e.downcast_ref::<String>()),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!("the loop returns or panics")
}

fn start_cluster(n: usize, args: &[&str]) -> Vec<Broker> {
    let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let voters = raft_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
    let nodes: Vec<Broker> = (0..n)
        .map(|i| {
            let (id, raft) = ((i + 1).to_string(), format!("127.0.0.1:{}", raft_ports[i]));
            let mut all = vec!["--node-id", id.as_str(), "--raft-listen", raft.as_str(), "--voters", voters.as_str()];
            all.extend_from_slice(args);
            Broker::start(&all)
        })
        .collect();
    let mut c = nodes[0].client();
    wait_for("every node registered", || match c.request(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))) {
        ResponseKind::Metadata(m) => m.brokers.len() == n,
        _ => false,
    });
    nodes
}

/// Polls `done` every 100 ms for up to 60 s; panics naming `what` if it never holds.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking, one-request-at-a-time Kafka client.
pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    /// A client on a connection opened elsewhere.
    pub fn on(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Client { stream, correlation: 0 }
    }

    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Client { stream, correlation: 0 }
    }

    pub fn send_raw(&mut self, frame: &[u8]) {
        let mut buf = Vec::with_capacity(frame.len() + 4);
        buf.extend_from_slice(&(frame.len() as i32).to_be_bytes());
        buf.extend_from_slice(frame);
        self.stream.write_all(&buf).expect("write");
    }

    /// Reads one response frame; None when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn encode_request(&mut self, api: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("runnel-test")))
            .encode(&mut buf, api.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        buf.to_vec()
    }

    pub fn request(&mut self, api: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let frame = self.encode_request(api, version, &body);
        self.send_raw(&frame);
        let mut resp = self.read_frame().expect("response");
        let header = ResponseHeader::decode(&mut resp, api.response_header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, self.correlation, "responses in order");
        let decoded = ResponseKind::decode(api, &mut resp, version).expect("decode response");
        assert!(!resp.has_remaining(), "trailing bytes in response");
        decoded
    }
}

pub fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// Encodes records into one v2 batch with the given compression.
pub fn batch(records: &[(Option<&str>, &str, i64)], compression: kafka_protocol::records::Compression) -> Bytes {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v, ts))| plain_record(i, k.map(|k| Bytes::from(k.to_string())), Bytes::from(v.to_string()), *ts))
        .collect();
    encode(&recs, compression)
}

/// Record `i` of a batch without a producer id. kafka-protocol starts a new batch when
/// offset - sequence changes; keeping it constant yields one batch with base sequence -1.
fn plain_record(i: usize, key: Option<Bytes>, value: Bytes, timestamp: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: i as i32 - 1,
        timestamp,
        key,
        value: Some(value),
        headers: Default::default(),
    }
}

fn encode(records: &[Record], compression: kafka_protocol::records::Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression }).expect("encode batch");
    buf.freeze()
}

pub fn put_i32(buf: &mut Vec<u8>, v: i32) {
    let mut b = BytesMut::new();
    b.put_i32(v);
    buf.extend_from_slice(&b);
}

pub fn create_topic(c: &mut Client, name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopicsResponse {
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(configs.iter().map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v)))).collect());
    match c.request(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000))) {
        ResponseKind::CreateTopics(r) => r,
        other => panic!("{other:?}"),
    }
}

/// (error code, offset, timestamp) of a ListOffsets lookup of `timestamp` (-1 latest,
/// -2 earliest, -3 max timestamp, or a time) in one partition.
pub fn list_offsets(c: &mut Client, version: i16, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(s(topic)))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp).with_current_leader_epoch(-1)])]);
    match c.request(ApiKey::ListOffsets, version, RequestKind::ListOffsets(req)) {
        ResponseKind::ListOffsets(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.offset, p.timestamp)
        }
        other => panic!("{other:?}"),
    }
}

pub fn produce(c: &mut Client, version: i16, topic: &str, partition: i32, records: Bytes, acks: i16) -> Option<produce_response::PartitionProduceResponse> {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(s(topic)))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])]);
    if acks == 0 {
        let frame = c.encode_request(ApiKey::Produce, version, &RequestKind::Produce(req));
        c.send_raw(&frame);
        return None;
    }
    match c.request(ApiKey::Produce, version, RequestKind::Produce(req)) {
        ResponseKind::Produce(r) => Some(r.responses[0].partition_responses[0].clone()),
        other => panic!("{other:?}"),
    }
}

/// One idempotent (or transactional) batch of `n` records from `producer_id` at `epoch`,
/// sequence numbers from `base_sequence`.
pub fn producer_batch(producer_id: i64, epoch: i16, base_sequence: i32, n: usize, transactional: bool) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| {
            let sequence = base_sequence + i as i32;
            let value = Bytes::from(format!("{producer_id}-{epoch}-{sequence}"));
            Record { transactional, producer_id, producer_epoch: epoch, sequence, ..plain_record(i, None, value, 1_700_000_000_000) }
        })
        .collect();
    encode(&recs, kafka_protocol::records::Compression::None)
}

/// A size field of `/proc/<pid>/status` (`VmRSS`, `VmSize`, ...) in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}
