//! `cargo bench --bench notify`: the delivery engine ([`Notifier`]) against
//! in-process gateways, printed as JSON.
//!
//! Every case builds one [`Notifier`] from a [`SinksConfig`] (outbox and
//! `deliveries.jsonl` in a fresh temp dir, so nothing is a duplicate) and
//! delivers its notices the way the daemon's dispatcher does: split into
//! `sinks.concurrency` (64) lanes, each lane delivering its notices one
//! after the other, the lanes joined (`join_all`) on one task, then one
//! `flush`. The gateway runs on the same tokio runtime as the notifier: a
//! multi-threaded runtime with 2 worker threads (the 2-core CI box). Timed
//! from the first `deliver` to the end of the `flush` and of the notices
//! the engine parked (a notice that finds no sending slot within
//! `sinks.retry.queue_after` waits in the park queue, which the engine's
//! retry loop sends, so the lanes never wait on a slow channel); building the
//! notices, the notifier and the gateway is not timed.
//!
//! Cases (each runs in its own child process, so its peak RSS — `VmHWM`,
//! reported as `peak_rss_mb`, in MiB — is its own; it includes the
//! in-process gateway):
//! - `sms-http-dispatch`: `SMS` notices (default 100 000) through one JSON
//!   provider (`POST /send`, answered `202 {"id":"n"}` by an axum handler
//!   that counts the requests), `rate_per_second` 1 000 000 and
//!   `max_in_flight` 64: the engine's own cost per SMS (contact check,
//!   route pick, limiter, semaphore, HTTP/1.1 keep-alive request, delivery
//!   record, outbox journal). Asserts that every notice was `Done`, that
//!   the gateway saw exactly one request per notice, and that each request
//!   carried the fields the gateway needs (`to`, `from`, `text`,
//!   `reference`; for Kannel `username`, `password`, `to`, `text`,
//!   `charset=UTF-8`);
//! - `sms-kannel-dispatch`: the same through a Kannel provider (`GET
//!   /cgi-bin/sendsms?username=…`, answered `202 0: Accepted for delivery`);
//! - `sms-rate-limit`: `RATE × RATE_SECONDS` notices (defaults 2 000 and 5)
//!   through a JSON provider held to `rate_per_second` = `RATE`. The gateway
//!   records when each request arrived; the achieved rate is notices / (last
//!   arrival − first arrival), `ratio` is achieved / limit, and
//!   `max_in_any_second` (`max_in_any_100ms`) is the most requests that
//!   arrived in any sliding 1 s (100 ms) window. The ratio is printed, not
//!   asserted (shared machines are noisy);
//! - `smtp-dispatch`: `EMAILS` notices (default 20 000) through SMTP
//!   (lettre, `pool_size` 8, `rate_per_second` 1 000 000) to a minimal
//!   in-process SMTP sink (tokio; `EHLO`, `MAIL`, `RCPT`, `DATA`, `NOOP`,
//!   `RSET`, `QUIT`). Asserts that every notice was `Done` and the sink
//!   counted one message per notice; reports how many SMTP connections the
//!   sink accepted (the pool's churn) and the mean time from the sink's
//!   `354` to the message's closing `.` (`sink_mean_data_phase_ms`).
//!
//! Run: `cargo bench --bench notify` (all cases) or
//! `cargo bench --bench notify -- --case sms-rate-limit`. Under `cargo test`
//! the same cases run small (smoke run: `SMS` 2 000, `RATE` 500 for 1
//! second, `EMAILS` 500) unless those variables are set.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use outage::model::{Action, ActionKind, Channel, IncidentId, Message};
use outage::sinks::deliveries::DeliveryLog;
use outage::sinks::email::{SmtpConfig, SmtpTls};
use outage::sinks::notify::Notifier;
use outage::sinks::sms::{SmsGatewayKind, SmsProviderConfig};
use outage::sinks::SinksConfig;
use outage::sinks::{ActionSink, Delivery};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{env_usize, peak_rss_mib};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

const CASES: [&str; 4] = ["sms-http-dispatch", "sms-kannel-dispatch", "sms-rate-limit", "smtp-dispatch"];

/// Worker threads of the runtime the notifier and the gateway share.
const WORKER_THREADS: usize = 2;

fn main() {
    support::main(&CASES, &[("SMS", "2000"), ("RATE", "500"), ("RATE_SECONDS", "1"), ("EMAILS", "500")], |case| {
        match case {
            "sms-http-dispatch" => Some(sms_dispatch(SmsGatewayKind::Json)),
            "sms-kannel-dispatch" => Some(sms_dispatch(SmsGatewayKind::Kannel)),
            "sms-rate-limit" => Some(sms_rate_limit()),
            "smtp-dispatch" => Some(smtp_dispatch()),
            _ => None,
        }
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(WORKER_THREADS).enable_all().build().expect("a runtime")
}

fn planned_at() -> DateTime<Utc> {
    "2026-11-23T06:00:00Z".parse().expect("a valid time")
}

/// `n` "down" notices on `channel`, one per customer, with valid contacts.
fn notices(n: usize, channel: Channel) -> Vec<Action> {
    let inc = IncidentId("INC-20261123-00000001".into());
    (0..n)
        .map(|i| {
            let customer = format!("C{i:07}");
            let (to, subject, text) = match channel {
                Channel::Sms => (
                    format!("+1555{i:07}"),
                    None,
                    "ExampleTel: service outage in your area (02901) since 06:00. Expected back by 10:00. \
                     Updates: https://status.example.net"
                        .to_string(),
                ),
                _ => (
                    format!("c{i}@example.com"),
                    Some("Service outage in 02901".to_string()),
                    "Dear customer,\n\nThere is a service outage in your area (02901) since 06:00. \
                     We expect it to be fixed by 10:00.\n\nUpdates: https://status.example.net\n\nExampleTel"
                        .to_string(),
                ),
            };
            Action {
                action_id: Action::key(&inc, &customer, channel, ActionKind::Down),
                incident_id: inc.clone(),
                customer_id: customer,
                channel,
                kind: ActionKind::Down,
                to: Some(to),
                language: "en".into(),
                message: Some(Message { subject, text }),
                until: None,
                credit: None,
                planned_at: planned_at(),
                not_before: None,
            }
        })
        .collect()
}

/// What the notifier's retry loops settled (parked notices), by outcome.
static SETTLED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn notifier(dir: &Path, sms: Vec<SmsProviderConfig>, email: Option<SmtpConfig>) -> Arc<Notifier> {
    let log = Arc::new(DeliveryLog::open(dir, None).expect("a delivery log"));
    let cfg = SinksConfig { outbox_dir: dir.to_path_buf(), sms, email, ..SinksConfig::default() };
    let n = Notifier::from_config(&cfg, &outage::tls::Trust::default(), log)
        .expect("a notifier")
        .expect("a gateway is configured");
    // The retry loops run until the notifier is dropped (the trigger is
    // kept alive with it: a dropped trigger is a shutdown).
    let (trigger, shutdown) = outage::runtime::Shutdown::new();
    let settled = move |_: &Action, d: Delivery| {
        let _keep = &trigger;
        *SETTLED.lock().unwrap_or_else(|p| p.into_inner()).entry(format!("{d:?}")).or_insert(0) += 1;
    };
    n.start(Utc::now, settled, shutdown);
    Arc::new(n)
}

/// What a dispatch run did: its time and each outcome's count.
struct Dispatched {
    seconds: f64,
    outcomes: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Dispatched {
    /// Panics unless every notice was `Done`.
    fn assert_all_done(&self, messages: usize) {
        let done = self.outcomes.get("Done").copied().unwrap_or(0);
        assert!(
            done == messages as u64,
            "{done} of {messages} notices delivered: {:?}; first error: {:?}",
            self.outcomes,
            self.first_error
        );
    }
}

/// Deliver `actions` as the dispatcher does: in `sinks.concurrency` lanes
/// (by customer), each lane in order, the lanes joined on one task, then
/// one flush. The task is spawned, so it runs on the runtime's workers.
async fn dispatch(n: Arc<Notifier>, actions: Vec<Action>) -> Dispatched {
    let lanes_n = SinksConfig::default().concurrency.max(1);
    let mut lanes: Vec<Vec<Action>> = (0..lanes_n).map(|_| Vec::new()).collect();
    for (i, a) in actions.into_iter().enumerate() {
        lanes[i % lanes_n].push(a);
    }
    let task = tokio::spawn(async move {
        let t = Instant::now();
        let work = lanes.iter().map(|lane| {
            let n = &n;
            async move {
                let mut out = Vec::with_capacity(lane.len());
                for a in lane {
                    out.push(n.deliver(a).await.map_err(|e| e.to_string()));
                }
                out
            }
        });
        let results = futures::future::join_all(work).await;
        n.flush().await.expect("flush the notifier");
        while n.parked(Channel::Sms) + n.parked(Channel::Email) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seconds = t.elapsed().as_secs_f64();
        let mut outcomes = std::mem::take(&mut *SETTLED.lock().unwrap_or_else(|p| p.into_inner()));
        let mut first_error = None;
        for r in results.into_iter().flatten() {
            let key = match r {
                Ok(Delivery::Skipped(why)) => format!("Skipped({why})"),
                // Settled by the retry loop, counted in SETTLED.
                Ok(Delivery::Parked) => continue,
                Ok(d) => format!("{d:?}"),
                Err(e) => {
                    first_error.get_or_insert(e);
                    "Err".to_string()
                }
            };
            *outcomes.entry(key).or_insert(0u64) += 1;
        }
        Dispatched { seconds, outcomes, first_error }
    });
    task.await.expect("the dispatch task")
}

// ---------------------------------------------------------------- SMS gateway

/// The in-process SMS gateway: counts requests (and, when asked, records
/// when each arrived), and counts requests that lack a field the provider
/// must send.
#[derive(Default)]
struct Gateway {
    requests: AtomicU64,
    malformed: AtomicU64,
    arrivals: Option<Mutex<Vec<Instant>>>,
}

impl Gateway {
    fn recording(expected: usize) -> Self {
        Gateway { arrivals: Some(Mutex::new(Vec::with_capacity(expected))), ..Gateway::default() }
    }

    /// Count one request; its 1-based number.
    fn hit(&self, well_formed: bool) -> u64 {
        if let Some(a) = &self.arrivals {
            a.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
        }
        if !well_formed {
            self.malformed.fetch_add(1, Relaxed);
        }
        self.requests.fetch_add(1, Relaxed) + 1
    }
}

/// The JSON gateway: `POST /send` with `{to, from, text, reference}`.
async fn json_send(
    State(g): State<Arc<Gateway>>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let ok = serde_json::from_slice::<Value>(&body)
        .is_ok_and(|v| ["to", "from", "text", "reference"].iter().all(|k| v.get(k).is_some_and(Value::is_string)));
    let n = g.hit(ok);
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], format!("{{\"id\":\"{n}\"}}"))
}

/// Kannel's smsbox: `GET /cgi-bin/sendsms?username=…&password=…&to=…&text=…`.
async fn kannel_send(State(g): State<Arc<Gateway>>, uri: Uri) -> (StatusCode, &'static str) {
    let q = uri.query().unwrap_or_default();
    let has = |k: &str| q.split('&').any(|p| p.strip_prefix(k).is_some_and(|v| v.starts_with('=') && v.len() > 1));
    let ok = ["username", "password", "to", "text"].iter().all(|k| has(k)) && q.contains("charset=UTF-8");
    g.hit(ok);
    (StatusCode::ACCEPTED, "0: Accepted for delivery")
}

/// Serve `g` on 127.0.0.1 (an ephemeral port) on the current runtime.
async fn serve_gateway(g: Arc<Gateway>) -> SocketAddr {
    let router =
        Router::new().route("/send", post(json_send)).route("/cgi-bin/sendsms", get(kannel_send)).with_state(g);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
    let addr = listener.local_addr().expect("the gateway's address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("the gateway serves") });
    addr
}

fn provider(kind: SmsGatewayKind, addr: SocketAddr, rate_per_second: u32) -> SmsProviderConfig {
    let (name, url) = match kind {
        SmsGatewayKind::Json => ("bench-json", format!("http://{addr}/send")),
        SmsGatewayKind::Kannel => ("bench-kannel", format!("http://{addr}/cgi-bin/sendsms")),
    };
    SmsProviderConfig {
        name: name.into(),
        kind,
        url,
        username: Some("outage".into()),
        password: Some("secret".into()),
        rate_per_second,
        max_in_flight: 64,
        ..SmsProviderConfig::default()
    }
}

fn sms_dispatch(kind: SmsGatewayKind) -> Value {
    let messages = env_usize("SMS", 100_000);
    let case = match kind {
        SmsGatewayKind::Json => "sms-http-dispatch",
        SmsGatewayKind::Kannel => "sms-kannel-dispatch",
    };
    let actions = notices(messages, Channel::Sms);
    let dir = tempfile::tempdir().expect("a temp dir");
    let rt = runtime();
    let (run, requests, malformed) = rt.block_on(async {
        let g = Arc::new(Gateway::default());
        let addr = serve_gateway(g.clone()).await;
        let n = notifier(dir.path(), vec![provider(kind, addr, 1_000_000)], None);
        let run = dispatch(n, actions).await;
        (run, g.requests.load(Relaxed), g.malformed.load(Relaxed))
    });
    drop(rt);
    run.assert_all_done(messages);
    // One request per notice, plus any retry of a request the gateway was
    // too slow to answer (a loaded machine): reported, not asserted.
    assert!(requests >= messages as u64, "a gateway request per notice");
    assert_eq!(malformed, 0, "every request carries the fields the gateway needs");
    json!({
        "case": case,
        "messages": messages,
        "seconds": run.seconds,
        "per_second": (messages as f64 / run.seconds).round(),
        "gateway_requests": requests,
        "lanes": SinksConfig::default().concurrency,
        "max_in_flight": 64,
        "worker_threads": WORKER_THREADS,
        "peak_rss_mb": peak_rss_mib(),
    })
}

/// The most of the (sorted) `times` in any window of `w` starting at one of them.
fn max_in_window(times: &[Instant], w: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for (i, t) in times.iter().enumerate() {
        while j < times.len() && times[j] < *t + w {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

fn sms_rate_limit() -> Value {
    let limit = env_usize("RATE", 2_000).max(1);
    let secs = env_usize("RATE_SECONDS", 5).max(1);
    let messages = limit * secs;
    let actions = notices(messages, Channel::Sms);
    let dir = tempfile::tempdir().expect("a temp dir");
    let rt = runtime();
    let (run, requests, mut arrivals) = rt.block_on(async {
        let g = Arc::new(Gateway::recording(messages));
        let addr = serve_gateway(g.clone()).await;
        let rate = u32::try_from(limit).expect("RATE fits in u32");
        let n = notifier(dir.path(), vec![provider(SmsGatewayKind::Json, addr, rate)], None);
        let run = dispatch(n, actions).await;
        let arrivals = g.arrivals.as_ref().map(|a| std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner())));
        (run, g.requests.load(Relaxed), arrivals.unwrap_or_default())
    });
    drop(rt);
    run.assert_all_done(messages);
    // One request per notice, plus any retry of a request the gateway was
    // too slow to answer (a loaded machine): reported, not asserted.
    assert!(requests >= messages as u64, "a gateway request per notice");
    arrivals.sort_unstable();
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    let achieved = if span > 0.0 { messages as f64 / span } else { f64::INFINITY };
    json!({
        "case": "sms-rate-limit",
        "messages": messages,
        "limit": limit,
        "seconds": run.seconds,
        "first_to_last_request_seconds": span,
        "achieved_per_second": (achieved * 10.0).round() / 10.0,
        "ratio": (achieved / limit as f64 * 1000.0).round() / 1000.0,
        "max_in_any_second": max_in_window(&arrivals, Duration::from_secs(1)),
        "max_in_any_100ms": max_in_window(&arrivals, Duration::from_millis(100)),
        "gateway_requests": requests,
        "worker_threads": WORKER_THREADS,
        "peak_rss_mb": peak_rss_mib(),
    })
}

// ------------------------------------------------------------------ SMTP sink

/// The in-process SMTP sink's counters.
#[derive(Default)]
struct SmtpSink {
    messages: AtomicU64,
    connections: AtomicU64,
    /// Microseconds from `354` to the message's closing `.`, summed.
    data_phase_us: AtomicU64,
}

/// One SMTP session: answer command by command, count each message whose
/// `DATA` ended with a lone `.`.
async fn smtp_session(stream: tokio::net::TcpStream, sink: Arc<SmtpSink>) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
    w.write_all(b"220 bench ESMTP\r\n").await?;
    w.flush().await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).map(<[u8]>::to_ascii_uppercase).unwrap_or_default();
        let answer: &[u8] = match verb.as_slice() {
            b"EHLO" => b"250-bench\r\n250-8BITMIME\r\n250 PIPELINING\r\n",
            b"HELO" => b"250 bench\r\n",
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 OK\r\n",
            b"DATA" => {
                w.write_all(b"354 go ahead\r\n").await?;
                w.flush().await?;
                let data_from = Instant::now();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                }
                sink.data_phase_us.fetch_add(data_from.elapsed().as_micros() as u64, Relaxed);
                sink.messages.fetch_add(1, Relaxed);
                b"250 OK queued\r\n"
            }
            b"QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return w.flush().await;
            }
            _ => b"500 unrecognised command\r\n",
        };
        w.write_all(answer).await?;
        w.flush().await?;
    }
}

/// Serve the SMTP sink on 127.0.0.1 (an ephemeral port) on the current runtime.
async fn serve_smtp(sink: Arc<SmtpSink>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP sink");
    let addr = listener.local_addr().expect("the SMTP sink's address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            sink.connections.fetch_add(1, Relaxed);
            let _ = stream.set_nodelay(true);
            tokio::spawn(smtp_session(stream, sink.clone()));
        }
    });
    addr
}

fn smtp_dispatch() -> Value {
    let messages = env_usize("EMAILS", 20_000);
    let actions = notices(messages, Channel::Email);
    let dir = tempfile::tempdir().expect("a temp dir");
    let rt = runtime();
    let pool_size = 8;
    let (run, counted, connections, data_us) = rt.block_on(async {
        let sink = Arc::new(SmtpSink::default());
        let addr = serve_smtp(sink.clone()).await;
        let smtp = SmtpConfig {
            host: "127.0.0.1".into(),
            port: addr.port(),
            tls: SmtpTls::None,
            pool_size,
            rate_per_second: 1_000_000,
            ..SmtpConfig::default()
        };
        // The pooled transport needs the runtime, even to be dropped: the
        // notifier is made and dropped in here.
        let n = notifier(dir.path(), vec![], Some(smtp));
        let run = dispatch(n, actions).await;
        (run, sink.messages.load(Relaxed), sink.connections.load(Relaxed), sink.data_phase_us.load(Relaxed))
    });
    drop(rt);
    run.assert_all_done(messages);
    assert_eq!(counted, messages as u64, "the SMTP sink got one message per notice");
    json!({
        "case": "smtp-dispatch",
        "messages": messages,
        "seconds": run.seconds,
        "per_second": (messages as f64 / run.seconds).round(),
        "sink_messages": counted,
        "smtp_connections": connections,
        "sink_mean_data_phase_ms": (data_us as f64 / counted.max(1) as f64 / 100.0).round() / 10.0,
        "pool_size": pool_size,
        "lanes": SinksConfig::default().concurrency,
        "worker_threads": WORKER_THREADS,
        "peak_rss_mb": peak_rss_mib(),
    })
}
