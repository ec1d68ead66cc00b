//! The streaming read path: a byte range of a file served chunk by chunk.
//!
//! Invariant: no byte reaches the client unless it is the bytes the entry was written with —
//! each chunk's volume ETag (its needle CRC) must match the etag recorded at upload and its
//! length the recorded size, else the read fails. The first piece is fetched before the
//! response starts, so an unreadable first chunk is an error status; a later failure aborts the
//! body (short against `Content-Length`), never serves short or wrong content. Holes read as
//! zeros, in bounded pieces; at most [`READ_AHEAD`] chunks are in memory per reader.

use std::sync::Arc;

use bytes::Bytes;
use common::api::filer::Entry;
use common::client::ClientError;
use common::client::volume::unquote_etag;
use common::ids::FileId;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tracing::{Instrument, Span};

use super::{Error, Filer};
use crate::chunks::{self, Piece};

/// Zeros of a sparse region are served in pieces of at most this size.
const ZERO_PIECE: u64 = 1 << 20;
/// Chunks prefetched while streaming a file.
const READ_AHEAD: usize = 2;

impl Filer {
    /// Streams bytes `start..end` of a file. The first piece is fetched before returning, so
    /// an unreadable first chunk is an error response rather than an aborted body.
    pub async fn read_stream(
        self: &Arc<Self>,
        entry: Entry,
        start: u64,
        end: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let pieces: Vec<Piece> = chunks::chunks_for_range(&entry.chunks, start, end)
            .into_iter()
            .flat_map(split_zeros)
            .collect();
        let entry = Arc::new(entry);
        let this = self.clone();
        let span = Span::current();
        let mut pieces = stream::iter(pieces)
            .map(move |piece| {
                let this = this.clone();
                let entry = entry.clone();
                async move { this.read_piece(&entry, piece).await }.instrument(span.clone())
            })
            .buffered(READ_AHEAD)
            .boxed();
        match pieces.next().await {
            None => Ok(stream::empty().boxed()),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(stream::once(futures::future::ready(Ok(first)))
                .chain(pieces)
                .boxed()),
        }
    }

    async fn read_piece(&self, entry: &Entry, piece: Piece) -> Result<Bytes, Error> {
        let (index, skip, len) = match piece {
            Piece::Zeros { len } => {
                return Ok(Bytes::from(vec![0u8; usize::try_from(len).unwrap_or(0)]));
            }
            Piece::Chunk { index, skip, len } => (index, skip, len),
        };
        let chunk = entry.chunks.get(index).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "chunk index {index} out of range for {}",
                entry.full_path
            ))
        })?;
        let fail = |reason: String, transient: bool, retry_after: Option<u64>| {
            self.metrics.chunk_read_errors.inc();
            Error::ChunkRead {
                path: entry.full_path.clone(),
                fid: chunk.fid.clone(),
                reason,
                transient,
                retry_after,
            }
        };
        let fid: FileId = chunk
            .fid
            .parse()
            .map_err(|e: common::ids::FileIdError| fail(e.to_string(), false, None))?;
        let downloaded = self.blobs.download_tagged(&fid).await.map_err(|e| {
            let retry_after = match &e {
                ClientError::Api { retry_after, .. } => *retry_after,
                _ => None,
            };
            fail(e.to_string(), e.is_transient(), retry_after)
        })?;
        // The volume server's ETag is the needle's CRC-32C, which the upload recorded as the
        // chunk's etag: a mismatch means these are not the bytes the entry was written with
        // (a reused or overwritten needle, a wrong fid in a meta write). It comes with the
        // response headers, so the check is free. Entries without a recorded etag, and
        // servers that send none, are not checked.
        let data = downloaded.data;
        if let Some(got) = &downloaded.etag
            && !chunk.etag.is_empty()
            && !unquote_etag(&chunk.etag).eq_ignore_ascii_case(got)
        {
            self.metrics.chunk_etag_mismatches.inc();
            return Err(fail(
                format!(
                    "volume answered etag {got}, the entry records {}",
                    chunk.etag
                ),
                false,
                None,
            ));
        }
        if data.len() as u64 != chunk.size {
            return Err(fail(
                format!(
                    "volume returned {} bytes, the entry records {}",
                    data.len(),
                    chunk.size
                ),
                false,
                None,
            ));
        }
        let from = usize::try_from(skip).unwrap_or(usize::MAX);
        let to = usize::try_from(skip + len).unwrap_or(usize::MAX);
        if from > to || to > data.len() {
            return Err(fail(
                format!("range {skip}+{len} outside the chunk"),
                false,
                None,
            ));
        }
        Ok(data.slice(from..to))
    }
}

fn split_zeros(piece: Piece) -> Vec<Piece> {
    match piece {
        Piece::Zeros { len } if len > ZERO_PIECE => {
            let mut out = Vec::new();
            let mut left = len;
            while left > 0 {
                let n = left.min(ZERO_PIECE);
                out.push(Piece::Zeros { len: n });
                left -= n;
            }
            out
        }
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_zeros_bounds_piece_size() {
        let parts = split_zeros(Piece::Zeros {
            len: 3 * ZERO_PIECE + 1,
        });
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts.iter().map(Piece::len).sum::<u64>(),
            3 * ZERO_PIECE + 1
        );
    }
}
