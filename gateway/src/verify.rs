//! `walrus-gateway verify-proof`: check an inference proof stored as a Walrus blob without
//! trusting the gateway that made it.
//!
//! The proof blob and the model are downloaded through [`crate::client::fetch_verified`], which checks each
//! against its Blob ID before anything is used; then the signature (and, if given, the expected
//! signer), the model and inputs the record names, and finally the outputs of a local re-run
//! with [`inference::StaticModels`]: bitwise when the engine and CPU tag match the record's,
//! else within [`Tolerance::default`]. The first check that fails is the error, named.
//!
//! A proof stored as a quilt patch (issue 16, `proof.quilt_patch_id`) is read with
//! `GET /v1/blobs/by-quilt-patch-id/{id}` ([`crate::client::fetch_patch`]). Its bytes are not
//! checked against the quilt's Blob ID (that needs the quilt's columns), and need not be: the
//! signature covers the record, which commits to the outputs' BLAKE3, and every later check is
//! the same as for a proof blob.
//! A passing proof shows that this key signed these outputs for this model and these inputs, and
//! that they are what the model computes here; it proves nothing about the gateway's own run.

use crate::client::{self, ClientError, ContentId};
use bytes::Bytes;
use codec::BlobId;
use inference::{
    Comparison, Engine, EngineConfig, InferenceError, ProofBlob, StaticModels, Tolerance,
    VerifyError,
};
use std::sync::Arc;

/// The check that failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyProofError {
    #[error("cannot download the {what} {id}: {source}")]
    Download {
        what: &'static str,
        id: BlobId,
        source: ClientError,
    },
    #[error("cannot download the proof patch {id}: {source}")]
    DownloadPatch {
        id: codec::quilt::QuiltPatchId,
        source: ClientError,
    },
    #[error("the inputs file is not a valid request: {0}")]
    Inputs(InferenceError),
    #[error("{0}")]
    Check(#[from] VerifyError),
}

/// What a passed verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub model: BlobId,
    pub public_key: String,
    pub comparison: Comparison,
    pub max_abs_diff: f64,
}

/// Verify proof blob `proof_id` against `inputs` (the request body that was sent).
pub async fn verify_proof(
    base: &str,
    n_shards: u16,
    proof_id: BlobId,
    inputs: &[u8],
    expected_signer: Option<&str>,
) -> Result<Verified, VerifyProofError> {
    verify_stored_proof(
        base,
        n_shards,
        ContentId::Blob(proof_id),
        inputs,
        expected_signer,
    )
    .await
}

/// Verify the proof stored at `proof` (a blob, or a quilt patch) against `inputs`.
pub async fn verify_stored_proof(
    base: &str,
    n_shards: u16,
    proof: ContentId,
    inputs: &[u8],
    expected_signer: Option<&str>,
) -> Result<Verified, VerifyProofError> {
    let proof_bytes = match proof {
        ContentId::Blob(id) => download(base, n_shards, id, "proof blob").await?,
        ContentId::Patch(id) => {
            let max = codec::EncodingConfig::new(n_shards)
                .map(|c| c.max_blob_size())
                .unwrap_or(u64::MAX);
            client::fetch_patch(base, &id, max)
                .await
                .map_err(|source| VerifyProofError::DownloadPatch { id, source })?
        }
    };
    let blob = ProofBlob::from_bytes(&proof_bytes)?;
    blob.proof.verify_signature()?;
    if let Some(key) = expected_signer {
        blob.proof.check_signer(key)?;
    }
    let model = blob.proof.record.model;
    let model_bytes = download(base, n_shards, model, "model").await?;
    let models = StaticModels::new();
    models.insert(model, model_bytes);
    let engine = Engine::new(
        EngineConfig {
            max_model_bytes: u64::MAX,
            ..EngineConfig::default()
        },
        Arc::new(models),
    );
    let request = engine
        .parse_request(inputs)
        .map_err(VerifyProofError::Inputs)?;
    let report = engine
        .verify_proof(&blob, model, request, Tolerance::default())
        .await?;
    Ok(Verified {
        model,
        public_key: blob.proof.record.public_key.clone(),
        comparison: report.comparison,
        max_abs_diff: report.max_abs_diff,
    })
}

/// A blob, checked against its ID by the client before it is returned.
async fn download(
    base: &str,
    n_shards: u16,
    id: BlobId,
    what: &'static str,
) -> Result<Bytes, VerifyProofError> {
    client::fetch_verified(base, id, n_shards)
        .await
        .map_err(|source| VerifyProofError::Download { what, id, source })
}
