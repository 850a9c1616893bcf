//! Frames of the transport between nodes: one connection per pair of nodes carries the
//! messages of every raft group (the controller, the coordinator, each partition), so each
//! frame names its group, and a reply names the request it answers. Pure: bytes in, frames
//! out and back; no sockets, and nothing here knows what a body holds.
//!
//! Layout (big-endian): `length u32` (bytes after it) | `kind u8` | `flags u8` |
//! `request id u64` | `group tag u8` [| `topic id 16 bytes` | `partition i32`] | `body`.
//! A `HeartbeatBatch` frame's body is whole AppendEntries frames (each with its own
//! request id and group), all requests or all replies as the batch itself: heartbeats of
//! many groups to one peer share a frame, and each is still answered on its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Bytes before the body, not counting the group's own bytes.
const FIXED_HEADER: usize = 1 + 1 + 8 + 1;
const PARTITION_GROUP: usize = 16 + 4;
/// Flag bit: this frame answers the request with the same id.
const FLAG_RESPONSE: u8 = 1;

/// The raft group a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupId {
    /// Cluster metadata (brokers, topics, assignments, configs).
    Controller,
    /// Consumer groups, committed offsets and transactions.
    Coordinator,
    /// One partition's log.
    Partition { topic: Uuid, partition: i32 },
}

impl GroupId {
    fn encoded_len(&self) -> usize {
        match self {
            GroupId::Partition { .. } => PARTITION_GROUP,
            _ => 0,
        }
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// First frame each way: who is speaking, and to whom it meant to speak.
    Hello = 0,
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
    /// Empty AppendEntries of many groups to one peer, coalesced.
    HeartbeatBatch = 4,
    /// A request handed to the group's leader (controller proposals from followers).
    Forward = 5,
    /// Node-level liveness: answered by the receiving node itself, whatever the group.
    Ping = 6,
    /// A read-only question for the group's leader (the controller quorum's state).
    Query = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Hello,
            1 => Kind::AppendEntries,
            2 => Kind::Vote,
            3 => Kind::InstallSnapshot,
            4 => Kind::HeartbeatBatch,
            5 => Kind::Forward,
            6 => Kind::Ping,
            7 => Kind::Query,
            _ => return None,
        })
    }
}

/// One message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// True when this answers the peer's request `request_id`.
    pub response: bool,
    pub request_id: u64,
    pub group: GroupId,
    pub body: Bytes,
}

/// Why bytes from a peer are not a frame. Every variant ends the connection: after a bad
/// frame the stream cannot be resynchronised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown group tag {0}")]
    UnknownGroup(u8),
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("a heartbeat batch holds a frame of kind {0}, not AppendEntries")]
    NotAHeartbeat(u8),
    #[error("a heartbeat batch mixes requests and replies")]
    MixedBatch,
}

impl Frame {
    /// Bytes this frame takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + FIXED_HEADER + self.group.encoded_len() + self.body.len()
    }

    /// Appends the frame to `out`; fails only when it would be over `max` bytes (after the
    /// length prefix), which the peer would refuse.
    pub fn encode(&self, out: &mut BytesMut, max: usize) -> Result<(), FrameError> {
        let len = self.encoded_len() - 4;
        if len > max || len > u32::MAX as usize {
            return Err(FrameError::TooLarge { len, max });
        }
        out.reserve(len + 4);
        out.put_u32(len as u32);
        out.put_u8(self.kind as u8);
        out.put_u8(if self.response { FLAG_RESPONSE } else { 0 });
        out.put_u64(self.request_id);
        match self.group {
            GroupId::Controller => out.put_u8(0),
            GroupId::Coordinator => out.put_u8(1),
            GroupId::Partition { topic, partition } => {
                out.put_u8(2);
                out.put_slice(topic.as_bytes());
                out.put_i32(partition);
            }
        }
        out.put_slice(&self.body);
        Ok(())
    }

    /// Takes the next whole frame off the front of `buf`, whose body then shares `buf`'s
    /// memory. `Ok(None)`: more bytes are needed. A length over `max` is refused as soon as
    /// its four bytes arrive, before anything is buffered for it.
    pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = buf.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        if len < FIXED_HEADER {
            return Err(FrameError::Short(len));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Frame::parse(buf.split_to(len).freeze()).map(Some)
    }

    /// Parses a frame whose length prefix has been taken off: `frame` is its bytes after it.
    fn parse(mut frame: Bytes) -> Result<Frame, FrameError> {
        let len = frame.len();
        if len < FIXED_HEADER {
            return Err(FrameError::Short(len));
        }
        let kind = frame.get_u8();
        let kind = Kind::from_u8(kind).ok_or(FrameError::UnknownKind(kind))?;
        let flags = frame.get_u8();
        if flags & !FLAG_RESPONSE != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let request_id = frame.get_u64();
        let group = match frame.get_u8() {
            0 => GroupId::Controller,
            1 => GroupId::Coordinator,
            2 => {
                if frame.remaining() < PARTITION_GROUP {
                    return Err(FrameError::Short(len));
                }
                let mut topic = [0u8; 16];
                frame.copy_to_slice(&mut topic);
                GroupId::Partition { topic: Uuid::from_bytes(topic), partition: frame.get_i32() }
            }
            other => return Err(FrameError::UnknownGroup(other)),
        };
        Ok(Frame { kind, response: flags & FLAG_RESPONSE != 0, request_id, group, body: frame })
    }

    /// Appends `heartbeats` (AppendEntries frames, requests or replies as `response` says)
    /// to `out` as `HeartbeatBatch` frames of at most `max` bytes each, as few as fit.
    /// Returns how many batch frames were written. Nothing is written when a frame is not
    /// such a heartbeat or too large for a batch of its own.
    pub fn encode_heartbeats(heartbeats: &[Frame], response: bool, out: &mut BytesMut, max: usize) -> Result<usize, FrameError> {
        let outer = FIXED_HEADER;
        for f in heartbeats {
            if f.kind != Kind::AppendEntries {
                return Err(FrameError::NotAHeartbeat(f.kind as u8));
            }
            if f.response != response {
                return Err(FrameError::MixedBatch);
            }
            if f.encoded_len() + outer > max {
                return Err(FrameError::TooLarge { len: f.encoded_len() + outer, max });
            }
        }
        let mut batches = 0;
        let mut rest = heartbeats;
        while !rest.is_empty() {
            let mut body_len = 0;
            let fit = rest
                .iter()
                .take_while(|f| {
                    let fits = outer + body_len + f.encoded_len() <= max;
                    if fits {
                        body_len += f.encoded_len();
                    }
                    fits
                })
                .count();
            let len = outer + body_len;
            out.reserve(4 + len);
            out.put_u32(len as u32);
            out.put_u8(Kind::HeartbeatBatch as u8);
            out.put_u8(if response { FLAG_RESPONSE } else { 0 });
            out.put_u64(0);
            out.put_u8(0);
            for f in &rest[..fit] {
                f.encode(out, max)?;
            }
            rest = &rest[fit..];
            batches += 1;
        }
        Ok(batches)
    }

    /// The heartbeats a `HeartbeatBatch` frame carries, in order. Each must be an
    /// AppendEntries frame that is a request or a reply as the batch is.
    pub fn heartbeats(self) -> Result<Vec<Frame>, FrameError> {
        let mut body = self.body;
        let mut inner = Vec::new();
        while body.has_remaining() {
            if body.remaining() < 4 {
                return Err(FrameError::Short(body.remaining()));
            }
            let len = body.get_u32() as usize;
            if len > body.remaining() {
                return Err(FrameError::Short(body.remaining()));
            }
            let f = Frame::parse(body.split_to(len))?;
            if f.kind != Kind::AppendEntries {
                return Err(FrameError::NotAHeartbeat(f.kind as u8));
            }
            if f.response != self.response {
                return Err(FrameError::MixedBatch);
            }
            inner.push(f);
        }
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn frame(kind: Kind, group: GroupId, body: &'static [u8]) -> Frame {
        Frame { kind, response: false, request_id: 7, group, body: Bytes::from_static(body) }
    }

    fn arb_group() -> impl Strategy<Value = GroupId> {
        prop_oneof![
            Just(GroupId::Controller),
            Just(GroupId::Coordinator),
            (any::<u128>(), any::<i32>()).prop_map(|(t, p)| GroupId::Partition { topic: Uuid::from_u128(t), partition: p }),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (0u8..8, any::<bool>(), any::<u64>(), arb_group(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(kind, response, request_id, group, body)| Frame {
                kind: Kind::from_u8(kind).expect("0..8 are kinds"),
                response,
                request_id,
                group,
                body: Bytes::from(body),
            },
        )
    }

    proptest! {
        /// Any sequence of frames, cut into arbitrary chunks as TCP may deliver them, comes
        /// back whole and in order.
        #[test]
        fn frames_survive_any_chunking(frames in proptest::collection::vec(arb_frame(), 1..8), cuts in proptest::collection::vec(1usize..64, 1..40)) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire, MAX).expect("encode");
            }
            prop_assert_eq!(wire.len(), frames.iter().map(Frame::encoded_len).sum::<usize>());
            let mut wire = wire.freeze();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut cuts = cuts.into_iter().cycle();
            while wire.has_remaining() || !buf.is_empty() {
                let n = cuts.next().unwrap_or(1).min(wire.remaining());
                buf.extend_from_slice(&wire.split_to(n));
                while let Some(f) = Frame::decode(&mut buf, MAX).expect("valid frames decode") {
                    got.push(f);
                }
                if n == 0 {
                    break;
                }
            }
            prop_assert_eq!(got, frames);
        }

        /// Arbitrary bytes are a frame, a request for more, or an error: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Frame::decode(&mut buf, MAX) {}
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_its_prefix_alone() {
        let mut buf = BytesMut::from(&((MAX as u32) + 1).to_be_bytes()[..]);
        assert_eq!(Frame::decode(&mut buf, MAX), Err(FrameError::TooLarge { len: MAX + 1, max: MAX }));
        assert!(buf.capacity() < 1024, "nothing reserved for the declared length");
        let big = Frame { body: Bytes::from(vec![0; MAX]), ..frame(Kind::AppendEntries, GroupId::Controller, b"") };
        assert!(matches!(big.encode(&mut BytesMut::new(), MAX), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut wire = BytesMut::new();
        frame(Kind::Vote, GroupId::Partition { topic: Uuid::from_u128(1), partition: 3 }, b"x").encode(&mut wire, MAX).expect("encode");
        let good = wire.freeze();
        let with = |at: usize, byte: u8| {
            let mut b = BytesMut::from(&good[..]);
            b[at] = byte;
            Frame::decode(&mut b, MAX)
        };
        assert_eq!(with(4, 9), Err(FrameError::UnknownKind(9)));
        assert_eq!(with(5, 2), Err(FrameError::UnknownFlags(2)));
        assert_eq!(with(14, 7), Err(FrameError::UnknownGroup(7)));
        // A partition frame whose length stops inside the group id.
        let mut short = BytesMut::new();
        short.put_u32((FIXED_HEADER + 5) as u32);
        short.put_slice(&good[4..4 + FIXED_HEADER + 5]);
        assert_eq!(Frame::decode(&mut short, MAX), Err(FrameError::Short(FIXED_HEADER + 5)));
        let mut tiny = BytesMut::from(&[0, 0, 0, 3, 1, 0, 0][..]);
        assert_eq!(Frame::decode(&mut tiny, MAX), Err(FrameError::Short(3)));
    }

    #[test]
    fn a_decoded_body_shares_the_read_buffer() {
        let mut wire = BytesMut::new();
        frame(Kind::AppendEntries, GroupId::Coordinator, b"batch bytes").encode(&mut wire, MAX).expect("encode");
        let start = wire.as_ptr() as usize;
        let f = Frame::decode(&mut wire, MAX).expect("decode").expect("whole");
        let body_at = f.body.as_ptr() as usize;
        assert!(body_at >= start && body_at < start + f.encoded_len(), "body is a slice of the buffer, not a copy");
        assert_eq!(&f.body[..], b"batch bytes");
    }

    fn heartbeat(i: u64, response: bool) -> Frame {
        Frame {
            kind: Kind::AppendEntries,
            response,
            request_id: i,
            group: GroupId::Partition { topic: Uuid::from_u128(u128::from(i)), partition: i as i32 },
            body: Bytes::from(format!("heartbeat {i}")),
        }
    }

    /// Decodes every frame of `wire`, expanding heartbeat batches.
    fn decode_all(mut wire: BytesMut, max: usize) -> (usize, Vec<Frame>) {
        let (mut batches, mut frames) = (0, Vec::new());
        while let Some(f) = Frame::decode(&mut wire, max).expect("valid frame") {
            assert_eq!(f.kind, Kind::HeartbeatBatch);
            batches += 1;
            frames.extend(f.heartbeats().expect("valid batch"));
        }
        assert!(wire.is_empty());
        (batches, frames)
    }

    #[test]
    fn heartbeats_round_trip_in_one_batch_each_with_its_own_id_and_group() {
        for response in [false, true] {
            let beats: Vec<_> = (0..100).map(|i| heartbeat(i, response)).collect();
            let mut wire = BytesMut::new();
            assert_eq!(Frame::encode_heartbeats(&beats, response, &mut wire, MAX).expect("encode"), 1);
            let (batches, got) = decode_all(wire, MAX);
            assert_eq!((batches, got), (1, beats));
        }
    }

    #[test]
    fn heartbeats_over_the_frame_limit_are_split_into_several_batches() {
        let beats: Vec<_> = (0..50).map(|i| heartbeat(i, false)).collect();
        let max = 10 * beats[0].encoded_len() + FIXED_HEADER;
        let mut wire = BytesMut::new();
        let written = Frame::encode_heartbeats(&beats, false, &mut wire, max).expect("encode");
        assert!(written >= 5, "{written} batches for 50 heartbeats of which 10 fit in one");
        let (batches, got) = decode_all(wire, max);
        assert_eq!(batches, written);
        assert_eq!(got, beats);
        // One heartbeat that fits in no batch is refused, and nothing is written.
        let mut wire = BytesMut::new();
        let big = Frame { body: Bytes::from(vec![0; max]), ..heartbeat(1, false) };
        assert!(matches!(Frame::encode_heartbeats(&[heartbeat(0, false), big], false, &mut wire, max), Err(FrameError::TooLarge { .. })));
        assert!(wire.is_empty());
    }

    #[test]
    fn a_batch_holds_only_heartbeats_of_its_own_direction() {
        let vote = Frame { kind: Kind::Vote, ..heartbeat(1, false) };
        let reply = heartbeat(2, true);
        let mut out = BytesMut::new();
        assert_eq!(Frame::encode_heartbeats(std::slice::from_ref(&vote), false, &mut out, MAX), Err(FrameError::NotAHeartbeat(Kind::Vote as u8)));
        assert_eq!(Frame::encode_heartbeats(std::slice::from_ref(&reply), false, &mut out, MAX), Err(FrameError::MixedBatch));
        assert!(out.is_empty());
        // Hand-made batches that break the rules are refused when read.
        let batch_of = |inner: &[Frame], response: bool| {
            let mut body = BytesMut::new();
            for f in inner {
                f.encode(&mut body, MAX).expect("encode");
            }
            Frame { kind: Kind::HeartbeatBatch, response, request_id: 0, group: GroupId::Controller, body: body.freeze() }
        };
        assert_eq!(batch_of(&[heartbeat(0, false), vote], false).heartbeats(), Err(FrameError::NotAHeartbeat(Kind::Vote as u8)));
        assert_eq!(batch_of(&[heartbeat(0, false), reply], false).heartbeats(), Err(FrameError::MixedBatch));
        let nested = batch_of(&[heartbeat(0, false)], false);
        let nested = Frame { kind: Kind::HeartbeatBatch, ..nested };
        assert_eq!(batch_of(&[nested], false).heartbeats(), Err(FrameError::NotAHeartbeat(Kind::HeartbeatBatch as u8)));
    }

    #[test]
    fn a_batch_cut_anywhere_is_refused() {
        let beats: Vec<_> = (0..3).map(|i| heartbeat(i, false)).collect();
        let mut wire = BytesMut::new();
        Frame::encode_heartbeats(&beats, false, &mut wire, MAX).expect("encode");
        let whole = Frame::decode(&mut wire, MAX).expect("decode").expect("whole");
        for cut in 1..whole.body.len() {
            let at_boundary = {
                let mut lens = 0;
                beats.iter().any(|b| {
                    lens += b.encoded_len();
                    lens == cut
                })
            };
            let short = Frame { body: whole.body.slice(..cut), ..whole.clone() };
            match short.heartbeats() {
                Ok(got) => assert!(at_boundary && got.len() < beats.len(), "cut at {cut} read as {} heartbeats", got.len()),
                Err(_) => assert!(!at_boundary, "a cut between whole heartbeats is a shorter batch"),
            }
        }
    }

    proptest! {
        /// Arbitrary bytes as a batch's body are heartbeats or an error: never a panic.
        #[test]
        fn arbitrary_batch_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let f = Frame { kind: Kind::HeartbeatBatch, response: false, request_id: 0, group: GroupId::Controller, body: Bytes::from(bytes) };
            let _ = f.heartbeats();
        }
    }
}
