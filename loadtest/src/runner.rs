//! Running a load: population, optional pre-warming, then the measured phase (closed loop,
//! open loop, or stampede rounds), with every response checked, faults flipped on schedule,
//! a progress line, and `/metrics` scraped before and after.
//!
//! Bounds: the run admits no request after its deadline or beyond its request count; requests
//! in flight at the deadline get at most `--timeout` to finish. Bodies are streamed and only
//! kept when they are checked (at most four held, two being hashed at a time), so a run of
//! 64 MiB reads does not hold 64 MiB per client.

use crate::client::{self, ClientError, ClientOptions, Protocol, Target, Transport};
use crate::config::{Inference, Load, PopulationSpec, RunConfig, Scenario};
use crate::faults::{self, FaultError, NodeFaults};
use crate::population::{self, Blob, PopulationError};
use crate::report::{Outcome, Recorder, Report, RunContext};
use crate::scrape::{self, Scrape};
use crate::workload::{Generator, MixError, Op, Rng};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Full bodies held for checking at once (each may be a whole blob): bounds memory.
const VERIFY_SLOTS: usize = 4;
/// Bodies hashed at once: bounds the checker's share of the load generator's CPU.
const HASHERS: usize = 2;
/// Largest inference reply kept to check it is JSON.
const MAX_INFERENCE_REPLY: u64 = 16 << 20;
/// Largest `/status` or `/metrics` body read.
const MAX_TEXT_BODY: u64 = 4 << 20;
/// Blobs pre-warmed (or probed) at once.
const SETUP_CONCURRENCY: usize = 8;
/// Shards assumed when neither `--n-shards` nor the target's `/status` says (Walrus mainnet).
pub const DEFAULT_N_SHARDS: u16 = 1000;

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Population(#[from] PopulationError),
    #[error(transparent)]
    Mix(#[from] MixError),
    #[error(transparent)]
    Faults(#[from] FaultError),
    #[error("{0}")]
    Config(String),
}

/// Run the load described by `config` and report what happened.
pub async fn run(mut config: RunConfig) -> Result<Report, RunError> {
    config.mix.validate(config.inference.is_some())?;
    if config.scenario == Scenario::Stampede && matches!(config.load, Load::Open { .. }) {
        return Err(RunError::Config(
            "the stampede scenario is closed-loop: use --concurrency, not --rate".into(),
        ));
    }
    if let Load::Closed { concurrency: 0 } = config.load {
        return Err(RunError::Config("--concurrency must be at least 1".into()));
    }
    let transport = client::connect(&config.client_options(), &config.target)?;
    // The admin endpoint faults are flipped through: one that can still answer when the
    // faulted node is offline (chosen below, before anything is broken).
    let mut admin = transport.clone();
    let mut admin_target = None;
    if let Some(plan) = &config.faults {
        let transports = plan
            .admins
            .iter()
            .map(|a| client::connect(&ClientOptions::new(Protocol::Http1), a))
            .collect::<Result<Vec<_>, _>>()?;
        let chosen =
            faults::choose_admin(&transports, &plan.admins, &plan.node, &plan.faults).await?;
        admin = transports[chosen].clone();
        admin_target = Some(plan.admins[chosen].clone());
    }
    if config.target.is_tls() {
        // A certificate the client does not trust fails every request the same way: say so
        // once, before the run, rather than report a run made only of errors.
        check_handshake(&transport, &config.target, config.timeout).await?;
    }
    let mut notes = Vec::new();

    let (n_shards, source) = match config.n_shards {
        Some(n) => (n, "--n-shards"),
        None => match discover_n_shards(&transport, &config.target, config.timeout).await {
            Some(n) => (n, "the target's /status"),
            None => (
                DEFAULT_N_SHARDS,
                "the default (the target's /status does not say)",
            ),
        },
    };
    notes.push(format!(
        "Blob IDs checked with n_shards = {n_shards}, from {source}"
    ));

    let blobs = match &config.population {
        PopulationSpec::Publish { count, sizes } => {
            if *count == 0 {
                return Err(RunError::Config("--publish needs at least one blob".into()));
            }
            population::publish(
                transport.clone(),
                &config.target,
                *count,
                sizes,
                config.seed,
                config.timeout,
            )
            .await?
        }
        PopulationSpec::List(path) => population::read_list(path)?,
        PopulationSpec::Model(Some(model)) => {
            let id = model.parse().map_err(|e| {
                RunError::Config(format!("--infer {model:?} is not a Blob ID: {e}"))
            })?;
            vec![Blob::new(id, None, None)]
        }
        PopulationSpec::Model(None) => {
            let id = population::publish_bytes(
                &transport,
                &config.target,
                crate::config::BUILTIN_MODEL,
                config.timeout,
            )
            .await?;
            notes.push(format!(
                "published the built-in model (a {}-byte MLP) as {id} and ran it",
                crate::config::BUILTIN_MODEL.len()
            ));
            if let Some(inference) = config.inference.as_mut() {
                if inference.model.is_empty() {
                    inference.model = id.to_string();
                }
            }
            vec![Blob::new(
                id,
                Some(crate::config::BUILTIN_MODEL.len() as u64),
                None,
            )]
        }
    };
    if config.purge_published {
        let token = config.admin_token.as_deref().ok_or_else(|| {
            RunError::Config("purging published blobs needs the target's admin token".into())
        })?;
        purge(&transport, &config.target, &blobs, token, config.timeout).await?;
        notes.push(format!(
            "purged the {} published blobs from the target's cache before measuring (publishing caches them)",
            blobs.len()
        ));
    }

    let shared = Arc::new(Shared {
        transport,
        target: config.target.clone(),
        generator: Generator::new(blobs.len(), config.zipf, config.mix, config.range_max),
        blobs,
        recorder: Mutex::new(Recorder::new()),
        verify_slots: Arc::new(Semaphore::new(VERIFY_SLOTS)),
        hashers: Arc::new(Semaphore::new(HASHERS)),
        n_shards,
        verify_fraction: config.verify_fraction,
        timeout: config.timeout,
        inference: config.inference.as_ref().map(|Inference { model, input }| {
            (
                format!("/v1/inference/{}", path_segment(model)),
                input.clone(),
            )
        }),
        scenario: config.scenario,
        next_cold: AtomicUsize::new(0),
        exhausted: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        max_requests: config.max_requests,
        clock: Mutex::new(None),
    });

    if config.mix.range > 0.0 && shared.blobs.iter().any(|b| b.size().is_none()) {
        shared.probe_sizes().await;
    }
    if config.prewarm {
        shared.prewarm().await;
    }
    // Server figures cover the measured phase (warm-up included), not the set-up before it.
    let before = scrape_metrics(&shared.transport, &config.target, config.timeout).await;

    // The measured phase.
    let start = Instant::now();
    let clock = Clock {
        start,
        warm_end: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    *shared.clock.lock().expect("clock lock") = Some(clock);
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + config.warmup.as_secs());
    let progress = config
        .progress
        .then(|| tokio::spawn(progress(shared.clone(), clock)));
    let fault_task = config
        .faults
        .clone()
        .zip(admin_target.clone())
        .map(|(plan, target)| {
            tokio::spawn(flip_faults(
                shared.clone(),
                admin.clone(),
                target,
                plan,
                clock,
            ))
        });

    match (config.scenario, config.load) {
        (Scenario::Stampede, Load::Closed { concurrency }) => {
            shared.stampede(concurrency, config.seed).await;
        }
        (_, Load::Closed { concurrency }) => {
            let mut workers = tokio::task::JoinSet::new();
            for i in 0..concurrency {
                let shared = shared.clone();
                let rng = Rng::new(config.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
                workers.spawn(async move { shared.closed_worker(rng).await });
            }
            while workers.join_next().await.is_some() {}
        }
        (
            _,
            Load::Open {
                rate,
                max_in_flight,
            },
        ) => {
            shared.open_loop(rate, max_in_flight, config.seed).await;
        }
    }
    // Checks still hashing belong to this run.
    let _all = shared
        .verify_slots
        .acquire_many(VERIFY_SLOTS as u32)
        .await
        .expect("never closed");
    let elapsed = Instant::now().saturating_duration_since(clock.warm_end);

    if let Some(task) = fault_task {
        task.abort();
        let _ = task.await;
        if let (Some(plan), Some(target)) = (&config.faults, &admin_target) {
            // Heal whatever the plan broke, even if it was cut short.
            if let Err(e) = faults::apply(&admin, target, &plan.node, &NodeFaults::default()).await
            {
                shared.recorder().error("fault_admin", &e.to_string());
            }
        }
    }
    if let Some(task) = progress {
        task.abort();
        let _ = task.await;
        eprintln!();
    }

    let after = scrape_metrics(&shared.transport, &config.target, config.timeout).await;
    if shared.exhausted.load(Ordering::Relaxed) {
        notes.push(format!(
            "every one of the {} blobs was read; the run ended there",
            shared.blobs.len()
        ));
    }
    let context = RunContext {
        target: config.target.url(),
        protocol: config.protocol.name().into(),
        scenario: config.scenario_name.clone(),
        load: config.load.describe(),
        blobs: shared.blobs.len(),
        // Sizes of listed blobs are learned as they are read.
        population_bytes: shared.blobs.iter().filter_map(Blob::size).sum(),
        zipf: config.zipf,
        n_shards,
        started_unix,
        notes,
    };
    let mut report = shared.recorder().report(context, elapsed);
    report.server_metrics = match (&before, &after) {
        (Some(before), Some(after)) => Some(scrape::delta(before, after)),
        _ => None,
    };
    if report.server_metrics.is_none() {
        let when = match (before.is_some(), after.is_some()) {
            (false, false) => "before and after the run",
            (false, true) => "before the run",
            _ => "after the run",
        };
        report.context.notes.push(format!(
            "GET /metrics did not answer 200 in {SCRAPE_ATTEMPTS} attempts {when}; server figures are left out"
        ));
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    warm_end: Instant,
    end: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measured,
}

struct Shared {
    transport: Arc<dyn Transport>,
    target: Target,
    blobs: Vec<Blob>,
    generator: Generator,
    recorder: Mutex<Recorder>,
    /// Permits to hold a full body for checking.
    verify_slots: Arc<Semaphore>,
    /// Permits to hash one.
    hashers: Arc<Semaphore>,
    n_shards: u16,
    verify_fraction: f64,
    timeout: Duration,
    /// Request path and body of inference requests.
    inference: Option<(String, Bytes)>,
    scenario: Scenario,
    /// The next never-read blob (cold and stampede scenarios).
    next_cold: AtomicUsize,
    /// The cold population ran out.
    exhausted: AtomicBool,
    /// Measured requests admitted.
    issued: AtomicU64,
    max_requests: Option<u64>,
    clock: Mutex<Option<Clock>>,
}

/// What one exchange produced, before it is judged.
struct Exchange {
    status: StatusCode,
    headers: HeaderMap,
    received: u64,
    body: Option<Bytes>,
}

type Failure = (String, String);

impl Shared {
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        // A panic while recording is a bug; the counts are still usable.
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clock(&self) -> Clock {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("the clock is set before any measured request")
    }

    /// Whether a request scheduled at `at` may be made, and whether it is measured.
    fn admit(&self, at: Instant) -> Option<Phase> {
        let clock = self.clock();
        if at >= clock.end || self.exhausted.load(Ordering::Relaxed) {
            return None;
        }
        if at < clock.warm_end {
            return Some(Phase::Warmup);
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.max_requests {
            Some(max) if n >= max => None,
            _ => Some(Phase::Measured),
        }
    }

    /// The next request, or `None` when a cold population is used up.
    fn next_op(&self, rng: &mut Rng) -> Option<Op> {
        match self.scenario {
            Scenario::Mixed => Some(
                self.generator
                    .next(rng, |b| self.blobs[b].size().unwrap_or(0)),
            ),
            Scenario::Cold | Scenario::Stampede => {
                self.next_cold_blob().map(|blob| Op::Get { blob })
            }
        }
    }

    fn next_cold_blob(&self) -> Option<usize> {
        let blob = self.next_cold.fetch_add(1, Ordering::Relaxed);
        if blob < self.blobs.len() {
            Some(blob)
        } else {
            self.exhausted.store(true, Ordering::Relaxed);
            None
        }
    }

    fn finish(&self, phase: Phase, outcome: &Outcome) {
        match phase {
            Phase::Warmup => self.recorder().warmup(outcome),
            Phase::Measured => self.recorder().record(outcome),
        }
    }

    async fn closed_worker(self: Arc<Self>, mut rng: Rng) {
        while let Some(phase) = self.admit(Instant::now()) {
            let Some(op) = self.next_op(&mut rng) else {
                break;
            };
            let permit = self.verify_permit(&op, &mut rng, true).await;
            let outcome = self.execute(op, Instant::now(), permit).await;
            self.finish(phase, &outcome);
        }
    }

    /// Requests on a fixed schedule; latency from the scheduled time.
    async fn open_loop(self: &Arc<Self>, rate: f64, max_in_flight: usize, seed: u64) {
        let clock = self.clock();
        let origin = clock.start;
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max_in_flight));
        let mut rng = Rng::new(seed);
        let mut i: u64 = 0;
        loop {
            let intended = origin + Duration::from_secs_f64(i as f64 / rate);
            i += 1;
            if Instant::now() >= clock.end && intended < clock.end {
                // The schedule slipped past the deadline (the target or this client could not
                // keep up): the requests never sent are errors, not silently dropped.
                let mut missed = ((clock.end - intended).as_secs_f64() * rate).ceil() as u64;
                if let Some(max) = self.max_requests {
                    missed = missed.min(max.saturating_sub(self.issued.load(Ordering::Relaxed)));
                }
                let measured = intended >= clock.warm_end;
                if measured {
                    self.recorder().error_n(
                        "not_sent",
                        missed,
                        "scheduled requests not sent before the deadline (too many in flight)",
                    );
                }
                break;
            }
            let Some(phase) = self.admit(intended) else {
                break;
            };
            tokio::time::sleep_until(intended.into()).await;
            let Some(op) = self.next_op(&mut rng) else {
                break;
            };
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let mut task_rng = Rng::new(rng.next_u64());
            let shared = self.clone();
            tokio::spawn(async move {
                let verify = shared.verify_permit(&op, &mut task_rng, false).await;
                let outcome = shared.execute(op, intended, verify).await;
                shared.finish(phase, &outcome);
                drop(permit);
            });
        }
        let _all = slots
            .acquire_many(max_in_flight as u32)
            .await
            .expect("never closed");
    }

    /// Rounds of `clients` simultaneous reads of one cold blob each.
    async fn stampede(self: &Arc<Self>, clients: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        loop {
            let now = Instant::now();
            let phases: Vec<Phase> = (0..clients).map_while(|_| self.admit(now)).collect();
            if phases.is_empty() {
                break;
            }
            let Some(blob) = self.next_cold_blob() else {
                break;
            };
            let barrier = Arc::new(tokio::sync::Barrier::new(phases.len()));
            let mut set = tokio::task::JoinSet::new();
            for phase in phases {
                let shared = self.clone();
                let barrier = barrier.clone();
                let mut task_rng = Rng::new(rng.next_u64());
                set.spawn(async move {
                    let op = Op::Get { blob };
                    let verify = shared.verify_permit(&op, &mut task_rng, true).await;
                    barrier.wait().await;
                    let outcome = shared.execute(op, Instant::now(), verify).await;
                    shared.finish(phase, &outcome);
                });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Read every blob once, checking each against its Blob ID; counted as warm-up.
    async fn prewarm(self: &Arc<Self>) {
        let slots = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for blob in 0..self.blobs.len() {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let shared = self.clone();
            set.spawn(async move {
                let op = Op::Get { blob };
                let verify = shared.verify_permit(&op, &mut Rng::new(0), true).await;
                let outcome = shared.execute(op, Instant::now(), verify).await;
                shared.recorder().warmup(&outcome);
                drop(permit);
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Learn unknown sizes with HEAD (needed before ranges can be asked for).
    async fn probe_sizes(self: &Arc<Self>) {
        let slots = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for blob in 0..self.blobs.len() {
            if self.blobs[blob].size().is_some() {
                continue;
            }
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let shared = self.clone();
            set.spawn(async move {
                let outcome = shared
                    .execute(Op::Head { blob }, Instant::now(), None)
                    .await;
                shared.recorder().warmup(&outcome);
                drop(permit);
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// A slot of the Blob ID checker if this full read is to be checked: each blob's first
    /// full read and a sampled share of the others. With `wait_first`, a first read waits for
    /// a slot (closed loops and stampedes: the client slows down, latency is measured from
    /// after the wait, and every blob is checked at least once); otherwise, and for sampled
    /// reads, a busy checker means the check is skipped and counted as such (a skipped first
    /// read is tried again on the blob's next read).
    async fn verify_permit(
        &self,
        op: &Op,
        rng: &mut Rng,
        wait_first: bool,
    ) -> Option<OwnedSemaphorePermit> {
        let Op::Get { blob } = *op else { return None };
        let blob = &self.blobs[blob];
        let first = blob.claim_first_check();
        if !first && rng.unit() >= self.verify_fraction {
            return None;
        }
        if first && wait_first {
            return self.verify_slots.clone().acquire_owned().await.ok();
        }
        match self.verify_slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                if first {
                    blob.unclaim_first_check();
                }
                self.recorder().verify_skipped();
                None
            }
        }
    }

    /// Make one request, read and check its response. `started` is when it was (meant to
    /// be) sent; latency counts from there to the last body byte.
    async fn execute(
        self: &Arc<Self>,
        op: Op,
        started: Instant,
        verify: Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        let keep = match op {
            Op::Get { .. } => verify.is_some(),
            Op::Range { blob, .. } => self.blobs[blob].content.is_some(),
            Op::Infer => true,
            Op::Head { .. } => false,
        };
        let limit = match op {
            Op::Get { blob } => self.blobs[blob].size().unwrap_or(u64::MAX),
            Op::Range { len, .. } => len,
            Op::Infer => MAX_INFERENCE_REPLY,
            Op::Head { .. } => 0,
        };
        let result = match self.request(op) {
            Ok(request) => {
                match tokio::time::timeout(self.timeout, self.exchange(request, keep, limit)).await
                {
                    Ok(result) => result,
                    Err(_) => Err((
                        "timeout".to_owned(),
                        format!("no complete response within {:?}", self.timeout),
                    )),
                }
            }
            Err(e) => Err(("client".to_owned(), e)),
        };
        let latency = started.elapsed();
        let finished_at = self
            .clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |c| {
                Instant::now().saturating_duration_since(c.warm_end)
            });
        let (received, cache, error) = match result {
            Ok(exchange) => {
                let cache = exchange
                    .headers
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let received = exchange.received;
                let error = self.judge(op, exchange, verify).err();
                (received, cache, error)
            }
            Err(error) => (0, None, Some(error)),
        };
        Outcome {
            kind: op.kind(),
            finished_at,
            latency,
            bytes: received,
            error,
            cache,
        }
    }

    fn request(&self, op: Op) -> Result<Request<Full<Bytes>>, String> {
        let builder = Request::builder();
        let (builder, body) = match op {
            Op::Get { blob } => (
                builder
                    .method(Method::GET)
                    .uri(self.target.uri(&self.blobs[blob].path)),
                Bytes::new(),
            ),
            Op::Head { blob } => (
                builder
                    .method(Method::HEAD)
                    .uri(self.target.uri(&self.blobs[blob].path)),
                Bytes::new(),
            ),
            Op::Range { blob, start, len } => (
                builder
                    .method(Method::GET)
                    .uri(self.target.uri(&self.blobs[blob].path))
                    .header(header::RANGE, format!("bytes={start}-{}", start + len - 1)),
                Bytes::new(),
            ),
            Op::Infer => {
                let (path, input) = self
                    .inference
                    .as_ref()
                    .ok_or("an inference request without --infer")?;
                (
                    builder
                        .method(Method::POST)
                        .uri(self.target.uri(path))
                        .header(header::CONTENT_TYPE, "application/json"),
                    input.clone(),
                )
            }
        };
        builder.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// Send, then stream the body, counting bytes and keeping at most `limit` of them if
    /// `keep` (one byte more is enough to tell that a body is too long).
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        keep: bool,
        limit: u64,
    ) -> Result<Exchange, Failure> {
        let classify = |e: ClientError| {
            let kind = match e {
                ClientError::Connect(_) => "connect",
                ClientError::Tls(_) => "tls",
                ClientError::Body(_) => "body_aborted",
                ClientError::Transport(_) | ClientError::Setup(_) => "transport",
            };
            (kind.to_owned(), e.to_string())
        };
        let response = self.transport.send(request).await.map_err(classify)?;
        let (parts, mut body) = response.into_parts();
        let mut received = 0u64;
        let mut kept: Vec<Bytes> = Vec::new();
        let mut kept_len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(classify)?;
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
                if keep && kept_len <= limit {
                    kept_len += data.len() as u64;
                    kept.push(data);
                }
            }
        }
        let body = keep.then(|| match kept.len() {
            1 => kept.pop().expect("one chunk"),
            _ => {
                let mut all = BytesMut::with_capacity(kept_len as usize);
                for chunk in kept {
                    all.extend_from_slice(&chunk);
                }
                all.freeze()
            }
        });
        Ok(Exchange {
            status: parts.status,
            headers: parts.headers,
            received,
            body,
        })
    }

    /// Check a response against what was asked.
    fn judge(
        self: &Arc<Self>,
        op: Op,
        exchange: Exchange,
        verify: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Failure> {
        let expect_status = match op {
            Op::Range { .. } => StatusCode::PARTIAL_CONTENT,
            _ => StatusCode::OK,
        };
        if exchange.status != expect_status {
            let kind = if op.kind() == crate::workload::OpKind::Range
                && exchange.status == StatusCode::OK
            {
                "range_ignored".to_owned()
            } else {
                format!("http_{}", exchange.status.as_u16())
            };
            return Err((kind, format!("{} for {op:?}", exchange.status)));
        }
        let wrong_length = |got: u64, want: u64| {
            (
                "wrong_length".to_owned(),
                format!("{got} bytes where {want} were expected for {op:?}"),
            )
        };
        match op {
            Op::Get { blob } => {
                let b = &self.blobs[blob];
                if let Some(known) = b.learn_size(exchange.received) {
                    if known != exchange.received {
                        return Err(wrong_length(exchange.received, known));
                    }
                }
                if let (Some(permit), Some(bytes)) = (verify, exchange.body) {
                    self.spawn_check(blob, bytes, permit);
                }
                Ok(())
            }
            Op::Head { blob } => {
                let length = exchange
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        (
                            "no_content_length".to_owned(),
                            format!("HEAD without a Content-Length for {op:?}"),
                        )
                    })?;
                match self.blobs[blob].learn_size(length) {
                    Some(known) if known != length => Err(wrong_length(length, known)),
                    _ => Ok(()),
                }
            }
            Op::Range { blob, start, len } => {
                let b = &self.blobs[blob];
                let total = b.size().map_or("*".to_owned(), |s| s.to_string());
                let want = format!("bytes {start}-{}/{total}", start + len - 1);
                let got = exchange
                    .headers
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if got != want {
                    return Err((
                        "wrong_content_range".to_owned(),
                        format!("Content-Range {got:?} where {want:?} was expected"),
                    ));
                }
                if exchange.received != len {
                    return Err(wrong_length(exchange.received, len));
                }
                if let (Some(expected), Some(body)) = (b.expected(start, len), exchange.body) {
                    if body.as_ref() != expected.as_slice() {
                        return Err((
                            "wrong_bytes".to_owned(),
                            format!(
                                "range {start}+{len} of {} differs from what was published",
                                b.id
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Op::Infer => {
                let body = exchange.body.unwrap_or_default();
                if exchange.received > MAX_INFERENCE_REPLY {
                    return Err((
                        "bad_inference_reply".to_owned(),
                        format!("reply larger than {MAX_INFERENCE_REPLY} bytes"),
                    ));
                }
                serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
                    (
                        "bad_inference_reply".to_owned(),
                        format!("reply is not JSON: {e}"),
                    )
                })?;
                Ok(())
            }
        }
    }

    /// Hash a full body against its Blob ID (and, for published blobs, compare it with the
    /// content) off the reactor; a mismatch is a `wrong_bytes` error.
    fn spawn_check(self: &Arc<Self>, blob: usize, bytes: Bytes, permit: OwnedSemaphorePermit) {
        let shared = self.clone();
        tokio::spawn(async move {
            let id = shared.blobs[blob].id;
            let content = shared.blobs[blob].content;
            let n_shards = shared.n_shards;
            let _hashing = shared.hashers.acquire().await.expect("never closed");
            let checked = tokio::task::spawn_blocking(move || {
                let computed = codec::blob_id(n_shards, &bytes).map_err(|e| e.to_string());
                let same_content = content
                    .map(|seed| population::content_range(seed, 0, bytes.len() as u64) == bytes);
                (computed, same_content)
            })
            .await;
            let mut recorder = shared.recorder();
            match checked {
                Ok((Ok(computed), same_content))
                    if computed == id && same_content != Some(false) =>
                {
                    recorder.verified(true)
                }
                Ok((computed, same_content)) => {
                    recorder.verified(false);
                    let why = match computed {
                        Ok(c) if c != id => format!(
                            "the body of {id} hashes to {c} (n_shards = {n_shards}; is --n-shards right?)"
                        ),
                        Ok(_) if same_content == Some(false) => {
                            format!("the body of {id} differs from what was published")
                        }
                        Ok(_) => unreachable!("handled above"),
                        Err(e) => format!("the body of {id} cannot be encoded: {e}"),
                    };
                    recorder.error("wrong_bytes", &why);
                }
                Err(e) => recorder.error("check_failed", &e.to_string()),
            }
            drop(recorder);
            drop(permit);
        });
    }
}

/// `DELETE /admin/cache/{id}` for every blob, so the reads that follow are misses.
async fn purge(
    transport: &Arc<dyn Transport>,
    target: &Target,
    blobs: &[Blob],
    token: &str,
    timeout: Duration,
) -> Result<(), RunError> {
    for blob in blobs {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(target.uri(&format!("/admin/cache/{}", blob.id)))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| RunError::Config(e.to_string()))?;
        let exchange = async {
            let response = transport.send(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                RunError::Config(format!("purging {} took over {timeout:?}", blob.id))
            })??;
        if !status.is_success() {
            return Err(RunError::Config(format!(
                "purging {} from the target's cache answered {status}: {}",
                blob.id,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
    }
    Ok(())
}

/// Break the planned node at `at`, heal it at `clear_at`, marking phases in the report.
async fn flip_faults(
    shared: Arc<Shared>,
    admin: Arc<dyn Transport>,
    target: Target,
    plan: faults::FaultPlan,
    clock: Clock,
) {
    tokio::time::sleep_until((clock.warm_end + plan.at).into()).await;
    match faults::apply(&admin, &target, &plan.node, &plan.faults).await {
        Ok(()) => {
            let at = clock.warm_end.elapsed();
            shared
                .recorder()
                .begin_phase(&format!("faults on node {}", plan.node), at);
        }
        Err(e) => {
            shared.recorder().error("fault_admin", &e.to_string());
            return;
        }
    }
    let Some(clear_at) = plan.clear_at else {
        return;
    };
    tokio::time::sleep_until((clock.warm_end + clear_at).into()).await;
    match faults::apply(&admin, &target, &plan.node, &NodeFaults::default()).await {
        Ok(()) => {
            let at = clock.warm_end.elapsed();
            shared.recorder().begin_phase("healed", at);
        }
        Err(e) => shared.recorder().error("fault_admin", &e.to_string()),
    }
}

/// One line on stderr per second: elapsed, rate, p50/p99 so far, errors.
async fn progress(shared: Arc<Shared>, clock: Clock) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let (requests, errors, p50, p99) = shared.recorder().progress();
        let now = Instant::now();
        let phase = if now < clock.warm_end {
            "warm-up"
        } else {
            "measuring"
        };
        let t = now.saturating_duration_since(clock.warm_end).as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{phase} {t:6.1}s] {requests} req  {}/s  p50 {}  p99 {}  errors {errors}",
            requests - last,
            crate::report::human_us(p50),
            crate::report::human_us(p99),
        );
        let _ = err.flush();
        last = requests;
    }
}

/// A model ID as one path segment (unreserved characters only, the rest percent-encoded).
fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET a small resource: its headers and (bounded) body; `None` unless it answers 200 in time.
async fn get_small(
    transport: &Arc<dyn Transport>,
    target: &Target,
    path: &str,
    timeout: Duration,
) -> Option<(http::HeaderMap, Bytes)> {
    let request = Request::builder()
        .uri(target.uri(path))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let exchange = async {
        let response = transport.send(request).await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_TEXT_BODY as usize)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some((parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// GET a small text resource; `None` unless it answers 200.
async fn get_text(
    transport: &Arc<dyn Transport>,
    target: &Target,
    path: &str,
    timeout: Duration,
) -> Option<String> {
    let (_, body) = get_small(transport, target, path, timeout).await?;
    String::from_utf8(body.to_vec()).ok()
}

/// Fail with the TLS error when `GET /status` cannot get through the handshake; any other
/// outcome (even no listener at all) is left for the run to count.
async fn check_handshake(
    transport: &Arc<dyn Transport>,
    target: &Target,
    timeout: Duration,
) -> Result<(), ClientError> {
    let request = Request::builder()
        .uri(target.uri("/status"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    match tokio::time::timeout(timeout, transport.send(request)).await {
        Ok(Err(e @ ClientError::Tls(_))) => Err(e),
        _ => Ok(()),
    }
}

/// The committee size from `GET /status`: the gateway's `x-walrus-n-shards` header, or a JSON
/// body that says (`n_shards`, `nShards`, at the top or under `committee`).
async fn discover_n_shards(
    transport: &Arc<dyn Transport>,
    target: &Target,
    timeout: Duration,
) -> Option<u16> {
    let (headers, body) = get_small(transport, target, "/status", timeout).await?;
    let header = headers
        .get("x-walrus-n-shards")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|&n| n > 0);
    header.or_else(|| n_shards_from_status(std::str::from_utf8(&body).ok()?))
}

/// The committee size in a `/status` body, if it is JSON that says (`n_shards` or `nShards`,
/// at the top or under `committee`); the aggregator's plain `OK` says nothing.
pub fn n_shards_from_status(text: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    [
        "/n_shards",
        "/nShards",
        "/committee/n_shards",
        "/committee/nShards",
    ]
    .iter()
    .find_map(|p| value.pointer(p)?.as_u64())
    .and_then(|n| u16::try_from(n).ok())
    .filter(|&n| n > 0)
}

/// Attempts at reading `/metrics` before the server figures are left out of the report: one
/// request can fail for reasons that say nothing about the run (an HTTP/3 connection the server
/// just closed, a busy machine), and a missing scrape loses every server figure.
const SCRAPE_ATTEMPTS: u32 = 3;

async fn scrape_metrics(
    transport: &Arc<dyn Transport>,
    target: &Target,
    timeout: Duration,
) -> Option<Scrape> {
    for attempt in 1..=SCRAPE_ATTEMPTS {
        if let Some(text) = get_text(transport, target, "/metrics", timeout).await {
            return Some(scrape::parse(&text));
        }
        if attempt < SCRAPE_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_may_name_the_committee_size() {
        assert_eq!(n_shards_from_status("OK"), None);
        assert_eq!(n_shards_from_status(r#"{"n_shards":10}"#), Some(10));
        assert_eq!(
            n_shards_from_status(r#"{"committee":{"nShards":1000}}"#),
            Some(1000)
        );
        assert_eq!(n_shards_from_status(r#"{"n_shards":0}"#), None);
        assert_eq!(n_shards_from_status(r#"{"n_shards":70000}"#), None);
    }

    #[test]
    fn model_ids_are_one_path_segment() {
        assert_eq!(path_segment("mnist-8"), "mnist-8");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
