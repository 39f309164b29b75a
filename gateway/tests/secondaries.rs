//! Reading from secondary slivers: a hand-made storage node that serves metadata and secondary
//! slivers but fails every primary request, so the fill must hedge all the way to secondaries
//! and decode column-wise (storage-sim's faults always hit both slivers of a pair).

use bytes::Bytes;
use codec::EncodingConfig;
use gateway::{Gateway, GatewayConfig};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use storage_sim::{Committee, CommitteeNode};

/// Serve `blob`'s metadata and secondary slivers; answer 500 to primary sliver requests.
async fn secondary_only_node(config: EncodingConfig, blob: &[u8]) -> SocketAddr {
    let encoded = Arc::new(codec::encode(&config, blob).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let encoded = encoded.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let encoded = encoded.clone();
                async move {
                    let id = encoded.metadata.blob_id();
                    let path = request.uri().path().to_owned();
                    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                    let (status, body) = match parts.as_slice() {
                        ["v1", "blobs", _, "metadata"] => (
                            StatusCode::OK,
                            codec::bcs::encode_metadata_with_id(&id, encoded.metadata.metadata()),
                        ),
                        ["v1", "blobs", _, "slivers", pair, "secondary"] => {
                            let pair: u16 = pair.parse().unwrap();
                            let (_, secondary) = encoded.pair(pair).unwrap();
                            (StatusCode::OK, codec::bcs::encode_sliver(secondary))
                        }
                        // Certified and permanent, as a real node would say (the gateway
                        // serves only blobs whose status verifies).
                        ["v1", "blobs", _, "status"] => (
                            StatusCode::OK,
                            br#"{"success":{"code":200,"data":{"permanent":{"endEpoch":60,"isCertified":true,"initialCertifiedEpoch":1}}}}"#.to_vec(),
                        ),
                        _ => (StatusCode::INTERNAL_SERVER_ERROR, b"{}".to_vec()),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn read_through_secondaries(consistency: codec::ConsistencyCheck) {
    let config = EncodingConfig::new(10).unwrap();
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let id = codec::blob_id(10, &data).unwrap();
    let node = secondary_only_node(config, &data).await;
    let committee = Committee {
        n_shards: 10,
        nodes: vec![CommitteeNode {
            name: "secondary-only".into(),
            url: format!("http://{node}"),
            shards: (0..10).collect(),
            network_public_key: None,
        }],
    };
    let gateway = Gateway::bind(
        GatewayConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            consistency,
            ..GatewayConfig::default()
        },
        committee,
    )
    .await
    .unwrap()
    .spawn();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let url = format!("http://{}/v1/blobs/{id}", gateway.addr());
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), &data[..]);
    let metrics = gateway.api().filler().telemetry().render();
    let secondary_requests = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("gateway_sliver_requests_total{kind=\"secondary\"} ")?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    let ks = f64::from(config.n_secondary_source_symbols());
    assert!(secondary_requests >= ks, "{metrics}");
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_decodes_from_secondary_slivers_alone() {
    read_through_secondaries(codec::ConsistencyCheck::Default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_decodes_from_secondary_slivers_under_strict() {
    read_through_secondaries(codec::ConsistencyCheck::Strict).await;
}
