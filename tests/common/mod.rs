//! What the integration tests share: a config of their own on the test
//! broker, and native alarm records.

use chrono::{DateTime, Utc};
use outage::config::Config;
use outage::model::{Alarm, AlarmState, Severity};
use std::time::Duration;

/// The broker at `OUTAGE_TEST_BOOTSTRAP` (else the embedded one), topics and
/// group unique to this run of `tag` (tests may share one real broker, and
/// reruns must not see an earlier run's records), three partitions; an
/// incident is declared at three sites and resolved as soon as they are up.
pub fn config(tag: &str) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.bootstrap = std::env::var("OUTAGE_TEST_BOOTSTRAP").ok().filter(|s| !s.is_empty());
    cfg.kafka.partitions = 3;
    let run = format!("{tag}-{}-{}", std::process::id(), Utc::now().timestamp_micros());
    let t = &mut cfg.kafka.topics;
    for name in [
        &mut t.alarms,
        &mut t.dlq,
        &mut t.incidents,
        &mut t.actions,
        &mut t.credits,
        &mut t.deliveries,
        &mut t.control,
        &mut t.commands,
        &mut t.ledger,
    ] {
        *name = format!("{name}.{run}");
    }
    cfg.kafka.group_id = format!("outaged-{run}");
    cfg.correlator.min_sites = 3;
    cfg.correlator.declare_sites = 3;
    cfg.correlator.hold_down = Duration::ZERO;
    // Alarms are applied as soon as every partition has gone past them, and
    // a quiet feed lets the watermark follow the clock quickly.
    cfg.ingest.lateness = Duration::ZERO;
    cfg.ingest.idle_after = Duration::from_millis(300);
    cfg.api.listen = None; // tests run side by side; the API test picks a port
    cfg
}

/// A native v1 alarm record: a power failure (X.733 `powerProblem`) raised
/// (critical) or cleared on `site`.
pub fn alarm(id: &str, site: &str, state: AlarmState, at: DateTime<Utc>) -> String {
    let a = Alarm {
        alarm_id: id.into(),
        site_id: site.into(),
        state,
        severity: if state == AlarmState::Raised { Severity::Critical } else { Severity::Cleared },
        probable_cause: "powerProblem".into(),
        event_time: at,
        lat: None,
        lon: None,
        specific_problem: Some(format!("mains failure at {site}")),
    };
    serde_json::to_string(&a).expect("an alarm serializes")
}

/// The real gateways' side (`make e2e` only).
#[allow(dead_code)]
pub mod gw;
