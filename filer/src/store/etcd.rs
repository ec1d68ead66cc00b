//! [`EtcdStore`]: the [`MetaStore`] in etcd, so that several filers share one namespace.
//!
//! # Layout
//! The keys and values of the RocksDB store ([`super::codec`]) under a prefix
//! (`--etcd-prefix`, default `/kelp/filer/`), so several Kelp clusters can share one etcd:
//! `/kelp/filer/e/a\0b` is the entry `/a/b`, `/kelp/filer/g<fid>` a queued chunk deletion,
//! `/kelp/filer/c<fid>\0<path>` a chunk owner row, `/kelp/filer/mformat` the format marker.
//!
//! # Writes: one optimistic etcd transaction per batch
//! A [`Batch`] is one etcd transaction, so it is atomic, and durable when etcd answers (etcd
//! commits through raft: the entry is in the fsynced log of a majority). It is built
//! optimistically:
//! 1. every key the batch depends on — the guards' entries and directory listings, and what
//!    [`plan_index`] reads (old entries, chunk owner rows, queued deletions) — is read at one
//!    revision `R` (the first read fixes it, the others ask for it);
//! 2. the guards are checked and the chunk index planned on that snapshot;
//! 3. the transaction compares every key read against what was read (`mod_revision` equal,
//!    `create_revision == 0` for an absent key) and every range read with `mod_revision < R+1`
//!    (no key added or changed in it), and only then writes.
//!
//! If a compare fails, another writer (another filer) changed something the batch depends
//! on: the store reads again and re-plans, up to 12 attempts with a jittered backoff, then
//! gives up with [`StoreError::Contended`]. A guard that no longer holds on the new snapshot
//! is [`StoreError::GuardFailed`] at once: the caller's decision is stale, not the store's.
//!
//! # Limits
//! etcd refuses a transaction with more than `--max-txn-ops` compares or more than that many
//! writes (128 by default), or a request over `--max-request-bytes` (1.5 MiB). A batch that
//! does not fit is refused with [`StoreError::TooLarge`] before it is sent — never split, which
//! would break its atomicity. What that means for the filer (with etcd's defaults and 4 MiB
//! chunks):
//! - a file entry has at most [`EtcdLimits::max_chunks`] chunks (39: 156 MiB with 4 MiB
//!   chunks), so that replacing or deleting it — the entry, an owner row per new chunk, the
//!   removal of each old chunk's row and its queued deletion — still fits one transaction; the
//!   filer lowers its upload limit to match (`Config::max_upload`). When the precise compares
//!   (two per new chunk) do not fit, the store falls back to one compare over the whole owner
//!   key space and one over the queue, which only costs more retries under concurrent writers;
//! - a rename moves a subtree in one batch, so it is limited to about 40 entries (each moved
//!   entry is a delete, a put and a guard, plus its chunks' owner rows);
//! - a recursive delete does not need to be atomic, and the filer splits it (see
//!   `service::namespace`).
//!
//! Raise `--max-txn-ops` on etcd and `--etcd-max-txn-ops` on the filer together to lift them.
//!
//! # Reads
//! `get` and `list` are linearizable etcd reads. A listing is one range read bounded to the
//! directory's keys; a reverse listing asks etcd to sort descending, which etcd does after
//! reading the whole directory server-side.
//!
//! # Threads
//! The [`MetaStore`] trait is synchronous and the filer calls it on tokio's blocking pool. The
//! store owns a small runtime of its own (one worker, which drives the HTTP connections) and
//! blocks the calling thread on it, so it must not be called from an async task: from
//! `spawn_blocking` or a plain thread only.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::api::filer::Entry;
use common::etcd::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, EtcdClient, EtcdError, PutRequest,
    RangeRequest, RangeResponse, SortOrder, SortTarget, TxnOp, TxnRequest, prefix_end,
};

use super::codec;
use super::{
    Batch, IndexView, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError, check_guards,
    plan_index,
};

/// Attempts of an optimistic write before [`StoreError::Contended`].
const ATTEMPTS: u32 = 12;

/// etcd's limits the store keeps under (set them as etcd's own flags are set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdLimits {
    /// etcd's `--max-txn-ops`: most compares, and most writes, in one transaction.
    pub max_txn_ops: usize,
    /// etcd's `--max-request-bytes`: the largest request.
    pub max_request_bytes: usize,
}

impl EtcdLimits {
    /// The most chunks one file entry may have, so that every write of it fits one
    /// transaction: replacing a file of as many chunks writes the entry, an owner row per new
    /// chunk and, per old chunk, the removal of its row and its queued deletion (3 per chunk),
    /// with room for 8 new parent directories.
    pub fn max_chunks(&self) -> usize {
        self.max_txn_ops.saturating_sub(9) / 3
    }
}

impl Default for EtcdLimits {
    /// etcd's defaults: 128 operations, 1.5 MiB.
    fn default() -> Self {
        Self {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
        }
    }
}

/// The etcd-backed store.
pub struct EtcdStore {
    client: Arc<EtcdClient>,
    prefix: Vec<u8>,
    limits: EtcdLimits,
    /// Drives the client's I/O; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.client.endpoints())
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("limits", &self.limits)
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context (a test's, or the
        // filer's at shutdown): let its worker wind down in the background instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdStore {
    /// Opens the store under `prefix` on the cluster `client` talks to, writing the format
    /// marker if the prefix is new and checking it otherwise. Blocks (see the module doc).
    pub fn open(
        client: impl Into<Arc<EtcdClient>>,
        prefix: &str,
        limits: EtcdLimits,
    ) -> Result<Self, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Etcd(EtcdError::Config(
                "the key prefix must not be empty".to_owned(),
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-store")
            .enable_all()
            .build()?;
        let store = Self {
            client: client.into(),
            prefix: prefix.as_bytes().to_vec(),
            limits,
            rt: Some(rt),
        };
        let key = store.key(codec::FORMAT_KEY);
        loop {
            match store.block(store.client.get(key.clone()))? {
                Some(kv) if kv.value == codec::FORMAT => break,
                Some(kv) => {
                    return Err(StoreError::Format {
                        found: codec::show_key(&kv.value),
                        expected: codec::show_key(codec::FORMAT),
                    });
                }
                None => {
                    // Created once; a filer racing to create it makes this fail, and the
                    // marker is then read again.
                    let txn = TxnRequest {
                        compare: vec![Compare::absent(key.clone())],
                        success: vec![TxnOp::Put(PutRequest::new(key.clone(), codec::FORMAT))],
                        failure: vec![],
                    };
                    if store.block(store.client.txn(&txn))?.succeeded {
                        break;
                    }
                }
            }
        }
        Ok(store)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        std::str::from_utf8(&self.prefix).unwrap_or_default()
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until the store is dropped")
            .block_on(f)
    }

    /// The etcd key of a store key.
    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + k.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(k);
        out
    }

    /// The store key of an etcd key.
    fn unkey<'k>(&self, k: &'k [u8]) -> Result<&'k [u8], StoreError> {
        k.strip_prefix(self.prefix.as_slice())
            .ok_or_else(|| StoreError::Corrupt {
                key: codec::show_key(k),
                reason: "outside the store's prefix".to_owned(),
            })
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(self.block(self.client.range(req))?)
    }

    /// One attempt of [`MetaStore::write`]: `Ok(true)` when committed, `Ok(false)` when a
    /// compare failed (something read changed).
    fn try_write(&self, batch: &Batch) -> Result<bool, StoreError> {
        let max_chunks = self.limits.max_chunks();
        for op in &batch.ops {
            if let Op::Put(e) = op
                && e.chunks.len() > max_chunks
            {
                return Err(StoreError::TooLarge(format!(
                    "{} has {} chunks, a file on the etcd store has at most {max_chunks} \
                     (so that replacing or deleting it fits one transaction; use a larger \
                     --chunk-size-mb, or raise etcd's --max-txn-ops with --etcd-max-txn-ops)",
                    e.full_path,
                    e.chunks.len()
                )));
            }
        }
        let view = View::new(self);
        check_guards(&view, batch)?;
        let plan = plan_index(&view, batch)?;
        // The writes, one per key (etcd refuses a key written twice in one transaction; the
        // batch's ops apply in order, so the last one wins).
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (i, op) in batch.ops.iter().enumerate() {
            if plan.skip.contains(&i) {
                continue;
            }
            let (k, v) = match op {
                Op::Put(e) => (codec::entry_key(&e.full_path), Some(codec::encode(e))),
                Op::Delete(p) => (codec::entry_key(p), None),
                Op::QueueDeletion(d) => (codec::gc_key(&d.fid), Some(codec::encode(d))),
                Op::Dequeue(fid) => (codec::gc_key(fid), None),
            };
            writes.insert(self.key(&k), v);
        }
        for (fid, path) in &plan.remove {
            writes.insert(self.key(&codec::owner_key(fid, path)), None);
        }
        for (fid, path) in &plan.add {
            writes.insert(
                self.key(&codec::owner_key(fid, path)),
                Some(codec::OWNER_VALUE.to_vec()),
            );
        }
        if writes.len() > self.limits.max_txn_ops {
            return Err(StoreError::TooLarge(format!(
                "{} keys to write, etcd allows {} per transaction (--max-txn-ops)",
                writes.len(),
                self.limits.max_txn_ops
            )));
        }
        let compare = view.compares(self.limits.max_txn_ops)?;
        let txn = TxnRequest {
            compare,
            success: writes
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => TxnOp::Put(PutRequest::new(k, v)),
                    None => TxnOp::DeleteRange(DeleteRangeRequest::key(k)),
                })
                .collect(),
            failure: vec![],
        };
        let size = serde_json::to_vec(&txn).map_or(usize::MAX, |b| b.len());
        if size > self.limits.max_request_bytes {
            return Err(StoreError::TooLarge(format!(
                "a {size}-byte request, etcd takes at most {} (--max-request-bytes)",
                self.limits.max_request_bytes
            )));
        }
        match self.block(self.client.txn(&txn)) {
            Ok(r) => Ok(r.succeeded),
            Err(e) if e.is_too_many_ops() || e.is_too_large() => {
                Err(StoreError::TooLarge(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A store key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// The snapshot a write is planned on: reads at one revision, remembering what they saw.
struct View<'a> {
    store: &'a EtcdStore,
    /// The revision read at (0 until the first read).
    rev: Cell<i64>,
    /// Every key read (etcd key → its `mod_revision`, 0 when absent).
    keys: RefCell<BTreeMap<Vec<u8>, i64>>,
    /// Every range read (etcd keys, `[start, end)`).
    ranges: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl<'a> View<'a> {
    fn new(store: &'a EtcdStore) -> Self {
        Self {
            store,
            rev: Cell::new(0),
            keys: RefCell::new(BTreeMap::new()),
            ranges: RefCell::new(Vec::new()),
        }
    }

    fn read(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let rev = self.rev.get();
        let req = if rev > 0 { req.at_revision(rev) } else { req };
        let r = self.store.range(&req)?;
        if rev == 0 {
            self.rev.set(r.header.revision);
        }
        let mut keys = self.keys.borrow_mut();
        for kv in &r.kvs {
            keys.insert(kv.key.clone(), kv.mod_revision);
        }
        Ok(r)
    }

    /// The value of store key `k`.
    fn read_key(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.store.key(k);
        let r = self.read(RangeRequest::key(key.clone()))?;
        let kv = r.kvs.into_iter().next();
        if kv.is_none() {
            self.keys.borrow_mut().insert(key, 0);
        }
        Ok(kv.map(|kv| kv.value))
    }

    /// Up to `limit` pairs of the store keys in `[lo, hi)`.
    fn read_range(&self, lo: &[u8], hi: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let (lo, hi) = (self.store.key(lo), self.store.key(hi));
        let r = self.read(
            RangeRequest::range(lo.clone(), hi.clone())
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
        )?;
        self.ranges.borrow_mut().push((lo, hi));
        r.kvs
            .into_iter()
            .map(|kv| Ok((self.store.unkey(&kv.key)?.to_vec(), kv.value)))
            .collect()
    }

    /// The compares that make the transaction apply only to this snapshot: precise (one per
    /// key and range read) when they fit in `max`, else with the absent queue keys and the
    /// owner ranges folded into one range compare each.
    fn compares(&self, max: usize) -> Result<Vec<Compare>, StoreError> {
        let rev = self.rev.get();
        let unchanged_range = |lo: Vec<u8>, hi: Vec<u8>| {
            Compare::new(lo, CompareOp::Less, CompareTarget::ModRevision(rev + 1))
                .with_range_end(hi)
        };
        let keys = self.keys.borrow();
        let ranges = self.ranges.borrow();
        let key_compare = |(k, m): (&Vec<u8>, &i64)| {
            if *m == 0 {
                Compare::absent(k.clone())
            } else {
                Compare::unchanged(k.clone(), *m)
            }
        };
        let precise: Vec<Compare> = keys
            .iter()
            .map(key_compare)
            .chain(
                ranges
                    .iter()
                    .map(|(lo, hi)| unchanged_range(lo.clone(), hi.clone())),
            )
            .collect();
        if precise.len() <= max {
            return Ok(precise);
        }
        let gc = self.store.key(&[codec::GC]);
        let owners = self.store.key(&[codec::OWNER]);
        let mut coarse: Vec<Compare> = keys
            .iter()
            .filter(|(k, m)| !(**m == 0 && k.starts_with(&gc)))
            .map(key_compare)
            .chain(
                ranges
                    .iter()
                    .filter(|(lo, _)| !lo.starts_with(&owners))
                    .map(|(lo, hi)| unchanged_range(lo.clone(), hi.clone())),
            )
            .collect();
        coarse.push(unchanged_range(gc.clone(), prefix_end(&gc)));
        coarse.push(unchanged_range(owners.clone(), prefix_end(&owners)));
        if coarse.len() > max {
            return Err(StoreError::TooLarge(format!(
                "the write depends on {} keys and ranges, etcd allows {max} compares per transaction (--max-txn-ops)",
                coarse.len()
            )));
        }
        Ok(coarse)
    }
}

impl IndexView for View<'_> {
    fn children(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read_range(&codec::dir_prefix(dir), &codec::dir_upper(dir), limit)?
            .into_iter()
            .map(|(k, v)| {
                codec::decode_entry(&k, &v).map(|e| crate::path::name(&e.full_path).to_owned())
            })
            .collect()
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        let k = codec::entry_key(path);
        self.read_key(&k)?
            .map(|v| codec::decode_entry(&k, &v))
            .transpose()
    }

    fn owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        self.read_range(&codec::owners_prefix(fid), &codec::owners_upper(fid), 0)?
            .iter()
            .map(|(k, _)| codec::owner_path(fid, k))
            .collect()
    }

    fn queued(&self, fid: &str) -> Result<Option<PendingDeletion>, StoreError> {
        let k = codec::gc_key(fid);
        self.read_key(&k)?
            .map(|v| codec::decode(&k, &v))
            .transpose()
    }
}

/// The smallest key after `k`.
fn after(k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    out.push(0);
    out
}

impl MetaStore for EtcdStore {
    fn get(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        if path == crate::path::ROOT {
            return Ok(None);
        }
        let k = codec::entry_key(path);
        let r = self.range(&RangeRequest::key(self.key(&k)))?;
        r.kvs
            .first()
            .map(|kv| codec::decode_entry(&k, &kv.value))
            .transpose()
    }

    fn list(&self, dir: &str, opts: &ListOpts) -> Result<Page, StoreError> {
        let lo = codec::dir_prefix(dir);
        let hi = codec::dir_upper(dir);
        let start = opts.start.as_deref().map(|s| codec::child_key(dir, s));
        let (from, to) = match (&start, opts.reverse, opts.inclusive) {
            (None, _, _) => (lo, hi),
            (Some(s), false, true) => (s.clone(), hi),
            (Some(s), false, false) => (after(s), hi),
            (Some(s), true, true) => (lo, after(s)),
            (Some(s), true, false) => (lo, s.clone()),
        };
        if from >= to {
            return Ok(Page::default());
        }
        let order = if opts.reverse {
            SortOrder::Descend
        } else {
            SortOrder::Ascend
        };
        let want = opts.limit.saturating_add(1);
        let r = self.range(
            &RangeRequest::range(self.key(&from), self.key(&to))
                .with_limit(i64::try_from(want).unwrap_or(i64::MAX))
                .sorted(SortTarget::Key, order),
        )?;
        let mut page = Page {
            entries: Vec::with_capacity(r.kvs.len().min(opts.limit)),
            has_more: r.kvs.len() > opts.limit,
        };
        for kv in r.kvs.iter().take(opts.limit) {
            page.entries
                .push(codec::decode_entry(self.unkey(&kv.key)?, &kv.value)?);
        }
        Ok(page)
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        for attempt in 1..=ATTEMPTS {
            match self.try_write(batch) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // etcd compacted the revision the snapshot was read at: read a new one.
                Err(StoreError::Etcd(e)) if e.is_compacted() => {}
                Err(e) => return Err(e),
            }
            tracing::debug!(
                attempt,
                "etcd write conflicted with another writer, re-planning"
            );
            self.block(tokio::time::sleep(common::retry::backoff(
                attempt,
                Duration::from_millis(2),
                Duration::from_millis(200),
            )));
        }
        Err(StoreError::Contended { attempts: ATTEMPTS })
    }

    fn pending_deletions(&self, limit: usize) -> Result<Vec<PendingDeletion>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lo = self.key(&[codec::GC]);
        let hi = self.key(&[codec::GC + 1]);
        let r = self.range(
            &RangeRequest::range(lo, hi).with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
        )?;
        r.kvs
            .iter()
            .map(|kv| codec::decode(self.unkey(&kv.key)?, &kv.value))
            .collect()
    }

    fn chunk_owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        let r = self.range(&RangeRequest::range(
            self.key(&codec::owners_prefix(fid)),
            self.key(&codec::owners_upper(fid)),
        ))?;
        r.kvs
            .iter()
            .map(|kv| codec::owner_path(fid, self.unkey(&kv.key)?))
            .collect()
    }

    fn check(&self) -> Result<(), StoreError> {
        // A linearizable read: it needs a leader and a quorum.
        self.range(&RangeRequest::key(self.key(codec::FORMAT_KEY)))?;
        Ok(())
    }
}
