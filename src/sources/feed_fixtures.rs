//! Feed records under `tests/fixtures/feeds/<family>/`, written for this
//! project after the public samples of each standard (see
//! `tests/fixtures/feeds/README.md`): every spec-valid record decodes to the
//! alarm it describes, and the notifications that change no alarm are dead
//! letters with a reason, never silently dropped.

use super::decode::{decode_formats, Format};
use super::elements::{ElementRule, Elements};
use crate::model::{Alarm, AlarmState, EventKind, Severity};
use crate::refdata::{load_elements, load_sites, RefData};
use crate::transforms::classify::CauseClass;
use crate::transforms::correlate::Correlator;
use crate::transforms::correlate::CorrelatorConfig;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feeds")
}

fn decoded(file: &str) -> Vec<(Format, Result<Alarm, super::decode::DecodeError>)> {
    let bytes = std::fs::read(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    decode_formats(&bytes)
}

/// What one alarm of a fixture must decode to.
struct Want {
    format: Format,
    alarm_id: &'static str,
    element: &'static str,
    state: AlarmState,
    severity: Severity,
    cause: &'static str,
    specific: Option<&'static str>,
    time: &'static str,
}

#[allow(clippy::too_many_arguments)]
fn want(
    format: Format,
    alarm_id: &'static str,
    element: &'static str,
    (state, severity): (AlarmState, Severity),
    cause: &'static str,
    specific: Option<&'static str>,
    time: &'static str,
) -> Want {
    Want { format, alarm_id, element, state, severity, cause, specific, time }
}

const RAISED_CRITICAL: (AlarmState, Severity) = (AlarmState::Raised, Severity::Critical);
const RAISED_MAJOR: (AlarmState, Severity) = (AlarmState::Raised, Severity::Major);
const CLEARED: (AlarmState, Severity) = (AlarmState::Cleared, Severity::Cleared);
const LOS_DETAIL: Option<&str> = Some("LOS on CPRI link 1 towards RRU-2");

fn alarms() -> Vec<(&'static str, Vec<Want>)> {
    use Format::{StndDefined as Stnd, Tmf642 as Tmf, Ves};
    vec![
        (
            "ves/fault-7.2-los-raise.json",
            vec![want(
                Ves,
                "fault-enb-0042-cpri1-los",
                "S-CT-000002-enb-1",
                RAISED_CRITICAL,
                "lossOfSignal",
                LOS_DETAIL,
                "2026-11-23T04:12:09.1Z",
            )],
        ),
        (
            "ves/fault-7.2-los-clear.json",
            vec![want(
                Ves,
                "fault-enb-0042-cpri1-los",
                "S-CT-000002-enb-1",
                CLEARED,
                "lossOfSignal",
                LOS_DETAIL,
                "2026-11-23T05:20:30.5Z",
            )],
        ),
        (
            "ves/fault-7.0-onap-exponent-epoch.json",
            vec![want(
                Ves,
                "fault0000917",
                "S-CT-000001",
                RAISED_MAJOR,
                "PilotNumberPoolExhaustion",
                Some("Calls cannot complete - pilot numbers are unavailable"),
                "2021-10-07T12:10:37.561Z",
            )],
        ),
        (
            "ves/fault-5.4-v2-name-value-pairs.json",
            vec![want(
                Ves,
                "router-17-if-3-down",
                "S-CT-000001",
                RAISED_MAJOR,
                "linkDown",
                Some("ge-0/0/3 down: carrier lost"),
                "2026-11-23T02:13:32Z",
            )],
        ),
        (
            "ves/fault-4.x-v1-functional-role.json",
            vec![want(
                Ves,
                "owb-rdm-0042 7",
                "owb-rdm-0042",
                RAISED_CRITICAL,
                "lossOfSignal",
                None,
                "2026-11-23T04:10:00Z",
            )],
        ),
        (
            "ves/fault-7.2-oran-sc-quoted-epochs.json",
            vec![want(
                Ves,
                "o-ru-0042-cus-plane-lost-1",
                "O-RU-0042",
                RAISED_MAJOR,
                "C/U-plane logical Connection faulty",
                None,
                "2026-11-23T04:12:20Z",
            )],
        ),
        (
            "ves/event-list-fault-heartbeat-stnddefined.json",
            vec![
                want(
                    Ves,
                    "fault-enb-0043-mains",
                    "S-CT-000002-enb-1",
                    RAISED_MAJOR,
                    "powerProblem",
                    Some("Mains failure, running on batteries"),
                    "2026-11-23T04:12:11Z",
                ),
                want(
                    Stnd,
                    "gnb-0007-temp-1",
                    "SubNetwork=CT,ManagedElement=gnb-0007,GNBDUFunction=1",
                    (AlarmState::Raised, Severity::Minor),
                    "temperatureUnacceptable",
                    Some("Cabinet temperature 61 C"),
                    "2026-11-23T04:12:12Z",
                ),
            ],
        ),
        (
            "stnddefined/notify-new-alarm-los.json",
            vec![want(
                Stnd,
                "ENB-0042:cpri-1:lossOfSignal",
                "SubNetwork=CT,ManagedElement=ENB-0042,ENBFunction=1",
                RAISED_CRITICAL,
                "lossOfSignal",
                LOS_DETAIL,
                "2026-11-23T04:12:09.1Z",
            )],
        ),
        (
            "stnddefined/notify-cleared-alarm-los.json",
            vec![want(
                Stnd,
                "ENB-0042:cpri-1:lossOfSignal",
                "SubNetwork=CT,ManagedElement=ENB-0042,ENBFunction=1",
                CLEARED,
                "lossOfSignal",
                None,
                "2026-11-23T05:20:30.5Z",
            )],
        ),
        (
            "stnddefined/notify-changed-alarm-general-vendor-numbers.json",
            vec![want(
                Stnd,
                "77012",
                "ManagedElement=gnb-0007,GNBCUCPFunction=1",
                RAISED_MAJOR,
                "157",
                Some("3021"),
                "2026-11-23T03:18:20Z",
            )],
        ),
        (
            "tmf642/alarm-create-event-los.json",
            vec![want(
                Tmf,
                "90210",
                "CELL-0042-1",
                RAISED_CRITICAL,
                "lossOfSignal",
                LOS_DETAIL,
                "2026-11-23T04:12:09.1Z",
            )],
        ),
        (
            "tmf642/alarm-state-change-event-cleared.json",
            vec![want(
                Tmf,
                "90210",
                "CELL-0042-1",
                (AlarmState::Cleared, Severity::Critical),
                "lossOfSignal",
                LOS_DETAIL,
                "2026-11-23T05:20:30.5Z",
            )],
        ),
        (
            "tmf642/alarm-attribute-value-change-vendor-acknowledged.json",
            vec![want(
                Tmf,
                "A-77",
                "4417",
                RAISED_MAJOR,
                "powerProblem",
                Some("Rectifier 2 output low"),
                "2026-11-23T04:29:58Z",
            )],
        ),
        (
            "tmf642/alarm-delete-event.json",
            vec![want(
                Tmf,
                "A-77",
                "4417",
                (AlarmState::Cleared, Severity::Major),
                "powerProblem",
                None,
                "2026-11-23T06:00:00Z",
            )],
        ),
        (
            "tmf642/alarm-resource-severity-cleared.json",
            vec![want(
                Tmf,
                "al-cl-5",
                "S-CT-000001",
                (AlarmState::Cleared, Severity::Cleared),
                "equipmentMalfunction",
                None,
                "2026-11-23T03:45:10Z",
            )],
        ),
    ]
}

/// Records that carry no alarm change: (file, dead-letter class, words
/// the reason must hold).
const NO_ALARM: [(&str, &str, &[&str]); 3] = [
    ("stnddefined/notify-alarm-list-rebuilt.json", "unsupported", &["notifyAlarmListRebuilt", "re-align"]),
    ("stnddefined/notify-ack-state-changed.json", "no_alarm_change", &["notifyAckStateChanged", "ENB-0042"]),
    ("tmf642/ack-alarms-create-event.json", "no_alarm_change", &["AckAlarmsCreateEvent"]),
];

#[test]
fn every_feed_fixture_decodes_to_the_alarm_it_describes() {
    for (file, wants) in alarms() {
        let got = decoded(file);
        assert_eq!(got.len(), wants.len(), "{file}: {got:?}");
        for ((format, got), w) in got.into_iter().zip(wants) {
            let a = got.unwrap_or_else(|e| panic!("{file}: dead letter for a spec-valid record: {e}"));
            assert_eq!(format, w.format, "{file}");
            assert_eq!((a.alarm_id.as_str(), a.site_id.as_str()), (w.alarm_id, w.element), "{file}");
            assert_eq!((a.state, a.severity), (w.state, w.severity), "{file}");
            assert_eq!(a.probable_cause, w.cause, "{file}");
            assert_eq!(a.specific_problem.as_deref(), w.specific, "{file}");
            assert_eq!(a.event_time, w.time.parse::<chrono::DateTime<chrono::Utc>>().unwrap(), "{file}");
        }
    }
}

#[test]
fn notifications_without_an_alarm_change_are_dead_letters_with_a_reason() {
    for (file, class, words) in NO_ALARM {
        let got = decoded(file);
        assert_eq!(got.len(), 1, "{file}: {got:?}");
        let err = got[0].1.as_ref().expect_err(file);
        assert_eq!(err.class(), class, "{file}: {err}");
        for w in words {
            assert!(err.to_string().contains(w), "{file}: {err}");
        }
    }
}

#[test]
fn every_fixture_file_is_checked() {
    let listed: Vec<String> = alarms()
        .into_iter()
        .map(|(f, _)| f.to_string())
        .chain(NO_ALARM.iter().map(|(f, _, _)| f.to_string()))
        .collect();
    for family in ["ves", "stnddefined", "tmf642"] {
        for entry in std::fs::read_dir(dir().join(family)).unwrap() {
            let name = format!("{family}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(listed.contains(&name), "{name} is not asserted by any test");
        }
    }
}

/// The demo sites with the fixture element table, and rules for the
/// element names the fixtures use.
fn resolver() -> (RefData, Elements) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sites = load_sites(&root.join("data/demo/sites.csv")).unwrap();
    let table = load_elements(&dir().join("elements.csv"), &sites).unwrap();
    let rd = RefData::build(sites, vec![], vec![]).unwrap().with_elements(table).unwrap();
    let rule = |format, pattern: &str| ElementRule { format, pattern: pattern.into() };
    let elements = Elements::new(&[
        rule(Format::Ves, r"^(?P<site>S-[A-Z]{2}-\d+)-"),
        rule(Format::StndDefined, r"(?:^|,)ManagedElement=(?P<site>[^,]+)"),
    ])
    .unwrap();
    (rd, elements)
}

#[test]
fn a_critical_loss_of_signal_raise_and_its_clear_pair_in_every_family() {
    let (rd, elements) = resolver();
    for (raise, clear) in [
        ("ves/fault-7.2-los-raise.json", "ves/fault-7.2-los-clear.json"),
        ("stnddefined/notify-new-alarm-los.json", "stnddefined/notify-cleared-alarm-los.json"),
        ("tmf642/alarm-create-event-los.json", "tmf642/alarm-state-change-event-cleared.json"),
    ] {
        let one = |file: &str| {
            let mut all = decoded(file);
            assert_eq!(all.len(), 1, "{file}");
            let (format, a) = all.remove(0);
            let mut a = a.unwrap_or_else(|e| panic!("{file}: {e}"));
            elements.resolve(&rd, format, &mut a).unwrap_or_else(|e| panic!("{file}: {e}"));
            a
        };
        let (r, c) = (one(raise), one(clear));
        assert_eq!(
            (r.state, r.severity, r.probable_cause.as_str()),
            (AlarmState::Raised, Severity::Critical, "lossOfSignal"),
            "{raise}"
        );
        assert!(c.is_clear(), "{clear}: {c:?}");
        assert_eq!(r.alarm_id, c.alarm_id, "{raise} and {clear} pair on the alarm id");
        assert_eq!((r.site_id.as_str(), c.site_id.as_str()), ("S-CT-000002", "S-CT-000002"), "{raise}");
        assert!(r.event_time < c.event_time);
        // With the default correlator configuration (no cause list): the
        // standard cause is service-affecting, the raise opens an incident
        // and its clear closes it.
        let rd = std::sync::Arc::new(RefData::build(load_sites(&sites_csv()).unwrap(), vec![], vec![]).unwrap());
        let mut c1 = Correlator::new(CorrelatorConfig::default(), rd);
        let opened = c1.on_alarm(&r).unwrap();
        let kinds: Vec<&str> = opened.iter().map(|e| e.kind.type_name()).collect();
        assert_eq!(kinds, ["opened", "alarms_raised"], "{raise}");
        assert!(
            matches!(&opened[0].kind, EventKind::Opened { cause, detail } if cause == "lossOfSignal" && detail.is_some())
        );
        assert_eq!(c1.tally.by_class[CauseClass::Transmission as usize], 1);
        c1.on_alarm(&c).unwrap();
        c1.tick(c.event_time + chrono::Duration::minutes(1));
        let inc = c1.incidents().next().unwrap();
        assert!(!inc.state.is_open(), "{clear} closes it: {:?}", inc.state);
    }
}

fn sites_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/sites.csv")
}

/// Every fixture's cause the standards name is classified by the table;
/// the others (a numeric code, which 3GPP leaves to vendors; O-RAN
/// fronthaul's own fault name from O-RAN SC's template; ONAP's sample
/// `PilotNumberPoolExhaustion`) are not, and are what an operator maps with
/// `[[causes.rules]]`.
#[test]
fn fixture_causes_are_classified_unless_a_vendor_invented_them() {
    let classifier = crate::transforms::classify::Classifier::default();
    let mut unclassified = std::collections::BTreeSet::new();
    for (file, _) in alarms() {
        for (_, a) in decoded(file) {
            let Ok(a) = a else { continue };
            if classifier.classify(&a.probable_cause).is_none() {
                unclassified.insert(a.probable_cause);
            }
        }
    }
    let vendor: Vec<&str> =
        unclassified.iter().map(String::as_str).filter(|c| !c.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(vendor, ["C/U-plane logical Connection faulty", "PilotNumberPoolExhaustion"], "{unclassified:?}");
}
