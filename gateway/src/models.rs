//! Model bytes for the inference engine, from the same verified cache and fill as
//! `GET /v1/blobs/{id}`: [`CacheLoader`] is the gateway's [`inference::ModelLoader`].
//!
//! Guarantees: every byte handed to the engine belongs to a blob that verified against the Blob ID
//! (it comes from the cache or a fill, which admit nothing else); a blob above
//! `--max-model-size` is refused from its verified metadata, before any sliver is fetched (a
//! cached blob is refused from its length); loader errors are [`ModelLoadError`]s, which the API's
//! error mapping finds again through `InferenceError::loader_error` (unknown blob: 404).
//! The engine calls the loader once per single flight, so concurrent first requests for a model
//! share one fill.

use crate::cache::{CachedBlob, Hit};
use crate::fill::{Filler, ReadError, Source};
use bytes::{Bytes, BytesMut};
use codec::BlobId;
use inference::{LoadError, LoadFuture, ModelLoader};

/// Why a model's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelLoadError {
    /// The blob itself could not be read (unknown, unavailable, ...), as for `GET /v1/blobs`.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The blob is larger than `--max-model-size`.
    #[error("the model blob is {size} bytes, above the {limit}-byte --max-model-size")]
    TooLarge { size: u64, limit: u64 },
}

/// Loads models through the gateway's cache, filling them from the storage nodes on a miss.
pub struct CacheLoader {
    filler: Filler,
    /// Largest model blob the gateway will fetch and parse (`--max-model-size`).
    max_model_size: u64,
}

impl CacheLoader {
    pub fn new(filler: Filler, max_model_size: u64) -> Self {
        Self {
            filler,
            max_model_size,
        }
    }
}

impl ModelLoader for CacheLoader {
    fn load(&self, model: BlobId) -> LoadFuture {
        let filler = self.filler.clone();
        let limit = self.max_model_size;
        Box::pin(async move {
            whole_blob(&filler, model, limit)
                .await
                .map_err(|e| Box::new(e) as LoadError)
        })
    }
}

/// The whole verified blob `id` as one buffer, refusing blobs over `limit` bytes.
pub async fn whole_blob(filler: &Filler, id: BlobId, limit: u64) -> Result<Bytes, ModelLoadError> {
    let check = |size: u64| {
        if size > limit {
            Err(ModelLoadError::TooLarge { size, limit })
        } else {
            Ok(())
        }
    };
    // A model is not run from a cached blob that Walrus no longer serves (past its end epoch,
    // or deleted): the same check a read makes.
    Box::pin(filler.check_lifecycle(&id)).await?;
    let source = match filler.cache().get(&id).await {
        Some(Hit::Memory(blob, tier)) => Source::Cached(blob, tier),
        Some(Hit::Disk(blob)) => Source::Disk(blob),
        None => {
            // Verified metadata names the length: refuse before a single sliver is fetched.
            // The fill that follows reuses this metadata from the metadata cache.
            if filler.join(&id).is_none() {
                check(filler.metadata(id).await?.unencoded_length())?;
            }
            filler.open(id).await?
        }
    };
    match source {
        Source::Cached(blob, _) => {
            check(blob.len())?;
            Ok(contiguous(&blob))
        }
        Source::Disk(blob) => {
            check(blob.len())?;
            let len = blob.len();
            tokio::task::spawn_blocking(move || blob.into_reader(0, len)?.read_all())
                .await
                .map_err(|e| ReadError::Internal(format!("disk read task failed: {e}")))?
                .map_err(|e| ReadError::Internal(format!("disk cache: {e}")).into())
        }
        Source::Filling(mut reader) => {
            let meta = reader.metadata().await?;
            check(meta.unencoded_length())?;
            let mut out = BytesMut::with_capacity(meta.unencoded_length() as usize);
            while let Some(row) = reader.next_row().await {
                out.extend_from_slice(&row?.1);
            }
            if out.len() as u64 != meta.unencoded_length() {
                return Err(ReadError::Internal(format!(
                    "the fill ended after {} of {} bytes",
                    out.len(),
                    meta.unencoded_length()
                ))
                .into());
            }
            Ok(out.freeze())
        }
    }
}

/// A cached blob as one buffer (tract parses from a slice); no copy when it is one row.
fn contiguous(blob: &CachedBlob) -> Bytes {
    let mut slices = blob.slices(0, blob.len());
    if slices.len() == 1 {
        return slices.pop().expect("one slice");
    }
    let mut out = BytesMut::with_capacity(blob.len() as usize);
    for slice in slices {
        out.extend_from_slice(&slice);
    }
    out.freeze()
}
