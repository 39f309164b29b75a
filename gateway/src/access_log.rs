//! One line per request (`--access-log PATH|-`), in the combined format or JSON, written off the
//! request's path.
//!
//! Each transport opens an [`Exchange`] when a request head arrives and lets it go when the
//! response is done (its body ended, was aborted, or was never sent); dropping it records
//! `gateway_request_duration_seconds{route,tier}` and, with an access log, hands an [`Entry`]
//! (plain data: no formatting, no allocation beyond what the request already holds) to a
//! bounded queue. A writer thread formats and writes the lines, flushing whenever the queue is
//! empty. When the queue is full the line is dropped and counted
//! (`gateway_access_log_dropped_total`): a slow disk never slows a response.
//!
//! Fields: the time the request arrived, the client address, method, target, protocol, status,
//! body bytes handed to the transport, duration (head received to the end of the body), the
//! `X-Cache` tier, for misses the time the request waited for its fill before the response
//! started (`fill`), whether the body was sent whole (`complete`), `Referer` and `User-Agent`.

use crate::telemetry::Telemetry;
use codec::BlobId;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines that may wait for the writer; beyond, lines are dropped and counted.
pub const QUEUE: usize = 16 * 1024;

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The NCSA combined format, then `key=value` fields for the rest.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "combined" => Ok(Format::Combined),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown access log format {other:?} (combined or json)"
            )),
        }
    }
}

/// Where the access log goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// A file (appended to, created if absent); `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: Format,
}

impl AccessLogConfig {
    /// `-` is standard output; anything else a file.
    pub fn new(destination: &str, format: Format) -> Self {
        Self {
            path: (destination != "-").then(|| PathBuf::from(destination)),
            format,
        }
    }
}

/// The API area a request was for: the `route` label of request durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/blobs/{id}` and what hangs below it (ranges, metadata).
    Blob,
    /// `PUT /v1/blobs`.
    Publish,
    /// `/v1/inference/...` and `/v1/models/...`.
    Inference,
    Admin,
    Status,
    Metrics,
    Other,
}

impl Route {
    /// Every route; [`Route::Blob`] first ([`Telemetry`] relies on it).
    pub const ALL: [Route; 7] = [
        Route::Blob,
        Route::Publish,
        Route::Inference,
        Route::Admin,
        Route::Status,
        Route::Metrics,
        Route::Other,
    ];

    pub fn of(path: &str) -> Route {
        if path == "/v1/blobs" {
            Route::Publish
        } else if path.starts_with("/v1/blobs/") {
            Route::Blob
        } else if path.starts_with("/v1/inference/") || path.starts_with("/v1/models/") {
            Route::Inference
        } else if path == "/admin" || path.starts_with("/admin/") {
            Route::Admin
        } else if path == "/status" {
            Route::Status
        } else if path == "/metrics" {
            Route::Metrics
        } else {
            Route::Other
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Blob => "blob",
            Route::Publish => "publish",
            Route::Inference => "inference",
            Route::Admin => "admin",
            Route::Status => "status",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

/// Where a response's bytes came from, as its `X-Cache` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Memory,
    Disk,
    /// A fill (storage nodes or upstreams).
    Miss,
    /// No blob bytes: errors, 304, other routes.
    None,
}

impl Served {
    pub const ALL: [Served; 4] = [Served::Memory, Served::Disk, Served::Miss, Served::None];

    /// From a response's headers.
    pub fn of(headers: &HeaderMap) -> Served {
        match headers.get("x-cache").map(HeaderValue::as_bytes) {
            Some(b"hit-memory") => Served::Memory,
            Some(b"hit-disk") => Served::Disk,
            Some(b"miss") => Served::Miss,
            _ => Served::None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The `tier` label.
    pub fn label(self) -> &'static str {
        match self {
            Served::Memory => "memory",
            Served::Disk => "disk",
            Served::Miss => "miss",
            Served::None => "none",
        }
    }

    /// As the `X-Cache` header said it (`-` without one).
    fn header(self) -> &'static str {
        match self {
            Served::Memory => "hit-memory",
            Served::Disk => "hit-disk",
            Served::Miss => "miss",
            Served::None => "-",
        }
    }
}

/// What a request asked for.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/v1/blobs/{id}` from the lean HTTP/1.1 lane, which builds no URI.
    Blob(BlobId),
    Uri(Uri),
}

/// The request's protocol as its request line says it.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// One finished request, as the writer thread formats it.
#[derive(Debug)]
pub struct Entry {
    /// When the response ended.
    pub end: SystemTime,
    pub duration: Duration,
    pub client: Option<IpAddr>,
    pub method: Method,
    pub target: Target,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub served: Served,
    pub fill: Option<Duration>,
    pub complete: bool,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// The sending end of the access log; the writer thread ends once it is dropped (and the
/// queue drained).
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: metrics::Counter,
}

impl AccessLog {
    /// Open `config`'s destination and start the writer thread; lines dropped because the
    /// queue was full are counted in `dropped`.
    pub fn open(config: &AccessLogConfig, dropped: metrics::Counter) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match &config.path {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Box::new(io::stdout()),
        };
        Self::start(out, config.format, dropped, QUEUE)
    }

    /// Write to `out` from a thread of its own, through a queue of `capacity` lines.
    fn start(
        out: Box<dyn Write + Send>,
        format: Format,
        dropped: metrics::Counter,
        capacity: usize,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, format))?;
        Ok(Self { tx, dropped })
    }

    /// Queue `entry`, or drop and count it if the writer is behind.
    pub fn send(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1)
            }
        }
    }
}

/// How long the writer sleeps once it has drained the queue. It polls rather than blocking in
/// `recv`: a blocked receiver must be woken by the sender, which costs each request a futex wake
/// and, on a busy core, a context switch (measured: memory hits of 4 KiB at 0.79x of the
/// log-free rate over HTTP/1.1 with one wake per line). Lines reach the file at most this late.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer thread: format each entry, write in batches, flush when the queue is empty.
fn write_lines(rx: Receiver<Entry>, out: Box<dyn Write + Send>, format: Format) {
    let mut out = io::BufWriter::with_capacity(64 << 10, out);
    let mut line = String::with_capacity(512);
    let mut failed = false;
    loop {
        match rx.try_recv() {
            Ok(entry) => {
                line.clear();
                match format {
                    Format::Combined => combined(&entry, &mut line),
                    Format::Json => json(&entry, &mut line),
                }
                line.push('\n');
                if let Err(e) = out.write_all(line.as_bytes()) {
                    report(&mut failed, &e);
                }
            }
            Err(mpsc::TryRecvError::Empty) => {
                if let Err(e) = out.flush() {
                    report(&mut failed, &e);
                }
                std::thread::sleep(DRAIN_INTERVAL);
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    let _ = out.flush();
}

/// Say once that the access log cannot be written (a full disk would otherwise repeat it per
/// request).
fn report(failed: &mut bool, e: &io::Error) {
    if !std::mem::replace(failed, true) {
        tracing::error!(error = %e, "cannot write the access log; further errors are not reported");
    }
}

/// When the request arrived.
fn arrived(entry: &Entry) -> SystemTime {
    entry.end.checked_sub(entry.duration).unwrap_or(entry.end)
}

fn path_of(target: &Target, out: &mut String) {
    match target {
        Target::Blob(id) => {
            let _ = write!(out, "/v1/blobs/{id}");
        }
        Target::Uri(uri) => match uri.path_and_query() {
            Some(pq) => out.push_str(pq.as_str()),
            None => out.push('/'),
        },
    }
}

/// `client - - [time] "METHOD target PROTO" status bytes "referer" "agent"` then
/// `cache=… duration=… fill=… complete=…`.
fn combined(entry: &Entry, out: &mut String) {
    match entry.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
    out.push_str(" - - [");
    clf_time(arrived(entry), out);
    out.push_str("] \"");
    out.push_str(entry.method.as_str());
    out.push(' ');
    let start = out.len();
    path_of(&entry.target, out);
    escape_quoted(out, start);
    let _ = write!(
        out,
        " {}\" {} {} ",
        protocol(entry.version),
        entry.status,
        entry.bytes
    );
    quoted_header(out, entry.referer.as_ref());
    out.push(' ');
    quoted_header(out, entry.user_agent.as_ref());
    let _ = write!(
        out,
        " cache={} duration={:.6}",
        entry.served.header(),
        entry.duration.as_secs_f64()
    );
    match entry.fill {
        Some(fill) => {
            let _ = write!(out, " fill={:.6}", fill.as_secs_f64());
        }
        None => out.push_str(" fill=-"),
    }
    let _ = write!(out, " complete={}", entry.complete);
}

/// A header value in double quotes (`"-"` when absent), with quotes, backslashes and bytes
/// outside printable ASCII escaped as `\xHH`, so a client cannot forge a line.
fn quoted_header(out: &mut String, value: Option<&HeaderValue>) {
    out.push('"');
    match value {
        Some(value) => {
            for &b in value.as_bytes() {
                push_escaped(out, b);
            }
        }
        None => out.push('-'),
    }
    out.push('"');
}

/// Escape `out[start..]` in place (request targets are ASCII already; quotes and backslashes
/// are not).
fn escape_quoted(out: &mut String, start: usize) {
    if !out[start..]
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return;
    }
    let raw = out.split_off(start);
    for b in raw.bytes() {
        push_escaped(out, b);
    }
}

fn push_escaped(out: &mut String, b: u8) {
    match b {
        b'"' | b'\\' => {
            out.push('\\');
            out.push(b as char);
        }
        0x20..=0x7e => out.push(b as char),
        _ => {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn json(entry: &Entry, out: &mut String) {
    let mut target = String::new();
    path_of(&entry.target, &mut target);
    let header = |value: &Option<HeaderValue>| {
        value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let since_epoch = arrived(entry)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut time = String::new();
    rfc3339(since_epoch, &mut time);
    let value = serde_json::json!({
        "time": time,
        "client": entry.client.map(|ip| ip.to_string()),
        "method": entry.method.as_str(),
        "path": target,
        "protocol": protocol(entry.version),
        "status": entry.status,
        "bytes": entry.bytes,
        "duration_seconds": entry.duration.as_secs_f64(),
        "cache": match entry.served {
            Served::None => None,
            other => Some(other.header()),
        },
        "fill_seconds": entry.fill.map(|d| d.as_secs_f64()),
        "complete": entry.complete,
        "referer": header(&entry.referer),
        "user_agent": header(&entry.user_agent),
    });
    let _ = write!(out, "{value}");
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `06/Dec/2026:06:13:03 +0000` (always UTC).
fn clf_time(at: SystemTime, out: &mut String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (year, month, day) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// `2026-12-06T06:13:03.123456Z`.
fn rfc3339(since_epoch: Duration, out: &mut String) {
    let secs = since_epoch.as_secs() as i64;
    let (year, month, day) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_micros()
    );
}

/// A request being answered: dropped when its response is done, it records the request's
/// duration and, with an access log, queues its line.
pub struct Exchange {
    telemetry: Arc<Telemetry>,
    started: Instant,
    route: Route,
    /// Filled only when there is an access log (inline: no allocation per request).
    logged: Option<Logged>,
    status: u16,
    served: Served,
    bytes: u64,
    fill: Option<Duration>,
    complete: bool,
}

/// The request's fields only the access log needs.
struct Logged {
    client: Option<IpAddr>,
    method: Method,
    target: Target,
    version: Version,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

impl Exchange {
    /// A request whose head arrived now (`started`).
    pub fn start(
        telemetry: &Arc<Telemetry>,
        started: Instant,
        client: Option<IpAddr>,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
    ) -> Self {
        let mut exchange = Self::bare(telemetry, started, Route::of(uri.path()));
        if telemetry.access_log().is_some() {
            exchange.logged = Some(Logged {
                client,
                method: method.clone(),
                target: Target::Uri(uri.clone()),
                version,
                referer: headers.get(header::REFERER).cloned(),
                user_agent: headers.get(header::USER_AGENT).cloned(),
            });
        }
        exchange
    }

    /// A whole-blob `GET` of the lean HTTP/1.1 lane, which has no header map; `user_agent`
    /// and `referer` are read from the raw head only when there is an access log.
    pub fn blob_get(
        telemetry: &Arc<Telemetry>,
        started: Instant,
        client: Option<IpAddr>,
        id: BlobId,
        head: impl FnOnce() -> (Option<HeaderValue>, Option<HeaderValue>),
    ) -> Self {
        let mut exchange = Self::bare(telemetry, started, Route::Blob);
        if telemetry.access_log().is_some() {
            let (referer, user_agent) = head();
            exchange.logged = Some(Logged {
                client,
                method: Method::GET,
                target: Target::Blob(id),
                version: Version::HTTP_11,
                referer,
                user_agent,
            });
        }
        exchange
    }

    fn bare(telemetry: &Arc<Telemetry>, started: Instant, route: Route) -> Self {
        Self {
            telemetry: telemetry.clone(),
            started,
            route,
            logged: None,
            status: 0,
            served: Served::None,
            bytes: 0,
            fill: None,
            complete: false,
        }
    }

    /// The response head is ready: its status and `X-Cache` tier; for a miss, the time since
    /// the request arrived is the wait for its fill.
    pub fn respond(&mut self, status: u16, headers: &HeaderMap) {
        self.status = status;
        self.served = Served::of(headers);
        if self.served == Served::Miss {
            self.fill = Some(self.started.elapsed());
        }
    }

    /// A memory hit's head: 200 from the memory tier.
    pub fn memory_hit(&mut self) {
        self.status = 200;
        self.served = Served::Memory;
    }

    /// `n` more body bytes were handed to the transport.
    pub fn sent(&mut self, n: u64) {
        self.bytes += n;
    }

    /// The response was sent whole (a body that ended, or none to send).
    pub fn completed(&mut self) {
        self.complete = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        self.telemetry
            .request_done(self.route, self.served, duration);
        let (Some(log), Some(logged)) = (self.telemetry.access_log(), self.logged.take()) else {
            return;
        };
        let Logged {
            client,
            method,
            target,
            version,
            referer,
            user_agent,
        } = logged;
        log.send(Entry {
            end: SystemTime::now(),
            duration,
            client,
            method,
            target,
            version,
            status: self.status,
            bytes: self.bytes,
            served: self.served,
            fill: self.fill,
            complete: self.complete,
            referer,
            user_agent,
        });
    }
}

/// A response body that reports to its [`Exchange`]: bytes as frames go out, completion when
/// it ends; the exchange finishes when hyper drops the body.
pub struct ObservedBody<B: HttpBody> {
    inner: B,
    exchange: Exchange,
    /// The body's length when it is known: hyper stops polling once it has sent that many
    /// bytes, so reaching it is the end.
    length: Option<u64>,
}

impl<B: HttpBody<Data = bytes::Bytes> + Unpin> ObservedBody<B> {
    pub fn new(inner: B, exchange: Exchange) -> Self {
        let length = inner.size_hint().exact();
        Self {
            inner,
            exchange,
            length,
        }
    }
}

impl<B: HttpBody<Data = bytes::Bytes> + Unpin> HttpBody for ObservedBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, B::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.exchange.sent(data.len() as u64);
                    if this.length == Some(this.exchange.bytes) {
                        this.exchange.completed();
                    }
                }
            }
            Poll::Ready(None) => this.exchange.completed(),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // hyper never polls a body that says it is empty (HEAD, 304): it was sent whole.
        if self.inner.is_end_stream() {
            self.exchange.completed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            end: UNIX_EPOCH + Duration::from_secs(1_796_537_583),
            duration: Duration::from_millis(1500),
            client: Some("192.0.2.7".parse().unwrap()),
            method: Method::GET,
            target: Target::Uri("/v1/blobs/abc?x=1".parse().unwrap()),
            version: Version::HTTP_2,
            status: 200,
            bytes: 1234,
            served: Served::Miss,
            fill: Some(Duration::from_millis(250)),
            complete: true,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"quoted\"")),
        }
    }

    #[test]
    fn combined_lines_follow_the_ncsa_layout_and_escape_client_text() {
        let mut line = String::new();
        combined(&entry(), &mut line);
        assert_eq!(
            line,
            "192.0.2.7 - - [06/Dec/2026:06:13:01 +0000] \"GET /v1/blobs/abc?x=1 HTTP/2.0\" \
             200 1234 \"-\" \"curl/8 \\\"quoted\\\"\" cache=miss duration=1.500000 \
             fill=0.250000 complete=true"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut line = String::new();
        json(&entry(), &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-12-06T06:13:01.500000Z");
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["cache"], "miss");
        assert_eq!(v["protocol"], "HTTP/2.0");
        assert_eq!(v["fill_seconds"], 0.25);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8 \"quoted\"");
    }

    /// A destination that takes nothing until `open` says so, then collects what it is given.
    struct Gate {
        open: std::sync::mpsc::Receiver<()>,
        opened: bool,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.opened {
                let _ = self.open.recv();
                self.opened = true;
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_falls_behind_drops_and_counts_lines_instead_of_blocking() {
        let telemetry = Telemetry::new();
        let (open, gate) = std::sync::mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = Gate {
            open: gate,
            opened: false,
            written: written.clone(),
        };
        let log = AccessLog::start(
            Box::new(out),
            Format::Json,
            telemetry.access_log_dropped(),
            2,
        )
        .unwrap();
        let sent = 10;
        for _ in 0..sent {
            log.send(entry()); // Never blocks: the writer is stuck in its first write.
        }
        let text = telemetry.render();
        let dropped: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("gateway_access_log_dropped_total ")?
                    .parse()
                    .ok()
            })
            .unwrap();
        // The queue holds 2, the writer at most 1 more.
        assert!(
            (sent - 3..=sent - 2).contains(&dropped),
            "{dropped} dropped"
        );
        open.send(()).unwrap();
        drop(log); // The writer drains the queue, then ends.
        for _ in 0..500 {
            let lines = written
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            if lines == sent - dropped {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the queued lines were not written");
    }

    #[test]
    fn dates_match_the_calendar() {
        let mut text = String::new();
        clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut text);
        assert_eq!(text, "29/Feb/2000:00:00:00 +0000");
        text.clear();
        rfc3339(Duration::from_secs(0), &mut text);
        assert_eq!(text, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn routes_and_tiers() {
        assert_eq!(Route::of("/v1/blobs"), Route::Publish);
        assert_eq!(Route::of("/v1/blobs/x/byte-range"), Route::Blob);
        assert_eq!(Route::of("/v1/models/x/warm"), Route::Inference);
        assert_eq!(Route::of("/admin/pins/x"), Route::Admin);
        assert_eq!(Route::of("/nope"), Route::Other);
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), i);
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-cache", HeaderValue::from_static("hit-disk"));
        assert_eq!(Served::of(&headers), Served::Disk);
        assert_eq!(Served::of(&HeaderMap::new()), Served::None);
    }
}
