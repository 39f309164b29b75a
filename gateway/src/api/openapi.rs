//! `GET /v1/api`: an OpenAPI 3.0 description (JSON) of every route this gateway serves, where
//! the aggregator serves its own (a Redoc page of its `aggregator_openapi.yaml`). The route
//! table is written here by hand next to [`super::parity`], and a test walks it against the
//! router so a route cannot be added or removed without this description following.

use super::body::Body;
use bytes::Bytes;
use serde_json::{json, Value};

/// Every route: path, method, summary. The test `every_described_route_exists` requests each.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("/status", "get", "Liveness: plain `OK`; `X-Walrus-N-Shards` and, chain-backed, the epoch."),
    ("/metrics", "get", "Prometheus metrics (absent here when served on --metrics-listen)."),
    ("/v1/api", "get", "This description."),
    ("/v1/blobs/{blob_id}", "get", "The blob, verified; `Range` honoured (206)."),
    ("/v1/blobs/{blob_id}", "head", "The blob's headers, no body."),
    ("/v1/blobs/{blob_id}/byte-range", "get", "Bytes `start`..`start+length` of the blob (200)."),
    ("/v1/blobs/by-object-id/{blob_object_id}", "get", "The blob of this Sui Blob object (chain-backed gateways), with its attributes in --allowed-headers as headers; `Range` honoured."),
    ("/v1/blobs/by-object-id/{blob_object_id}", "head", "The headers of the by-object-id answer, no body."),
    ("/v1/blobs/{blob_id}/metadata", "get", "The blob's BCS `BlobMetadataWithId`, as storage nodes serve it."),
    ("/v1/blobs", "put", "Store a blob (publisher API): encoded here, sent to the nodes or forwarded to --publisher."),
    ("/v1alpha/blobs/concat", "get", "Blobs named by `ids=a,b,c`, concatenated in order."),
    ("/v1alpha/blobs/concat", "post", "Blobs named in the JSON body `{\"ids\": [...]}`, concatenated in order."),
    ("/v1/blobs/by-quilt-patch-id/{quilt_patch_id}", "get", "One quilt patch, by its quilt patch ID; `Range` honoured."),
    ("/v1/blobs/by-quilt-patch-id/{quilt_patch_id}", "head", "One quilt patch's headers, no body."),
    ("/v1/blobs/by-quilt-id/{quilt_id}/{identifier}", "get", "One quilt patch, by the quilt's Blob ID and the patch's identifier."),
    ("/v1/blobs/by-quilt-id/{quilt_id}/{identifier}", "head", "One quilt patch's headers, no body."),
    ("/v1/quilts/{quilt_id}/patches", "get", "The quilt's patches: identifier, quilt patch ID and tags of each."),
    ("/v1/quilts", "put", "Store files as one quilt (multipart, one part per patch named by its identifier; tags in `_metadata`)."),
    ("/v1/inference/{blob_id}", "post", "Run the ONNX model stored as this blob on the request body."),
    ("/v1/models/{blob_id}/warm", "post", "Load the model stored as this blob ahead of use."),
    ("/admin/prefetch", "post", "Admin: start fills for `{\"blob_ids\": [...]}`."),
    ("/admin/pins/{blob_id}", "put", "Admin: pin on the disk tier."),
    ("/admin/pins/{blob_id}", "delete", "Admin: unpin."),
    ("/admin/cache/{blob_id}", "delete", "Admin: purge from memory and disk."),
    ("/admin/cache", "get", "Admin: cache sizes and the most used disk entries."),
    ("/admin/blocklist", "get", "Admin: the blocked Blob IDs."),
    ("/admin/blocklist/{blob_id}", "put", "Admin: block (persisted to --blocklist; purged at once)."),
    ("/admin/blocklist/{blob_id}", "delete", "Admin: unblock."),
];

fn parameters(path: &str, method: &str) -> Value {
    let mut params = Vec::new();
    for (name, description) in [
        (
            "blob_id",
            "Blob ID: 43 characters of base64url, no padding.",
        ),
        (
            "quilt_id",
            "The quilt's Blob ID: 43 characters of base64url, no padding.",
        ),
        ("identifier", "The patch's identifier, percent-encoded."),
        (
            "quilt_patch_id",
            "Quilt patch ID: BCS `QuiltPatchId` (37 bytes) in base64url, no padding.",
        ),
        (
            "blob_object_id",
            "Sui object ID of a Blob or SharedBlob: 0x and up to 64 hex digits.",
        ),
    ] {
        if path.contains(&format!("{{{name}}}")) {
            params.push(json!({
                "name": name, "in": "path", "required": true,
                "description": description,
                "schema": {"type": "string"}
            }));
        }
    }
    let read = path == "/v1/blobs/{blob_id}"
        || path == "/v1/blobs/by-object-id/{blob_object_id}"
        || (path == "/v1alpha/blobs/concat" && method == "get");
    if read {
        for (name, what) in [
            (
                "strict_consistency_check",
                "Strict consistency check (cannot be combined with skip).",
            ),
            (
                "skip_consistency_check",
                "Skip the consistency check (cannot be combined with strict).",
            ),
        ] {
            params.push(json!({
                "name": name, "in": "query", "required": false, "description": what,
                "schema": {"type": "boolean", "default": false}
            }));
        }
    }
    if path == "/v1alpha/blobs/concat" && method == "get" {
        params.push(json!({
            "name": "ids", "in": "query", "required": true,
            "description": "Comma-separated Blob IDs.", "schema": {"type": "string"}
        }));
    }
    if path.ends_with("/byte-range") {
        for name in ["start", "length"] {
            params.push(json!({
                "name": name, "in": "query", "required": true,
                "schema": {"type": "integer", "format": "int64", "minimum": 0}
            }));
        }
    }
    Value::Array(params)
}

/// The description as a JSON value.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, method, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": summary,
            "parameters": parameters(path, method),
            "responses": {
                "200": {"description": "Success."},
                "default": {
                    "description": "A Walrus error envelope `{\"error\": {code, status, message, details}}`.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
                }
            }
        });
        if path.starts_with("/admin/") {
            op["security"] = json!([{"bearer": []}]);
        }
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "walrus-gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A verifying cache in front of Walrus, with the aggregator's read API."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Status": {"type": "object", "properties": {"error": {"type": "object"}}}}
        }
    })
}

/// The `/v1/api` answer.
pub(super) fn response(head: bool) -> http::Response<Body> {
    let text = Bytes::from(document().to_string());
    let mut response = super::text(text, "application/json");
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}
