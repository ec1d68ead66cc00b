//! Tests of [`PartitionLog`](super::PartitionLog): offsets assigned across recovery, seal and
//! complete, reads by offset across the tail, in-flight and pending batches, and the memory
//! accounting.
//!
//! Invariant: each test builds its own log; none touches a store.

use super::*;

const NO_HEADERS: &[(&str, &str)] = &[];

fn decode(regions: &[Region]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for r in regions {
        let mut pos = 0;
        for i in 0..r.count {
            let (rec, next) = segment::decode_record(&r.data, pos).unwrap();
            out.push((r.first_offset + i as u64, rec.value.to_vec()));
            pos = next;
        }
        assert_eq!(pos, r.data.len());
    }
    out
}

fn append_n(log: &mut PartitionLog, n: usize) {
    for _ in 0..n {
        let off = log.next();
        log.append(
            1,
            None,
            format!("v{off}").as_bytes(),
            NO_HEADERS,
            Instant::now(),
        );
    }
}

#[test]
fn test_log_append_assigns_consecutive_offsets_from_recovered_next() {
    let mut log = PartitionLog::new(3, 10, 1 << 20);
    assert_eq!(log.append(1, None, b"a", NO_HEADERS, Instant::now()), 10);
    assert_eq!(
        log.append(1, Some(b"k"), b"b", &[("h", "v")], Instant::now()),
        11
    );
    assert_eq!((log.log_start(), log.durable(), log.next()), (3, 10, 12));
    assert!(log.has_pending());
    assert_eq!(
        log.buffered_bytes() as usize,
        segment::record_len(None, b"a", NO_HEADERS)
            + segment::record_len(Some(b"k"), b"b", &[("h", "v")])
    );
}

#[test]
fn test_log_seal_complete_advances_durable_and_accounts_memory() {
    let mut log = PartitionLog::new(0, 0, 64);
    append_n(&mut log, 10);
    let total = log.buffered_bytes();
    let sealed = log.seal(u64::MAX).unwrap();
    assert_eq!((sealed.first, sealed.end, sealed.bytes), (0, 10, total));
    assert!(
        sealed.batches.len() > 1,
        "64-byte roll makes several batches"
    );
    assert!(log.seal(u64::MAX).is_none(), "nothing pending");
    append_n(&mut log, 2);
    assert_eq!(log.durable(), 0);
    assert_eq!(log.complete(sealed.end), total);
    assert_eq!((log.durable(), log.sealed_end(), log.next()), (10, 10, 12));
    assert_eq!(log.tail_bytes(), total);
    let s2 = log.seal(u64::MAX).unwrap();
    assert_eq!((s2.first, s2.end), (10, 12));
    // The encoded segment decodes back to the same records.
    let batches = segment::decode_segment(&sealed.encode()).unwrap();
    assert_eq!(batches.first().unwrap().header.first_offset, 0);
    assert_eq!(batches.last().unwrap().end_offset(), 10);
}

#[test]
fn test_log_seal_respects_max_bytes_but_takes_one_batch() {
    let mut log = PartitionLog::new(0, 0, 32);
    append_n(&mut log, 6);
    let s = log.seal(1).unwrap();
    assert_eq!(s.batches.len(), 1);
    assert!(s.end < 6);
    log.complete(s.end);
    let s2 = log.seal(u64::MAX).unwrap();
    assert_eq!((s2.first, s2.end), (s.end, 6));
}

#[test]
fn test_log_read_by_offset_across_tail_inflight_pending() {
    let mut log = PartitionLog::new(0, 0, 40);
    append_n(&mut log, 5);
    let s = log.seal(u64::MAX).unwrap();
    log.complete(s.end);
    append_n(&mut log, 5);
    log.seal(u64::MAX).unwrap();
    append_n(&mut log, 5);
    let all = decode(&log.read(0, 15, 100, 1 << 20).unwrap());
    assert_eq!(all.len(), 15);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(v, format!("v{i}").as_bytes());
    }
    let some = decode(&log.read(7, 12, 3, 1 << 20).unwrap());
    assert_eq!(some.iter().map(|r| r.0).collect::<Vec<_>>(), vec![7, 8, 9]);
    let one = decode(&log.read(3, 15, 100, 1).unwrap());
    assert_eq!(one.len(), 1, "at least one record even over max_bytes");
    assert!(log.read(15, 15, 10, 10).unwrap().is_empty());
}

#[test]
fn test_log_read_below_memory_goes_to_segments() {
    let mut log = PartitionLog::new(0, 100, 1 << 20);
    assert!(log.read(50, 100, 10, 1 << 20).is_none());
    assert!(log.read(100, 100, 10, 1 << 20).unwrap().is_empty());
    append_n(&mut log, 3);
    let s = log.seal(u64::MAX).unwrap();
    log.complete(s.end);
    let freed = log.evict_tail(0);
    assert!(freed > 0);
    assert_eq!(log.tail_bytes(), 0);
    assert!(log.read(101, 103, 10, 1 << 20).is_none());
    assert!(log.read(103, 103, 10, 1 << 20).unwrap().is_empty());
}

#[test]
fn test_log_overlapping_flushes_complete_in_order() {
    let mut log = PartitionLog::new(0, 0, 1 << 20);
    append_n(&mut log, 3);
    let a = log.seal(u64::MAX).unwrap();
    append_n(&mut log, 2);
    let b = log.seal(u64::MAX).unwrap();
    assert_eq!((a.first, a.end, b.first, b.end), (0, 3, 3, 5));
    assert_eq!(log.sealed_end(), 5);
    assert_eq!(log.complete(a.end), a.bytes);
    assert_eq!((log.durable(), log.buffered_bytes()), (3, b.bytes));
    assert_eq!(log.complete(b.end), b.bytes);
    assert_eq!((log.durable(), log.buffered_bytes()), (5, 0));
    assert_eq!(decode(&log.read(0, 5, 10, 1 << 20).unwrap()).len(), 5);
}

#[test]
fn test_log_oldest_pending_tracks_unsealed_records() {
    let mut log = PartitionLog::new(0, 0, 1 << 20);
    assert!(log.oldest_pending().is_none());
    append_n(&mut log, 1);
    assert!(log.oldest_pending().is_some());
    log.seal(u64::MAX).unwrap();
    assert!(log.oldest_pending().is_none());
    assert!(!log.has_pending());
    assert!(log.in_flight());
}
