//! The in-memory log of one partition: records encoded once (in the segment record format) as
//! they are published, sealed into a flush, kept as a tail cache once durable.
//!
//! Offsets, all exclusive upper bounds: `log_start ≤ tail start ≤ durable ≤ sealed_end ≤ next`.
//! - `[tail start, durable)`: durable batches kept to serve recent reads (the *tail*);
//! - `[durable, sealed_end)`: batches sealed by the running flush (*in flight*);
//! - `[sealed_end, next)`: batches waiting for the next flush (*pending*); the last one is
//!   open for appends until it reaches the roll size or is sealed.
//!
//! Every operation is O(records touched) and never allocates per record: a record is appended
//! into its batch's buffer and its start position is pushed onto a vector.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::segment;

#[derive(Debug)]
enum Buf {
    Open(BytesMut),
    Frozen(Bytes),
}

impl Buf {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Open(b) => b,
            Self::Frozen(b) => b,
        }
    }
}

/// A run of consecutive records, encoded back to back; or one Kafka record batch
/// (`kafka`, no positions: it is read whole).
#[derive(Debug)]
struct MemBatch {
    base: u64,
    buf: Buf,
    positions: Vec<u32>,
    ts_min: u64,
    ts_max: u64,
    kafka: Option<u32>,
}

impl MemBatch {
    /// Offsets the batch spans.
    fn count(&self) -> u32 {
        self.kafka.unwrap_or(self.positions.len() as u32)
    }

    fn end(&self) -> u64 {
        self.base + u64::from(self.count())
    }

    fn bytes(&self) -> u64 {
        self.buf.as_slice().len() as u64
    }

    fn freeze(&mut self) -> Bytes {
        if let Buf::Open(b) = &mut self.buf {
            let b = std::mem::take(b);
            // A frozen buffer keeps its whole allocation alive in the tail cache, which counts
            // only the bytes used: trim a mostly empty one (a small flush) with a copy.
            let frozen = if b.capacity() > 2 * b.len() + 4096 {
                Bytes::copy_from_slice(&b)
            } else {
                b.freeze()
            };
            self.buf = Buf::Frozen(frozen);
        }
        match &self.buf {
            Buf::Frozen(b) => b.clone(),
            Buf::Open(_) => Bytes::new(),
        }
    }
}

/// One batch of a sealed flush: what the segment encoder needs.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    /// First offset.
    pub base: u64,
    /// Number of records.
    pub count: u32,
    /// Smallest timestamp.
    pub ts_min: u64,
    /// Largest timestamp.
    pub ts_max: u64,
    /// Encoded records, or one Kafka batch.
    pub body: Bytes,
    /// Segment batch flags ([`segment::FLAG_KAFKA`] for a Kafka batch).
    pub flags: u16,
}

/// The range a flush took: `[first, end)`.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// First offset.
    pub first: u64,
    /// One past the last offset.
    pub end: u64,
    /// The batches, in order.
    pub batches: Vec<SealedBatch>,
    /// Encoded bytes (the memory this flush will release).
    pub bytes: u64,
}

impl Sealed {
    /// Number of records.
    pub fn records(&self) -> u64 {
        self.end - self.first
    }

    /// Smallest timestamp.
    pub fn ts_min(&self) -> u64 {
        self.batches.iter().map(|b| b.ts_min).min().unwrap_or(0)
    }

    /// Largest timestamp.
    pub fn ts_max(&self) -> u64 {
        self.batches.iter().map(|b| b.ts_max).max().unwrap_or(0)
    }

    /// The segment: each batch's header followed by its body.
    pub fn encode(&self) -> Bytes {
        let total: usize = self
            .batches
            .iter()
            .map(|b| segment::HEADER_LEN + b.body.len())
            .sum();
        let mut out = BytesMut::with_capacity(total);
        for b in &self.batches {
            segment::encode_batch(
                &mut out,
                b.base,
                b.count,
                (b.ts_min, b.ts_max),
                b.flags,
                &b.body,
            );
        }
        out.freeze()
    }
}

/// Consecutive records copied (or sliced) out of memory or a segment, to decode without the
/// lock.
#[derive(Debug, Clone)]
pub struct Region {
    /// Offset of the first record (for a Kafka batch: its base offset, which may be before
    /// the offset asked for).
    pub first_offset: u64,
    /// Number of records (offsets spanned).
    pub count: usize,
    /// The encoded records, or one whole Kafka batch.
    pub data: Bytes,
    /// Whether `data` is one Kafka v2 record batch.
    pub kafka: bool,
}

/// The in-memory log of one partition.
#[derive(Debug)]
pub struct PartitionLog {
    log_start: u64,
    durable: u64,
    sealed_end: u64,
    next: u64,
    tail: VecDeque<MemBatch>,
    inflight: VecDeque<MemBatch>,
    pending: VecDeque<MemBatch>,
    tail_bytes: u64,
    inflight_bytes: u64,
    pending_bytes: u64,
    oldest_pending: Option<Instant>,
    roll_bytes: usize,
}

impl PartitionLog {
    /// A log whose durable records are `[log_start, next)` (all on segments, none in memory).
    /// Batches roll over at `roll_bytes`.
    pub fn new(log_start: u64, next: u64, roll_bytes: usize) -> Self {
        Self {
            log_start: log_start.min(next),
            durable: next,
            sealed_end: next,
            next,
            tail: VecDeque::new(),
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            tail_bytes: 0,
            inflight_bytes: 0,
            pending_bytes: 0,
            oldest_pending: None,
            roll_bytes: roll_bytes.max(1),
        }
    }

    /// First offset still stored.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// Raises the first offset still stored to `start` (retention deleted what is below it),
    /// never past the durable end and never down.
    pub fn advance_start(&mut self, start: u64) {
        self.log_start = self.log_start.max(start.min(self.durable));
    }

    /// One past the last durable record.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// One past the last record accepted.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// One past the last sealed record (`durable` when no flush runs).
    pub fn sealed_end(&self) -> u64 {
        self.sealed_end
    }

    /// Bytes not yet durable (pending and in flight).
    pub fn buffered_bytes(&self) -> u64 {
        self.pending_bytes + self.inflight_bytes
    }

    /// Bytes waiting for the next flush.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Bytes of durable records kept in memory.
    pub fn tail_bytes(&self) -> u64 {
        self.tail_bytes
    }

    /// When the oldest record waiting for a flush was appended.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.oldest_pending
    }

    /// Whether records wait for a flush.
    pub fn has_pending(&self) -> bool {
        self.next > self.sealed_end
    }

    /// Whether a flush is running.
    pub fn in_flight(&self) -> bool {
        self.sealed_end > self.durable
    }

    /// Appends one Kafka v2 record batch spanning `count` offsets (already checked by the
    /// caller) as a batch of its own, rewriting its base offset; returns that base offset.
    pub fn append_kafka(
        &mut self,
        batch: &[u8],
        count: u32,
        (ts_min, ts_max): (u64, u64),
        now: Instant,
    ) -> u64 {
        let base = self.next;
        let mut buf = BytesMut::from(batch);
        kafka::batch::set_base_offset(&mut buf, base as i64);
        self.pending_bytes += buf.len() as u64;
        self.pending.push_back(MemBatch {
            base,
            buf: Buf::Frozen(buf.freeze()),
            positions: Vec::new(),
            ts_min,
            ts_max,
            kafka: Some(count),
        });
        self.next += u64::from(count);
        self.oldest_pending.get_or_insert(now);
        base
    }

    /// Appends one record and returns its offset. The caller has validated sizes (see
    /// [`segment::encode_record`]).
    pub fn append<H: AsRef<str>>(
        &mut self,
        timestamp_ms: u64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(H, H)],
        now: Instant,
    ) -> u64 {
        let roll = match self.pending.back() {
            Some(MemBatch {
                buf: Buf::Open(b), ..
            }) => b.len() >= self.roll_bytes,
            _ => true,
        };
        if roll {
            self.pending.push_back(MemBatch {
                base: self.next,
                buf: Buf::Open(BytesMut::with_capacity(self.roll_bytes.min(4 << 10))),
                positions: Vec::new(),
                ts_min: timestamp_ms,
                ts_max: timestamp_ms,
                kafka: None,
            });
        }
        let offset = self.next;
        let Some(batch) = self.pending.back_mut() else {
            unreachable!("a pending batch was just ensured")
        };
        let Buf::Open(buf) = &mut batch.buf else {
            unreachable!("the last pending batch is open")
        };
        let start = buf.len();
        // Batches roll at `roll_bytes`, far below 4 GiB, and records are at most 1 GiB.
        let delta = (offset - batch.base) as u32;
        segment::encode_record(buf, delta, timestamp_ms, key, value, headers);
        batch.positions.push(start as u32);
        batch.ts_min = batch.ts_min.min(timestamp_ms);
        batch.ts_max = batch.ts_max.max(timestamp_ms);
        self.pending_bytes += (buf.len() - start) as u64;
        self.next += 1;
        self.oldest_pending.get_or_insert(now);
        offset
    }

    /// Seals pending batches for a flush: at least one, then more while the total stays
    /// within `max_bytes`. Flushes may overlap (the next one is written while the previous
    /// one commits), so sealed ranges follow each other. Returns `None` when nothing is
    /// pending.
    pub fn seal(&mut self, max_bytes: u64) -> Option<Sealed> {
        if self.pending.is_empty() {
            return None;
        }
        let mut batches = Vec::new();
        let mut bytes = 0;
        while let Some(b) = self.pending.front() {
            if !batches.is_empty() && bytes + b.bytes() > max_bytes {
                break;
            }
            let Some(mut b) = self.pending.pop_front() else {
                break;
            };
            let body = b.freeze();
            bytes += b.bytes();
            batches.push(SealedBatch {
                base: b.base,
                count: b.count(),
                ts_min: b.ts_min,
                ts_max: b.ts_max,
                body,
                flags: if b.kafka.is_some() {
                    segment::FLAG_KAFKA
                } else {
                    0
                },
            });
            self.inflight.push_back(b);
        }
        let first = self.sealed_end;
        let end = self.inflight.back().map_or(first, MemBatch::end);
        self.sealed_end = end;
        self.pending_bytes -= bytes;
        self.inflight_bytes += bytes;
        if self.pending.is_empty() {
            self.oldest_pending = None;
        }
        Some(Sealed {
            first,
            end,
            batches,
            bytes,
        })
    }

    /// Marks the sealed records below `end` durable (`end` is the end of a sealed range,
    /// completed in order): their batches join the tail. Returns the bytes released from the
    /// buffer.
    pub fn complete(&mut self, end: u64) -> u64 {
        let mut released = 0;
        while self.inflight.front().is_some_and(|b| b.end() <= end) {
            let Some(b) = self.inflight.pop_front() else {
                break;
            };
            released += b.bytes();
            self.tail.push_back(b);
        }
        self.inflight_bytes -= released;
        self.tail_bytes += released;
        self.durable = self.durable.max(end.min(self.sealed_end));
        released
    }

    /// Drops the oldest tail batches until at most `keep` bytes of tail remain; returns the
    /// bytes dropped.
    pub fn evict_tail(&mut self, keep: u64) -> u64 {
        let mut freed = 0;
        while self.tail_bytes > keep {
            let Some(b) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= b.bytes();
            freed += b.bytes();
        }
        freed
    }

    /// Records `[from, until)` held in memory, at most `limit` of them and about `max_bytes`
    /// (at least one record when any is available). `None` when `from` is below what memory
    /// holds, so the caller reads segments.
    pub fn read(
        &self,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Region>> {
        let mem_start = self
            .tail
            .front()
            .or(self.inflight.front())
            .or(self.pending.front())
            .map_or(self.next, |b| b.base);
        if from < mem_start {
            return None;
        }
        let until = until.min(self.next);
        let mut out = Vec::new();
        let (mut pos, mut taken, mut bytes) = (from, 0usize, 0usize);
        for b in self
            .tail
            .iter()
            .chain(self.inflight.iter())
            .chain(self.pending.iter())
        {
            if pos >= until || taken >= limit || (taken > 0 && bytes >= max_bytes) {
                break;
            }
            if b.end() <= pos {
                continue;
            }
            if let Some(count) = b.kafka {
                let data = match &b.buf {
                    Buf::Frozen(f) => f.clone(),
                    Buf::Open(o) => Bytes::copy_from_slice(o),
                };
                bytes += data.len();
                taken += count as usize;
                out.push(Region {
                    first_offset: b.base,
                    count: count as usize,
                    data,
                    kafka: true,
                });
                pos = b.end();
                continue;
            }
            let data = b.buf.as_slice();
            let first = (pos - b.base) as usize;
            let last = ((until - b.base) as usize).min(b.positions.len());
            let mut i = first;
            while i < last && taken < limit && (taken == 0 || bytes < max_bytes) {
                let start = b.positions[i] as usize;
                let stop = b.positions.get(i + 1).map_or(data.len(), |p| *p as usize);
                bytes += stop - start;
                taken += 1;
                i += 1;
            }
            if i == first {
                break;
            }
            let start = b.positions[first] as usize;
            let stop = b.positions.get(i).map_or(data.len(), |p| *p as usize);
            let data = match &b.buf {
                Buf::Frozen(f) => f.slice(start..stop),
                Buf::Open(o) => Bytes::copy_from_slice(&o[start..stop]),
            };
            out.push(Region {
                first_offset: pos,
                count: i - first,
                data,
                kafka: false,
            });
            pos = b.base + i as u64;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
