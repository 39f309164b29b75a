//! Inference deadlines through the gateway (issue 19): with `--inference-timeout-ms 2000` and one
//! run slot, a run that would take about ten seconds gets its 504 at about the deadline and stops
//! at its next operator boundary, so a small request sent right after is served, not refused with
//! 429; the same long request sent again is refused up front (413, naming the deadline); and the
//! 429s say what was exhausted (the queue, or the slots for the whole queue wait).
//!
//! The model is a chain of MatMuls written in the test (`inference/tests/models/matmul_chain.rs`)
//! whose run time scales with the rows sent: 6144 rows are 6144 · 512² · 160 ≈ 2.6e11
//! multiply-adds (about ten seconds on one core here), in 160 operators of tens of ms each.

mod harness;

#[path = "../../inference/tests/models/matmul_chain.rs"]
mod matmul_chain;

use codec::BlobId;
use harness::{config, Scenario};
use http::{Method, StatusCode};
use inference::{InferenceRequest, TensorData, TensorEncoding, TensorValues, Tensors};
use std::time::{Duration, Instant};
use storage_sim::SimConfig;

const ADMIN: &str = "test-admin-token";
const WIDTH: usize = 512;
const DEPTH: usize = 160;
const LONG: usize = 6144;

/// A request body of `n` rows, as base64 (a 12 MiB tensor parses in milliseconds).
fn rows(n: usize) -> Vec<u8> {
    let x = TensorData::new(vec![n, WIDTH], TensorValues::F32(vec![0.5; n * WIDTH])).unwrap();
    InferenceRequest::named(Tensors::from([("x".to_owned(), x)])).to_json(TensorEncoding::Base64)
}

async fn start(gateway: gateway::GatewayConfig) -> (Scenario, BlobId) {
    let s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        gateway::GatewayConfig {
            admin_token: Some(ADMIN.into()),
            inference_concurrency: Some(1),
            ..gateway
        },
    )
    .await;
    let model = s.store(&matmul_chain::matmul_chain(WIDTH, DEPTH)).await;
    (s, model)
}

async fn infer(s: &Scenario, model: &BlobId, body: Vec<u8>) -> harness::Reply {
    s.send_body(
        Method::POST,
        &format!("/v1/inference/{model}"),
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// Build the plan for `n` rows ahead (and run it once on zeros).
async fn warm(s: &Scenario, model: &BlobId, n: usize) -> StatusCode {
    let auth = format!("Bearer {ADMIN}");
    s.send_body(
        Method::POST,
        &format!("/v1/models/{model}/warm"),
        &[("authorization", auth.as_str())],
        rows(n),
    )
    .await
    .status
}

/// Wait (bounded) until no inference holds a run slot.
async fn until_idle(s: &Scenario, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if s.api().inference_stats().running == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn message_of(reply: &harness::Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const CANCELLED: &str = "walrus_inference_runs_cancelled_total{reason=\"deadline\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_stops_and_the_next_request_is_served() {
    let deadline = Duration::from_millis(2000);
    let (s, model) = start(gateway::GatewayConfig {
        inference_timeout: deadline,
        ..config()
    })
    .await;
    // The cancellation series exists before the first cancellation (rate alerts see it).
    assert_eq!(s.metric(CANCELLED).await, Some(0.0));
    assert_eq!(warm(&s, &model, 1).await, StatusCode::OK);

    let started = Instant::now();
    let long = infer(&s, &model, rows(LONG)).await;
    let answered = started.elapsed();
    assert_eq!(long.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", long.body);
    assert_eq!(
        long.json()["error"]["details"][0]["reason"],
        "INFERENCE_TIMEOUT"
    );
    // The deadline counts from the run slot; the answer time also holds the body's parse and
    // the plan build for this new signature (a fraction of a second), hence the margin.
    assert!(answered >= deadline, "504 after {answered:?}");
    assert!(
        answered < deadline + Duration::from_secs(4),
        "504 after {answered:?}"
    );

    // Right after: a one-row request waits at most for the stopped run's current operator,
    // then is served (without the boundary check the run keeps the only slot for about eight
    // more seconds and this gets 429 after the 5 s queue wait).
    let small = infer(&s, &model, rows(1)).await;
    assert_eq!(small.status, StatusCode::OK, "{:?}", small.body);
    assert_eq!(
        small.json()["outputs"]["y"]["shape"],
        serde_json::json!([1, WIDTH])
    );

    // The long run was stopped, not left to finish in the background.
    assert_eq!(s.metric(CANCELLED).await, Some(1.0));
    assert!(until_idle(&s, Duration::from_secs(5)).await);
    assert_eq!(
        s.metric("walrus_inference_failures_total{kind=\"timeout\"}")
            .await,
        Some(1.0)
    );

    // How far it got measured the rate: sent again, the same request is obviously beyond the
    // deadline and refused before it runs, naming the limit.
    let again = infer(&s, &model, rows(LONG)).await;
    assert_eq!(
        again.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        again.body
    );
    let message = message_of(&again);
    assert!(
        message.contains("2000 ms inference deadline (--inference-timeout-ms)"),
        "{message}"
    );
    assert_eq!(s.metric(CANCELLED).await, Some(1.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_refusals_say_what_is_exhausted() {
    let (s, model) = start(gateway::GatewayConfig {
        inference_timeout: Duration::from_secs(4),
        inference_queue: Some(1),
        inference_queue_wait: Duration::from_millis(1500),
        ..config()
    })
    .await;
    assert_eq!(warm(&s, &model, 1).await, StatusCode::OK);
    // Hold the only slot with a long run.
    let addr = s.addr;
    let long = tokio::spawn(async move {
        harness::send_body(
            addr,
            Method::POST,
            &format!("/v1/inference/{model}"),
            &[],
            rows(LONG),
        )
        .await
        .status
    });
    let until = Instant::now() + Duration::from_secs(60);
    while s.api().inference_stats().running == 0 {
        assert!(Instant::now() < until, "the long run never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One request waits in the queue of one...
    let waiting = tokio::spawn(async move {
        harness::send_body(
            addr,
            Method::POST,
            &format!("/v1/inference/{model}"),
            &[],
            rows(1),
        )
        .await
    });
    while s.api().inference_stats().queued == 0 {
        assert!(Instant::now() < until, "the request never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... so the next is refused at once: the queue is what is exhausted.
    let refused = infer(&s, &model, rows(1)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.reason(), "TOO_MANY_REQUESTS");
    let message = message_of(&refused);
    assert!(message.contains("wait queue is full"), "{message}");
    assert!(message.contains("--inference-queue"), "{message}");
    // The waiting one gives up after the queue wait: the slots are what is exhausted.
    let waited = waiting.await.unwrap();
    assert_eq!(waited.status, StatusCode::TOO_MANY_REQUESTS);
    let message = message_of(&waited);
    assert!(
        message.contains("all 1 run slots stayed busy for the longest queue wait of 1500 ms"),
        "{message}"
    );
    assert!(message.contains("--inference-queue-wait-ms"), "{message}");
    assert_eq!(long.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    s.stop().await;
}
