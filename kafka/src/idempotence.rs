//! Idempotent producers: per producer id, the sequences of the last batches appended to one
//! partition, so a retried batch is answered with its original offset and not stored twice.
//!
//! A backend keeps one [`ProducerStates`] per partition and, under the partition's lock,
//! calls [`ProducerStates::check`] before an append and [`ProducerStates::record`] after it.
//! After a restart it rebuilds the state by calling `record` for the batches at the log's tail
//! in log order (the stored batches carry producer id, epoch and sequences).
//!
//! The rules are Kafka's: a batch whose sequences equal one of the last
//! [`RETAINED_BATCHES`] of its producer is a duplicate; the next batch must start right after
//! the last one (sequences wrap from `i32::MAX` to 0); a new epoch starts at sequence 0; an
//! older epoch is fenced. Unknown producers are accepted at any sequence, so a producer keeps
//! working after a restart that lost its state.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchInfo;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound).
pub const RETAINED_BATCHES: usize = 5;

/// What [`ProducerStates::check`] says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it (also for batches without a producer id).
    New,
    /// A retry of a batch already stored at `base_offset`: answer with it, do not store again.
    Duplicate {
        /// Offset the original batch got.
        base_offset: i64,
    },
    /// A gap or a reordering in the producer's sequence (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder,
    /// The producer's epoch is older than one seen before (INVALID_PRODUCER_EPOCH).
    StaleEpoch,
}

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqEntry {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<SeqEntry>,
}

/// Per partition: producer id → epoch and the last [`RETAINED_BATCHES`] appended batches.
#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

/// `seq + inc` with Kafka's wraparound: past `i32::MAX` sequences continue at 0.
pub fn increment_sequence(seq: i32, inc: i32) -> i32 {
    if seq > i32::MAX - inc {
        inc - (i32::MAX - seq) - 1
    } else {
        seq + inc
    }
}

/// Sequence of the last record of a batch.
fn last_sequence(info: &BatchInfo) -> i32 {
    increment_sequence(info.base_sequence, info.last_offset_delta)
}

impl ProducerStates {
    /// No producers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `info` may be appended, is a duplicate, or is refused.
    pub fn check(&self, info: &BatchInfo) -> SequenceCheck {
        if !info.is_idempotent() {
            return SequenceCheck::New;
        }
        let Some(entry) = self.producers.get(&info.producer_id) else {
            // Unknown here (new, or its state was lost): accept any sequence.
            return SequenceCheck::New;
        };
        if info.producer_epoch < entry.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if info.producer_epoch > entry.epoch {
            return if info.base_sequence == 0 {
                SequenceCheck::New
            } else {
                SequenceCheck::OutOfOrder
            };
        }
        let last = last_sequence(info);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.base_sequence == info.base_sequence && b.last_sequence == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        match entry.batches.back() {
            Some(prev) if info.base_sequence == increment_sequence(prev.last_sequence, 1) => {
                SequenceCheck::New
            }
            None => SequenceCheck::New,
            Some(_) => SequenceCheck::OutOfOrder,
        }
    }

    /// Remembers that `info` was appended at `base_offset`. Batches without a producer id are
    /// ignored; a higher epoch forgets the older epoch's batches.
    pub fn record(&mut self, info: &BatchInfo, base_offset: i64) {
        if !info.is_idempotent() {
            return;
        }
        let entry = self
            .producers
            .entry(info.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: info.producer_epoch,
                batches: VecDeque::new(),
            });
        if info.producer_epoch != entry.epoch {
            entry.epoch = info.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(SeqEntry {
            base_sequence: info.base_sequence,
            last_sequence: last_sequence(info),
            base_offset,
        });
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// No producer known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn info(pid: i64, epoch: i16, base_seq: i32, count: i32) -> BatchInfo {
        BatchInfo {
            base_offset: 0,
            size: 100,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: base_seq,
            record_count: count,
        }
    }

    #[test]
    fn test_check_non_idempotent_is_always_new() {
        let mut s = ProducerStates::new();
        let b = info(-1, -1, -1, 3);
        s.record(&b, 0);
        assert_eq!(s.check(&b), SequenceCheck::New);
        assert!(s.is_empty());
    }

    #[test]
    fn test_check_unknown_producer_accepts_any_sequence() {
        let s = ProducerStates::new();
        assert_eq!(s.check(&info(7, 0, 1234, 2)), SequenceCheck::New);
    }

    #[test]
    fn test_check_duplicate_next_and_gap() {
        let mut s = ProducerStates::new();
        s.record(&info(7, 0, 0, 3), 10);
        s.record(&info(7, 0, 3, 2), 13);
        assert_eq!(
            s.check(&info(7, 0, 0, 3)),
            SequenceCheck::Duplicate { base_offset: 10 }
        );
        assert_eq!(
            s.check(&info(7, 0, 3, 2)),
            SequenceCheck::Duplicate { base_offset: 13 }
        );
        assert_eq!(s.check(&info(7, 0, 5, 1)), SequenceCheck::New);
        assert_eq!(s.check(&info(7, 0, 6, 1)), SequenceCheck::OutOfOrder);
        // Same base but different length is not the same batch.
        assert_eq!(s.check(&info(7, 0, 3, 1)), SequenceCheck::OutOfOrder);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn test_check_epochs() {
        let mut s = ProducerStates::new();
        s.record(&info(7, 3, 0, 1), 0);
        assert_eq!(s.check(&info(7, 2, 1, 1)), SequenceCheck::StaleEpoch);
        assert_eq!(s.check(&info(7, 4, 0, 1)), SequenceCheck::New);
        assert_eq!(s.check(&info(7, 4, 5, 1)), SequenceCheck::OutOfOrder);
        s.record(&info(7, 4, 0, 1), 1);
        assert_eq!(s.check(&info(7, 3, 1, 1)), SequenceCheck::StaleEpoch);
        assert_eq!(s.check(&info(7, 4, 1, 1)), SequenceCheck::New);
    }

    #[test]
    fn test_check_sequence_wraps_to_zero() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut s = ProducerStates::new();
        s.record(&info(7, 0, i32::MAX - 1, 2), 0);
        assert_eq!(s.check(&info(7, 0, 0, 1)), SequenceCheck::New);
        assert_eq!(s.check(&info(7, 0, 1, 1)), SequenceCheck::OutOfOrder);
    }

    #[test]
    fn test_record_keeps_only_last_five() {
        let mut s = ProducerStates::new();
        for i in 0..7 {
            s.record(&info(1, 0, i, 1), i64::from(i) * 10);
        }
        assert_eq!(s.check(&info(1, 0, 0, 1)), SequenceCheck::OutOfOrder);
        assert_eq!(s.check(&info(1, 0, 1, 1)), SequenceCheck::OutOfOrder);
        assert_eq!(
            s.check(&info(1, 0, 2, 1)),
            SequenceCheck::Duplicate { base_offset: 20 }
        );
    }

    proptest! {
        /// A producer appending batches of random sizes from a random starting sequence: each
        /// of the last five is a duplicate at its offset, the next one is new, and any other
        /// start is out of order.
        #[test]
        fn test_check_model(start in any::<i32>().prop_map(|s| s & i32::MAX),
                            sizes in proptest::collection::vec(1i32..50, 1..20),
                            probe in any::<i32>().prop_map(|s| s & i32::MAX)) {
            let mut s = ProducerStates::new();
            let mut seq = start;
            let mut offset = 0i64;
            let mut appended = Vec::new();
            for &n in &sizes {
                let b = info(9, 1, seq, n);
                prop_assert_eq!(s.check(&b), SequenceCheck::New);
                s.record(&b, offset);
                appended.push((seq, n, offset));
                offset += i64::from(n);
                seq = increment_sequence(seq, n);
            }
            let keep = appended.len().saturating_sub(RETAINED_BATCHES);
            for &(bs, n, off) in &appended[keep..] {
                prop_assert_eq!(s.check(&info(9, 1, bs, n)), SequenceCheck::Duplicate { base_offset: off });
            }
            prop_assert_eq!(s.check(&info(9, 1, seq, 1)), SequenceCheck::New);
            if probe != seq && !appended.iter().any(|&(bs, n, _)| bs == probe && n == 1) {
                prop_assert_eq!(s.check(&info(9, 1, probe, 1)), SequenceCheck::OutOfOrder);
            }
            prop_assert_eq!(s.check(&info(9, 0, seq, 1)), SequenceCheck::StaleEpoch);
        }
    }
}
