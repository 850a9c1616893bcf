//! Producer state of one partition, as Kafka's ProducerStateManager keeps it: per producer
//! id the epoch and the last five batches' sequence ranges and offsets (idempotence), the
//! transactions open on the partition (the last stable offset) and the aborted ones (for
//! read_committed fetches). Pure and synchronous: committed batches are applied in log
//! order; the leader checks a batch against the applied state plus the batches it has
//! proposed but not yet seen applied (`pending`, kept for the raft term they were
//! proposed in), and for transactional batches against
//! the markers written since the batch's transaction was checked (`TxnGuard`). Persisting
//! snapshots is the caller's job.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;
use super::control::ControlType;
use super::error::LogError;

/// Batches remembered per producer for duplicate detection (Kafka keeps five, matching
/// `max.in.flight.requests.per.connection` of an idempotent producer).
pub const MAX_REMEMBERED_BATCHES: usize = 5;

/// Where one producer batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSequence {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchSequence>,
    /// Largest timestamp written by the producer (batch max timestamp or marker time).
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction on this partition.
    pub txn_first_offset: Option<i64>,
}

/// A transaction aborted on this partition: its records are `[first_offset, last_offset)`
/// of `producer_id`, and `last_offset` is its ABORT marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What the leader should do with a producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not a duplicate and in sequence: propose it.
    Append,
    /// A retry of a batch already in the log: answer with its original offset.
    Duplicate(BatchSequence),
    /// A retry of a batch proposed but not yet applied: wait for it, then check again.
    InFlight,
}

/// A batch the leader proposed and has not yet seen applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingBatch {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
}

impl PendingBatch {
    fn of(h: &BatchHeader) -> PendingBatch {
        PendingBatch { epoch: h.producer_epoch, first_seq: h.base_sequence, last_seq: last_sequence(h) }
    }
}

/// KIP-890's verification guard. Taken before the leader decides that a transactional
/// batch belongs to an open transaction (its own state says the transaction is open, or
/// the coordinator says the partition was added); the batch is refused if a marker for its
/// producer was proposed or applied since, because the batch would then land after the
/// marker that ended its transaction and open a transaction no marker will ever end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnGuard(u64);

/// Stamps of marker writes, unique in the process, so that guards of a table rebuilt
/// from a snapshot never match guards taken before.
static MARKER_STAMPS: AtomicU64 = AtomicU64::new(1);

fn next_marker_stamp() -> u64 {
    MARKER_STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// The applied state (what snapshots hold) plus the leader's pending batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Open transactions by first offset.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions in marker (log) order.
    aborted: VecDeque<AbortedTxn>,
    /// Pending batches of the raft term `pending_term`. A leader's entry stays in its log
    /// for the whole term, so it may still commit even after the proposal's waiter gave up
    /// (a leader that briefly lost its quorum answers NOT_LEADER_OR_FOLLOWER, and raft may
    /// commit the entry later in the same term): it stays pending until it is applied or
    /// the term ends. In a later term it was either applied before the new leader serves,
    /// or truncated.
    #[serde(skip)]
    pending: HashMap<i64, VecDeque<PendingBatch>>,
    #[serde(skip)]
    pending_term: u64,
    /// Stamp of the last marker proposed or applied per producer (`TxnGuard`)...
    #[serde(skip)]
    marker_stamps: HashMap<i64, u64>,
    /// ...and of the table's creation, for producers without one.
    #[serde(skip, default = "next_marker_stamp")]
    created_stamp: u64,
}

impl Default for ProducerStateTable {
    fn default() -> Self {
        ProducerStateTable {
            producers: BTreeMap::new(),
            ongoing: BTreeMap::new(),
            aborted: VecDeque::new(),
            pending: HashMap::new(),
            pending_term: 0,
            marker_stamps: HashMap::new(),
            created_stamp: next_marker_stamp(),
        }
    }
}

/// The sequence number of a batch's last record; sequences wrap from i32::MAX to 0.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    let delta = h.last_offset_delta.max(0);
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

impl ProducerStateTable {
    /// Kafka's checks of a producer batch before it is appended, against the applied state
    /// and the batches still pending: duplicate of a remembered batch; stale epoch
    /// (INVALID_PRODUCER_EPOCH); a new epoch must start at sequence 0 and a known epoch
    /// continue the last sequence (OUT_OF_ORDER_SEQUENCE_NUMBER); a non-transactional
    /// write while the producer's transaction is open, or a transactional one whose `guard`
    /// a marker has outdated (INVALID_TXN_STATE). A producer the partition does not know
    /// (new, or expired) may start at any sequence, as in Kafka since KIP-360. Batches
    /// without a producer id are always admitted. `term` is the leader's raft term: only
    /// batches pending in it count.
    pub fn check(&self, h: &BatchHeader, guard: Option<TxnGuard>, term: u64) -> Result<Admission, LogError> {
        let pid = h.producer_id;
        if pid < 0 {
            return Ok(Admission::Append);
        }
        if h.base_sequence < 0 {
            return Err(LogError::InvalidProducerBatch {
                reason: format!("batch of producer {pid} has no sequence number ({})", h.base_sequence),
            });
        }
        let first = h.base_sequence;
        let last = last_sequence(h);
        let entry = self.producers.get(&pid);
        if let Some(e) = entry.filter(|e| e.epoch == h.producer_epoch) {
            if let Some(b) = e.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
                return Ok(Admission::Duplicate(*b));
            }
        }
        let pending = self.pending.get(&pid).filter(|p| !p.is_empty() && term == self.pending_term);
        if let Some(p) = pending {
            if p.iter().any(|b| b.epoch == h.producer_epoch && b.first_seq == first && b.last_seq == last) {
                return Ok(Admission::InFlight);
            }
        }
        if h.is_transactional() && guard.is_some_and(|g| g != self.txn_guard(pid)) {
            return Err(LogError::InvalidTxnState {
                reason: format!("producer {pid}'s transaction ended while its batch was being verified"),
            });
        }
        // The state the batch must follow: the newest pending batch, else the applied entry.
        let (current_epoch, current_last) = match (pending.and_then(|p| p.back()), entry) {
            (Some(b), _) => (b.epoch, Some(b.last_seq)),
            (None, Some(e)) => (e.epoch, e.batches.back().map(|b| b.last_seq)),
            (None, None) => return Ok(Admission::Append),
        };
        if h.producer_epoch < current_epoch {
            return Err(LogError::InvalidProducerEpoch { producer_id: pid, epoch: h.producer_epoch, current: current_epoch });
        }
        if h.producer_epoch > current_epoch {
            if first != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: pid,
                    reason: format!("a new epoch {} must start at sequence 0, not {first}", h.producer_epoch),
                });
            }
        } else {
            let expected_after = current_last.unwrap_or(-1);
            if !in_sequence(expected_after, first) {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: pid,
                    reason: format!("expected sequence {}, got {first}", i64::from(expected_after) + 1),
                });
            }
        }
        if !h.is_transactional() && entry.is_some_and(|e| e.txn_first_offset.is_some()) {
            return Err(LogError::InvalidTxnState {
                reason: format!("producer {pid} wrote a non-transactional batch while its transaction is open"),
            });
        }
        Ok(Admission::Append)
    }

    /// The guard to check a transactional batch of `producer_id` with (see `TxnGuard`).
    pub fn txn_guard(&self, producer_id: i64) -> TxnGuard {
        TxnGuard(self.marker_stamps.get(&producer_id).copied().unwrap_or(self.created_stamp))
    }

    /// A marker for `producer_id` is about to be proposed (by the leader) or is applied:
    /// guards taken before it no longer hold.
    pub fn outdate_txn_guards(&mut self, producer_id: i64) {
        self.marker_stamps.insert(producer_id, next_marker_stamp());
    }

    /// Records a batch the leader is about to propose in raft term `term` after `check`
    /// admitted it. Batches pending from an earlier term are dropped.
    pub fn reserve(&mut self, h: &BatchHeader, term: u64) {
        if h.producer_id < 0 {
            return;
        }
        if term != self.pending_term {
            self.pending.clear();
            self.pending_term = term;
        }
        self.pending.entry(h.producer_id).or_default().push_back(PendingBatch::of(h));
    }

    /// Forgets the reservation of a batch that raft refused outright (it is in no log).
    pub fn unreserve(&mut self, h: &BatchHeader) {
        let batch = PendingBatch::of(h);
        if let Some(p) = self.pending.get_mut(&h.producer_id) {
            if let Some(i) = p.iter().rposition(|b| *b == batch) {
                p.remove(i);
            }
            if p.is_empty() {
                self.pending.remove(&h.producer_id);
            }
        }
    }

    /// Applies a committed batch stored at `base_offset`. `marker` is the control type of a
    /// control batch. Apply never fails: the leader checked the batch before proposing it.
    pub fn apply(&mut self, h: &BatchHeader, base_offset: i64, marker: Option<(ControlType, i32)>) {
        let pid = h.producer_id;
        if pid < 0 {
            return;
        }
        if h.is_control() {
            self.outdate_txn_guards(pid);
        }
        let entry = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
            last_timestamp: h.max_timestamp,
            coordinator_epoch: -1,
            txn_first_offset: None,
        });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        let last_offset = base_offset.saturating_add(i64::from(h.last_offset_delta));
        if h.is_control() {
            if let Some((kind, coordinator_epoch)) = marker {
                entry.coordinator_epoch = coordinator_epoch;
                if let Some(first) = entry.txn_first_offset.take() {
                    self.ongoing.remove(&first);
                    if kind == ControlType::Abort {
                        self.aborted.push_back(AbortedTxn { producer_id: pid, first_offset: first, last_offset });
                    }
                }
            }
            return;
        }
        if let Some(p) = self.pending.get_mut(&pid) {
            // Batches proposed before this one and not applied never will be in this term.
            if let Some(i) = p.iter().position(|b| b.epoch == h.producer_epoch && b.first_seq == h.base_sequence) {
                p.drain(..=i);
            }
            if p.is_empty() {
                self.pending.remove(&pid);
            }
        }
        if h.base_sequence >= 0 {
            entry.batches.push_back(BatchSequence {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h),
                base_offset,
                last_offset,
                max_timestamp: h.max_timestamp,
            });
            while entry.batches.len() > MAX_REMEMBERED_BATCHES {
                entry.batches.pop_front();
            }
        }
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
            self.ongoing.insert(base_offset, pid);
        }
    }

    /// First offset of the oldest open transaction: the last stable offset is this or the
    /// high watermark, whichever is lower.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.producers.get(&producer_id).is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Aborted transactions that overlap `[from, to)`, oldest first (what a read_committed
    /// Fetch returning those offsets must carry).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted.iter().skip(start).filter(|a| a.first_offset < to).copied().collect()
    }

    /// The producer's applied entry.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Forgets producers idle for `max_idle_ms` without an open transaction (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were removed.
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.txn_first_offset.is_some() || e.last_timestamp.saturating_add(max_idle_ms) > now_ms);
        let producers = &self.producers;
        self.marker_stamps.retain(|pid, _| producers.contains_key(pid));
        before - self.producers.len()
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::parse_header;
    use crate::log::test_batches::{encode_batch, BatchSpec, TestRecord};

    fn header(pid: i64, epoch: i16, seq: i32, records: usize, transactional: bool) -> BatchHeader {
        let mut spec = BatchSpec::new(1_000, (0..records).map(|_| TestRecord::value(b"v")).collect());
        spec.producer_id = pid;
        spec.producer_epoch = epoch;
        spec.base_sequence = seq;
        if transactional {
            spec.attributes = 0x10;
        }
        parse_header(&encode_batch(&spec)).expect("valid header")
    }

    fn marker(pid: i64, epoch: i16) -> BatchHeader {
        parse_header(&crate::log::marker_batch(pid, epoch, ControlType::Commit, 0, 2_000)).expect("valid header")
    }

    /// Applies `h` at `offset` after checking and reserving it, as the leader does.
    fn append(t: &mut ProducerStateTable, h: &BatchHeader, offset: i64) {
        append_with(t, h, offset, None);
    }

    /// `append` of a batch checked with `guard`.
    fn append_with(t: &mut ProducerStateTable, h: &BatchHeader, offset: i64, guard: Option<TxnGuard>) {
        assert_eq!(t.check(h, guard, 1).expect("admitted"), Admission::Append);
        t.reserve(h, 1);
        t.apply(h, offset, None);
    }

    #[test]
    fn a_retried_batch_is_a_duplicate_with_its_original_offsets() {
        let mut t = ProducerStateTable::default();
        let b0 = header(7, 0, 0, 3, false);
        let b1 = header(7, 0, 3, 2, false);
        append(&mut t, &b0, 100);
        append(&mut t, &b1, 103);
        match t.check(&b0, None, 1).expect("checked") {
            Admission::Duplicate(s) => assert_eq!((s.base_offset, s.last_offset), (100, 102)),
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert!(matches!(t.check(&b1, None, 1), Ok(Admission::Duplicate(s)) if s.base_offset == 103));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..6 {
            append(&mut t, &header(1, 0, i, 1, false), i64::from(i));
        }
        // The first batch is forgotten: a retry of it is now out of order, as in Kafka.
        assert!(matches!(t.check(&header(1, 0, 0, 1, false), None, 1), Err(LogError::OutOfOrderSequence { .. })));
        assert!(matches!(t.check(&header(1, 0, 1, 1, false), None, 1), Ok(Admission::Duplicate(_))));
    }

    #[test]
    fn a_gap_in_sequence_is_out_of_order() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, 0, 2, false), 0);
        assert!(matches!(t.check(&header(1, 0, 3, 1, false), None, 1), Err(LogError::OutOfOrderSequence { .. })));
        assert_eq!(t.check(&header(1, 0, 2, 1, false), None, 1).expect("next in sequence"), Admission::Append);
    }

    #[test]
    fn an_older_epoch_is_rejected_and_a_new_epoch_starts_at_zero() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 3, 0, 1, false), 0);
        assert!(matches!(t.check(&header(1, 2, 1, 1, false), None, 1), Err(LogError::InvalidProducerEpoch { current: 3, .. })));
        assert!(matches!(t.check(&header(1, 4, 5, 1, false), None, 1), Err(LogError::OutOfOrderSequence { .. })));
        assert_eq!(t.check(&header(1, 4, 0, 1, false), None, 1).expect("new epoch"), Admission::Append);
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        let t = ProducerStateTable::default();
        assert_eq!(t.check(&header(9, 0, 1234, 1, false), None, 1).expect("admitted"), Admission::Append);
    }

    #[test]
    fn a_batch_with_a_producer_id_and_no_sequence_is_invalid() {
        let t = ProducerStateTable::default();
        assert!(matches!(t.check(&header(9, 0, -1, 1, false), None, 1), Err(LogError::InvalidProducerBatch { .. })));
    }

    #[test]
    fn pending_batches_extend_the_sequence_and_retries_of_them_wait() {
        let mut t = ProducerStateTable::default();
        let b0 = header(1, 0, 0, 2, false);
        let b1 = header(1, 0, 2, 2, false);
        t.check(&b0, None, 1).expect("admitted");
        t.reserve(&b0, 1);
        assert_eq!(t.check(&b1, None, 1).expect("follows the pending batch"), Admission::Append);
        t.reserve(&b1, 1);
        assert_eq!(t.check(&b0, None, 1).expect("checked"), Admission::InFlight);
        t.apply(&b0, 10, None);
        assert!(matches!(t.check(&b0, None, 1), Ok(Admission::Duplicate(s)) if s.base_offset == 10));
        assert_eq!(t.check(&b1, None, 1).expect("checked"), Admission::InFlight);
        // A proposal raft refused outright is forgotten: the sequence continues from the log.
        t.unreserve(&b1);
        assert_eq!(t.check(&b1, None, 1).expect("checked"), Admission::Append);
    }

    #[test]
    fn a_batch_stays_pending_for_its_whole_term_and_no_longer() {
        let mut t = ProducerStateTable::default();
        let b0 = header(1, 0, 0, 2, false);
        let b1 = header(1, 0, 2, 2, false);
        let b2 = header(1, 0, 4, 2, false);
        for b in [&b0, &b1, &b2] {
            assert_eq!(t.check(b, None, 5).expect("admitted"), Admission::Append);
            t.reserve(b, 5);
        }
        // The leader answered NOT_LEADER_OR_FOLLOWER while briefly without its quorum, but
        // in the same term the entries may still commit: retries wait for them.
        assert_eq!(t.check(&b1, None, 5).expect("checked"), Admission::InFlight);
        // Applying a later batch settles the earlier ones too.
        t.apply(&b1, 10, None);
        assert!(t.pending.get(&1).is_some_and(|p| p.len() == 1), "only b2 is left pending");
        assert_eq!(t.check(&b2, None, 5).expect("checked"), Admission::InFlight);
        // A new term: b2 was truncated (or it would have been applied before this leader
        // serves), so its retry is appended again, in sequence after what was applied.
        assert_eq!(t.check(&b2, None, 6).expect("checked"), Admission::Append);
        t.reserve(&b2, 6);
        assert_eq!(t.check(&b2, None, 6).expect("checked"), Admission::InFlight);
        assert_eq!(t.pending.get(&1).map(VecDeque::len), Some(1), "the old term's reservation is gone");
    }

    #[test]
    fn sequences_wrap_from_max_to_zero() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, i32::MAX - 1, 2, false), 0);
        assert_eq!(last_sequence(&header(1, 0, i32::MAX, 3, false)), 1);
        assert_eq!(t.check(&header(1, 0, 0, 1, false), None, 1).expect("wraps"), Admission::Append);
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_and_aborts_are_recorded() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, 0, 2, true), 10);
        append(&mut t, &header(2, 0, 0, 1, true), 12);
        append(&mut t, &header(1, 0, 2, 1, true), 13);
        assert_eq!(t.first_unstable_offset(), Some(10));
        let abort = parse_header(&crate::log::marker_batch(1, 0, ControlType::Abort, 0, 5)).expect("header");
        t.apply(&abort, 14, Some((ControlType::Abort, 0)));
        assert_eq!(t.first_unstable_offset(), Some(12));
        t.apply(&marker(2, 0), 15, Some((ControlType::Commit, 0)));
        assert_eq!(t.first_unstable_offset(), None);
        assert_eq!(t.aborted_between(0, 100), vec![AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 14 }]);
        assert!(t.aborted_between(15, 100).is_empty());
        assert!(t.aborted_between(0, 10).is_empty());
        // The sequence continues after a marker of the same epoch.
        assert_eq!(t.check(&header(1, 0, 3, 1, false), None, 1).expect("in sequence"), Admission::Append);
    }

    #[test]
    fn a_plain_write_during_an_open_transaction_is_refused() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, 0, 1, true), 0);
        assert!(matches!(t.check(&header(1, 0, 1, 1, false), None, 1), Err(LogError::InvalidTxnState { .. })));
    }

    #[test]
    fn a_marker_since_the_guard_was_taken_refuses_the_transactional_batch() {
        let mut t = ProducerStateTable::default();
        // Guards taken with no marker in between hold, also across pipelined batches.
        let g = t.txn_guard(1);
        append_with(&mut t, &header(1, 0, 0, 1, true), 0, Some(g));
        let again = t.txn_guard(1);
        append_with(&mut t, &header(1, 0, 1, 1, true), 1, Some(again));
        assert_eq!(t.check(&header(1, 0, 2, 1, true), Some(g), 1).expect("same guard"), Admission::Append);
        // The coordinator ends the transaction while a late batch is being verified.
        let late = t.txn_guard(1);
        t.outdate_txn_guards(1);
        let batch = header(1, 0, 2, 1, true);
        assert!(matches!(t.check(&batch, Some(late), 1), Err(LogError::InvalidTxnState { .. })));
        // The same when the marker arrives applied (a follower that has just become leader).
        let late = t.txn_guard(1);
        t.apply(&marker(1, 0), 2, Some((ControlType::Commit, 0)));
        assert!(matches!(t.check(&batch, Some(late), 1), Err(LogError::InvalidTxnState { .. })));
        // A batch checked after the marker starts the next transaction.
        assert_eq!(t.check(&batch, Some(t.txn_guard(1)), 1).expect("fresh guard"), Admission::Append);
        // Non-transactional batches and other producers are not concerned.
        assert_eq!(t.check(&header(2, 0, 0, 1, true), Some(t.txn_guard(2)), 1).expect("other producer"), Admission::Append);
        // A table rebuilt from a snapshot honours no guard taken before.
        let old = t.txn_guard(7);
        let rebuilt: ProducerStateTable = serde_json::from_slice(&serde_json::to_vec(&t).expect("ser")).expect("de");
        assert!(matches!(rebuilt.check(&header(7, 0, 0, 1, true), Some(old), 1), Err(LogError::InvalidTxnState { .. })));
    }

    #[test]
    fn idle_producers_expire_but_not_with_an_open_transaction() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, 0, 1, false), 0);
        append(&mut t, &header(2, 0, 0, 1, true), 1);
        assert_eq!(t.expire(1_000 + 60_000, 60_000), 1);
        assert!(t.producer(1).is_none() && t.producer(2).is_some());
    }

    #[test]
    fn a_snapshot_round_trips_without_pending_batches() {
        let mut t = ProducerStateTable::default();
        append(&mut t, &header(1, 0, 0, 1, true), 0);
        t.reserve(&header(1, 0, 1, 1, true), 1);
        let json = serde_json::to_vec(&t).expect("serialises");
        let back: ProducerStateTable = serde_json::from_slice(&json).expect("deserialises");
        assert_eq!(back.first_unstable_offset(), Some(0));
        assert_eq!(back.check(&header(1, 0, 1, 1, true), None, 1).expect("checked"), Admission::Append);
        assert!(back.pending.is_empty());
    }
}
