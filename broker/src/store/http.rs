//! [`HttpStore`]: segments on volume servers (assigned by the master, written with fsync) and
//! their metadata in the filer's `/__meta/` API.

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use common::api::filer::{Chunk, Entry, Expect, ListQuery, ParentExpect};
use common::api::master::AssignQuery;
use common::client::filer::{Created, FilerClient};
use common::client::volume::{BlobClient, WriteOptions};
use common::client::{ClientError, HttpClient};
use common::ids::FileId;
use common::security::Security;
use common::time::now_ms;
use futures::FutureExt;

use super::{
    Assignment, ChunkRef, CreateOutcome, SegmentMeta, SegmentRef, Store, StoreError, StoreFuture,
    TopicConf, TopicKey, parse_segment_entry, segment_name,
};

/// MIME type of segment entries.
const SEGMENT_MIME: &str = "application/x-kelp-segment";
/// Page size of directory listings.
const PAGE: usize = 1000;

/// The store backed by a master, its volume servers and a filer.
#[derive(Debug, Clone)]
pub struct HttpStore {
    blobs: BlobClient,
    filer: FilerClient,
    assign_query: AssignQuery,
}

impl HttpStore {
    /// A store talking to the master at `master` and the filer at `filer` (`host:port`);
    /// segments go to `collection` with `replication`. `http` should carry the cluster token
    /// (`Security::apply`); segment writes, reads and deletes (retention) carry the fid tokens
    /// minted with `security`'s keys, when they are set.
    pub fn new(
        http: HttpClient,
        security: Arc<Security>,
        master: &str,
        filer: &str,
        collection: &str,
        replication: &str,
    ) -> Self {
        let blobs = BlobClient::new(http.clone(), master);
        Self {
            blobs: BlobClient {
                volumes: blobs.volumes.with_security(security),
                ..blobs
            },
            filer: FilerClient::new(http, filer),
            assign_query: AssignQuery {
                count: None,
                collection: Some(collection.to_owned()),
                replication: Some(replication.to_owned()),
                ttl: None,
            },
        }
    }

    fn client(what: impl Into<String>) -> impl FnOnce(ClientError) -> StoreError {
        let what = what.into();
        move |source| StoreError::Client { what, source }
    }

    /// Every entry of `dir` in name order (empty when the directory does not exist).
    async fn list_all(&self, dir: &str) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let q = ListQuery {
                dir: dir.to_owned(),
                start: start.clone(),
                inclusive: false,
                limit: Some(PAGE),
                reverse: false,
            };
            let resp = match self.filer.list(&q).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(out),
                Err(e) => return Err(Self::client(format!("list {dir}"))(e)),
            };
            let last = resp
                .entries
                .last()
                .map(|e| entry_name(&e.full_path).to_owned());
            out.extend(resp.entries);
            match last {
                Some(l) if resp.has_more => start = Some(l),
                _ => return Ok(out),
            }
        }
    }

    /// The one entry a bounded listing returns, parsed as a segment.
    async fn one_segment(&self, q: ListQuery) -> Result<Option<SegmentRef>, StoreError> {
        let resp = match self.filer.list(&q).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(None),
            Err(e) => return Err(Self::client(format!("list {}", q.dir))(e)),
        };
        resp.entries.first().map(parse_segment_entry).transpose()
    }
}

/// The last segment of a path.
fn entry_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

fn parse_topic_conf(key: &TopicKey, entry: &Entry) -> Result<TopicConf, StoreError> {
    let partitions = entry
        .extended
        .get("partitions")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "topic config {}: extended.partitions is missing or not a positive number",
                entry.full_path
            ))
        })?;
    Ok(TopicConf {
        key: key.clone(),
        partitions,
    })
}

/// What an [`HttpStore::update_entry`] decision does.
enum Update<T> {
    /// Write this entry (under the version read), then answer `T`.
    Write(Entry, T),
    /// Write nothing and answer `T`.
    Keep(T),
}

/// A file entry at `path` holding one number in `extended[key]`.
fn counter_entry(path: &str, key: &str, value: u64) -> Entry {
    let mut extended = std::collections::BTreeMap::new();
    extended.insert(key.to_owned(), value.to_string());
    Entry {
        full_path: path.to_owned(),
        mode: 0o644,
        mtime_ms: now_ms(),
        extended,
        ..Entry::default()
    }
}

impl HttpStore {
    /// Read-check-write of the entry at `path`: `decide` sees the entry as it is and says
    /// what to write; the write carries a version precondition (absent when there was no
    /// entry), and a writer that got in between makes it read and decide again.
    async fn update_entry<T>(
        &self,
        path: &str,
        what: &str,
        mut decide: impl FnMut(Option<Entry>) -> Result<Update<T>, StoreError>,
    ) -> Result<T, StoreError> {
        for _ in 0..16 {
            let current = self
                .filer
                .get_entry(path)
                .await
                .map_err(Self::client(what.to_owned()))?;
            let expect = match &current {
                None => Expect::Absent,
                Some(e) => Expect::Version(e.version),
            };
            let (entry, answer) = match decide(current)? {
                Update::Keep(answer) => return Ok(answer),
                Update::Write(entry, answer) => (entry, answer),
            };
            match self.filer.put_entry(&entry, Some(expect)).await {
                Ok(_) => return Ok(answer),
                Err(e) if e.status() == Some(StatusCode::PRECONDITION_FAILED) => continue,
                Err(e) => return Err(Self::client(what.to_owned())(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "{what}: lost 16 races with concurrent writers"
        )))
    }
}

/// The partition directory's attribute holding its owner epoch.
const OWNER_EPOCH: &str = "owner_epoch";
/// The partition directory's attribute naming its owner (empty once released).
const OWNER: &str = "owner";

impl Store for HttpStore {
    fn assign(&self) -> StoreFuture<'_, Assignment> {
        async move {
            let a = self
                .blobs
                .master
                .assign(&self.assign_query)
                .await
                .map_err(Self::client("assign a file id for a segment"))?;
            let fid = a.fid.parse::<FileId>().map_err(|e| {
                StoreError::Corrupt(format!(
                    "master assigned a malformed file id {:?}: {e}",
                    a.fid
                ))
            })?;
            Ok(Assignment { fid, url: a.url })
        }
        .boxed()
    }

    fn write<'a>(&'a self, assignment: &'a Assignment, data: Bytes) -> StoreFuture<'a, ChunkRef> {
        async move {
            let len = data.len() as u64;
            let resp = self
                .blobs
                .volumes
                .write(
                    &assignment.url,
                    &assignment.fid,
                    data,
                    &WriteOptions::default(),
                )
                .await
                .map_err(Self::client(format!(
                    "write segment {} to {}",
                    assignment.fid, assignment.url
                )))?;
            if resp.size != len {
                return Err(StoreError::Corrupt(format!(
                    "volume server {} stored {} bytes of segment {} instead of {len}",
                    assignment.url, resp.size, assignment.fid
                )));
            }
            Ok(ChunkRef {
                fid: assignment.fid,
                size: resp.size,
                etag: resp.etag,
            })
        }
        .boxed()
    }

    fn take_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        owner: &'a str,
    ) -> StoreFuture<'a, u64> {
        async move {
            let path = topic.partition_dir(partition);
            let what = format!("take ownership of {path}");
            self.update_entry(&path, &what, |current| {
                let (mut entry, epoch) = match current {
                    None => (
                        Entry {
                            full_path: path.clone(),
                            is_dir: true,
                            ..Entry::default()
                        },
                        1,
                    ),
                    Some(e) => {
                        let epoch = match e.extended.get(OWNER_EPOCH) {
                            None => 1,
                            Some(v) => {
                                v.parse::<u64>().map_err(|_| {
                                    StoreError::Corrupt(format!(
                                        "{path}: {OWNER_EPOCH} is not a number"
                                    ))
                                })? + 1
                            }
                        };
                        (e, epoch)
                    }
                };
                entry.mtime_ms = now_ms();
                entry
                    .extended
                    .insert(OWNER_EPOCH.to_owned(), epoch.to_string());
                entry.extended.insert(OWNER.to_owned(), owner.to_owned());
                Ok(Update::Write(entry, epoch))
            })
            .await
        }
        .boxed()
    }

    fn partition_owner<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<(String, u64)>> {
        async move {
            let path = topic.partition_dir(partition);
            let entry = self
                .filer
                .get_entry(&path)
                .await
                .map_err(Self::client(format!("read the owner of {path}")))?;
            let Some(e) = entry else { return Ok(None) };
            let Some(epoch) = e.extended.get(OWNER_EPOCH) else {
                return Ok(None);
            };
            let epoch = epoch.parse::<u64>().map_err(|_| {
                StoreError::Corrupt(format!("{path}: {OWNER_EPOCH} is not a number"))
            })?;
            Ok(Some((
                e.extended.get(OWNER).cloned().unwrap_or_default(),
                epoch,
            )))
        }
        .boxed()
    }

    fn release_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        epoch: u64,
    ) -> StoreFuture<'a, ()> {
        async move {
            let path = topic.partition_dir(partition);
            let what = format!("release {path}");
            self.update_entry(&path, &what, |current| {
                let Some(mut e) = current else {
                    return Ok(Update::Keep(()));
                };
                if e.extended.get(OWNER_EPOCH) != Some(&epoch.to_string()) {
                    return Ok(Update::Keep(()));
                }
                e.mtime_ms = now_ms();
                e.extended.insert(OWNER.to_owned(), String::new());
                Ok(Update::Write(e, ()))
            })
            .await
        }
        .boxed()
    }

    fn commit_segment<'a>(&'a self, meta: &'a SegmentMeta) -> StoreFuture<'a, ()> {
        async move {
            let path = meta.path();
            let fid = meta.chunk.fid.to_string();
            let entry = Entry {
                full_path: path.clone(),
                is_dir: false,
                mode: 0o644,
                mtime_ms: now_ms(),
                size: meta.chunk.size,
                mime: SEGMENT_MIME.to_owned(),
                chunks: vec![Chunk {
                    fid: fid.clone(),
                    offset: 0,
                    size: meta.chunk.size,
                    etag: meta.chunk.etag.clone(),
                }],
                extended: meta.extended(),
                version: 0,
            };
            // A retried commit whose first answer was lost finds its own entry (same chunk);
            // an entry with another chunk means someone else wrote this offset. The owner
            // epoch fences the commit: after a takeover it is refused atomically.
            let fence = ParentExpect {
                key: OWNER_EPOCH.to_owned(),
                value: meta.epoch.to_string(),
            };
            let created = match self.filer.create_entry_fenced(&entry, Some(&fence)).await {
                Err(e) if e.code() == Some("fenced") => {
                    return Err(StoreError::Fenced(format!(
                        "partition {} of {} was taken over by another broker: {e}",
                        meta.partition, meta.topic
                    )));
                }
                other => other.map_err(Self::client(format!("commit segment entry {path}")))?,
            };
            match created {
                Created::New(_) => Ok(()),
                Created::Exists(e) if e.chunks.first().is_some_and(|c| c.fid == fid) => Ok(()),
                Created::Exists(e) => Err(StoreError::Conflict(format!(
                    "segment entry {path} already exists with chunk {} instead of {fid}: \
                     another broker writes this partition",
                    e.chunks.first().map_or("none", |c| c.fid.as_str())
                ))),
            }
        }
        .boxed()
    }

    fn first_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        self.one_segment(ListQuery {
            dir: topic.partition_dir(partition),
            start: None,
            inclusive: false,
            limit: Some(1),
            reverse: false,
        })
        .boxed()
    }

    fn last_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        self.one_segment(ListQuery {
            dir: topic.partition_dir(partition),
            start: None,
            inclusive: false,
            limit: Some(1),
            reverse: true,
        })
        .boxed()
    }

    fn find_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        self.one_segment(ListQuery {
            dir: topic.partition_dir(partition),
            start: Some(segment_name(offset)),
            inclusive: true,
            limit: Some(1),
            reverse: true,
        })
        .boxed()
    }

    fn list_segments<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        from: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<SegmentRef>> {
        async move {
            let q = ListQuery {
                dir: topic.partition_dir(partition),
                start: Some(segment_name(from)),
                inclusive: true,
                limit: Some(limit as usize),
                reverse: false,
            };
            let resp = match self.filer.list(&q).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(Vec::new()),
                Err(e) => return Err(Self::client(format!("list {}", q.dir))(e)),
            };
            resp.entries
                .iter()
                .filter(|e| !e.is_dir && e.full_path.ends_with(".seg"))
                .map(parse_segment_entry)
                .collect()
        }
        .boxed()
    }

    fn delete_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        seg: &'a SegmentRef,
    ) -> StoreFuture<'a, ()> {
        async move {
            let path = format!(
                "{}/{}",
                topic.partition_dir(partition),
                segment_name(seg.offset_min)
            );
            match self.filer.delete_entry(&path, false).await {
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
                other => other.map_err(Self::client(format!("delete segment entry {path}"))),
            }
        }
        .boxed()
    }

    fn read_segment<'a>(&'a self, seg: &'a SegmentRef) -> StoreFuture<'a, Bytes> {
        async move {
            self.blobs
                .download(&seg.fid)
                .await
                .map_err(Self::client(format!("read segment {}", seg.fid)))
        }
        .boxed()
    }

    fn list_topics(&self) -> StoreFuture<'_, Vec<TopicConf>> {
        async move {
            let mut out = Vec::new();
            for ns in self.list_all("/topics").await? {
                let ns = entry_name(&ns.full_path).to_owned();
                for topic in self.list_all(&format!("/topics/{ns}")).await? {
                    let key = TopicKey::new(ns.clone(), entry_name(&topic.full_path));
                    if !crate::names::valid_name(&key.ns) || !crate::names::valid_name(&key.name) {
                        tracing::warn!(topic = %key, "skipping a topic directory with an invalid name");
                        continue;
                    }
                    let path = format!("{}/topic.conf", key.dir());
                    let entry = self
                        .filer
                        .get_entry(&path)
                        .await
                        .map_err(Self::client(format!("read topic config {path}")))?;
                    match entry {
                        Some(e) => out.push(parse_topic_conf(&key, &e)?),
                        None => tracing::warn!(topic = %key, "topic directory without topic.conf, skipping it"),
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn delete_topic<'a>(&'a self, topic: &'a TopicKey) -> StoreFuture<'a, ()> {
        async move {
            let dir = topic.dir();
            match self.filer.delete_entry(&dir, true).await {
                Ok(()) => Ok(()),
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
                Err(e) => Err(Self::client(format!("delete topic {dir}"))(e)),
            }
        }
        .boxed()
    }

    fn create_topic<'a>(&'a self, conf: &'a TopicConf) -> StoreFuture<'a, CreateOutcome> {
        async move {
            let path = format!("{}/topic.conf", conf.key.dir());
            let mut extended = std::collections::BTreeMap::new();
            extended.insert("partitions".to_owned(), conf.partitions.to_string());
            extended.insert("namespace".to_owned(), conf.key.ns.clone());
            extended.insert("name".to_owned(), conf.key.name.clone());
            let entry = Entry {
                full_path: path.clone(),
                mode: 0o644,
                mtime_ms: now_ms(),
                mime: "application/json".to_owned(),
                extended,
                ..Entry::default()
            };
            match self
                .filer
                .create_entry(&entry)
                .await
                .map_err(Self::client(format!("create topic config {path}")))?
            {
                Created::New(_) => Ok(CreateOutcome::Created),
                Created::Exists(e) => Ok(CreateOutcome::Exists(parse_topic_conf(&conf.key, &e)?)),
            }
        }
        .boxed()
    }

    fn put_group_offset<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
        reset: bool,
    ) -> StoreFuture<'a, u64> {
        async move {
            let path = format!("{}/groups/{group}/p{partition:04}", topic.dir());
            let what = format!("store group offset {path}");
            self.update_entry(&path, &what, |current| {
                let stored = current
                    .as_ref()
                    .and_then(|e| e.extended.get("offset"))
                    .and_then(|o| o.parse::<u64>().ok());
                if let Some(stored) = stored
                    && (stored == offset || (!reset && stored > offset))
                {
                    return Ok(Update::Keep(stored));
                }
                Ok(Update::Write(
                    counter_entry(&path, "offset", offset),
                    offset,
                ))
            })
            .await
        }
        .boxed()
    }

    fn group_offsets<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
    ) -> StoreFuture<'a, Vec<(u32, u64)>> {
        async move {
            let dir = format!("{}/groups/{group}", topic.dir());
            let mut out = Vec::new();
            for e in self.list_all(&dir).await? {
                let name = entry_name(&e.full_path);
                let Some(p) = name.strip_prefix('p').and_then(|d| d.parse::<u32>().ok()) else {
                    continue;
                };
                let offset = e
                    .extended
                    .get("offset")
                    .and_then(|o| o.parse::<u64>().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "group offset entry {} has no numeric offset",
                            e.full_path
                        ))
                    })?;
                out.push((p, offset));
            }
            out.sort_unstable();
            Ok(out)
        }
        .boxed()
    }

    fn reserve_ids<'a>(&'a self, name: &'a str, count: u64) -> StoreFuture<'a, u64> {
        async move {
            let path = format!("/broker/ids/{name}");
            let what = format!("reserve {count} ids of {path}");
            self.update_entry(&path, &what, |current| {
                let next = match current {
                    None => 0,
                    Some(e) => e
                        .extended
                        .get("next")
                        .and_then(|n| n.parse::<u64>().ok())
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("{path}: extended.next is not a number"))
                        })?,
                };
                let end = next.checked_add(count).ok_or_else(|| {
                    StoreError::Corrupt(format!("{path}: the sequence is exhausted"))
                })?;
                Ok(Update::Write(counter_entry(&path, "next", end), next))
            })
            .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entry_name_takes_last_segment() {
        assert_eq!(entry_name("/topics/ns/t/p0001"), "p0001");
        assert_eq!(entry_name("/topics/ns/"), "ns");
        assert_eq!(entry_name("x"), "x");
    }

    #[test]
    fn test_parse_topic_conf_rejects_missing_partitions() {
        let key = TopicKey::new("ns", "t");
        let mut e = Entry {
            full_path: "/topics/ns/t/topic.conf".into(),
            ..Entry::default()
        };
        assert!(parse_topic_conf(&key, &e).is_err());
        e.extended.insert("partitions".into(), "0".into());
        assert!(parse_topic_conf(&key, &e).is_err());
        e.extended.insert("partitions".into(), "3".into());
        assert_eq!(parse_topic_conf(&key, &e).unwrap().partitions, 3);
    }
}
