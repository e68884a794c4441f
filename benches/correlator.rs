//! `make bench`: correlator throughput and memory, printed as JSON.
//!
//! Cases (each runs in its own child process, so its peak RSS — `VmHWM` —
//! is its own):
//! - `core-10k-active`: the correlator alone, one thread, over `ALARMS`
//!   alarms (default 1 000 000) while 10 000 alarms are active: each step
//!   clears the oldest active alarm and raises a new one on a random site;
//! - `core-1m-active`: the same with 1 000 000 active alarms (built up first,
//!   timed separately), to show the cost of an alarm does not grow with them;
//! - `e2e-embedded`: the whole daemon (Kafka consumer → decode → correlate →
//!   incident log → plan → outboxes) on the embedded broker, over
//!   `E2E_ALARMS` (default 200 000) native alarms published beforehand,
//!   timed from the first record read to the last alarm acknowledged (its
//!   incident-log records acknowledged by the broker, its offset stored).
//! - `plan-1m-fanout`: the planner's fan-out for one incident over
//!   `FANOUT_CUSTOMERS` (default 1 000 000) customers in 1 000 postcodes
//!   under 100 sites (each customer with a number and an address, mobile,
//!   en/es/ru/nl): `plan_down`, then the actions made page by page
//!   (`Planner::pages`, 10 000 customers a page, as the pipeline does) and
//!   serialized to JSON as for the actions topic, each page dropped after.
//!   Reports the resident set after the reference data is built and the
//!   peak, so the fan-out's own memory is the difference.
//! - `credits-1m`: the same world, the incident resolved after 3 h: every
//!   customer's credits under Spain's art. 15 and goodwill (the planner's
//!   credit path), serialized and produced to `billing.credits` on the
//!   embedded broker, 10 000 a page.
//!
//! Synthetic world: `SITES` (default 100 000) sites uniformly in a 10° × 10°
//! box (35–45° N, 90–100° W; ~3 km apart), radius 1.5 km, in groups of 8;
//! no postcodes or customers, so the planner has no customers to fan out to
//! (customer fan-out is measured by the notification benchmarks). Event time
//! advances 1 ms per alarm. Seeded: the same run gives the same alarms.
//!
//! Run: `cargo bench --bench correlator` (all cases) or
//! `cargo bench --bench correlator -- --case core-10k-active`. Under
//! `cargo test` the same cases run on a few thousand alarms (smoke run).

mod support;

use chrono::{DateTime, Duration, Utc};
use outage::config::Config;
use outage::kafka::Broker;
use outage::model::{Alarm, AlarmState, Severity, Site};
use outage::refdata::RefData;
use outage::runtime::{Clock, Shutdown, Stats, SystemClock};
use outage::topology;
use outage::transforms::correlate::Correlator;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use support::{env_usize, peak_rss_mib, proc_status_mib, thread_cpu_seconds};

const CASES: [&str; 5] = ["core-10k-active", "core-1m-active", "e2e-embedded", "plan-1m-fanout", "credits-1m"];

fn main() {
    support::main(
        &CASES,
        &[("ALARMS", "20000"), ("SITES", "5000"), ("E2E_ALARMS", "20000"), ("FANOUT_CUSTOMERS", "20000")],
        |case| match case {
            "core-10k-active" => Some(core(10_000)),
            "core-1m-active" => Some(core(1_000_000)),
            "e2e-embedded" => Some(e2e()),
            "plan-1m-fanout" => Some(fanout()),
            "credits-1m" => Some(credits()),
            _ => None,
        },
    );
}

/// A world of `n` customers in 1 000 postcodes under 100 sites, and one
/// declared incident over every site (3 h old at `t0 + 3 h`).
fn fanout_world(n: usize) -> (Arc<RefData>, outage::model::Incident, DateTime<Utc>) {
    use outage::model::{
        AlarmRef, Customer, EventKind, Incident, IncidentEvent, IncidentId, Money, Postcode, Services,
    };
    let (grid, postcodes_n) = (10usize, 1000usize);
    let sites: Vec<Site> = (0..grid * grid)
        .map(|i| Site {
            site_id: format!("S{i:03}"),
            lat: 41.80 + (i / grid) as f64 * 0.009,
            lon: -71.40 + (i % grid) as f64 * 0.012,
            radius_km: 2.0,
            group_id: None,
        })
        .collect();
    let postcodes: Vec<Postcode> = (0..postcodes_n)
        .map(|i| Postcode {
            postcode: format!("{:05}", 10_000 + i),
            lat: 41.80 + (i / 32) as f64 * 0.0029,
            lon: -71.40 + (i % 32) as f64 * 0.0035,
            population: None,
            timezone: Some("America/New_York".into()),
        })
        .collect();
    let usd = |minor| Money { minor, currency: outage::model::money::Currency::parse("USD").expect("USD") };
    let langs = ["en", "es", "ru", "nl"];
    let customers: Vec<Customer> = (0..n)
        .map(|i| Customer {
            customer_id: format!("C{i:08}"),
            msisdn: Some(format!("+1401{i:07}")),
            email: Some(format!("c{i}@example.com")),
            postcode: postcodes[i % postcodes_n].postcode.clone(),
            language: langs[i % langs.len()].into(),
            services: Services { mobile: true, voice: true, broadband: false },
            opt_out: Default::default(),
            monthly_fee: usd(6000),
            avg_bill_3m: usd(6500),
        })
        .collect();
    let rd = Arc::new(RefData::build(sites, postcodes, customers).expect("a valid synthetic world"));
    let t0: DateTime<Utc> = "2026-11-23T06:00:00Z".parse().expect("a valid time");
    let id = IncidentId("INC-20261123-00000001".into());
    let ev = |seq, kind| IncidentEvent { incident_id: id.clone(), seq, at: t0, actor: "bench".into(), kind };
    let mut inc =
        Incident::open(&ev(1, EventKind::Opened { cause: "mains power failure".into(), detail: None })).expect("open");
    let alarms = rd.sites.iter().map(|s| AlarmRef {
        alarm_id: s.site_id.as_str().into(),
        site_id: s.site_id.as_str().into(),
        at: t0,
    });
    inc.apply(&ev(2, EventKind::AlarmsRaised { alarms: alarms.collect() })).expect("raised");
    inc.apply(&ev(3, EventKind::Declared { reason: "bench".into(), pending: vec![], confirm_joiners: false }))
        .expect("declared");
    (rd, inc, t0)
}

/// The planner's paged fan-out of one incident over `FANOUT_CUSTOMERS`.
fn fanout() -> Value {
    let n = env_usize("FANOUT_CUSTOMERS", 1_000_000);
    let (rd, inc, t0) = fanout_world(n);
    let rss_refdata = proc_status_mib("VmRSS:");
    let planner = outage::transforms::plan::Planner::new(Default::default(), rd.clone()).expect("templates");
    let start = Instant::now();
    let plan = planner.plan_down(&inc, &planner.footprint(&inc), t0);
    let (mut actions, mut bytes, mut pages) = (0usize, 0usize, 0usize);
    for page in planner.pages(&inc, &plan, 10_000) {
        let records: Vec<(String, String)> = page
            .iter()
            .map(|a| (a.customer_id.clone(), serde_json::to_string(a).expect("actions serialize")))
            .collect();
        actions += records.len();
        bytes += records.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        pages += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let reached: usize = plan.postcodes.iter().map(|p| rd.customers_in(p).len()).sum();
    assert_eq!(reached, n, "the incident covers every postcode");
    json!({
        "case": "plan-1m-fanout",
        "customers": n,
        "postcodes": plan.postcodes.len(),
        "actions": actions,
        "pages": pages,
        "json_mb": (bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "actions_per_second": (actions as f64 / secs).round(),
        "rss_after_refdata_mb": rss_refdata,
        "peak_rss_mb": peak_rss_mib(),
    })
}

/// Credits for every customer of a resolved 3-hour incident over
/// `FANOUT_CUSTOMERS`, under Spain's voice rule and goodwill (two credits
/// a customer), serialized and produced to `billing.credits` on the
/// embedded broker in pages of 10 000, acknowledged page by page.
fn credits() -> Value {
    use outage::model::{AlarmRef, EventKind, IncidentEvent};
    use outage::transforms::compensate::{EsRd899Voice, GoodwillProrated, RuleConfig};
    let n = env_usize("FANOUT_CUSTOMERS", 1_000_000);
    let (rd, mut inc, t0) = fanout_world(n);
    let back = t0 + Duration::hours(3);
    let ev = |seq, kind| IncidentEvent { incident_id: inc.id.clone(), seq, at: back, actor: "bench".into(), kind };
    let cleared = rd.sites.iter().map(|s| AlarmRef {
        alarm_id: s.site_id.as_str().into(),
        site_id: s.site_id.as_str().into(),
        at: back,
    });
    let (e4, e5) = (
        ev(4, EventKind::AlarmsCleared { alarms: cleared.collect() }),
        ev(5, EventKind::Resolved { restored_at: back }),
    );
    inc.apply(&e4).expect("cleared");
    inc.apply(&e5).expect("resolved");
    let mut cfg = Config::default();
    cfg.plan.compensation.rules = vec![
        RuleConfig::EsRd899Voice(EsRd899Voice {
            currency: outage::model::money::Currency::parse("USD").expect("USD"),
            ..Default::default()
        }),
        RuleConfig::GoodwillProrated(GoodwillProrated::default()),
    ];
    let planner = outage::transforms::plan::Planner::new(cfg.plan.clone(), rd.clone()).expect("templates");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    rt.block_on(async {
        let broker = Broker::connect(&cfg.kafka).await.expect("embedded broker");
        let producer = broker.producer().expect("a producer");
        let topic = cfg.kafka.topics.credits.clone();
        let start = Instant::now();
        // Computed on a blocking thread, pages handed over a bounded channel,
        // produced here: nothing holds more than a few pages.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(String, String)>>(4);
        let computing = tokio::task::spawn_blocking(move || {
            let (mut count, mut minor, mut page) = (0usize, 0i64, Vec::with_capacity(10_000));
            planner
                .backtest_credits(&inc, &mut |c| {
                    count += 1;
                    minor += c.amount.minor;
                    page.push((c.customer_id.clone(), serde_json::to_string(&c).expect("credits serialize")));
                    if page.len() == 10_000 {
                        tx.blocking_send(std::mem::take(&mut page)).map_err(std::io::Error::other)?;
                    }
                    Ok(())
                })
                .expect("credits");
            tx.blocking_send(page).expect("the producer side is waiting");
            (count, minor)
        });
        while let Some(records) = rx.recv().await {
            outage::kafka::produce_all(&producer, &topic, &records).await.expect("produced");
        }
        let (count, minor) = computing.await.expect("the credit thread");
        let secs = start.elapsed().as_secs_f64();
        json!({
            "case": "credits-1m",
            "customers": n,
            "credits": count,
            "total_minor": minor,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "credits_per_second": (count as f64 / secs).round(),
            "peak_rss_mb": peak_rss_mib(),
        })
    })
}

fn world(n_sites: usize) -> Arc<RefData> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let sites = (0..n_sites)
        .map(|i| Site {
            site_id: format!("S{i:07}"),
            lat: rng.random_range(35.0..45.0),
            lon: rng.random_range(-100.0..-90.0),
            radius_km: 1.5,
            group_id: Some(format!("G{:06}", i / 8)),
        })
        .collect();
    Arc::new(RefData::build(sites, vec![], vec![]).expect("synthetic sites are valid"))
}

/// `build_up` raises, then `churn` steps of (clear the oldest, raise a new
/// one), on random sites: the active set stays at `build_up`.
fn alarms(rd: &RefData, build_up: usize, churn: usize) -> Vec<Alarm> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let t0: DateTime<Utc> = "2026-11-23T00:00:00Z".parse().expect("a valid time");
    let mut active: VecDeque<(String, String)> = VecDeque::with_capacity(build_up);
    let mut out = Vec::with_capacity(build_up + churn);
    let mut n = 0usize;
    let at = |n: usize| t0 + Duration::milliseconds(n as i64);
    let raise = |rng: &mut ChaCha8Rng, n: &mut usize, active: &mut VecDeque<(String, String)>| {
        let site = rd.sites[rng.random_range(0..rd.sites.len())].site_id.clone();
        let id = format!("A{n}");
        let a = Alarm {
            alarm_id: id.clone(),
            site_id: site.clone(),
            state: AlarmState::Raised,
            severity: Severity::Critical,
            probable_cause: "powerProblem".into(),
            event_time: at(*n),
            lat: None,
            lon: None,
            specific_problem: None,
        };
        active.push_back((id, site));
        *n += 1;
        a
    };
    for _ in 0..build_up {
        out.push(raise(&mut rng, &mut n, &mut active));
    }
    let mut step = 0;
    while step < churn {
        if let Some((id, site)) = active.pop_front() {
            out.push(Alarm {
                alarm_id: id,
                site_id: site,
                state: AlarmState::Cleared,
                severity: Severity::Cleared,
                probable_cause: "powerProblem".into(),
                event_time: at(n),
                lat: None,
                lon: None,
                specific_problem: None,
            });
            n += 1;
            step += 1;
        }
        if step < churn {
            out.push(raise(&mut rng, &mut n, &mut active));
            step += 1;
        }
    }
    out
}

fn core(active: usize) -> Value {
    let n_alarms = env_usize("ALARMS", 1_000_000);
    let rd = world(env_usize("SITES", 100_000));
    let stream = alarms(&rd, active, n_alarms);
    let (build_up, churn) = stream.split_at(active);
    let mut cfg = Config::default().correlator;
    // `BLIP_WINDOW=0s`: the footprint rule's blip filter off, to see what it costs.
    if let Some(b) = std::env::var("BLIP_WINDOW").ok().and_then(|v| humantime::parse_duration(&v).ok()) {
        cfg.blip_window = b;
    }
    let mut c = Correlator::new(cfg, rd.clone());
    let (mut events, mut buf) = (0usize, Vec::new());
    let t = Instant::now();
    for a in build_up {
        if c.on_alarm_into(a, &mut buf).is_ok() {
            events += buf.len();
        }
        buf.clear();
    }
    let build_s = t.elapsed().as_secs_f64();
    let rss_built = proc_status_mib("VmRSS:");
    // The churn in quarters: flat figures mean the cost does not drift.
    let mut quarters = Vec::new();
    let (t, cpu) = (Instant::now(), thread_cpu_seconds());
    for part in churn.chunks(churn.len().div_ceil(4).max(1)) {
        let q = Instant::now();
        for a in part {
            if c.on_alarm_into(a, &mut buf).is_ok() {
                events += buf.len();
            }
            buf.clear();
        }
        quarters.push((part.len() as f64 / q.elapsed().as_secs_f64()).round());
    }
    let churn_s = t.elapsed().as_secs_f64();
    let churn_cpu_s = thread_cpu_seconds().zip(cpu).map(|(b, a)| b - a);
    let open = c.incidents().filter(|i| i.state.is_open()).count();
    json!({
        "case": format!("core-{}-active", if active >= 1_000_000 { "1m".to_string() } else { format!("{}k", active / 1000) }),
        "sites": rd.sites.len(),
        "active_alarms": active,
        "build_up": { "alarms": build_up.len(), "seconds": build_s, "alarms_per_s": (build_up.len() as f64 / build_s).round() },
        "measured": { "alarms": churn.len(), "seconds": churn_s, "alarms_per_s": (churn.len() as f64 / churn_s).round(),
                      "alarms_per_s_by_quarter": quarters,
                      "cpu_seconds": churn_cpu_s,
                      "alarms_per_cpu_s": churn_cpu_s.map(|c| (churn.len() as f64 / c).round()) },
        "incident_events": events,
        "incidents": c.incidents().count(),
        "open_incidents": open,
        "rss_after_build_up_mib": rss_built,
        "rss_after_churn_mib": proc_status_mib("VmRSS:"),
        "peak_rss_mib": peak_rss_mib(),
    })
}

fn e2e() -> Value {
    let n_alarms = env_usize("E2E_ALARMS", 200_000);
    let rd = world(env_usize("SITES", 100_000));
    let stream = alarms(&rd, 10_000, n_alarms.saturating_sub(10_000));
    let out_dir = tempfile::tempdir().expect("a temp dir");
    let mut cfg = Config::default();
    cfg.sinks.outbox_dir = out_dir.path().to_path_buf();
    cfg.api.listen = None; // the pipeline alone, and no port taken
                           // The watermark holds back only what partitions' interleaving needs,
                           // and lets the last of it go 200 ms after the feed went quiet, which
                           // the measured time includes (`E2E_LATENESS_S` to measure another).
    cfg.ingest.lateness = std::time::Duration::from_secs(env_usize("E2E_LATENESS_S", 0) as u64);
    cfg.ingest.idle_after = std::time::Duration::from_millis(200);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let broker = Broker::connect(&cfg.kafka).await.expect("embedded broker");
        let producer = broker.producer().expect("producer");
        let t = Instant::now();
        for chunk in stream.chunks(10_000) {
            let payloads: Vec<(String, String)> =
                chunk.iter().map(|a| (a.site_id.clone(), serde_json::to_string(a).unwrap_or_default())).collect();
            let sends = payloads.iter().map(|(k, v)| {
                producer.send(
                    FutureRecord::to(&cfg.kafka.topics.alarms).key(k).payload(v),
                    std::time::Duration::from_secs(60),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.map_err(|(e, _)| e).expect("publish");
            }
        }
        let publish_s = t.elapsed().as_secs_f64();
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown): (_, Shutdown) = Shutdown::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let daemon = {
            let (cfg, broker, stats, rd) = (cfg.clone(), broker.clone(), stats.clone(), rd.clone());
            tokio::spawn(async move { topology::run(&cfg, &broker, rd, clock, stats, shutdown).await })
        };
        let total = stream.len() as u64;
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        // Done when every alarm's effects are acknowledged and its offset
        // stored, not merely read, and none waits for the watermark.
        while stats.alarms_acked.load(Relaxed) < total || stats.alarms_buffered.load(Relaxed) > 0 {
            if first.is_none() && stats.alarms_read.load(Relaxed) > 0 {
                first = Some(Instant::now());
            }
            if daemon.is_finished() {
                let why = daemon.await.map(|r| r.err().map(|e| e.to_string()));
                panic!("the daemon stopped at {} of {total} alarms: {why:?}", stats.alarms_read.load(Relaxed));
            }
            if started.elapsed() > std::time::Duration::from_secs(600) {
                panic!(
                    "e2e bench stuck: {} of {total} alarms read, {} acknowledged, {} incident events appended",
                    stats.alarms_read.load(Relaxed),
                    stats.alarms_acked.load(Relaxed),
                    stats.events_appended.load(Relaxed)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        let first = first.unwrap_or(started);
        trigger.trigger();
        let _ = daemon.await;
        let secs = done.duration_since(first).as_secs_f64();
        json!({
            "case": "e2e-embedded",
            "sites": rd.sites.len(),
            "alarms": total,
            "publish_seconds": publish_s,
            "seconds_first_read_to_last_acked": secs,
            "alarms_per_s": (total as f64 / secs).round(),
            "seconds_including_group_join": done.duration_since(started).as_secs_f64(),
            "dead_lettered": stats.alarms_dead_lettered.load(Relaxed),
            "incidents": stats.incidents_total.load(Relaxed),
            "worker_threads": 2,
            "peak_rss_mib": peak_rss_mib(),
        })
    })
}
