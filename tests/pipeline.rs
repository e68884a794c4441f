//! Integration tests of the running pipeline against a Kafka-protocol
//! broker: librdkafka's embedded mock cluster by default, or the broker at
//! `OUTAGE_TEST_BOOTSTRAP` (`make e2e` starts Tansu and sets it). Every test
//! uses its own topics and groups, so they can share one broker.

mod common;

use chrono::{DateTime, Duration as Cd, Utc};
use common::alarm;
use outage::config::Config;
use outage::kafka::{read_to_end, Broker};
use outage::model::{
    Action, ActionKind, AlarmState, Channel, Customer, EventKind, IncidentEvent, Money, Postcode, Services, Site,
};
use outage::refdata::RefData;
use outage::runtime::{Clock, Shutdown, ShutdownTrigger, Stats, SystemClock};
use outage::sources::decode::DlqRecord;
use outage::topology;
use rdkafka::producer::FutureRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(tag: &str, outbox: &Path) -> Config {
    let mut cfg = common::config(tag);
    cfg.plan.credit_min_outage = Duration::from_secs(3600);
    cfg.sinks.outbox_dir = outbox.to_path_buf();
    cfg
}

/// Four sites a kilometre apart in Providence, S5 2.3 km east of them, one
/// 80 km away; postcodes under them (02903 under S5 only) and far away;
/// customers with and without contacts.
fn refdata() -> Arc<RefData> {
    let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
    let pc = |p: &str, lat, lon| Postcode { postcode: p.into(), lat, lon, population: Some(1000), timezone: None };
    let usd = |minor| Money { minor, currency: outage::model::money::Currency::parse("USD").unwrap() };
    let cust =
        |id: &str, msisdn: Option<&str>, email: Option<&str>, postcode: &str, lang: &str, services: &str| Customer {
            customer_id: id.into(),
            msisdn: msisdn.map(Into::into),
            email: email.map(Into::into),
            postcode: postcode.into(),
            language: lang.into(),
            services: Services::parse(services).unwrap(),
            opt_out: Default::default(),
            monthly_fee: usd(6000),
            avg_bill_3m: usd(6500),
            billing_cycle_day: None,
        };
    Arc::new(
        RefData::build(
            vec![
                site("S1", 41.820, -71.410),
                site("S2", 41.829, -71.410),
                site("S3", 41.820, -71.398),
                site("S4", 41.829, -71.398),
                site("S5", 41.820, -71.370),
                site("FAR", 42.500, -71.400),
            ],
            vec![
                pc("02901", 41.822, -71.408),
                pc("02902", 41.828, -71.400),
                pc("02903", 41.820, -71.360),
                pc("01001", 42.5, -71.4),
            ],
            vec![
                cust("C1", Some("+14015550101"), Some("c1@example.com"), "02901", "en", "mobile;voice"),
                cust("C2", Some("+14015550102"), None, "02902", "es", "broadband"),
                cust("C3", None, None, "02901", "en", "voice"),
                cust("C5", Some("+14015550105"), None, "02903", "en", "mobile"),
                cust("CFAR", Some("+14015550199"), Some("far@example.com"), "01001", "en", "mobile"),
            ],
        )
        .unwrap(),
    )
}

async fn publish(broker: &Broker, topic: &str, records: &[(&str, String)]) {
    let p = broker.producer().unwrap();
    for (k, v) in records {
        p.send(FutureRecord::to(topic).key(*k).payload(v), Duration::from_secs(10)).await.unwrap();
    }
}

/// The whole daemon running on `broker` until [`Daemon::stop`].
struct Daemon {
    stats: Arc<Stats>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), topology::TopologyError>>,
}

impl Daemon {
    fn start(cfg: &Config, broker: &Broker, rd: Arc<RefData>) -> Self {
        Self::start_at(cfg, broker, rd, Arc::new(SystemClock))
    }

    /// Start with the wall clock at `clock`.
    fn start_at(cfg: &Config, broker: &Broker, rd: Arc<RefData>, clock: Arc<dyn Clock>) -> Self {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (cfg, broker, s) = (cfg.clone(), broker.clone(), stats.clone());
        let task = tokio::spawn(async move { topology::run(&cfg, &broker, rd, clock, s, shutdown).await });
        Daemon { stats, trigger, task }
    }

    /// Shut down, require a clean exit, and hand back its counters.
    async fn stop(self) -> Arc<Stats> {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
        self.stats
    }
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the pipeline has read `alarms`, planned something, and the
/// dispatcher delivered all of it; then a little longer for stragglers.
async fn settle(stats: &Stats, alarms: u64, mut extra: impl FnMut(&Stats) -> bool) {
    wait_for("the pipeline to settle", Duration::from_secs(90), || {
        stats.alarms_read.load(Relaxed) >= alarms
            && stats.actions_planned.load(Relaxed) > 0
            && stats.actions_dispatched.load(Relaxed) >= stats.actions_planned.load(Relaxed)
            && extra(stats)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn lines(dir: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn topic_records(broker: &Broker, topic: &str) -> Vec<Vec<u8>> {
    let mut out = vec![];
    read_to_end(broker, topic, Duration::from_millis(500), |_, _, b| out.push(b.to_vec())).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_incidents_and_repeats_no_action() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("restart", dir.path());
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let rd = refdata();
    let t0 = Utc::now() - Cd::hours(4);
    let topic = cfg.kafka.topics.alarms.clone();

    // Run 1: three neighbouring sites lose power (one raise repeated).
    publish(
        &broker,
        &topic,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0 + Cd::seconds(20))),
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0 + Cd::seconds(30))),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0 + Cd::seconds(40))),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, rd.clone());
    settle(&daemon.stats, 4, |s| s.incidents_declared.load(Relaxed) == 1).await;
    daemon.stop().await;

    let sms1 = lines(dir.path(), "sms.jsonl");
    let to: BTreeSet<String> = sms1.iter().map(|a| a["customer_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(to, BTreeSet::from(["C1".to_string(), "C2".to_string()]), "SMS to customers in the zone with a number");
    assert!(lines(dir.path(), "ivr.jsonl").iter().any(|u| u["active"] == true), "the IVR announces the outage");
    let actions1 = topic_records(&broker, &cfg.kafka.topics.actions).len();
    assert!(actions1 > 0);
    // Every customer of the audience without a notice on a channel has a
    // `skipped` record with the reason (issue 21 item 7).
    let skipped: BTreeSet<(String, String, String)> = lines(dir.path(), "deliveries.jsonl")
        .iter()
        .filter(|d| d["outcome"] == "skipped" && d["kind"] == "down")
        .map(|d| {
            let f = |k: &str| d[k].as_str().unwrap().to_string();
            (f("customer_id"), f("channel"), f("reason"))
        })
        .collect();
    let want = |c: &str, ch: &str| (c.to_string(), ch.to_string(), "no_contact".to_string());
    assert_eq!(skipped, BTreeSet::from([want("C2", "email"), want("C3", "sms"), want("C3", "email")]));

    // Run 2, a new daemon on the same broker: the sites come back.
    publish(
        &broker,
        &topic,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Cleared, t0 + Cd::hours(3))),
            ("S2", alarm("A2", "S2", AlarmState::Cleared, t0 + Cd::hours(3))),
            ("S3", alarm("A3", "S3", AlarmState::Cleared, t0 + Cd::hours(3) + Cd::seconds(5))),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, rd.clone());
    settle(&daemon.stats, 3, |s| s.incidents_open.load(Relaxed) == 0 && s.delivered(Channel::Credit) > 0).await;
    let stats2 = daemon.stop().await;
    assert_eq!(stats2.alarms_read.load(Relaxed), 3, "the restarted daemon resumes after the committed offsets");
    assert_eq!(stats2.duplicates.load(Relaxed), 0, "no action was put on the topic twice");

    // No action id twice, on the topic or in any outbox.
    let actions: Vec<Action> =
        topic_records(&broker, &cfg.kafka.topics.actions).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let ids: BTreeSet<&str> = actions.iter().map(|a| a.action_id.as_str()).collect();
    assert_eq!(ids.len(), actions.len(), "an action was planned twice");
    assert!(actions.len() > actions1, "restored notices and credits were planned after the restart");
    for f in ["sms.jsonl", "email.jsonl", "data_grant.jsonl"] {
        let rows = lines(dir.path(), f);
        let ids: BTreeSet<&str> = rows.iter().map(|a| a["action_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), rows.len(), "{f} repeats an action");
    }
    // Everyone told "down" is told "restored", on the same channel.
    let sms = lines(dir.path(), "sms.jsonl");
    let by_kind = |k: &str| -> BTreeSet<String> {
        sms.iter().filter(|a| a["kind"] == k).map(|a| a["customer_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(by_kind("down"), by_kind("restored"));
    assert!(actions.iter().all(|a| a.customer_id != "CFAR"), "a customer outside the zone was acted on");
    assert!(actions.iter().any(|a| a.kind == ActionKind::Revoke), "unlimited data is revoked after restoration");
    let credits = lines(dir.path(), "credits.jsonl");
    let credited: BTreeSet<&str> = credits.iter().map(|c| c["customer_id"].as_str().unwrap()).collect();
    assert!(credited.contains("C3"), "credits do not depend on having a contact");
    // Billing gets each credit once, keyed by customer, across the restart.
    let billed: Vec<outage::model::Credit> =
        topic_records(&broker, &cfg.kafka.topics.credits).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let billed_ids: BTreeSet<String> = billed.iter().map(|c| c.credit_id.to_string()).collect();
    assert_eq!(billed.len(), credits.len(), "one record on billing.credits per credit");
    assert_eq!(billed_ids, credits.iter().map(|c| c["credit_id"].as_str().unwrap().to_string()).collect());
    assert!(lines(dir.path(), "ivr.jsonl").iter().any(|u| u["active"] == false), "the IVR announcement is withdrawn");

    // The incident log is one gap-free history.
    let events: Vec<IncidentEvent> = topic_records(&broker, &cfg.kafka.topics.incidents)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        seqs.entry(e.incident_id.to_string()).or_default().push(e.seq);
    }
    assert_eq!(seqs.len(), 1, "three neighbouring sites are one incident");
    for (id, s) in seqs {
        assert_eq!(s, (1..=s.len() as u64).collect::<Vec<_>>(), "{id}: seqs not consecutive");
    }
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::Resolved { .. })));
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::Planned { .. })).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_alarms_go_to_the_dead_letter_topic_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("dlq", dir.path());
    // A VES element named after its site, placed by a rule before correlation.
    cfg.ingest.elements = vec![outage::sources::elements::ElementRule {
        format: outage::sources::decode::Format::Ves,
        pattern: r"^(?P<site>S\d)-enb-\d+$".into(),
    }];
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let t0 = Utc::now() - Cd::minutes(30);
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("junk", "this is not json".to_string()),
            ("S9", alarm("A9", "NOWHERE", AlarmState::Raised, t0)),
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S4", alarm("A4", "S4", AlarmState::Raised, t0)),
            ("S3", ves_alarm("A3", "S3-enb-1", t0)),
            // A minor alarm of an element nobody knows: an unknown site, not
            // an ignored `not_service_affecting` one.
            ("ne", alarm("A8", "ne-unknown-8", AlarmState::Raised, t0).replace("critical", "minor")),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 7, |s| s.incidents_declared.load(Relaxed) == 1).await;
    let stats = daemon.stop().await;

    assert_eq!(stats.alarms_dead_lettered.load(Relaxed), 3);
    let by_class = stats.dead_letters.lock().unwrap().clone();
    assert_eq!(by_class, BTreeMap::from([("not_json", 1), ("unknown_site", 2)]), "dead letters are counted per reason");
    let ignored = stats.alarms_ignored.lock().unwrap().clone();
    assert_eq!(ignored.by_reason().into_iter().map(|(_, n)| n).sum::<u64>(), 0, "nothing ignored: {ignored:?}");
    let dlq: Vec<DlqRecord> =
        topic_records(&broker, &cfg.kafka.topics.dlq).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(dlq.len(), 3);
    let element = dlq.iter().find(|d| d.payload.contains("ne-unknown-8")).unwrap();
    assert!(element.reason.contains("ne-unknown-8") && element.reason.contains("native"), "{}", element.reason);
    assert!(!dlq.iter().any(|d| d.payload.contains("S3-enb-1")), "the rule placed the VES element");
    let junk = dlq.iter().find(|d| d.payload == "this is not json").expect("the junk record is kept as text");
    assert!(junk.reason.contains("not JSON"), "{}", junk.reason);
    assert_eq!(junk.topic, cfg.kafka.topics.alarms);
    let unknown = dlq.iter().find(|d| d.payload.contains("NOWHERE")).unwrap();
    assert!(unknown.reason.contains("NOWHERE"), "{}", unknown.reason);
    assert!(!lines(dir.path(), "sms.jsonl").is_empty(), "good alarms after bad ones still reach customers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postcode_whose_sites_came_back_is_told_before_the_incident_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("partial", dir.path());
    cfg.correlator.hold_down = Duration::from_secs(600);
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let t0 = Utc::now() - Cd::hours(4);
    // S5 (alone over 02903) is repaired after 90 min; S1–S3 stay down.
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0)),
            ("S5", alarm("A5", "S5", AlarmState::Raised, t0 + Cd::seconds(10))),
            ("S5", alarm("A5", "S5", AlarmState::Cleared, t0 + Cd::minutes(90))),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 5, |s| s.postcodes_restored_early.load(Relaxed) > 0).await;
    daemon.stop().await;

    let sms = lines(dir.path(), "sms.jsonl");
    let told = |kind: &str| -> BTreeSet<&str> {
        sms.iter().filter(|a| a["kind"] == kind).map(|a| a["customer_id"].as_str().unwrap()).collect()
    };
    assert_eq!(told("down"), BTreeSet::from(["C1", "C2", "C5"]));
    assert_eq!(told("restored"), BTreeSet::from(["C5"]), "only 02903 is back; the rest is still down");
    let actions: Vec<Action> =
        topic_records(&broker, &cfg.kafka.topics.actions).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let revoke =
        actions.iter().find(|a| a.kind == ActionKind::Revoke).expect("C5's unlimited data is scheduled to end");
    assert_eq!(revoke.customer_id, "C5");
    assert_eq!(revoke.until, Some(t0 + Cd::minutes(90) + Cd::days(1)), "revoked at its own restoration + the grace");
    assert_eq!(revoke.not_before, revoke.until);
    let grants = lines(dir.path(), "data_grant.jsonl");
    assert!(grants.iter().all(|a| a["kind"] != "revoke"), "the revoke waits in held.jsonl for its time");
    assert!(lines(dir.path(), "held.jsonl").iter().any(|h| h["hold"]["action_id"] == revoke.action_id.as_str()));
    let credits = lines(dir.path(), "credits.jsonl");
    assert_eq!(credits.len(), 1, "{credits:?}");
    let credit = &credits[0];
    assert_eq!(credit["customer_id"], "C5");
    assert_eq!(credit["outage_seconds"], 90 * 60 - 10, "credited for 02903's own window");

    let events: Vec<IncidentEvent> = topic_records(&broker, &cfg.kafka.topics.incidents)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert!(!events.iter().any(|e| matches!(e.kind, EventKind::Resolved { .. })), "the incident is still declared");
    let partial: Vec<&Vec<String>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Planned { phase: outage::model::Phase::Restored, postcodes, .. } => Some(postcodes),
            _ => None,
        })
        .collect();
    assert_eq!(partial, [&vec!["02903".to_string()]]);
}

/// A wall clock stopped at one instant.
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_night_sms_waits_for_the_morning_across_a_restart_and_a_repair_withdraws_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("quiet", dir.path());
    cfg.correlator.hold_down = Duration::from_secs(600);
    // 21:00–08:00 in the postcodes' zone: the file names none, so it is
    // their centroids' (Providence: America/New_York, EST in November).
    cfg.plan.quiet_hours = Some(Default::default());
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let night: DateTime<Utc> = "2026-11-24T04:00:00Z".parse().unwrap(); // 23:00 EST
    let morning: DateTime<Utc> = "2026-11-24T13:00:00Z".parse().unwrap(); // 08:00 EST
    let t0 = night - Cd::hours(4);
    // S1–S3 stay down all night; S5 (alone over 02903, C5) is repaired at
    // 20:30, but the incident is only seen at 23:00 (say, a late feed).
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0)),
            ("S5", alarm("A5", "S5", AlarmState::Raised, t0 + Cd::seconds(10))),
            ("S5", alarm("A5", "S5", AlarmState::Cleared, t0 + Cd::minutes(90))),
        ],
    )
    .await;
    let daemon = Daemon::start_at(&cfg, &broker, refdata(), Arc::new(FixedClock(night)));
    let withdrawn = |s: &Stats| s.notices_skipped.lock().unwrap().get("withdrawn_while_held").copied().unwrap_or(0);
    wait_for("the night's notices to be held", Duration::from_secs(90), || {
        let s = &daemon.stats;
        s.actions_held.load(Relaxed) >= 3 && withdrawn(s) == 1 && s.delivered(Channel::Email) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = daemon.stop().await;
    assert_eq!(stats.actions_waiting.load(Relaxed), 3, "C1's and C2's downs and C5's data revoke wait");
    assert!(lines(dir.path(), "sms.jsonl").is_empty(), "no SMS at night");
    let email = lines(dir.path(), "email.jsonl");
    assert!(email.iter().any(|a| a["customer_id"] == "C1" && a["kind"] == "down"), "e-mail is not held");
    let deliveries = lines(dir.path(), "deliveries.jsonl");
    let held: BTreeSet<&str> =
        deliveries.iter().filter(|d| d["outcome"] == "held").map(|d| d["customer_id"].as_str().unwrap()).collect();
    assert!(held.is_superset(&BTreeSet::from(["C1", "C2", "C5"])), "{deliveries:?}");
    assert!(deliveries.iter().any(|d| d["customer_id"] == "C5" && d["reason"] == "withdrawn_while_held"));

    // The daemon restarts in the morning: the held notices go, once.
    let daemon = Daemon::start_at(&cfg, &broker, refdata(), Arc::new(FixedClock(morning + Cd::minutes(1))));
    wait_for("the morning's release", Duration::from_secs(90), || daemon.stats.delivered(Channel::Sms) >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = daemon.stop().await;
    assert_eq!(stats.actions_waiting.load(Relaxed), 1, "C5's revoke waits for 20:30 (repair + a day's grace)");
    let sms = lines(dir.path(), "sms.jsonl");
    let got: Vec<(&str, &str)> =
        sms.iter().map(|a| (a["customer_id"].as_str().unwrap(), a["kind"].as_str().unwrap())).collect();
    assert_eq!(BTreeSet::from_iter(got.iter().copied()), BTreeSet::from([("C1", "down"), ("C2", "down")]));
    assert_eq!(got.len(), 2, "each once: {got:?}");
    assert!(sms.iter().all(|a| a["not_before"] == morning.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
}

/// RD 899/2009 art. 15 per billing period, across a restart: two outages
/// of one month, each owed less than the €1-equivalent threshold, are one
/// credit with two shares once the second accrues; the second daemon knows
/// the first share only from the ledger topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_small_outages_of_one_billing_period_are_credited_once_across_a_restart() {
    use chrono::TimeZone;
    use outage::transforms::compensate::{EsRd899Voice, RuleConfig};
    if let Ok(f) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(f).with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("ledger", dir.path());
    let usd = outage::model::money::Currency::parse("USD").unwrap();
    // Voice: 5 × 60.00 a month prorated; 2 h = 300.00 × 7200 / 2592000 = 0.83 each, 1.66 in the period.
    cfg.plan.compensation.rules =
        vec![RuleConfig::EsRd899Voice(EsRd899Voice { currency: usd, ..EsRd899Voice::default() })];
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let topic = cfg.kafka.topics.alarms.clone();
    // Mid-June, far from a month's end in any zone.
    let t0 = Utc.with_ymd_and_hms(2026, 6, 10, 14, 0, 0).unwrap();
    let outage = |n: &str, at: DateTime<Utc>| -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        for s in ["S1", "S2", "S3"] {
            let s: &'static str = s;
            v.push((s, alarm(&format!("{n}{s}"), s, AlarmState::Raised, at)));
        }
        for s in ["S1", "S2", "S3"] {
            let s: &'static str = s;
            v.push((s, alarm(&format!("{n}{s}"), s, AlarmState::Cleared, at + Cd::hours(2))));
        }
        v
    };
    let credited = |broker: &Broker| -> Vec<outage::model::Credit> {
        topic_records(broker, &cfg.kafka.topics.credits).iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
    };
    let first = outage("X", t0);
    let first: Vec<(&str, String)> = first.iter().map(|(k, v)| (*k, v.clone())).collect();
    publish(&broker, &topic, &first).await;
    let daemon = Daemon::start_at(&cfg, &broker, refdata(), Arc::new(FixedClock(t0 + Cd::hours(3))));
    let ledger_records = |broker: &Broker| topic_records(broker, &cfg.kafka.topics.ledger).len();
    wait_for("the first outage's entitlements", Duration::from_secs(90), || ledger_records(&broker) >= 2).await;
    daemon.stop().await;
    assert!(credited(&broker).is_empty(), "0.83 alone is not more than 1.00");

    let second = outage("Y", t0 + Cd::days(3));
    let second: Vec<(&str, String)> = second.iter().map(|(k, v)| (*k, v.clone())).collect();
    publish(&broker, &topic, &second).await;
    let daemon = Daemon::start_at(&cfg, &broker, refdata(), Arc::new(FixedClock(t0 + Cd::days(3) + Cd::hours(3))));
    wait_for("the period's credits", Duration::from_secs(90), || credited(&broker).len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.stop().await;
    let credits = credited(&broker);
    // C1 (mobile;voice) and C3 (voice) in 02901: one credit each, with both incidents' shares.
    let got: BTreeSet<(&str, i64, usize)> =
        credits.iter().map(|c| (c.customer_id.as_str(), c.amount.minor, c.shares.len())).collect();
    assert_eq!(got, BTreeSet::from([("C1", 166, 2), ("C3", 166, 2)]), "{credits:#?}");
    for c in &credits {
        let p = c.period.as_ref().unwrap();
        assert_eq!((p.start.to_string(), p.amount_above_minor), ("2026-06-01".to_string(), Some(100)));
        assert_eq!(c.credit_id, outage::model::Credit::period_id_for(&c.customer_id, &c.rule_id, p.start, 1));
    }
    assert_eq!(ledger_records(&broker), 4, "one ledger record per incident and customer");
}

/// A free loopback port (bound, read, released).
/// A raise as a VES fault event naming network element `element`.
fn ves_alarm(id: &str, element: &str, at: DateTime<Utc>) -> String {
    let a = outage::model::Alarm {
        alarm_id: id.into(),
        site_id: element.into(),
        state: AlarmState::Raised,
        severity: outage::model::Severity::Critical,
        probable_cause: "mains power failure".into(),
        specific_problem: None,
        event_time: at,
        lat: None,
        lon: None,
    };
    serde_json::json!({ "event": outage::sources::ves::encode_event(&a, 1) }).to_string()
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A config with the API on a free port, a viewer token `v-secret` and an
/// operator token `o-secret` named `operator`.
fn api_config(tag: &str, outbox: &Path, operator: &str) -> (Config, std::net::SocketAddr) {
    use outage::api::{ApiToken, Role};
    let mut cfg = config(tag, outbox);
    let addr = free_port();
    cfg.api.listen = Some(addr);
    cfg.api.tokens = vec![
        ApiToken { name: "wall-screen".into(), role: Role::Viewer, token: "v-secret".into() },
        ApiToken { name: operator.into(), role: Role::Operator, token: "o-secret".into() },
    ];
    (cfg, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noc_api_reads_updates_and_resolves_with_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, addr) = api_config("api", dir.path(), "noc-alice");
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let t0 = Utc::now() - Cd::hours(1);
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0)),
            // The feed re-sends an active alarm: counted, not news (its
            // vendor's cause string is one nobody classified: said aloud).
            (
                "S1",
                alarm("A1", "S1", AlarmState::Raised, t0 + Cd::seconds(30))
                    .replace("powerProblem", r#"VENDOR \"PWR\" 17"#),
            ),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 4, |s| s.delivered(Channel::Sms) >= 2).await;
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let url = |path: &str| format!("http://{addr}{path}");
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/healthz", None).await.unwrap().status(), 200);
    assert_eq!(get("/readyz", None).await.unwrap().status(), 200);
    assert_eq!(get("/v1/incidents", None).await.unwrap().status(), 401, "no token");
    assert_eq!(get("/v1/incidents", Some("nope")).await.unwrap().status(), 401, "unknown token");
    let list: Vec<serde_json::Value> = get("/v1/incidents", Some("v-secret")).await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["state"], "declared");
    // The standard cause, in the words every channel uses, and the feed's detail.
    assert_eq!(
        (list[0]["cause"].as_str(), list[0]["cause_text"].as_str()),
        (Some("powerProblem"), Some("a power failure"))
    );
    assert!(list[0]["detail"].as_str().is_some_and(|d| d.starts_with("mains failure at S")), "{list:?}");
    assert!(list[0]["postcodes"].as_array().unwrap().iter().any(|p| p == "02901"));

    // One answer for agents: by number, by customer, by postcode.
    let by_number: serde_json::Value =
        get("/v1/impact?msisdn=%2B14015550102", Some("v-secret")).await.unwrap().json().await.unwrap();
    assert_eq!((by_number["postcode"].as_str(), by_number["language"].as_str()), (Some("02902"), Some("es")));
    assert_eq!(by_number["incidents"][0]["id"], id.as_str());
    assert!(by_number["incidents"][0]["text"].as_str().unwrap().contains("avería"), "{by_number}");
    assert_eq!(by_number["customer_id"], "C2", "the customer matched is named");
    // Any spelling of the number: spaces, dashes, parentheses, 00.
    for spelling in ["%2B1%20401%20555%200102", "001-401-555-0102", "%2B1%20(401)%20555-0102"] {
        let r: serde_json::Value =
            get(&format!("/v1/impact?msisdn={spelling}"), Some("v-secret")).await.unwrap().json().await.unwrap();
        assert_eq!(r["customer_id"], "C2", "{spelling}: {r}");
    }
    let junk = get("/v1/impact?msisdn=not-a-number", Some("v-secret")).await.unwrap();
    assert_eq!(junk.status(), 422, "a number that cannot be one is a clear error");
    let far: serde_json::Value =
        get("/v1/impact?postcode=01001", Some("v-secret")).await.unwrap().json().await.unwrap();
    assert_eq!(far["incidents"], serde_json::json!([]));
    assert_eq!(get("/v1/impact?customer_id=NOBODY", Some("v-secret")).await.unwrap().status(), 404);

    // Commands: a viewer may not; an operator's update is in the log with
    // their name and tells the told customers the new ETR.
    let etr = "2030-01-01T18:00:00Z";
    let update = |token: &str| {
        http.post(url(&format!("/v1/incidents/{id}/update")))
            .bearer_auth(token)
            .json(&serde_json::json!({ "etr": etr }))
            .send()
    };
    assert_eq!(update("v-secret").await.unwrap().status(), 403);
    // An ETR already past is never told to customers.
    let past = http
        .post(url(&format!("/v1/incidents/{id}/update")))
        .bearer_auth("o-secret")
        .json(&serde_json::json!({ "etr": "2020-01-01T05:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 422);
    let body: serde_json::Value = past.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("not in the future"), "{body}");
    let updated: serde_json::Value = update("o-secret").await.unwrap().json().await.unwrap();
    assert_eq!(updated["etr"], etr);
    let entry = updated["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "updated").unwrap().clone();
    assert_eq!(entry["actor"], "noc-alice");
    let missing =
        http.post(url("/v1/incidents/INC-NOPE/resolve")).bearer_auth("o-secret").json(&serde_json::json!({})).send();
    assert_eq!(missing.await.unwrap().status(), 404);
    wait_for("the ETR update notices", Duration::from_secs(60), || {
        lines(dir.path(), "sms.jsonl").iter().filter(|a| a["kind"] == "etr_update").count() == 2
    })
    .await;
    // The CLI against the running daemon: exit codes scripts can trust.
    let ctl = |token: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl"))
            .args(args)
            .env("OUTAGECTL_SERVER", format!("http://{addr}"))
            .env("OUTAGECTL_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, _) = ctl("v-secret", &["incidents"]);
    assert_eq!(code, Some(0));
    assert!(table.contains(&id) && table.contains("declared"), "{table}");
    let (code, _, err) = ctl("v-secret", &["resolve", &id]);
    assert_eq!(code, Some(4), "a viewer cannot resolve: {err}");
    assert!(!err.contains("v-secret"), "the token is never echoed: {err}");
    assert_eq!(ctl("o-secret", &["show", "INC-NOPE"]).0, Some(5), "unknown incident");
    let (code, impact, _) = ctl("v-secret", &["impact", "--postcode", "02901", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&impact).unwrap()["incidents"][0]["id"], id.as_str());
    let (code, out, err) = ctl("o-secret", &["resolve", &id, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let resolved: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resolved["state"], "resolved");
    let dead = free_port();
    let down = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl"))
        .args(["incidents", "--server", &format!("http://{dead}")])
        .env("OUTAGE_TOKEN", "v-secret")
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(3), "daemon not running");
    wait_for("the restored notices", Duration::from_secs(60), || {
        lines(dir.path(), "sms.jsonl").iter().filter(|a| a["kind"] == "restored").count() == 2
    })
    .await;
    let metrics = get("/metrics", None).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("outage_alarms_total{outcome=\"accepted\"} 4"), "{metrics}");
    assert!(metrics.contains("outage_alarms_ignored_total{reason=\"repeated_raise\"} 1\n"), "{metrics}");
    assert!(metrics.contains("outage_alarms_ignored_total{reason=\"stale_raise\"} 0\n"), "{metrics}");
    assert!(metrics.contains("outage_alarm_raises_by_cause_class_total{class=\"power\"} 3\n"), "{metrics}");
    assert!(metrics.contains("outage_alarm_raises_by_cause_class_total{class=\"environment\"} 0\n"), "{metrics}");
    assert!(
        metrics.contains("outage_alarm_raises_unclassified_total{cause=\"VENDOR \\\"PWR\\\" 17\"} 1\n"),
        "the cause, escaped: {metrics}"
    );
    assert!(metrics.contains("outage_alarm_raises_unclassified_total{cause=\"\"} 0\n"), "{metrics}");
    // Declared at t0 + min_duration (event time); first notice about an hour
    // after t0 (wall time).
    assert!(metrics.contains("outage_first_alarm_to_declared_seconds_count 1\n"), "{metrics}");
    assert!(metrics.contains("outage_first_alarm_to_first_notice_seconds_bucket{le=\"1800\"} 0\n"), "{metrics}");
    assert!(metrics.contains("outage_first_alarm_to_first_notice_seconds_bucket{le=\"7200\"} 1\n"), "{metrics}");
    assert!(metrics.contains("outage_first_alarm_to_first_notice_seconds_count 1\n"), "{metrics}");
    // librdkafka reports the lag every 2 s: all three alarms are processed.
    let mut lag = String::new();
    for _ in 0..100 {
        lag = get("/metrics", None).await.unwrap().text().await.unwrap();
        if lag.contains("outage_consumer_lag_records 0\n") && lag.contains("outage_brokers_up ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lag.contains("outage_consumer_lag_records 0\n"), "{lag}");
    let up = lag.lines().find_map(|l| l.strip_prefix("outage_brokers_up ")).and_then(|v| v.parse::<u64>().ok());
    assert!(up.is_some_and(|n| n >= 1), "connected to a broker: {lag}");
    daemon.stop().await;
    let events: Vec<IncidentEvent> = topic_records(&broker, &cfg.kafka.topics.incidents)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert!(events.iter().any(|e| e.actor == "noc-alice" && matches!(e.kind, EventKind::Resolved { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noc_declares_areas_approves_links_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, addr) = api_config("declare", dir.path(), "noc-bob");
    // More than one customer: ask first.
    cfg.plan.approve_above_customers = Some(1);
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let daemon = Daemon::start(&cfg, &broker, refdata());
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let url = |path: &str| format!("http://{addr}{path}");
    wait_for("the API to be ready", Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
    let post = |path: &str, token: &str, body: serde_json::Value| {
        http.post(url(path)).bearer_auth(token.to_string()).json(&body).send()
    };
    let get = |path: &str| http.get(url(path)).bearer_auth("v-secret").send();
    let events = || async {
        topic_records(&broker, &cfg.kafka.topics.incidents)
            .iter()
            .map(|b| serde_json::from_slice::<IncidentEvent>(b).unwrap())
            .collect::<Vec<_>>()
    };

    // A typo is refused, naming it; a viewer may not declare.
    let typo = post(
        "/v1/incidents",
        "o-secret",
        serde_json::json!({"cause": "fibre cut", "area": {"postcodes": ["02901", "NOPE"]}}),
    );
    let typo = typo.await.unwrap();
    assert_eq!(typo.status(), 422);
    assert!(typo.text().await.unwrap().contains("NOPE"));
    let viewer = post("/v1/incidents", "v-secret", serde_json::json!({"cause": "x", "area": {"postcodes": ["02901"]}}));
    assert_eq!(viewer.await.unwrap().status(), 403);

    // A circle around the far postcode: one customer, told at once.
    let far = post(
        "/v1/incidents",
        "o-secret",
        serde_json::json!({"cause": "mast fire", "area": {"circle": {"lat": 42.5, "lon": -71.4, "radius_km": 1.0}}}),
    );
    let far = far.await.unwrap();
    assert_eq!(far.status(), 201);
    let far: serde_json::Value = far.json().await.unwrap();
    let far_id = far["id"].as_str().unwrap().to_string();
    assert_eq!((far["state"].as_str(), far["postcodes"].clone()), (Some("declared"), serde_json::json!(["01001"])));
    assert_eq!(far["awaiting_approval"], false);

    // Two postcodes, three customers: the fan-out waits, the preview counts it.
    let body = serde_json::json!({
        "cause": "fibre cut", "area": {"postcodes": ["02901", "02902"]}, "etr": "2030-01-01T18:00:00Z",
        "since": (Utc::now() - Cd::minutes(30)).to_rfc3339(),
    });
    let held: serde_json::Value = post("/v1/incidents", "o-secret", body).await.unwrap().json().await.unwrap();
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!((held["customers"].as_u64(), held["awaiting_approval"].as_bool()), (Some(3), Some(true)), "{held}");
    assert_eq!(held["etr"], "2030-01-01T18:00:00Z");
    let twice = post(
        "/v1/incidents",
        "o-secret",
        serde_json::json!({"cause": "again", "area": {"postcodes": ["02901", "02902"]}}),
    );
    let twice = twice.await.unwrap();
    assert_eq!(twice.status(), 409, "a doubled declaration over the same area");
    assert!(twice.text().await.unwrap().contains(&id));
    let log = events().await;
    let mine: Vec<&str> = log.iter().filter(|e| e.incident_id.0 == id).map(|e| e.kind.type_name()).collect();
    assert_eq!(mine, ["opened", "scoped", "declared", "updated", "approval_required"], "nothing planned yet");
    assert!(log.iter().filter(|e| e.incident_id.0 == id).all(|e| e.actor == "noc-bob" || e.actor == "planner"));
    let preview: serde_json::Value = get(&format!("/v1/incidents/{id}/preview")).await.unwrap().json().await.unwrap();
    assert_eq!((preview["customers"].as_u64(), preview["postcodes"].as_u64()), (Some(3), Some(2)), "{preview}");
    assert_eq!(preview["channels"]["sms"], 2, "C1 and C2 have numbers, C3 none: {preview}");
    assert_eq!(preview["channels"]["email"], 1, "{preview}");
    assert_eq!(preview["regions"][0]["region"], "029");
    assert_eq!(preview["awaiting_approval"], true);
    assert_eq!(
        post(&format!("/v1/incidents/{id}/approve"), "v-secret", serde_json::json!({})).await.unwrap().status(),
        403
    );
    let approved: serde_json::Value = post(&format!("/v1/incidents/{id}/approve"), "o-secret", serde_json::json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(approved["awaiting_approval"], false);
    let again = post(&format!("/v1/incidents/{id}/approve"), "o-secret", serde_json::json!({}));
    assert_eq!(again.await.unwrap().status(), 409, "nothing left to approve");
    wait_for("the approved and the far notices", Duration::from_secs(60), || {
        let sms = lines(dir.path(), "sms.jsonl");
        let down = |c: &str| sms.iter().any(|a| a["kind"] == "down" && a["customer_id"] == c);
        down("C1") && down("C2") && down("CFAR")
    })
    .await;
    let impact: serde_json::Value = get("/v1/impact?postcode=02902").await.unwrap().json().await.unwrap();
    assert_eq!(impact["incidents"][0]["id"], id.as_str());

    // Link: both sides; not twice, not to itself, not to nothing.
    let link = |other: &str| post(&format!("/v1/incidents/{id}/link"), "o-secret", serde_json::json!({"other": other}));
    let linked: serde_json::Value = link(&far_id).await.unwrap().json().await.unwrap();
    assert_eq!(linked["links"], serde_json::json!([far_id]));
    let other: serde_json::Value = get(&format!("/v1/incidents/{far_id}")).await.unwrap().json().await.unwrap();
    assert_eq!(other["links"], serde_json::json!([id]));
    assert_eq!(link(&far_id).await.unwrap().status(), 409);
    assert_eq!(link(&id).await.unwrap().status(), 409);
    assert_eq!(link("INC-NOPE").await.unwrap().status(), 404);

    // The CLI: by sites, and by a GeoJSON Feature from a file.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl"))
            .args(args)
            .env("OUTAGE_SERVER", format!("http://{addr}"))
            .env("OUTAGE_TOKEN", "o-secret")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = ctl(&["declare", "--site", "S5", "--cause", "power", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let by_site: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(by_site["postcodes"], serde_json::json!(["02903"]));
    assert_eq!(by_site["area"], serde_json::json!({"sites": ["S5"]}));
    let feature = dir.path().join("area.geojson");
    let ring =
        serde_json::json!([[[-71.37, 41.81], [-71.35, 41.81], [-71.35, 41.83], [-71.37, 41.83], [-71.37, 41.81]]]);
    std::fs::write(
        &feature,
        serde_json::json!({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": ring}})
            .to_string(),
    )
    .unwrap();
    let (code, out, err) =
        ctl(&["declare", "--polygon", feature.to_str().unwrap(), "--cause", "flood", "--since", "-20m"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("declared INC-") && out.contains("02903"), "{out}");
    // Server and token from outagectl's config file instead.
    let ctl_config = dir.path().join("outagectl.toml");
    std::fs::write(&ctl_config, format!("server = \"http://{addr}\"\ntoken = \"o-secret\"\n")).unwrap();
    let from_file = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl"))
        .args(["incidents", "--json"])
        .env_remove("OUTAGE_SERVER")
        .env_remove("OUTAGE_TOKEN")
        .env_remove("OUTAGECTL_SERVER")
        .env_remove("OUTAGECTL_TOKEN")
        .env("OUTAGECTL_CONFIG", &ctl_config)
        .output()
        .unwrap();
    assert_eq!(from_file.status.code(), Some(0), "{}", String::from_utf8_lossy(&from_file.stderr));
    assert!(String::from_utf8_lossy(&from_file.stdout).contains(&id));
    let (code, _, err) = ctl(&["declare", "--circle", "0,0,5", "--cause", "nothing there"]);
    assert_eq!(code, Some(6), "no postcode in the circle: {err}");
    assert!(err.contains("no postcode"), "{err}");
    let (code, out, _) = ctl(&["preview", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("0 customers in 0 postcodes not told yet"), "all told now: {out}");

    // Resolve: told customers hear it is back. Alarms never close a NOC
    // incident: after a restart the others are still declared.
    let resolved: serde_json::Value = post(&format!("/v1/incidents/{id}/resolve"), "o-secret", serde_json::json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resolved["state"], "resolved");
    wait_for("the restored notices", Duration::from_secs(60), || {
        lines(dir.path(), "sms.jsonl").iter().filter(|a| a["kind"] == "restored").count() == 2
    })
    .await;
    daemon.stop().await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    wait_for("the API after the restart", Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
    let mut list: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        list = match get("/v1/incidents").await {
            Ok(r) if r.status() == 200 => r.json().await.unwrap(),
            _ => Vec::new(),
        };
        if list.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = |i: &str| list.iter().find(|v| v["id"] == i).map(|v| v["state"].clone());
    assert_eq!(state(&far_id), Some(serde_json::json!("declared")), "{list:?}");
    assert_eq!(state(&id), Some(serde_json::json!("resolved")));
    daemon.stop().await;
    let sms = lines(dir.path(), "sms.jsonl");
    assert_eq!(sms.iter().filter(|a| a["kind"] == "down" && a["customer_id"] == "C1").count(), 1, "told once");
}

/// One thread per customer: a NOC circle drawn over a correlated
/// incident's customers joins them (linked, no second "down"), tells its
/// later ETR as an update following the first "down", leaves them silently
/// when it ends first, and the correlated incident's end tells "restored"
/// once. A restart re-plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noc_area_over_a_correlated_incident_tells_its_customers_one_story() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, addr) = api_config("threads", dir.path(), "noc-carol");
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let t0 = Utc::now() - Cd::hours(1);
    let raised = |id: &str, site: &str| (site.to_string(), alarm(id, site, AlarmState::Raised, t0));
    let alarms = [raised("A1", "S1"), raised("A2", "S2"), raised("A3", "S3")];
    let records: Vec<(&str, String)> = alarms.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    publish(&broker, &cfg.kafka.topics.alarms, &records).await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 3, |s| s.delivered(Channel::Sms) >= 2).await;
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let url = |path: &str| format!("http://{addr}{path}");
    let post = |path: &str, body: serde_json::Value| {
        http.post(url(path)).bearer_auth("o-secret".to_string()).json(&body).send()
    };
    let events = || -> Vec<IncidentEvent> {
        topic_records(&broker, &cfg.kafka.topics.incidents).iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
    };
    let correlated = events().iter().find(|e| e.actor == "correlator").unwrap().incident_id.clone();

    // The NOC draws a circle over 02901 (C1) with an ETR.
    let etr = (Utc::now() + Cd::hours(5)).format("%Y-%m-%dT%H:%M:00Z").to_string();
    let body = serde_json::json!({
        "cause": "power", "area": {"circle": {"lat": 41.822, "lon": -71.408, "radius_km": 0.5}}, "etr": etr,
    });
    let noc: serde_json::Value = post("/v1/incidents", body).await.unwrap().json().await.unwrap();
    let noc_id = noc["id"].as_str().unwrap().to_string();
    assert_eq!(noc["postcodes"], serde_json::json!(["02901"]), "{noc}");
    let sms_of = |kind: &str, incident: &str| -> Vec<serde_json::Value> {
        lines(dir.path(), "sms.jsonl")
            .into_iter()
            .filter(|a| a["kind"] == kind && a["customer_id"] == "C1" && a["incident_id"] == incident)
            .collect()
    };
    wait_for("the NOC incident's ETR to reach C1", Duration::from_secs(60), || {
        !sms_of("etr_update", &noc_id).is_empty()
    })
    .await;
    let update = &sms_of("etr_update", &noc_id)[0];
    assert_eq!(update["follows"], format!("{correlated}/C1/sms/down"), "it follows the first \"down\"");
    assert!(sms_of("down", &noc_id).is_empty(), "no second \"down\"");
    let log = events();
    let planned = log.iter().find(|e| e.incident_id.0 == noc_id && e.kind.type_name() == "planned").unwrap();
    assert!(
        matches!(&planned.kind, EventKind::Planned { silent, .. } if silent == &["02901".to_string()]),
        "{planned:?}"
    );
    let linked = |a: &str, b: &str| {
        log.iter().any(|e| e.incident_id.0 == a && matches!(&e.kind, EventKind::Linked { other } if other.0 == b))
    };
    assert!(linked(&noc_id, &correlated.0) && linked(&correlated.0, &noc_id), "linked both ways");

    // The NOC's incident ends first: C1 is still in the correlated one.
    let resolved = post(&format!("/v1/incidents/{noc_id}/resolve"), serde_json::json!({})).await.unwrap();
    assert_eq!(resolved.status(), 200);
    wait_for("the NOC incident's closing plan", Duration::from_secs(60), || {
        events().iter().any(|e| {
            e.incident_id.0 == noc_id
                && matches!(&e.kind, EventKind::Planned { phase: outage::model::Phase::Restored, .. })
        })
    })
    .await;
    // The correlated incident ends: "restored" once, from it.
    let cleared = |id: &str, site: &str| (site.to_string(), alarm(id, site, AlarmState::Cleared, Utc::now()));
    let clears = [cleared("A1", "S1"), cleared("A2", "S2"), cleared("A3", "S3")];
    let records: Vec<(&str, String)> = clears.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    publish(&broker, &cfg.kafka.topics.alarms, &records).await;
    wait_for("C1's \"restored\"", Duration::from_secs(60), || !sms_of("restored", &correlated.0).is_empty()).await;
    daemon.stop().await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    wait_for("the API after the restart", Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replanned = daemon.stop().await.actions_planned.load(Relaxed);
    assert_eq!(replanned, 0, "a restart re-plans nothing");
    let sms: Vec<serde_json::Value> =
        lines(dir.path(), "sms.jsonl").into_iter().filter(|a| a["customer_id"] == "C1").collect();
    let kinds: Vec<&str> = sms.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["down", "etr_update", "restored"], "one story: {sms:?}");
}

/// Faults: one record too large for any Kafka limit must not stop the
/// daemon. A 2 MB record (over `ingest.max_record_bytes`) and a 200 kB
/// junk record of control bytes (each escaped to six bytes in JSON: 1.2 MB)
/// were dead-lettered whole, over the producer's `message.max.bytes`: the
/// daemon died with `MessageSizeTooLarge` and did again after every restart.
/// Now their dead letters are cut and hashed, and the alarms after them flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_junk_records_are_dead_lettered_cut_and_hashed_and_the_daemon_goes_on() {
    use outage::sources::decode::{sha256_hex, DLQ_PAYLOAD_MAX_BYTES};
    use rdkafka::producer::FutureProducer;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("huge", dir.path());
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    // A feed's producer, not ours: it may send records up to 3 MB.
    let feed: FutureProducer = broker.base_config().set("message.max.bytes", "3000000").create().unwrap();
    let huge = format!("{{\"alarm_id\":\"{}\"}}", "H".repeat(2_000_000));
    let junk = vec![1u8; 200_000];
    let send = |key: &'static str, body: Vec<u8>| {
        let feed = feed.clone();
        let topic = cfg.kafka.topics.alarms.clone();
        async move {
            feed.send(FutureRecord::to(&topic).key(key).payload(&body), Duration::from_secs(10)).await.unwrap();
        }
    };
    send("huge", huge.clone().into_bytes()).await;
    send("junk", junk.clone()).await;
    let t0 = Utc::now() - Cd::minutes(30);
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S4", alarm("A4", "S4", AlarmState::Raised, t0)),
        ],
    )
    .await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 5, |s| s.incidents_declared.load(Relaxed) == 1 && s.alarms_acked.load(Relaxed) == 5).await;
    assert!(!daemon.task.is_finished(), "the daemon is still running");
    let stats = daemon.stop().await;
    assert_eq!(stats.alarms_dead_lettered.load(Relaxed), 2);
    let mut dlq: Vec<DlqRecord> =
        topic_records(&broker, &cfg.kafka.topics.dlq).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(dlq.len(), 2);
    // The two were keyed apart, so they may come back in either order: the
    // larger is the huge one.
    dlq.sort_by_key(|d| std::cmp::Reverse(d.payload_bytes));
    for (d, original) in dlq.iter().zip([huge.as_bytes(), &junk[..]]) {
        assert!(d.payload_truncated, "{}", d.reason);
        assert_eq!(d.payload_bytes, Some(original.len() as u64));
        assert_eq!(d.payload_sha256, Some(sha256_hex(original)));
        assert_eq!(d.payload.len(), DLQ_PAYLOAD_MAX_BYTES);
        assert!(original.starts_with(d.payload.as_bytes()));
    }
    assert!(dlq[0].reason.contains("2000015 bytes is over"), "{}", dlq[0].reason);
    assert!(!lines(dir.path(), "sms.jsonl").is_empty(), "the alarms after them reached customers");
}

/// Faults: a NOC polygon of 1.2 MB (under the API's 2 MB body limit) went
/// into the `scoped` event whole and killed the daemon through the
/// incident log; so would an update with a huge message. Both are refused
/// with 413 before they reach the pipeline's state, and the daemon goes on
/// declaring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_polygon_or_message_is_refused_with_413_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, addr) = api_config("huge-area", dir.path(), "noc-carol");
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let daemon = Daemon::start(&cfg, &broker, refdata());
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    wait_for("the API to be ready", Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("http://{addr}{path}")).bearer_auth("o-secret").json(&body).send()
    };
    // 40 000 vertices on a 5 km circle around Providence: 1.2 MB of GeoJSON.
    let n = 40_000;
    let ring: Vec<[f64; 2]> = (0..=n)
        .map(|i| {
            let a = std::f64::consts::TAU * f64::from(i % n) / f64::from(n);
            [-71.40 + 0.06 * a.cos() + 1e-9 * f64::from(i), 41.82 + 0.045 * a.sin()]
        })
        .collect();
    let polygon = serde_json::json!({"type": "Polygon", "coordinates": [ring]});
    let body = serde_json::json!({"cause": "fibre cut", "area": {"polygon": polygon}});
    assert!(body.to_string().len() > 1_000_000, "{}", body.to_string().len());
    let r = post("/v1/incidents", body).await.unwrap();
    assert_eq!(r.status(), 413);
    let text = r.text().await.unwrap();
    assert!(text.contains("polygon area is") && text.contains("simplify"), "{text}");
    // A small polygon over the same place is declared.
    let small = serde_json::json!({"type": "Polygon", "coordinates": [[
        [-71.42, 41.81], [-71.39, 41.81], [-71.39, 41.835], [-71.42, 41.835], [-71.42, 41.81]]]});
    let r = post("/v1/incidents", serde_json::json!({"cause": "fibre cut", "area": {"polygon": small}})).await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // An update whose message is too large for one incident-log record.
    let r = post(&format!("/v1/incidents/{id}/update"), serde_json::json!({"message": "x".repeat(600_000)}));
    let r = r.await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("incident-log record"));
    let r = post(&format!("/v1/incidents/{id}/update"), serde_json::json!({"message": "crews on site"})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!daemon.task.is_finished(), "the daemon is still running");
    daemon.stop().await;
    let events: Vec<IncidentEvent> = topic_records(&broker, &cfg.kafka.topics.incidents)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().filter(|e| e.incident_id.0 == id).map(|e| e.kind.type_name()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "updated").count(), 1, "{kinds:?}");
    assert!(kinds.starts_with(&["opened", "scoped", "declared"]), "{kinds:?}");
}

/// Faults: the brokers go away mid-run and come back. The daemon used to
/// exit ~5 s after losing them (`AllBrokersDown` from the alarm consumer)
/// while `/readyz` still said 200. Now it keeps its state, `/readyz` says
/// 503 (and `outage_brokers_up` 0) within seconds, 200 again when the
/// broker is back, and the alarms published during the outage make the
/// same incidents and notices as a run without the fault. The embedded
/// mock cluster's broker is taken down (`rd_kafka_mock_broker_set_down`:
/// connections dropped, new ones refused) for longer than the group's
/// session timeout, so the consumers also rejoin their groups after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_outlives_the_broker_and_resumes_where_it_was() {
    if std::env::var("OUTAGE_TEST_BOOTSTRAP").is_ok_and(|b| !b.is_empty()) {
        eprintln!("needs the embedded mock cluster (scripts/e2e.sh stops Tansu itself)");
        return;
    }
    let t0 = Utc::now() - Cd::minutes(30);
    let before = [("S1", alarm("A1", "S1", AlarmState::Raised, t0)), ("S2", alarm("A2", "S2", AlarmState::Raised, t0))];
    let during = [
        ("S4", alarm("A4", "S4", AlarmState::Raised, t0 + Cd::seconds(1))),
        ("S3", alarm("A3", "S3", AlarmState::Raised, t0 + Cd::seconds(2))),
    ];
    type Outcome = (BTreeSet<(String, String, Vec<String>)>, BTreeSet<String>);
    let outcome = |broker: &Broker, cfg: &Config, dir: &Path| -> Outcome {
        let mut incidents: BTreeMap<String, outage::model::Incident> = BTreeMap::new();
        for b in topic_records(broker, &cfg.kafka.topics.incidents) {
            let ev: IncidentEvent = serde_json::from_slice(&b).unwrap();
            let id = ev.incident_id.0.to_string();
            match incidents.get_mut(&id) {
                Some(inc) => {
                    inc.apply(&ev).unwrap();
                }
                None => {
                    incidents.insert(id, outage::model::Incident::open(&ev).unwrap());
                }
            }
        }
        let summary = incidents
            .values()
            .map(|i| (i.id.0.to_string(), i.state.as_str().to_string(), i.notified_postcodes.iter().cloned().collect()))
            .collect();
        let notices = ["sms.jsonl", "email.jsonl"]
            .iter()
            .flat_map(|f| lines(dir, f))
            .map(|l| l["action_id"].as_str().unwrap().to_string())
            .collect();
        (summary, notices)
    };

    // Without the fault.
    let calm = tempfile::tempdir().unwrap();
    let cfg = config("calm", calm.path());
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    publish(&broker, &cfg.kafka.topics.alarms, &before).await;
    publish(&broker, &cfg.kafka.topics.alarms, &during).await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    settle(&daemon.stats, 4, |s| s.incidents_declared.load(Relaxed) == 1).await;
    daemon.stop().await;
    let expected = outcome(&broker, &cfg, calm.path());
    assert_eq!(expected.0.len(), 1, "{expected:?}");
    assert!(!expected.1.is_empty());

    // With it.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, addr) = api_config("outage", dir.path(), "noc-dan");
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    publish(&broker, &cfg.kafka.topics.alarms, &before).await;
    let daemon = Daemon::start(&cfg, &broker, refdata());
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let status = |path: &'static str| {
        let http = http.clone();
        async move {
            match http.get(format!("http://{addr}{path}")).send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        }
    };
    let wait_ready = |want: u16, limit: Duration| async move {
        let t = Instant::now();
        loop {
            if status("/readyz").await.0 == want {
                return t.elapsed();
            }
            assert!(t.elapsed() < limit, "/readyz never answered {want} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Applied (the watermark passed them) and their events written.
    wait_for("the first alarms", Duration::from_secs(60), || {
        let s = &daemon.stats;
        s.alarms_acked.load(Relaxed) == 2 && s.alarms_buffered.load(Relaxed) == 0 && s.events_appended.load(Relaxed) > 0
    })
    .await;
    wait_ready(200, Duration::from_secs(30)).await;
    let retries_before: u64 = outage::kafka::retries().iter().map(|(_, n)| n).sum();

    let mock = broker.embedded().unwrap();
    mock.set_broker_up(1, false).unwrap();
    let to_503 = wait_ready(503, Duration::from_secs(15)).await;
    let metrics = status("/metrics").await.1;
    assert!(metrics.contains("outage_brokers_up 0"), "{metrics}");
    // Published during the outage: the feed's producer holds them.
    let feed = {
        let (broker, topic) = (broker.clone(), cfg.kafka.topics.alarms.clone());
        let during = during.clone();
        tokio::spawn(async move { publish(&broker, &topic, &during).await })
    };
    // Longer than the group's session timeout (6 s): the group rebalances.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!daemon.task.is_finished(), "the daemon died without its broker");
    let retries_during: u64 = outage::kafka::retries().iter().map(|(_, n)| n).sum();
    assert!(retries_during > retries_before, "no retry counted");
    assert!(status("/metrics").await.1.contains("outage_kafka_retries_total{stage="));

    mock.set_broker_up(1, true).unwrap();
    let back = Instant::now();
    let to_200 = wait_ready(200, Duration::from_secs(30)).await;
    feed.await.unwrap();
    settle(&daemon.stats, 4, |s| s.incidents_declared.load(Relaxed) == 1).await;
    let resumed = back.elapsed();
    eprintln!("measured: /readyz 503 {to_503:?} after the broker went, 200 {to_200:?} after it came back; incident declared and notices out {resumed:?} after it came back");
    assert!(!daemon.task.is_finished());
    daemon.stop().await;
    let got = outcome(&broker, &cfg, dir.path());
    assert_eq!(got.0.len(), 1);
    // Incident ids are random per run; compare the rest.
    let strip = |o: &Outcome| {
        let id = o.0.iter().next().unwrap().0.clone();
        let inc: Vec<_> = o.0.iter().map(|(_, s, p)| (s.clone(), p.clone())).collect();
        let notices: BTreeSet<String> = o.1.iter().map(|a| a.replace(&id, "ID")).collect();
        (inc, notices)
    };
    assert_eq!(strip(&got), strip(&expected), "the same incident and notices as without the fault");
}

/// Issue 22 item 1: one daemon split into its roles on one broker, each
/// with its own listener (and the dispatcher its own state directory): the
/// correlator declares and its API applies commands, the dispatcher sends,
/// the api process shows what the correlator's API shows and refuses
/// commands naming the correlator, the dispatcher serves only the probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_split_one_daemon_across_processes() {
    use topology::Role;
    let dir = tempfile::tempdir().unwrap();
    let dispatch_dir = tempfile::tempdir().unwrap();
    let (mut cfg, corr_addr) = api_config("roles", dir.path(), "noc-alice");
    cfg.kafka.partitions = 1; // the correlator role's fence orders a one-partition log
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let t0 = Utc::now() - Cd::hours(1);
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0)),
        ],
    )
    .await;
    let start = |role: Role, cfg: Config| {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (broker, s) = (broker.clone(), stats.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let task =
            tokio::spawn(async move { topology::run_role(role, &cfg, &broker, refdata(), clock, s, shutdown).await });
        Daemon { stats, trigger, task }
    };
    let mut dcfg = cfg.clone();
    dcfg.sinks.outbox_dir = dispatch_dir.path().to_path_buf();
    let disp_addr = free_port();
    dcfg.api.listen = Some(disp_addr);
    let mut acfg = cfg.clone();
    let api_addr = free_port();
    acfg.api.listen = Some(api_addr);
    let correlator = start(Role::Correlator, cfg.clone());
    let dispatcher = start(Role::Dispatcher, dcfg);
    let api = start(Role::Api, acfg);

    // The journal line is written as each notice is accepted; the counter
    // moves once the batch is flushed and acknowledged, a moment later.
    wait_for("the dispatcher to send the SMS", Duration::from_secs(90), || {
        lines(dispatch_dir.path(), "sms.jsonl").len() >= 2 && dispatcher.stats.actions_dispatched.load(Relaxed) > 0
    })
    .await;
    assert!(lines(dir.path(), "sms.jsonl").is_empty(), "the correlator sent notices itself");
    assert!(lines(dispatch_dir.path(), "ivr.jsonl").is_empty(), "the dispatcher touched the IVR");
    assert!(lines(dir.path(), "ivr.jsonl").iter().any(|u| u["active"] == true), "the correlator announces");
    assert_eq!(correlator.stats.actions_dispatched.load(Relaxed), 0);
    assert!(dispatcher.stats.actions_dispatched.load(Relaxed) > 0);

    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let get = |addr: std::net::SocketAddr, path: &str| {
        http.get(format!("http://{addr}{path}")).bearer_auth("o-secret").send()
    };
    let list = |addr| async move {
        let r = get(addr, "/v1/incidents").await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<serde_json::Value>>().await.unwrap()
    };
    let from_correlator = list(corr_addr).await;
    assert_eq!(from_correlator.len(), 1, "{from_correlator:?}");
    let id = from_correlator[0]["id"].as_str().unwrap().to_string();
    let mut from_api = list(api_addr).await;
    for _ in 0..100 {
        if from_api.first().map(|i| &i["postcodes"]) == Some(&from_correlator[0]["postcodes"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        from_api = list(api_addr).await;
    }
    assert_eq!(from_api.len(), 1, "{from_api:?}");
    assert_eq!(
        (&from_api[0]["id"], &from_api[0]["state"], &from_api[0]["postcodes"]),
        (&from_correlator[0]["id"], &from_correlator[0]["state"], &from_correlator[0]["postcodes"]),
        "the api process folds the same incident from the log"
    );
    assert_eq!(get(api_addr, "/readyz").await.unwrap().status(), 200);
    // A command on the api process goes to the leader through
    // outage.commands, with the leader's validation and answer.
    let unknown = http
        .post(format!("http://{api_addr}/v1/incidents/INC-nope/update"))
        .bearer_auth("o-secret")
        .json(&serde_json::json!({ "message": "Crews are on site" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "the leader's answer for an unknown incident");
    let applied = http
        .post(format!("http://{api_addr}/v1/incidents/{id}/update"))
        .bearer_auth("o-secret")
        .json(&serde_json::json!({ "message": "Crews are on site" }))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200, "{:?}", applied.text().await);
    let view: serde_json::Value = applied.json().await.unwrap();
    assert_eq!(view["message"], "Crews are on site", "the answer is the leader's view after the command");
    let mut seen = false;
    for _ in 0..100 {
        let shown = list(api_addr).await;
        if shown[0]["message"] == "Crews are on site" {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the api process shows the update the correlator applied");
    let on_correlator = list(corr_addr).await;
    assert_eq!(on_correlator[0]["message"], "Crews are on site");
    // The dispatcher: probes and metrics only.
    assert_eq!(get(disp_addr, "/readyz").await.unwrap().status(), 200);
    assert_eq!(get(disp_addr, "/metrics").await.unwrap().status(), 200);
    assert_eq!(get(disp_addr, "/v1/incidents").await.unwrap().status(), 404);

    api.stop().await;
    dispatcher.stop().await;
    correlator.stop().await;
}

/// Issue 22 item 2: two `--role correlator` processes; one is elected and
/// correlates, the other follows the log as a standby (reads served,
/// commands refused); when the leader stops, the standby takes over,
/// resolves the incident the first one declared, and the log reads as one
/// history: the leaders' marks, every event stamped by the leader of its
/// time, no `seq` twice. A late write stamped by the deposed leader is
/// ignored by every reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_correlator_takes_over_and_the_log_fences_the_deposed_one() {
    if let Ok(f) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(f).with_test_writer().try_init();
    }
    use topology::Role;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, a_addr) = api_config("leader", dir.path(), "noc-alice");
    cfg.kafka.partitions = 1;
    // `TEST_KAFKA_DEBUG=cgrp TEST_LOG=librdkafka=debug`: the group protocol's log.
    if let Ok(d) = std::env::var("TEST_KAFKA_DEBUG") {
        cfg.kafka.client.insert("debug".into(), d);
    }
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let start = |cfg: Config| {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (broker, s) = (broker.clone(), stats.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let task = tokio::spawn(async move {
            topology::run_role(Role::Correlator, &cfg, &broker, refdata(), clock, s, shutdown).await
        });
        Daemon { stats, trigger, task }
    };
    let a = start(cfg.clone());
    let t0 = Utc::now() - Cd::hours(2);
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Raised, t0)),
            ("S2", alarm("A2", "S2", AlarmState::Raised, t0)),
            ("S3", alarm("A3", "S3", AlarmState::Raised, t0)),
        ],
    )
    .await;
    wait_for("the first correlator to lead and declare", Duration::from_secs(60), || {
        a.stats.incidents_declared.load(Relaxed) == 1
    })
    .await;
    let mut bcfg = cfg.clone();
    let b_addr = free_port();
    bcfg.api.listen = Some(b_addr);
    bcfg.sinks.outbox_dir = dir.path().join("b");
    let b = start(bcfg);
    let http = outage::tls::http_client(&Default::default()).build().unwrap();
    let list = |addr: std::net::SocketAddr| {
        let http = http.clone();
        async move {
            // Not listening yet (a process starting): nothing shown.
            match http.get(format!("http://{addr}/v1/incidents")).bearer_auth("o-secret").send().await {
                Ok(r) => (r.status().as_u16(), r.json::<Vec<serde_json::Value>>().await.unwrap_or_default()),
                Err(_) => (0, vec![]),
            }
        }
    };
    let mut shown = (0, vec![]);
    for _ in 0..200 {
        shown = list(b_addr).await;
        if shown.1.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown.1.len(), 1, "the standby shows the leader's incident: {shown:?}");
    let id = shown.1[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list(a_addr).await.1[0]["id"], id.as_str());
    assert_eq!(b.stats.alarms_read.load(Relaxed), 0, "the standby read alarms");
    let update = |addr: std::net::SocketAddr| {
        http.post(format!("http://{addr}/v1/incidents/{id}/update"))
            .bearer_auth("o-secret")
            .json(&serde_json::json!({ "message": "Crews are on site" }))
            .send()
    };
    // A command on the standby goes to the leader (outage.commands).
    let forwarded = update(b_addr).await.unwrap();
    assert_eq!(forwarded.status(), 200, "{:?}", forwarded.text().await);

    // The leader stops (leaves the group): the standby is elected, folds
    // the log, and takes the alarms from the committed offsets on.
    a.stop().await;
    let stopped = Instant::now();
    publish(
        &broker,
        &cfg.kafka.topics.alarms,
        &[
            ("S1", alarm("A1", "S1", AlarmState::Cleared, t0 + Cd::hours(1))),
            ("S2", alarm("A2", "S2", AlarmState::Cleared, t0 + Cd::hours(1))),
            ("S3", alarm("A3", "S3", AlarmState::Cleared, t0 + Cd::hours(1))),
        ],
    )
    .await;
    wait_for("the standby to take over", Duration::from_secs(60), || b.stats.alarms_read.load(Relaxed) >= 3).await;
    println!("takeover (leader stopped → the standby reads alarms): {:.1} s", stopped.elapsed().as_secs_f64());
    wait_for("the new leader to resolve", Duration::from_secs(60), || b.stats.incidents_open.load(Relaxed) == 0).await;
    // The new leader answers commands itself, with its own validation: the
    // incident is over, so an update is a conflict (not a 503).
    let answered = update(b_addr).await.unwrap();
    assert_eq!(answered.status(), 409, "{:?}", answered.text().await);

    // The log: two marks (epochs 1 and 2), each event stamped by the
    // leader of its time, the incident's seq gap-free.
    let records: Vec<serde_json::Value> = topic_records(&broker, &cfg.kafka.topics.incidents)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let marks: Vec<u64> =
        records.iter().filter(|r| r["mark"] == true).map(|r| r["leader"]["epoch"].as_u64().unwrap()).collect();
    assert_eq!(marks, vec![1, 2]);
    let mut epoch = 0;
    let mut seqs = vec![];
    for r in &records {
        if r["mark"] == true {
            epoch = r["leader"]["epoch"].as_u64().unwrap();
            continue;
        }
        assert_eq!(r["leader"]["epoch"].as_u64(), Some(epoch), "an event stamped by another leader: {r}");
        seqs.push(r["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one gap-free history");
    let of_type = |t: &str| records.iter().filter(|r| r["type"] == t).count();
    assert_eq!(of_type("declared"), 1, "the successor declared the incident again");
    assert!(
        records.iter().any(|r| r["leader"]["epoch"] == 2 && r["type"] != "declared" && r["mark"] != true),
        "the successor wrote the incident's end"
    );

    // The deposed leader wakes and writes: a "resolved" stamped epoch 1.
    let late = {
        let mut r = records.iter().rfind(|r| r["mark"] != true).unwrap().clone();
        r["seq"] = serde_json::json!(seqs.len() as u64 + 1);
        r["leader"] = records.iter().find(|r| r["mark"] == true).unwrap()["leader"].clone();
        r["message"] = serde_json::json!("written by a deposed leader");
        r.to_string()
    };
    publish(&broker, &cfg.kafka.topics.incidents, &[(id.as_str(), late)]).await;
    let mut ccfg = cfg.clone();
    let c_addr = free_port();
    ccfg.api.listen = Some(c_addr);
    let c = {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (broker, s) = (broker.clone(), stats.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let task =
            tokio::spawn(
                async move { topology::run_role(Role::Api, &ccfg, &broker, refdata(), clock, s, shutdown).await },
            );
        Daemon { stats, trigger, task }
    };
    let mut from_api = (0, vec![]);
    for _ in 0..200 {
        from_api = list(c_addr).await;
        if from_api.1.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(from_api.1.len(), 1, "{from_api:?}");
    assert_ne!(from_api.1[0]["message"], "written by a deposed leader", "a fenced write was applied");
    c.stop().await;
    b.stop().await;
}

/// A clock `ahead` of the wall clock.
struct Ahead(Cd);

impl Clock for Ahead {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

/// An in-process JSON SMS gateway: `503` while `down`, else accepts and
/// counts each message by its reference (the action id).
#[derive(Default)]
struct SmsGateway {
    down: std::sync::atomic::AtomicBool,
    taken: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl SmsGateway {
    async fn start() -> (String, Arc<Self>) {
        use axum::extract::State;
        use axum::http::StatusCode;
        let gw = Arc::new(SmsGateway::default());
        let handler = |State(g): State<Arc<SmsGateway>>, axum::Json(v): axum::Json<serde_json::Value>| async move {
            if g.down.load(Relaxed) {
                return (StatusCode::SERVICE_UNAVAILABLE, "down");
            }
            let id = v["reference"].as_str().unwrap_or_default().to_string();
            *g.taken.lock().unwrap().entry(id).or_default() += 1;
            (StatusCode::ACCEPTED, r#"{"id":"m"}"#)
        };
        let app = axum::Router::new().route("/send", axum::routing::post(handler)).with_state(gw.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, gw)
    }

    fn taken(&self) -> BTreeMap<String, usize> {
        self.taken.lock().unwrap().clone()
    }
}

/// Issue 22 item 3: a partition's once-only state moves with it. One
/// dispatcher sends some notices, holds others for the morning and parks
/// others while the gateway is down, and goes; another, with an outbox
/// directory of its own, is given its partitions: it repeats nothing the
/// first sent, sends the follow-ups of what the first sent, and sends what
/// the first held and parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_given_anothers_partitions_sends_what_waited_and_repeats_nothing() {
    use outage::model::{IncidentId, Message};
    use outage::sinks::sms::{SmsGatewayKind, SmsProviderConfig};
    use topology::Role;
    let (url, gw) = SmsGateway::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config("handover", dir_a.path());
    cfg.kafka.partitions = 4;
    cfg.sinks.sms = vec![SmsProviderConfig {
        name: "gw".into(),
        kind: SmsGatewayKind::Json,
        url,
        rate_per_second: 1000,
        max_in_flight: 8,
        timeout: Duration::from_secs(2),
        ..Default::default()
    }];
    cfg.sinks.retry.max_attempts = 1;
    cfg.sinks.retry.base = Duration::from_millis(20);
    cfg.sinks.retry.max = Duration::from_millis(200);
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let inc = IncidentId("INC-20261204-00000001".into());
    let now = Utc::now();
    let action = |c: usize, kind: ActionKind, not_before: Option<DateTime<Utc>>| {
        let customer = format!("C{c:02}");
        let a = Action {
            action_id: Action::key(&inc, &customer, Channel::Sms, kind),
            incident_id: inc.clone(),
            customer_id: customer.clone(),
            channel: Channel::Sms,
            kind,
            to: Some(format!("+140155501{c:02}")),
            language: "en".into(),
            message: Some(Message { subject: None, text: format!("{} for {customer}", kind.as_str()) }),
            until: None,
            credit: None,
            planned_at: now,
            not_before,
            follows: None,
            skip: None,
        };
        (customer, serde_json::to_string(&a).unwrap())
    };
    let send = |records: Vec<(String, String)>| {
        let broker = broker.clone();
        let topic = cfg.kafka.topics.actions.clone();
        async move {
            let r: Vec<(&str, String)> = records.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            publish(&broker, &topic, &r).await;
        }
    };
    let start = |cfg: Config, clock: Arc<dyn Clock>| {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (broker, s) = (broker.clone(), stats.clone());
        let task = tokio::spawn(async move {
            topology::run_role(Role::Dispatcher, &cfg, &broker, refdata(), clock, s, shutdown).await
        });
        Daemon { stats, trigger, task }
    };
    let down_ids = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|c| Action::key(&inc, &format!("C{c:02}"), Channel::Sms, ActionKind::Down)).collect()
    };

    // The first dispatcher: C00–C09 told at once, C10–C19 held for an hour
    // (their morning), then the gateway goes down and C20–C29 are parked.
    let a = start(cfg.clone(), Arc::new(SystemClock));
    let morning = Some(now + Cd::hours(1));
    send(
        (0..10)
            .map(|c| action(c, ActionKind::Down, None))
            .chain((10..20).map(|c| action(c, ActionKind::Down, morning)))
            .collect(),
    )
    .await;
    wait_for("the first to send ten and hold ten", Duration::from_secs(60), || {
        gw.taken().len() == 10 && a.stats.actions_held.load(Relaxed) == 10
    })
    .await;
    gw.down.store(true, Relaxed);
    send((20..30).map(|c| action(c, ActionKind::Down, None)).collect()).await;
    let parked = |dir: &Path| {
        let ids: BTreeSet<String> = lines(dir, "deliveries.jsonl")
            .into_iter()
            .filter(|r| r["outcome"] == "parked")
            .map(|r| r["action_id"].as_str().unwrap().to_string())
            .collect();
        ids
    };
    wait_for("the first to park ten", Duration::from_secs(60), || parked(dir_a.path()).len() == 10).await;
    a.stop().await;
    assert_eq!(gw.taken().len(), 10, "nothing was sent while the gateway was down");

    // The gateway is back; a repeat of five "down"s and the "restored" of
    // the ten told come; a second dispatcher, two hours on (past the
    // morning), with a directory of its own, is given every partition.
    gw.down.store(false, Relaxed);
    send(
        (0..5)
            .map(|c| action(c, ActionKind::Down, None))
            .chain((0..10).map(|c| action(c, ActionKind::Restored, None)))
            .collect(),
    )
    .await;
    let mut cfg_b = cfg.clone();
    cfg_b.sinks.outbox_dir = dir_b.path().to_path_buf();
    let b = start(cfg_b, Arc::new(Ahead(Cd::hours(2))));
    let want: BTreeSet<String> = down_ids(0..30)
        .into_iter()
        .chain((0..10).map(|c| Action::key(&inc, &format!("C{c:02}"), Channel::Sms, ActionKind::Restored)))
        .collect();
    wait_for("the second to send what waited and the follow-ups", Duration::from_secs(90), || {
        gw.taken().len() >= want.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let taken = gw.taken();
    assert_eq!(taken.keys().cloned().collect::<BTreeSet<_>>(), want);
    let twice: Vec<_> = taken.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let stats = b.stop().await;
    assert_eq!(stats.duplicates.load(Relaxed), 5, "the repeated downs are repeats to the second too");
    let sent_b: BTreeSet<String> =
        lines(dir_b.path(), "sms.jsonl").iter().map(|a| a["action_id"].as_str().unwrap().to_string()).collect();
    assert!(down_ids(0..10).iter().all(|id| !sent_b.contains(id)), "the second sent none of the first's downs");
    assert!(down_ids(10..30).iter().all(|id| sent_b.contains(id)), "the second sent every held and parked one");
}

/// Issue 22 item 3 with both running: a dispatcher holding notices for the
/// morning is joined by a second (whose clock is past that morning): the
/// partitions split, the first lets go of the held notices of the
/// customers now the second's, which sends them; when the second goes, the
/// first takes its partitions back and holds none of what the second sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_joining_takes_the_held_notices_of_its_partitions_and_leaving_gives_back_none_sent() {
    use outage::kafka::partition_of;
    use outage::model::{IncidentId, Message};
    use outage::sinks::sms::{SmsGatewayKind, SmsProviderConfig};
    use topology::Role;
    let (url, gw) = SmsGateway::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config("rebalance", dir_a.path());
    cfg.kafka.partitions = 4;
    cfg.sinks.sms = vec![SmsProviderConfig {
        name: "gw".into(),
        kind: SmsGatewayKind::Json,
        url,
        rate_per_second: 1000,
        max_in_flight: 8,
        timeout: Duration::from_secs(2),
        ..Default::default()
    }];
    let broker = Broker::connect(&cfg.kafka).await.unwrap();
    let inc = IncidentId("INC-20261204-00000002".into());
    let now = Utc::now();
    let customers: Vec<String> = (0..40).map(|c| format!("C{c:02}")).collect();
    let records: Vec<(String, String)> = customers
        .iter()
        .enumerate()
        .map(|(i, customer)| {
            let a = Action {
                action_id: Action::key(&inc, customer, Channel::Sms, ActionKind::Down),
                incident_id: inc.clone(),
                customer_id: customer.clone(),
                channel: Channel::Sms,
                kind: ActionKind::Down,
                to: Some(format!("+140155502{i:02}")),
                language: "en".into(),
                message: Some(Message { subject: None, text: "down".into() }),
                until: None,
                credit: None,
                planned_at: now,
                not_before: Some(now + Cd::hours(1)),
                follows: None,
                skip: None,
            };
            (customer.clone(), serde_json::to_string(&a).unwrap())
        })
        .collect();
    let r: Vec<(&str, String)> = records.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    publish(&broker, &cfg.kafka.topics.actions, &r).await;
    let start = |cfg: Config, clock: Arc<dyn Clock>| {
        let stats = Arc::new(Stats::default());
        let (trigger, shutdown) = Shutdown::new();
        let (broker, s) = (broker.clone(), stats.clone());
        let task = tokio::spawn(async move {
            topology::run_role(Role::Dispatcher, &cfg, &broker, refdata(), clock, s, shutdown).await
        });
        Daemon { stats, trigger, task }
    };
    let a = start(cfg.clone(), Arc::new(SystemClock));
    wait_for("the first to hold all forty", Duration::from_secs(60), || a.stats.actions_waiting.load(Relaxed) == 40)
        .await;

    let mut cfg_b = cfg.clone();
    cfg_b.sinks.outbox_dir = dir_b.path().to_path_buf();
    let b = start(cfg_b, Arc::new(Ahead(Cd::hours(2))));
    // The split: the first keeps some partitions' customers held, the
    // second sends the others'.
    wait_for("the partitions to split and the second to send its share", Duration::from_secs(90), || {
        let (held, sent) = (a.stats.actions_waiting.load(Relaxed) as usize, gw.taken().len());
        held > 0 && sent > 0 && held + sent == 40
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent: BTreeSet<String> = gw.taken().keys().map(|id| id.split('/').nth(1).unwrap().to_string()).collect();
    let partitions_of =
        |cs: &BTreeSet<String>| -> BTreeSet<i32> { cs.iter().map(|c| partition_of(c.as_bytes(), 4)).collect() };
    let kept: BTreeSet<String> = customers.iter().filter(|c| !sent.contains(*c)).cloned().collect();
    assert!(
        partitions_of(&sent).is_disjoint(&partitions_of(&kept)),
        "whole partitions moved: sent {:?}, kept {:?}",
        partitions_of(&sent),
        partitions_of(&kept)
    );
    assert!(gw.taken().values().all(|n| *n == 1), "{:?}", gw.taken());

    // The second goes; the first takes its partitions back: what the
    // second sent is not held again.
    b.stop().await;
    wait_for("the first to take every partition back", Duration::from_secs(60), || {
        std::fs::read_to_string(dir_a.path().join("held.jsonl")).is_ok()
            && a.stats.actions_waiting.load(Relaxed) as usize == kept.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await; // past a rebalance's takeover
    assert_eq!(a.stats.actions_waiting.load(Relaxed) as usize, kept.len(), "nothing the second sent is held again");
    assert_eq!(gw.taken().len(), sent.len(), "and the first sent nothing");
    a.stop().await;
}
