//! The transaction coordinator's state machine for one transactional id, as Kafka's
//! `TransactionMetadata`: producer id and epoch (with the previous ones, for KIP-360
//! retries), state, the partitions and groups in the open transaction, and its timeout.
//! Pure: each request is a function from the record (and the time) to the next record
//! or a `TxnError`; persisting records and writing markers is `transactions.rs`'s job.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Kafka's transaction states (`TransactionState`), by the names admin clients show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    /// The name ListTransactions and DescribeTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// A decided transaction whose markers may not all be written yet.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
    }
}

/// Why a transactional request is refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("producer fenced: a newer producer with the same transactional id exists")]
    ProducerFenced,
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("a previous transaction is still completing")]
    ConcurrentTransactions,
    #[error("transaction timeout {0} ms is outside 1..=transaction.max.timeout.ms")]
    InvalidTransactionTimeout(i32),
}

/// Epochs at or above this are exhausted: the next bump takes a new producer id.
pub const MAX_EPOCH: i16 = i16::MAX - 1;

/// One transactional id's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The producer id and epoch before the last bump (-1: none), so a producer retrying
    /// an InitProducerId whose answer it lost gets the same answer again.
    pub last_producer_id: i64,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions in the current transaction, by topic name.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the current transaction commits.
    pub groups: BTreeSet<String>,
    /// When the current transaction started (-1: none).
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

/// What InitProducerId must do before the record can be bumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// The answer: (producer id, epoch). The record is stored when `changed`.
    Ready { record: TxnRecord, changed: bool },
    /// An open transaction must be aborted first, with this fenced record (epoch bumped,
    /// state PrepareEpochFence); then InitProducerId is evaluated again.
    AbortFirst(TxnRecord),
}

impl TxnRecord {
    /// A new transactional id with a fresh producer id.
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnRecord {
        TxnRecord {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_producer_id: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// The epoch bump of InitProducerId. `expected` is the producer's current id and epoch
    /// when it re-initialises (KIP-360), `new_id` a fresh producer id for when the epoch is
    /// exhausted. An open transaction is aborted first (the old producer is fenced).
    pub fn init(&self, expected: Option<(i64, i16)>, timeout_ms: i32, new_id: i64, now_ms: i64) -> Result<InitStep, TxnError> {
        if self.state.is_preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected {
            let retry = pid == self.producer_id && epoch == self.last_producer_epoch && self.last_producer_id == -1
                || pid == self.last_producer_id && epoch == self.last_producer_epoch;
            if retry && self.state == TxnState::Empty {
                // The producer did not see our previous answer: give it again.
                return Ok(InitStep::Ready { record: self.clone(), changed: false });
            }
            if pid != self.producer_id || epoch != self.producer_epoch {
                return Err(TxnError::ProducerFenced);
            }
        }
        if self.state == TxnState::Ongoing {
            let mut fenced = self.clone();
            fenced.bump_epoch(new_id);
            fenced.state = TxnState::PrepareEpochFence;
            fenced.last_update_ms = now_ms;
            return Ok(InitStep::AbortFirst(fenced));
        }
        let mut next = self.clone();
        next.bump_epoch(new_id);
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.groups.clear();
        next.txn_start_ms = -1;
        next.last_update_ms = now_ms;
        Ok(InitStep::Ready { record: next, changed: true })
    }

    fn bump_epoch(&mut self, new_id: i64) {
        if self.producer_epoch >= MAX_EPOCH {
            self.last_producer_id = self.producer_id;
            self.last_producer_epoch = self.producer_epoch;
            self.producer_id = new_id;
            self.producer_epoch = 0;
        } else {
            self.last_producer_id = -1;
            self.last_producer_epoch = self.producer_epoch;
            self.producer_epoch += 1;
        }
    }

    /// Checks that a transactional request comes from the current producer.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if self.state.is_preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if self.state == TxnState::Dead {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the record with the partitions and groups
    /// added, the transaction begun if none was open. `None` when nothing changes.
    pub fn add(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<TxnRecord>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        let already = self.state == TxnState::Ongoing
            && partitions.iter().all(|p| self.partitions.contains(p))
            && group.is_none_or(|g| self.groups.contains(g));
        if already {
            return Ok(None);
        }
        let mut next = self.clone();
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.partitions.clear();
            next.groups.clear();
            next.txn_start_ms = now_ms;
        }
        next.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            next.groups.insert(g.to_string());
        }
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn: the Prepare record to store before writing markers, or `None` when the
    /// transaction already ended the same way (a retry, answered with success).
    pub fn end(&self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Result<Option<TxnRecord>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.clone();
                next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
                next.last_update_ms = now_ms;
                Ok(Some(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            (state, _) => Err(TxnError::InvalidTxnState(format!(
                "cannot {} a transaction in state {}",
                if commit { "commit" } else { "abort" },
                state.name()
            ))),
        }
    }

    /// The record once every marker of a Prepare state is written.
    pub fn completed(&self, now_ms: i64) -> TxnRecord {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.groups.clear();
        next.txn_start_ms = -1;
        next.last_update_ms = now_ms;
        next
    }

    /// Whether a Prepare state commits (otherwise it aborts).
    pub fn commits(&self) -> bool {
        self.state == TxnState::PrepareCommit
    }

    /// An open transaction past its timeout: the record that aborts it and fences the
    /// producer (epoch bumped, as Kafka does), or `None` when it has not timed out.
    pub fn timed_out(&self, new_id: i64, now_ms: i64) -> Option<TxnRecord> {
        if self.state != TxnState::Ongoing || self.txn_start_ms.saturating_add(i64::from(self.timeout_ms)) > now_ms {
            return None;
        }
        let mut next = self.clone();
        next.bump_epoch(new_id);
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        Some(next)
    }

    /// Whether the id may be forgotten (`transactional.id.expiration.ms` without activity
    /// and no transaction open or completing).
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(self.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
            && self.last_update_ms.saturating_add(expiration_ms) <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &[(&str, i32)]) -> Vec<(String, i32)> {
        p.iter().map(|(t, i)| (t.to_string(), *i)).collect()
    }

    fn ready(step: InitStep) -> TxnRecord {
        match step {
            InitStep::Ready { record, .. } => record,
            other => panic!("expected ready, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_goes_from_empty_through_ongoing_and_prepare_to_complete() {
        let r = TxnRecord::new("t", 10, 60_000, 0);
        let r = r.add(10, 0, &parts(&[("a", 0)]), None, 5).expect("added").expect("changed");
        assert_eq!((r.state, r.txn_start_ms), (TxnState::Ongoing, 5));
        assert_eq!(r.add(10, 0, &parts(&[("a", 0)]), None, 6).expect("same partition"), None);
        let r = r.add(10, 0, &[], Some("g"), 7).expect("added").expect("changed");
        let p = r.end(10, 0, true, 8).expect("ends").expect("prepare");
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert!(p.commits());
        assert_eq!(p.add(10, 0, &parts(&[("b", 0)]), None, 9), Err(TxnError::ConcurrentTransactions));
        let c = p.completed(10);
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty() && c.groups.is_empty());
        // A retried EndTxn is answered with success; the opposite outcome is refused.
        assert_eq!(c.end(10, 0, true, 11), Ok(None));
        assert!(matches!(c.end(10, 0, false, 11), Err(TxnError::InvalidTxnState(_))));
        // The next transaction starts afresh.
        let n = c.add(10, 0, &parts(&[("b", 1)]), None, 12).expect("added").expect("changed");
        assert_eq!(n.partitions.len(), 1);
    }

    #[test]
    fn requests_with_an_old_epoch_or_another_producer_id_are_refused() {
        let r = TxnRecord::new("t", 10, 60_000, 0);
        let r = ready(r.init(None, 60_000, 99, 1).expect("init"));
        assert_eq!(r.producer_epoch, 1);
        assert_eq!(r.add(10, 0, &parts(&[("a", 0)]), None, 2), Err(TxnError::ProducerFenced));
        assert_eq!(r.add(11, 1, &parts(&[("a", 0)]), None, 2), Err(TxnError::InvalidProducerIdMapping));
        assert!(matches!(r.end(10, 1, true, 2), Err(TxnError::InvalidTxnState(_))), "nothing to commit");
    }

    #[test]
    fn init_during_an_open_transaction_fences_and_aborts_it_first() {
        let r = TxnRecord::new("t", 10, 60_000, 0).add(10, 0, &parts(&[("a", 0)]), None, 1).expect("add").expect("changed");
        let InitStep::AbortFirst(fenced) = r.init(None, 60_000, 99, 2).expect("init") else { panic!("must abort first") };
        assert_eq!((fenced.state, fenced.producer_epoch), (TxnState::PrepareEpochFence, 1));
        assert!(!fenced.commits());
        let aborted = fenced.completed(3);
        assert_eq!(aborted.state, TxnState::CompleteAbort);
        let next = ready(aborted.init(None, 60_000, 99, 4).expect("init"));
        assert_eq!(next.producer_epoch, 2);
        // The old producer is fenced.
        assert_eq!(next.end(10, 0, true, 5), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn an_exhausted_epoch_moves_to_a_new_producer_id_and_a_lost_answer_is_repeated() {
        let mut r = TxnRecord::new("t", 10, 60_000, 0);
        r.producer_epoch = MAX_EPOCH;
        let n = ready(r.init(Some((10, MAX_EPOCH)), 60_000, 77, 1).expect("init"));
        assert_eq!((n.producer_id, n.producer_epoch, n.last_producer_id), (77, 0, 10));
        // The producer retries with its old id and epoch: same answer, nothing changes.
        match n.init(Some((10, MAX_EPOCH)), 60_000, 78, 2).expect("retry") {
            InitStep::Ready { record, changed } => assert_eq!((record.producer_id, changed), (77, false)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(n.init(Some((10, 3)), 60_000, 78, 2), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn kip_360_reinit_with_the_current_epoch_bumps_and_a_stale_one_is_fenced() {
        let r = TxnRecord::new("t", 10, 60_000, 0);
        let n = ready(r.init(Some((10, 0)), 60_000, 99, 1).expect("init"));
        assert_eq!(n.producer_epoch, 1);
        assert_eq!(ready(n.init(Some((10, 0)), 60_000, 99, 2).expect("retry")).producer_epoch, 1, "retry of the same bump");
        assert_eq!(n.init(Some((10, 5)), 60_000, 99, 2), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn a_timed_out_transaction_is_aborted_with_a_bumped_epoch() {
        let r = TxnRecord::new("t", 10, 1_000, 0).add(10, 0, &parts(&[("a", 0)]), None, 100).expect("add").expect("changed");
        assert_eq!(r.timed_out(99, 1_099), None);
        let a = r.timed_out(99, 1_100).expect("timed out");
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(a.completed(1_200).end(10, 0, false, 1_300), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn only_idle_ids_without_an_open_transaction_expire() {
        let r = TxnRecord::new("t", 10, 1_000, 0);
        assert!(!r.expired(999, 1_000));
        assert!(r.expired(1_000, 1_000));
        let o = r.add(10, 0, &parts(&[("a", 0)]), None, 0).expect("add").expect("changed");
        assert!(!o.expired(10_000, 1_000));
    }
}
