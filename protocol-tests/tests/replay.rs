//! Replays the traffic that stock clients really sent (`protocol-tests/fixtures/`, written
//! by `protocol-tests/capture/capture.py`) against a fresh broker, byte for byte, and checks
//! that every response decodes at the version the client asked for and says what the
//! captured response said.
//!
//! Order: each connection's requests go out in their captured order, and a request is sent
//! only once every response the client had received before sending it (on any connection)
//! has arrived again, so a fetch parked before a produce is parked again. Identifiers the
//! broker picks at random are carried over: member ids (from JoinGroup responses) and topic
//! ids (from CreateTopics and Metadata responses) are substituted in later requests, and
//! mapped back before responses are compared. Broker ports, the cluster id and the exact
//! ApiVersions list are left out of the comparison (the ranges are checked to cover every
//! version the client used); DescribeConfigs is compared on the configs the capture saw.

#[path = "../../broker/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use common::Broker;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use protocol_tests::fixtures;
use runnel::protocol::{legacy, versions};

/// The broker flags `capture.py` runs with.
const CAPTURE_FLAGS: &[&str] = &["--num-partitions", "2", "--group-initial-rebalance-delay-ms", "0"];
/// Longest a replay may wait for one response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

struct Exchange {
    conn: usize,
    sent_at: f64,
    request: Vec<u8>,
    captured: Vec<u8>,
    /// When the captured response arrived, for ordering.
    answered_at: f64,
}

impl Exchange {
    fn api(&self) -> ApiKey {
        ApiKey::try_from(i16::from_be_bytes([self.request[0], self.request[1]])).expect("fixture holds known api keys")
    }
    fn version(&self) -> i16 {
        i16::from_be_bytes([self.request[2], self.request[3]])
    }
    fn correlation_id(&self) -> i32 {
        i32::from_be_bytes([self.request[4], self.request[5], self.request[6], self.request[7]])
    }
}

/// The exchanges of a fixture: requests paired with their captured responses (requests
/// whose connection closed before an answer are left out: nothing can be compared).
fn load(client: &str) -> (String, Vec<Exchange>) {
    let fixture = fixtures::load(client);
    let mut open: HashMap<(usize, [u8; 4]), usize> = HashMap::new();
    let mut exchanges = Vec::new();
    let mut pending: Vec<Option<(usize, f64, Vec<u8>)>> = Vec::new();
    for f in fixture.frames {
        let frame = f.bytes;
        if f.request {
            let key = (f.conn, [frame[4], frame[5], frame[6], frame[7]]);
            open.insert(key, pending.len());
            pending.push(Some((f.conn, f.t, frame)));
        } else {
            let key = (f.conn, [frame[0], frame[1], frame[2], frame[3]]);
            let i = open.remove(&key).expect("a response answers a captured request");
            let (conn, sent_at, request) = pending[i].take().expect("answered once");
            exchanges.push((i, Exchange { conn, sent_at, request, captured: frame, answered_at: f.t }));
        }
    }
    exchanges.sort_by_key(|(i, _)| *i);
    (fixture.client, exchanges.into_iter().map(|(_, e)| e).collect())
}

/// Random identifiers the two brokers picked, captured -> replayed.
#[derive(Default)]
struct Identities {
    members: BTreeMap<String, String>,
    topics: BTreeMap<[u8; 16], [u8; 16]>,
}

impl Identities {
    /// Learns from a response pair; only the APIs that hand out identifiers matter.
    fn learn(&mut self, captured: &ResponseKind, replayed: &ResponseKind) {
        match (captured, replayed) {
            (ResponseKind::JoinGroup(c), ResponseKind::JoinGroup(r)) => {
                self.member(&c.member_id, &r.member_id);
                self.member(&c.leader, &r.leader);
                for (cm, rm) in c.members.iter().zip(&r.members) {
                    self.member(&cm.member_id, &rm.member_id);
                }
            }
            (ResponseKind::CreateTopics(c), ResponseKind::CreateTopics(r)) => {
                for (ct, rt) in c.topics.iter().zip(&r.topics) {
                    self.topic(ct.topic_id.as_bytes(), rt.topic_id.as_bytes());
                }
            }
            (ResponseKind::Metadata(c), ResponseKind::Metadata(r)) => {
                for ct in &c.topics {
                    if let Some(rt) = r.topics.iter().find(|rt| rt.name == ct.name) {
                        self.topic(ct.topic_id.as_bytes(), rt.topic_id.as_bytes());
                    }
                }
            }
            _ => {}
        }
    }

    fn member(&mut self, captured: &str, replayed: &str) {
        // An error answer carries no id; the comparison reports it.
        if !captured.is_empty() && !replayed.is_empty() && captured != replayed {
            assert_eq!(captured.len(), replayed.len(), "member ids of one client keep their length");
            self.members.insert(captured.to_string(), replayed.to_string());
        }
    }

    fn topic(&mut self, captured: &[u8; 16], replayed: &[u8; 16]) {
        if captured != &[0; 16] && captured != replayed {
            self.topics.insert(*captured, *replayed);
        }
    }

    /// A captured request with every learnt identifier replaced by the replay's.
    fn rewrite(&self, request: &[u8]) -> Vec<u8> {
        let mut out = request.to_vec();
        for (c, r) in &self.members {
            replace_all(&mut out, c.as_bytes(), r.as_bytes());
        }
        for (c, r) in &self.topics {
            replace_all(&mut out, c, r);
        }
        out
    }

    /// A replayed response's debug text with identifiers mapped back to the captured ones.
    fn unmap(&self, text: String) -> String {
        let mut text = text;
        for (c, r) in &self.members {
            text = text.replace(r.as_str(), c);
        }
        for (c, r) in &self.topics {
            text = text.replace(&uuid::Uuid::from_bytes(*r).to_string(), &uuid::Uuid::from_bytes(*c).to_string());
        }
        text
    }
}

fn replace_all(buf: &mut [u8], from: &[u8], to: &[u8]) {
    debug_assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= buf.len() {
        if &buf[i..i + from.len()] == from {
            buf[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// A decoded response body at the request's version; `None` for hand-coded legacy layouts
/// the crate cannot read (compared as bytes instead).
fn decode_body(e: &Exchange, frame: &[u8]) -> Option<ResponseKind> {
    let (api, version) = (e.api(), e.version());
    let mut b = Bytes::copy_from_slice(frame);
    let header = ResponseHeader::decode(&mut b, api.response_header_version(version)).expect("response header");
    assert_eq!(header.correlation_id, e.correlation_id(), "{api:?} v{version}: correlation id");
    if legacy::is_legacy(api, version) && legacy::body_version(api, version) != version && api != ApiKey::OffsetCommit {
        return None;
    }
    let body = ResponseKind::decode(api, &mut b, legacy::body_version(api, version))
        .unwrap_or_else(|err| panic!("{api:?} v{version} response does not decode: {err:#}"));
    assert!(!b.has_remaining(), "{api:?} v{version} response has {} trailing bytes", b.remaining());
    Some(body)
}

/// Fields that differ between any two brokers, cleared before comparing.
fn normalise(r: &mut ResponseKind, captured: Option<&ResponseKind>) {
    match r {
        ResponseKind::Metadata(m) => {
            m.cluster_id = None;
            m.brokers.iter_mut().for_each(|b| b.port = 0);
        }
        ResponseKind::FindCoordinator(f) => {
            f.port = 0;
            f.coordinators.iter_mut().for_each(|c| c.port = 0);
        }
        ResponseKind::DescribeCluster(d) => {
            d.cluster_id = Default::default();
            d.brokers.iter_mut().for_each(|b| b.port = 0);
        }
        ResponseKind::ApiVersions(a) => a.api_keys.clear(),
        ResponseKind::DescribeConfigs(d) => {
            // Only the configs the capture saw: new settings must not break old fixtures.
            if let Some(ResponseKind::DescribeConfigs(c)) = captured {
                for (res, cres) in d.results.iter_mut().zip(&c.results) {
                    res.configs.retain(|x| cres.configs.iter().any(|y| y.name == x.name));
                }
            }
        }
        _ => {}
    }
}

struct Progress {
    /// Per exchange, the replayed response once it arrived.
    replayed: Vec<Option<Vec<u8>>>,
    ids: Identities,
    failed: Option<String>,
}

struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// Replays one fixture; returns the exchanges' replayed responses in fixture order.
fn replay(exchanges: &[Exchange], addr: &str) -> (Vec<Vec<u8>>, Identities) {
    let n = exchanges.len();
    // Exchanges by captured answer time: request i waits for every answer before it was sent.
    let mut by_answer: Vec<usize> = (0..n).collect();
    by_answer.sort_by(|a, b| exchanges[*a].answered_at.total_cmp(&exchanges[*b].answered_at));
    let shared = Arc::new(Shared {
        progress: Mutex::new(Progress { replayed: vec![None; n], ids: Identities::default(), failed: None }),
        changed: Condvar::new(),
    });
    let conns: std::collections::BTreeSet<usize> = exchanges.iter().map(|e| e.conn).collect();
    thread::scope(|scope| {
        for conn in conns {
            let mine: Vec<usize> = (0..n).filter(|i| exchanges[*i].conn == conn).collect();
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).expect("timeout");
            let mut reader = stream.try_clone().expect("clone");
            let mut writer = stream;
            let (shared_w, shared_r, by_answer) = (shared.clone(), shared.clone(), &by_answer);
            let mine_r = mine.clone();
            scope.spawn(move || {
                for i in mine {
                    let e = &exchanges[i];
                    let frame = {
                        let deadline = Instant::now() + RESPONSE_TIMEOUT * 2;
                        let mut p = shared_w.progress.lock().expect("lock");
                        loop {
                            let ready = by_answer.iter().take_while(|j| exchanges[**j].answered_at < e.sent_at).all(|j| p.replayed[*j].is_some());
                            if ready || p.failed.is_some() {
                                break;
                            }
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                p.failed = Some(format!("request {i} ({:?}) never became due", e.api()));
                                shared_w.changed.notify_all();
                                break;
                            }
                            p = shared_w.changed.wait_timeout(p, left).expect("lock").0;
                        }
                        if p.failed.is_some() {
                            return;
                        }
                        p.ids.rewrite(&e.request)
                    };
                    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
                    out.extend_from_slice(&frame);
                    if writer.write_all(&out).is_err() {
                        return;
                    }
                }
            });
            scope.spawn(move || {
                for i in mine_r {
                    let e = &exchanges[i];
                    let mut len = [0u8; 4];
                    let got = reader.read_exact(&mut len).and_then(|_| {
                        let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
                        reader.read_exact(&mut body).map(|_| body)
                    });
                    let mut p = shared_r.progress.lock().expect("lock");
                    match got {
                        Ok(body) => {
                            if let (Some(c), Some(r)) = (decode_body(e, &e.captured), decode_body(e, &body)) {
                                p.ids.learn(&c, &r);
                            }
                            p.replayed[i] = Some(body);
                        }
                        Err(err) => {
                            p.failed.get_or_insert(format!("no response to request {i} ({:?} v{}): {err}", e.api(), e.version()));
                        }
                    }
                    shared_r.changed.notify_all();
                    if p.failed.is_some() {
                        return;
                    }
                }
            });
        }
    });
    let p = Arc::try_unwrap(shared).ok().expect("threads done").progress.into_inner().expect("lock");
    if let Some(f) = p.failed {
        panic!("{f}");
    }
    (p.replayed.into_iter().map(|r| r.expect("every response arrived")).collect(), p.ids)
}

fn check_client(client: &str) {
    let (name, exchanges) = load(client);
    assert!(exchanges.len() >= 10, "{client}: fixture holds only {} exchanges", exchanges.len());
    for e in &exchanges {
        let r = versions::advertised(e.api()).unwrap_or_else(|| panic!("{name} used unadvertised {:?}", e.api()));
        assert!((r.min..=r.max).contains(&e.version()), "{name} used {:?} v{} outside {r:?}", e.api(), e.version());
    }
    let broker = Broker::start(CAPTURE_FLAGS);
    let (replayed, ids) = replay(&exchanges, &broker.addr());
    let mut mismatches = Vec::new();
    for (i, (e, body)) in exchanges.iter().zip(&replayed).enumerate() {
        let (api, version) = (e.api(), e.version());
        let (captured, now) = match (decode_body(e, &e.captured), decode_body(e, body)) {
            (Some(mut c), Some(mut r)) => {
                let c_copy = c.clone();
                normalise(&mut c, None);
                normalise(&mut r, Some(&c_copy));
                (format!("{c:?}"), ids.unmap(format!("{r:?}")))
            }
            // Legacy layouts: the bytes themselves.
            _ => (format!("{:?}", e.captured), format!("{body:?}")),
        };
        if captured != now {
            mismatches.push(format!("#{i} {api:?} v{version} on conn {}:\n  captured {captured}\n  replayed {now}", e.conn));
        }
    }
    assert!(mismatches.is_empty(), "{name}: {} of {} responses differ:\n{}", mismatches.len(), exchanges.len(), mismatches.join("\n"));
}

#[test]
fn kcat_librdkafka_2_0() {
    check_client("kcat");
}

#[test]
fn confluent_kafka_recent_librdkafka() {
    check_client("confluent-kafka");
}

#[test]
fn kafka_python() {
    check_client("kafka-python");
}

#[test]
fn aiokafka() {
    check_client("aiokafka");
}

#[test]
fn kafkajs() {
    check_client("kafkajs");
}

#[test]
fn sarama() {
    check_client("sarama");
}
