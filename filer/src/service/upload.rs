//! The upload pipeline: a request body cut into chunks, written to volumes in parallel
//! (bounded), then committed as one entry.
//!
//! Invariant: the entry is committed only after every chunk was acknowledged by its volume
//! (fsynced unless `--fsync false`) with the full size; and every chunk written for an upload
//! that is not committed — an error, a body over the limit, a dropped request — is queued for
//! deletion by the [`OrphanGuard`], so a failed upload leaves neither an entry nor a leaked
//! chunk. Once committed, the entry owns its chunks (see `namespace`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::api::filer::{Chunk, Entry, FileUploadResponse};
use common::client::ClientError;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use tracing::Instrument;

use super::{Error, FILE_MODE, Filer, check_mutable, now_ms};
use crate::chunks::Chunker;
use crate::path;
use crate::store::{Batch, Op, PendingDeletion};

impl Filer {
    /// Fails early (before any chunk is written) when `p` cannot hold a file.
    async fn precheck_file(&self, p: &str) -> Result<(), Error> {
        let p = p.to_owned();
        self.read(move |s| {
            if let Some(e) = s.get(&p)?
                && e.is_dir
            {
                return Err(Error::IsADirectory { path: p });
            }
            for a in path::ancestors(&p) {
                if let Some(e) = s.get(a)?
                    && !e.is_dir
                {
                    return Err(Error::NotADirectory { path: a.to_owned() });
                }
            }
            Ok(())
        })
        .await
    }

    /// Uploads `body` as the file `p`: cuts it into chunks, writes them to volumes in
    /// parallel (bounded), then commits the entry. On failure nothing is committed and the
    /// chunks already written are queued for deletion.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p))]
    pub async fn upload<S>(
        self: &Arc<Self>,
        p: String,
        mime: String,
        body: S,
    ) -> Result<FileUploadResponse, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send,
    {
        check_mutable(&p)?;
        self.precheck_file(&p).await?;
        let mut guard = OrphanGuard {
            filer: self.clone(),
            path: p.clone(),
            fids: Vec::new(),
        };
        let (chunks, size) = match self.upload_chunks(&p, body, &mut guard).await {
            Ok(done) => done,
            Err(e) => {
                self.metrics.upload_errors.inc();
                return Err(e);
            }
        };
        let chunk_count = chunks.len();
        let entry = Entry {
            full_path: p.clone(),
            is_dir: false,
            mode: FILE_MODE,
            mtime_ms: now_ms(),
            size,
            mime,
            chunks,
            ..Entry::default()
        };
        let committed = self
            .critical(move |f| async move {
                let result = f.commit_entry(entry, None, None).await;
                if result.is_ok() {
                    guard.disarm();
                }
                // On error the guard queues the written chunks for deletion as it drops.
                result
            })
            .await;
        match committed {
            Ok(_) => {
                self.metrics.files_created.inc();
                tracing::debug!(size, chunks = chunk_count, "file stored");
                Ok(FileUploadResponse {
                    name: path::name(&p).to_owned(),
                    size,
                })
            }
            Err(e) => {
                self.metrics.upload_errors.inc();
                Err(e)
            }
        }
    }

    async fn upload_chunks<S>(
        self: &Arc<Self>,
        p: &str,
        body: S,
        guard: &mut OrphanGuard,
    ) -> Result<(Vec<Chunk>, u64), Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send,
    {
        let failed = Arc::new(AtomicBool::new(false));
        let stop = failed.clone();
        let source = chunk_stream(body, self.upload.chunk_size, self.upload.max_upload)
            .take_while(move |_| futures::future::ready(!stop.load(Ordering::Relaxed)));
        let uploads = source
            .map(|item| {
                let this = self.clone();
                let p = p.to_owned();
                async move {
                    let (offset, data) = item?;
                    this.upload_chunk(p, offset, data).await
                }
            })
            .buffered(self.upload.concurrency);
        let mut uploads = std::pin::pin!(uploads);
        let mut chunks = Vec::new();
        let mut first_error = None;
        // Keep draining after a failure so every chunk that did get written is known and
        // queued for deletion; no new chunk is started once `failed` is set.
        while let Some(result) = uploads.next().await {
            match result {
                Ok((chunk, acked)) => {
                    guard.fids.push(chunk.fid.clone());
                    if acked != chunk.size {
                        failed.store(true, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| Error::Upload {
                            path: p.to_owned(),
                            offset: chunk.offset,
                            source: Box::new(ClientError::Decode {
                                url: chunk.fid.clone(),
                                message: format!("volume stored {acked} bytes of {}", chunk.size),
                            }),
                        });
                    }
                    chunks.push(chunk);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let size = chunks.last().map_or(0, |c| c.offset + c.size);
        Ok((chunks, size))
    }

    /// Assigns and writes one chunk; returns it and the size the volume acknowledged.
    async fn upload_chunk(
        &self,
        p: String,
        offset: u64,
        data: Bytes,
    ) -> Result<(Chunk, u64), Error> {
        let size = data.len() as u64;
        let span = tracing::info_span!("filer.upload_chunk", offset, size);
        let written = self
            .blobs
            .upload(&self.upload.assign, data, &self.upload.write)
            .instrument(span)
            .await
            .map_err(|source| Error::Upload {
                path: p,
                offset,
                source: Box::new(source),
            })?;
        self.metrics.chunks_uploaded.inc();
        self.metrics.bytes_written.inc_by(size);
        Ok((
            Chunk {
                fid: written.fid.to_string(),
                offset,
                size,
                etag: written.etag,
            },
            written.size,
        ))
    }
}

/// Cuts a body into `(offset, chunk)` items; yields [`Error::TooLarge`] once more than
/// `max` bytes arrived, and passes body errors through. Stops after the first error.
fn chunk_stream<'a, S>(
    body: S,
    chunk_size: usize,
    max: u64,
) -> impl Stream<Item = Result<(u64, Bytes), Error>> + Send + 'a
where
    S: Stream<Item = Result<Bytes, Error>> + Send + 'a,
{
    struct State<'a> {
        body: BoxStream<'a, Result<Bytes, Error>>,
        chunker: Chunker,
        offset: u64,
        received: u64,
        eof: bool,
        stopped: bool,
    }
    let state = State {
        body: body.boxed(),
        chunker: Chunker::new(chunk_size),
        offset: 0,
        received: 0,
        eof: false,
        stopped: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.stopped {
                return None;
            }
            let next = if st.eof {
                st.chunker.finish()
            } else {
                st.chunker.pop_full()
            };
            if let Some(chunk) = next {
                let offset = st.offset;
                st.offset += chunk.len() as u64;
                return Some((Ok((offset, chunk)), st));
            }
            if st.eof {
                return None;
            }
            match st.body.next().await {
                Some(Ok(frame)) => {
                    st.received += frame.len() as u64;
                    if st.received > max {
                        st.stopped = true;
                        return Some((Err(Error::TooLarge { limit: max }), st));
                    }
                    st.chunker.push(&frame);
                }
                Some(Err(e)) => {
                    st.stopped = true;
                    return Some((Err(e), st));
                }
                None => st.eof = true,
            }
        }
    })
}

/// Remembers the chunks an upload wrote; unless disarmed (the entry was committed), queues
/// them for deletion when dropped — on errors and when the request is cancelled alike.
struct OrphanGuard {
    filer: Arc<Filer>,
    path: String,
    fids: Vec<String>,
}

impl OrphanGuard {
    fn disarm(mut self) {
        self.fids.clear();
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        if self.fids.is_empty() {
            return;
        }
        let now = now_ms();
        let mut batch = Batch::new();
        for fid in self.fids.drain(..) {
            batch.ops.push(Op::QueueDeletion(PendingDeletion {
                fid,
                path: self.path.clone(),
                queued_ms: now,
            }));
        }
        let filer = self.filer.clone();
        let path = self.path.clone();
        tracing::warn!(path = %path, chunks = batch.len(), "upload not committed, queueing its chunks for deletion");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(
                    async move {
                        if let Err(e) = filer.commit_independent(batch.ops).await {
                            tracing::error!(path = %path, "failed to queue orphaned chunks: {e:#}");
                        }
                    }
                    .in_current_span(),
                );
            }
            Err(_) => tracing::error!(path = %path, "no runtime to queue orphaned chunks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_chunk_stream_cuts_and_limits() {
        let frames: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defgh")),
        ];
        let out: Vec<_> = chunk_stream(stream::iter(frames), 3, 100).collect().await;
        let out: Vec<(u64, Bytes)> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            out,
            vec![
                (0, Bytes::from_static(b"abc")),
                (3, Bytes::from_static(b"def")),
                (6, Bytes::from_static(b"gh")),
            ]
        );

        let frames: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from_static(b"abcd")),
            Ok(Bytes::from_static(b"ef")),
        ];
        let out: Vec<_> = chunk_stream(stream::iter(frames), 4, 5).collect().await;
        assert!(matches!(
            out.as_slice(),
            [Ok(_), Err(Error::TooLarge { limit: 5 })]
        ));

        let out: Vec<_> = chunk_stream(stream::iter(Vec::<Result<Bytes, Error>>::new()), 4, 5)
            .collect()
            .await;
        assert!(out.is_empty());
    }
}
