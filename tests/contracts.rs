//! The published JSON contracts in `schemas/` and the serde types in
//! `outage::model` must describe the same records. These tests check it from
//! both sides:
//!
//! - every schema is a valid Draft 2020-12 schema, and `schemas/` holds
//!   exactly the schemas listed in [`SCHEMAS`];
//! - every example in `schemas/examples/` validates against its schema (chosen
//!   by file-name prefix: `alarm.v1.raised.json` -> `alarm.v1.schema.json`),
//!   deserializes into the Rust type, and serializes back to the same JSON;
//! - every example in `schemas/examples/invalid/` is rejected by its schema;
//! - Rust values built here (every enum variant, every event kind) serialize
//!   to JSON that validates against the *closed* schema (see [`closed`]), so a
//!   field added or renamed in Rust without updating the schema fails here.
//!
//! Schemas are open (`additionalProperties: true`: consumers ignore unknown
//! fields, so additive changes stay v1). That alone would let an undocumented
//! Rust field through, hence the closed variant for what Rust produces.

use chrono::{DateTime, Utc};
use outage::model::money::{Currency, Money};
use outage::model::{
    Action, ActionKind, Alarm, AlarmRef, AlarmState, Area, Channel, Credit, EventKind, IncidentEvent, IncidentId,
    IncidentState, IvrUpsert, Message, Phase, Severity,
};
use outage::sources::decode::{decode, DlqRecord};
use outage::sources::SourceRecord;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every schema, by file stem (`<stem>.schema.json`), with the Rust type its
/// records deserialize into (`None`: no Rust type yet).
const SCHEMAS: &[(&str, Option<RoundTrip>)] = &[
    ("alarm.v1", Some(round_trip::<Alarm>)),
    ("incident-event.v1", Some(round_trip::<IncidentEvent>)),
    ("action.v1", Some(round_trip::<Action>)),
    ("credit.v1", Some(round_trip::<Credit>)),
    ("ivr-upsert.v1", Some(round_trip::<IvrUpsert>)),
    ("dlq.v1", Some(round_trip::<DlqRecord>)),
    ("replay-report.v1", Some(round_trip::<outage::replay::ReplayReport>)),
    // Foreign formats: no Rust type of their own, they decode into `Alarm`
    // (checked by `foreign_examples_decode_and_encoders_conform`).
    ("ves-fault.v7", None),
    ("tmf642-alarm.v4", None),
];

/// Deserialize into the Rust type and serialize back.
type RoundTrip = fn(&Value) -> Result<Value, String>;

fn round_trip<T: Serialize + DeserializeOwned>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| format!("does not deserialize: {e}"))?;
    serde_json::to_value(&t).map_err(|e| format!("does not serialize: {e}"))
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn schema(stem: &str) -> Value {
    read_json(&schemas_dir().join(format!("{stem}.schema.json")))
}

/// Draft 2020-12 with `format` asserted (date-time, uuid, email), as every
/// consumer validating these records should configure it.
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

/// Validation errors of `instance`, one line each. A failed `oneOf` on the
/// event type only says "not valid under any of the schemas", so for a
/// record with a `type` the errors of the matching branch are added.
fn errors(schema: &Value, instance: &Value) -> Vec<String> {
    let fmt = |v: &jsonschema::Validator| -> Vec<String> {
        v.iter_errors(instance).map(|e| format!("at {:?}: {e}", e.instance_path().to_string())).collect()
    };
    let mut out = fmt(&validator(schema));
    if let (false, Some(branches), Some(ty)) = (out.is_empty(), schema["oneOf"].as_array(), instance["type"].as_str()) {
        if let Some(branch) = branches.iter().find(|b| b["properties"]["type"]["const"] == ty) {
            let mut one = schema.clone();
            let m = one.as_object_mut().unwrap();
            m.remove("oneOf");
            m.insert("allOf".into(), json!([branch]));
            out.extend(fmt(&validator(&one)).into_iter().map(|e| format!("(branch {ty:?}) {e}")));
        }
    }
    out
}

/// The schema with every property that is not documented rejected: drops
/// `additionalProperties: true` and adds
/// `unevaluatedProperties: false` to the root and to every subschema in a
/// value position (`properties/*`, `items`, `$defs/*`), but not to branches
/// of `oneOf`/`allOf`/`if`/`then`/`else`, which describe only part of their
/// object (the envelope's fields are evaluated by the root, the event's by a
/// `oneOf` branch; `unevaluatedProperties` at the root sees both). On a
/// non-object value the keyword has no effect.
fn closed(schema: &Value) -> Value {
    fn walk(s: &mut Value, value_position: bool) {
        let Value::Object(m) = s else { return };
        // `additionalProperties: true` marks every property as evaluated,
        // which would switch `unevaluatedProperties` off: drop it.
        if m.get("additionalProperties") == Some(&Value::Bool(true)) {
            m.remove("additionalProperties");
        }
        if value_position && m.get("additionalProperties") != Some(&Value::Bool(false)) {
            m.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
        for (k, child) in m.iter_mut() {
            match k.as_str() {
                "properties" | "$defs" | "patternProperties" => {
                    if let Value::Object(children) = child {
                        children.values_mut().for_each(|c| walk(c, true));
                    }
                }
                "items" | "additionalProperties" => walk(child, true),
                "oneOf" | "anyOf" | "allOf" | "prefixItems" => {
                    if let Value::Array(branches) = child {
                        branches.iter_mut().for_each(|b| walk(b, false));
                    }
                }
                "if" | "then" | "else" | "not" => walk(child, false),
                _ => {}
            }
        }
    }
    let mut s = schema.clone();
    walk(&mut s, true);
    s
}

/// `<stem>` of the schema an example belongs to: the longest schema stem the
/// file name starts with, followed by a dot.
fn stem_of(file_name: &str) -> &'static str {
    SCHEMAS
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| file_name.strip_prefix(s).is_some_and(|rest| rest.starts_with('.')))
        .max_by_key(|s| s.len())
        .unwrap_or_else(|| panic!("example {file_name}: no schema for its prefix (expected <stem>.<case>.json)"))
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[test]
fn schemas_are_draft_2020_12_and_all_registered() {
    // The HTTP contracts we call (`*.openapi.json`) are checked by the
    // sinks' own tests against local servers.
    let on_disk: BTreeSet<String> = json_files(&schemas_dir())
        .iter()
        .filter(|p| !file_name(p).ends_with(".openapi.json"))
        .map(|p| {
            file_name(p)
                .strip_suffix(".schema.json")
                .unwrap_or_else(|| panic!("{}: not a *.schema.json", p.display()))
                .to_string()
        })
        .collect();
    let listed: BTreeSet<String> = SCHEMAS.iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(on_disk, listed, "schemas/ and SCHEMAS in tests/contracts.rs disagree");
    for (stem, _) in SCHEMAS {
        let s = schema(stem);
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema", "{stem}");
        assert_eq!(s["$id"], format!("https://schemas.outage.invalid/{stem}.schema.json"), "{stem}");
        if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
            panic!("{stem}: not a valid 2020-12 schema: {e}");
        }
        validator(&s);
        validator(&closed(&s));
    }
}

#[test]
fn valid_examples_validate_and_round_trip_through_rust() {
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for path in json_files(&schemas_dir().join("examples")) {
        let name = file_name(&path);
        let stem = stem_of(name);
        covered.insert(stem);
        let example = read_json(&path);
        let s = schema(stem);
        let strict = validator(&closed(&s));
        let errs = errors(&s, &example);
        if !errs.is_empty() {
            failures.push(format!("{name}: invalid against {stem}.schema.json: {errs:#?}"));
            continue;
        }
        // `*.extra-fields.json` shows that undocumented fields are tolerated;
        // every other example uses only documented fields.
        let extra = name.contains("extra-fields");
        if extra == strict.is_valid(&example) {
            failures.push(format!(
                "{name}: {}",
                if extra { "named extra-fields but has no undocumented field" } else { "has undocumented fields" }
            ));
        }
        let Some(rt) = SCHEMAS.iter().find(|(s, _)| *s == stem).unwrap().1 else { continue };
        match rt(&example) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(back) => {
                let errs = errors(&closed(&s), &back);
                if !errs.is_empty() {
                    failures.push(format!("{name}: Rust re-serialization breaks the closed schema: {errs:#?}"));
                }
                // Examples are written in the canonical form (timestamps as
                // chrono writes them, `...Z`), so a field the schema documents
                // but Rust drops or renames shows up here.
                if !extra && back != example {
                    failures
                        .push(format!("{name}: Rust does not round-trip it\n  example: {example}\n  rust:    {back}"));
                }
            }
        }
    }
    for (stem, _) in SCHEMAS {
        if !covered.contains(stem) {
            failures.push(format!("{stem}: no example in schemas/examples/"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn invalid_examples_are_rejected() {
    let dir = schemas_dir().join("examples").join("invalid");
    let files = json_files(&dir);
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in files {
        let name = file_name(&path);
        let stem = stem_of(name);
        let example = read_json(&path);
        let errs = errors(&schema(stem), &example);
        if errs.is_empty() {
            failures.push(format!("{name}: accepted by {stem}.schema.json"));
            continue;
        }
        // Informational: where the Rust reader is more lenient than the contract.
        let rust = match SCHEMAS.iter().find(|(s, _)| *s == stem).unwrap().1 {
            Some(rt) if rt(&example).is_ok() => "Rust accepts it",
            Some(_) => "Rust rejects it",
            None => "no Rust type",
        };
        eprintln!("{name}: rejected ({rust}): {}", errs.last().unwrap());
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Rust values -> schema

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::parse("USD").unwrap())
}

fn inc() -> IncidentId {
    IncidentId::derive("S-RI-000241", "NMS-7781342", t("2026-11-23T04:12:09Z"))
}

/// Validate `value`'s JSON against the closed schema `stem`.
fn assert_conforms<T: Serialize>(stem: &str, what: &str, value: &T) -> Value {
    let v = serde_json::to_value(value).unwrap();
    let errs = errors(&closed(&schema(stem)), &v);
    assert!(errs.is_empty(), "{what} does not conform to {stem}.schema.json: {errs:#?}\n{v:#}");
    v
}

fn alarm(state: AlarmState, severity: Severity) -> Alarm {
    Alarm {
        alarm_id: "NMS-7781342".into(),
        site_id: "S-RI-000241".into(),
        state,
        severity,
        probable_cause: "mains power failure".into(),
        event_time: t("2026-11-23T04:12:09Z"),
        lat: None,
        lon: None,
        specific_problem: None,
    }
}

fn credit() -> Credit {
    let incident = inc();
    Credit {
        credit_id: Credit::id_for(&incident, "C00021237", "mobile", "pro-rata-daily"),
        customer_id: "C00021237".into(),
        incident_id: incident,
        service: "mobile".into(),
        amount: usd(133),
        rule_id: "pro-rata-daily".into(),
        outage_start: t("2026-11-23T04:12:09Z"),
        outage_end: t("2026-11-23T09:47:31Z"),
        outage_seconds: 20_122,
        calculation: "1 day of 40.00 USD / 30 days = 1.33 USD".into(),
    }
}

fn action(channel: Channel, kind: ActionKind) -> Action {
    let customer = "C00021237";
    let (to, message) = match channel {
        Channel::Sms => {
            (Some("+14015438361".into()), Some(Message { subject: None, text: "Outage in your area.".into() }))
        }
        Channel::Email => (
            Some("john.evans.377@example.net".into()),
            Some(Message { subject: Some("Outage in your area".into()), text: "We are on it.".into() }),
        ),
        Channel::DataGrant | Channel::Credit => (None, None),
    };
    Action {
        action_id: Action::key(&inc(), customer, channel, kind),
        incident_id: inc(),
        customer_id: customer.into(),
        channel,
        kind,
        to,
        language: "en".into(),
        message,
        until: (kind == ActionKind::Grant).then(|| t("2026-11-24T10:00:00Z")),
        credit: (channel == Channel::Credit).then(credit),
        planned_at: t("2026-11-23T04:17:45Z"),
        not_before: None,
    }
}

fn every_event_kind() -> Vec<EventKind> {
    let a = |id: &str, site: &str, at: &str| AlarmRef { alarm_id: id.into(), site_id: site.into(), at: t(at) };
    vec![
        EventKind::Opened { cause: "mains power failure".into(), detail: Some("mains failure at S-1".into()) },
        EventKind::AlarmsRaised {
            alarms: vec![
                a("NMS-7781342", "S-RI-000241", "2026-11-23T04:12:09Z"),
                a("NMS-7781345", "S-RI-000242", "2026-11-23T04:12:17.5Z"),
            ],
        },
        EventKind::AlarmsCleared { alarms: vec![a("NMS-7781342", "S-RI-000241", "2026-11-23T09:47:31Z")] },
        EventKind::Declared { reason: "3 sites down for 300 s".into(), pending: vec![], confirm_joiners: false },
        EventKind::Declared {
            reason: "10 sites down (>= 10)".into(),
            pending: vec!["S-RI-000243".into()],
            confirm_joiners: true,
        },
        EventKind::Updated {
            cause: Some("utility power".into()),
            etr: Some(t("2026-11-23T10:00:00Z")),
            message: Some("Generators on site.".into()),
        },
        EventKind::Updated { cause: None, etr: Some(t("2026-11-23T11:00:00Z")), message: None },
        EventKind::Resolved { restored_at: t("2026-11-23T09:47:31Z") },
        EventKind::Cancelled { reason: "maintenance window".into() },
        EventKind::Dismissed {},
        EventKind::Linked { other: IncidentId("INC-20261123-1e956900".into()) },
        EventKind::Merged { into: IncidentId("INC-20261123-1e956900".into()) },
        EventKind::Confirmed { sites: vec!["S-RI-000251".into(), "S-RI-000260".into()] },
        EventKind::Dropped { sites: vec!["S-RI-000243".into()], reason: "blip: down 1m 40s (< blip_window 5m)".into() },
        EventKind::Planned { phase: Phase::Down, postcodes: vec!["02903".into(), "02904".into()], actions: 4127 },
        EventKind::Planned { phase: Phase::Restored, postcodes: vec!["02903".into()], actions: 0 },
        EventKind::Scoped { area: Area::Postcodes(vec!["02903".into()]), postcodes: vec!["02903".into()] },
        EventKind::Scoped {
            area: Area::Circle { lat: 41.82, lon: -71.41, radius_km: 3.0 },
            postcodes: vec!["02903".into(), "02904".into()],
        },
        EventKind::Scoped {
            area: Area::Polygon(
                serde_json::json!({"type": "Polygon", "coordinates": [[[-71.5, 41.8], [-71.3, 41.8], [-71.3, 41.9], [-71.5, 41.8]]]}),
            ),
            postcodes: vec!["02903".into()],
        },
        EventKind::ApprovalRequired { customers: 84_211 },
        EventKind::Approved {},
    ]
}

#[test]
fn rust_alarms_conform() {
    for state in all_alarm_states() {
        for severity in all_severities() {
            assert_conforms("alarm.v1", &format!("{state:?}/{severity:?} alarm"), &alarm(state, severity));
        }
    }
    let with_coords = Alarm { lat: Some(41.82118), lon: Some(-71.40377), ..alarm(AlarmState::Raised, Severity::Major) };
    assert_conforms("alarm.v1", "alarm with coordinates", &with_coords);
    let millis = Alarm { event_time: t("2026-11-23T04:12:09.123Z"), ..alarm(AlarmState::Raised, Severity::Major) };
    assert_conforms("alarm.v1", "alarm with sub-second event time", &millis);
}

#[test]
fn rust_incident_events_conform_and_cover_every_type() {
    let mut seen = BTreeSet::new();
    for (i, kind) in every_event_kind().into_iter().enumerate() {
        let name = EventKind::type_name(&kind);
        seen.insert(name.to_string());
        let ev = IncidentEvent {
            incident_id: inc(),
            seq: i as u64 + 1,
            at: t("2026-11-23T04:12:09Z"),
            actor: if name == "updated" { "noc:jdoe".into() } else { "correlator".into() },
            kind,
        };
        let v = assert_conforms("incident-event.v1", name, &ev);
        assert_eq!(v["type"], name);
    }
    let s = schema("incident-event.v1");
    let in_enum: BTreeSet<String> = strings(&s["properties"]["type"]["enum"]);
    let in_one_of: BTreeSet<String> = s["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties"]["type"]["const"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, in_enum, "Rust event kinds vs the schema's `type` enum");
    assert_eq!(seen, in_one_of, "Rust event kinds vs the schema's oneOf branches");
}

#[test]
fn rust_actions_conform() {
    let pairs = [
        (Channel::Sms, ActionKind::Down),
        (Channel::Sms, ActionKind::Restored),
        (Channel::Sms, ActionKind::EtrUpdate),
        (Channel::Email, ActionKind::Cancelled),
        (Channel::Email, ActionKind::Down),
        (Channel::Email, ActionKind::Restored),
        (Channel::DataGrant, ActionKind::Grant),
        (Channel::DataGrant, ActionKind::Revoke),
        (Channel::Credit, ActionKind::Credit),
    ];
    let channels: BTreeSet<Channel> = pairs.iter().map(|p| p.0).collect();
    assert_eq!(channels, Channel::ALL.into_iter().collect(), "a channel has no action here");
    for kind in all_action_kinds() {
        assert!(pairs.iter().any(|p| p.1 == kind), "{kind:?} has no action here");
    }
    for (channel, kind) in pairs {
        let v = assert_conforms("action.v1", &format!("{channel:?}/{kind:?} action"), &action(channel, kind));
        assert_eq!(v["action_id"], format!("{}/C00021237/{}/{}", inc(), channel.as_str(), kind.as_str()));
    }
    // Combinations the planner must not produce are rejected.
    let strict = validator(&closed(&schema("action.v1")));
    for (channel, kind) in [
        (Channel::Sms, ActionKind::Grant),
        (Channel::DataGrant, ActionKind::Down),
        (Channel::Email, ActionKind::Credit),
    ] {
        let v = serde_json::to_value(action(channel, kind)).unwrap();
        assert!(!strict.is_valid(&v), "{channel:?}/{kind:?} should be rejected");
    }
}

#[test]
fn rust_credit_and_ivr_conform() {
    assert_conforms("credit.v1", "credit", &credit());
    let jpy = Credit { amount: Money::new(180, Currency::parse("JPY").unwrap()), ..credit() };
    assert_conforms("credit.v1", "JPY credit", &jpy);
    let ivr = IvrUpsert {
        region: "RI-PROVIDENCE".into(),
        active: true,
        message: "We are aware of an outage in Providence.".into(),
        language: "en".into(),
        messages: [
            ("en", "We are aware of an outage in Providence."),
            ("es", "Sabemos que hay una avería en Providence."),
        ]
        .map(|(l, m)| (l.to_string(), m.to_string()))
        .into(),
        incident_id: inc(),
        valid_until: t("2026-11-23T10:00:00Z"),
    };
    assert_conforms("ivr-upsert.v1", "active IVR upsert", &ivr);
    assert_conforms(
        "ivr-upsert.v1",
        "inactive IVR upsert",
        &IvrUpsert { active: false, message: String::new(), messages: Default::default(), ..ivr },
    );
}

/// The closed schema really catches a field Rust would add without telling
/// the schema (guards the mechanism the other tests rely on).
#[test]
fn closed_schemas_reject_undocumented_fields() {
    let cases: [(&str, Value, &[&str]); 4] = [
        ("alarm.v1", serde_json::to_value(alarm(AlarmState::Raised, Severity::Major)).unwrap(), &[""]),
        (
            "incident-event.v1",
            serde_json::to_value(IncidentEvent {
                incident_id: inc(),
                seq: 1,
                at: t("2026-11-23T04:12:09Z"),
                actor: "correlator".into(),
                kind: EventKind::Opened { cause: "x".into(), detail: None },
            })
            .unwrap(),
            &[""],
        ),
        (
            "action.v1",
            serde_json::to_value(action(Channel::Credit, ActionKind::Credit)).unwrap(),
            &["", "/credit", "/credit/amount"],
        ),
        ("credit.v1", serde_json::to_value(credit()).unwrap(), &["", "/amount"]),
    ];
    for (stem, v, pointers) in cases {
        let s = schema(stem);
        let (open, strict) = (validator(&s), validator(&closed(&s)));
        assert!(strict.is_valid(&v), "{stem}: baseline");
        for ptr in pointers {
            let mut w = v.clone();
            w.pointer_mut(ptr).unwrap().as_object_mut().unwrap().insert("undocumented".into(), json!(1));
            assert!(open.is_valid(&w), "{stem}{ptr}: the open schema must tolerate unknown fields");
            assert!(!strict.is_valid(&w), "{stem}{ptr}: the closed schema must reject unknown fields");
        }
    }
}

// ---------------------------------------------------------------------------
// Enums: every Rust variant is in the schema, every schema value parses.
// The helpers list variants with an exhaustive match, so a new variant does
// not compile until it is listed (and then checked against the schema).

fn all_alarm_states() -> Vec<AlarmState> {
    let v = vec![AlarmState::Raised, AlarmState::Cleared];
    v.iter().for_each(|x| match x {
        AlarmState::Raised | AlarmState::Cleared => {}
    });
    v
}

fn all_severities() -> Vec<Severity> {
    let v = vec![Severity::Critical, Severity::Major, Severity::Minor, Severity::Warning, Severity::Cleared];
    v.iter().for_each(|x| match x {
        Severity::Critical | Severity::Major | Severity::Minor | Severity::Warning | Severity::Cleared => {}
    });
    v
}

fn all_action_kinds() -> Vec<ActionKind> {
    use ActionKind::*;
    let v = vec![Down, EtrUpdate, Restored, Cancelled, Grant, Revoke, Credit];
    v.iter().for_each(|x| match x {
        Down | EtrUpdate | Restored | Cancelled | Grant | Revoke | Credit => {}
    });
    v
}

fn all_phases() -> Vec<Phase> {
    let v = vec![Phase::Down, Phase::Restored, Phase::EtrUpdate];
    v.iter().for_each(|x| match x {
        Phase::Down | Phase::Restored | Phase::EtrUpdate => {}
    });
    v
}

fn all_incident_states() -> Vec<IncidentState> {
    use IncidentState::*;
    let v = vec![Probable, Declared, Resolved, Cancelled, Dismissed, Merged];
    v.iter().for_each(|x| match x {
        Probable | Declared | Resolved | Cancelled | Dismissed | Merged => {}
    });
    v
}

/// Fails to compile when `EventKind` gains a variant that
/// [`every_event_kind`] does not yet list.
fn listed_event_kind(k: &EventKind) {
    use EventKind::*;
    match k {
        Opened { .. } | AlarmsRaised { .. } | AlarmsCleared { .. } | Declared { .. } | Updated { .. } => {}
        Resolved { .. } | Cancelled { .. } | Dismissed {} | Linked { .. } | Merged { .. } | Planned { .. } => {}
        Scoped { .. } | ApprovalRequired { .. } | Approved {} | Confirmed { .. } | Dropped { .. } => {}
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn check_enum<T: Serialize + DeserializeOwned + std::fmt::Debug>(stem: &str, pointer: &str, variants: &[T]) {
    let s = schema(stem);
    let values = strings(s.pointer(pointer).unwrap_or_else(|| panic!("{stem}#{pointer} missing")));
    let rust: BTreeSet<String> =
        variants.iter().map(|x| serde_json::to_value(x).unwrap().as_str().unwrap().to_string()).collect();
    assert_eq!(rust, values, "{stem}#{pointer}: Rust variants vs schema enum");
    for value in &values {
        serde_json::from_value::<T>(json!(value))
            .unwrap_or_else(|e| panic!("{stem}#{pointer}: {value:?} does not parse: {e}"));
    }
}

#[test]
fn enums_agree() {
    check_enum("alarm.v1", "/properties/state/enum", &all_alarm_states());
    check_enum("alarm.v1", "/properties/severity/enum", &all_severities());
    check_enum("action.v1", "/properties/channel/enum", &Channel::ALL);
    check_enum("action.v1", "/properties/kind/enum", &all_action_kinds());
    check_enum("replay-report.v1", "/$defs/incident/properties/state/enum", &all_incident_states());
    let reasons = strings(&schema("replay-report.v1")["properties"]["ignored"]["propertyNames"]["enum"]);
    let rust: BTreeSet<String> =
        outage::transforms::correlate::Counts::default().by_reason().iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(rust, reasons, "replay-report.v1 ignored reasons");
    every_event_kind().iter().for_each(listed_event_kind);
    let s = schema("incident-event.v1");
    let planned =
        s["oneOf"].as_array().unwrap().iter().find(|b| b["properties"]["type"]["const"] == "planned").unwrap();
    let phases: BTreeSet<String> = strings(&planned["properties"]["phase"]["enum"]);
    let rust: BTreeSet<String> =
        all_phases().iter().map(|p| serde_json::to_value(p).unwrap().as_str().unwrap().to_string()).collect();
    assert_eq!(rust, phases, "planned.phase");
}

// ---------------------------------------------------------------------------
// Consistency between files

/// action.v1 embeds a copy of credit.v1's definitions (no remote `$ref`
/// resolution in validators); the copies must not drift.
#[test]
fn embedded_credit_definitions_are_identical_copies() {
    let (action, credit) = (schema("action.v1"), schema("credit.v1"));
    for def in ["Credit", "Money"] {
        assert_eq!(action["$defs"][def], credit["$defs"][def], "$defs/{def} differs between action.v1 and credit.v1");
    }
}

/// The ids in the examples are derived the way the schemas document.
#[test]
fn example_ids_are_derived_as_documented() {
    let ex = schemas_dir().join("examples");
    let alarm = read_json(&ex.join("alarm.v1.raised.json"));
    let opened = read_json(&ex.join("incident-event.v1.opened.json"));
    let id = IncidentId::derive(
        alarm["site_id"].as_str().unwrap(),
        alarm["alarm_id"].as_str().unwrap(),
        t(alarm["event_time"].as_str().unwrap()),
    );
    assert_eq!(opened["incident_id"], id.0.as_str());
    let credit = read_json(&ex.join("credit.v1.json"));
    let field = |k: &str| credit[k].as_str().unwrap().to_string();
    let cid = Credit::id_for(
        &IncidentId(field("incident_id").into()),
        &field("customer_id"),
        &field("service"),
        &field("rule_id"),
    );
    assert_eq!(credit["credit_id"], cid.to_string());
    let action = read_json(&ex.join("action.v1.credit.json"));
    assert_eq!(action["credit"], credit, "action.v1.credit.json embeds credit.v1.json");
}

/// The VES and TMF642 examples decode to the alarms they describe, their
/// invalid examples are refused by the decoder too, and what the encoders
/// (used by `outagectl simulate --format`) write meets the closed schemas.
#[test]
fn foreign_examples_decode_and_encoders_conform() {
    use outage::sources::decode::decode_all;
    use outage::sources::{tmf642, ves};
    let ex = schemas_dir().join("examples");
    let decoded = |name: &str| -> Vec<Alarm> {
        let text = std::fs::read(ex.join(name)).unwrap();
        decode_all(&text).into_iter().map(|r| r.unwrap_or_else(|e| panic!("{name}: {e}"))).collect()
    };
    let one = decoded("ves-fault.v7.event.json");
    assert_eq!(one.len(), 1);
    let a = &one[0];
    assert_eq!((a.alarm_id.as_str(), a.site_id.as_str()), ("fault-ne-ri-0241-0001", "S-RI-000241"));
    assert_eq!((a.state, a.severity, a.lat), (AlarmState::Raised, Severity::Critical, Some(41.82118)));
    assert_eq!((a.probable_cause.as_str(), a.event_time), ("mainsPowerFailure", t("2026-11-23T04:12:09Z")));
    assert_eq!(a.specific_problem.as_deref(), Some("mains power failure"), "specificProblem is the free text");
    let list = decoded("ves-fault.v7.event-list.json");
    assert_eq!(list.len(), 2, "the heartbeat carries no alarm");
    assert!(list[0].is_clear() && list[0].site_id == "S-RI-000242" && list[0].event_time == t("2026-11-23T06:11:42Z"));
    assert_eq!((list[1].severity, list[1].event_time), (Severity::Major, t("2026-11-23T06:11:50Z")));
    let raise = decoded("tmf642-alarm.v4.create-event.json").remove(0);
    let clear = decoded("tmf642-alarm.v4.cleared-resource.json").remove(0);
    assert_eq!(raise.alarm_id, clear.alarm_id, "raise and clear pair on the resource id");
    assert_eq!((raise.probable_cause.as_str(), raise.event_time), ("equipmentMalfunction", t("2026-11-23T04:12:09Z")));
    assert_eq!(raise.specific_problem.as_deref(), Some("equipment failure"));
    assert!(clear.is_clear() && clear.event_time == t("2026-11-23T06:40:31Z"));
    for path in json_files(&ex.join("invalid")) {
        let name = file_name(&path);
        if name.starts_with("ves-") || name.starts_with("tmf642-") {
            let results = decode_all(&std::fs::read(&path).unwrap());
            assert!(results.iter().any(Result::is_err), "{name}: the decoder accepts it: {results:?}");
        }
    }
    let mut located = alarm(AlarmState::Raised, Severity::Major);
    (located.lat, located.lon) = (Some(41.82118), Some(-71.40377));
    for state in all_alarm_states() {
        for severity in all_severities() {
            let a = alarm(state, severity);
            let what = format!("{state:?}/{severity:?}");
            assert_conforms("ves-fault.v7", &what, &json!({ "event": ves::encode_event(&a, 7) }));
            assert_conforms("tmf642-alarm.v4", &what, &tmf642::encode_notification(&a));
            let back = decode_all(tmf642::encode_notification(&a).to_string().as_bytes()).remove(0).unwrap();
            assert_eq!((back.is_clear(), &back.alarm_id, back.event_time), (a.is_clear(), &a.alarm_id, a.event_time));
        }
    }
    let batch = json!({ "eventList": [ves::encode_event(&located, 1), ves::encode_event(&alarm(AlarmState::Cleared, Severity::Major), 2)] });
    assert_conforms("ves-fault.v7", "eventList", &batch);
    let back: Vec<Alarm> = decode_all(batch.to_string().as_bytes()).into_iter().map(Result::unwrap).collect();
    assert_eq!(back[0], located);
}

#[test]
fn rust_dead_letters_conform() {
    for payload in [&b"not json"[..], b"", b"\xff\xfe", br#"{"alarm_id":"A1"}"#] {
        let rec =
            SourceRecord { topic: "noc.alarms".into(), partition: 2, offset: 41, key: None, payload: payload.to_vec() };
        let reason = decode(payload).unwrap_err().to_string();
        let dlq = DlqRecord::new(&rec, reason, t("2026-11-23T06:00:00Z"));
        assert_conforms("dlq.v1", &format!("dead letter for {payload:?}"), &dlq);
    }
}

/// What the planner really emits (not hand-built values) meets the
/// published contracts, on every channel and kind.
#[test]
fn planned_actions_conform() {
    use outage::model::{Customer, Incident, Postcode, Services, Site};
    use outage::refdata::RefData;
    use outage::transforms::plan::PlanConfig;
    use outage::transforms::plan::Planner;
    let usd = |minor| Money::new(minor, Currency::parse("USD").unwrap());
    let rd = RefData::build(
        vec![Site { site_id: "S1".into(), lat: 41.82, lon: -71.41, radius_km: 2.0, group_id: None }],
        vec![Postcode { postcode: "02901".into(), lat: 41.821, lon: -71.409, population: None, timezone: None }],
        vec![Customer {
            customer_id: "C1".into(),
            msisdn: Some("+14015550101".into()),
            email: Some("c1@example.com".into()),
            postcode: "02901".into(),
            language: "es".into(),
            services: Services::parse("mobile;voice;broadband").unwrap(),
            opt_out: Default::default(),
            monthly_fee: usd(4500),
            avg_bill_3m: usd(5000),
        }],
    )
    .unwrap();
    let planner = Planner::new(PlanConfig::default(), std::sync::Arc::new(rd)).unwrap();
    let ev = |seq, at: &str, kind| IncidentEvent { incident_id: inc(), seq, at: t(at), actor: "test".into(), kind };
    let a = |at: &str| vec![AlarmRef { alarm_id: "A1".into(), site_id: "S1".into(), at: t(at) }];
    let mut incident =
        Incident::open(&ev(1, "2026-11-23T06:00:00Z", EventKind::Opened { cause: "power".into(), detail: None }))
            .unwrap();
    incident
        .apply(&ev(2, "2026-11-23T06:00:00Z", EventKind::AlarmsRaised { alarms: a("2026-11-23T06:00:00Z") }))
        .unwrap();
    incident
        .apply(&ev(
            3,
            "2026-11-23T06:02:00Z",
            EventKind::Declared { reason: "test".into(), pending: vec![], confirm_joiners: false },
        ))
        .unwrap();
    let down = planner.plan_down(&incident, &planner.footprint(&incident), t("2026-11-23T06:02:00Z"));
    let planned = EventKind::Planned { phase: Phase::Down, postcodes: down.postcodes.clone(), actions: 3 };
    incident.apply(&ev(4, "2026-11-23T06:02:00Z", planned)).unwrap();
    incident
        .apply(&ev(5, "2026-11-23T09:00:00Z", EventKind::AlarmsCleared { alarms: a("2026-11-23T09:00:00Z") }))
        .unwrap();
    incident
        .apply(&ev(6, "2026-11-23T09:10:00Z", EventKind::Resolved { restored_at: t("2026-11-23T09:00:00Z") }))
        .unwrap();
    let restored = planner.plan_restored(&incident, t("2026-11-23T09:10:00Z"));
    let mut seen = BTreeSet::new();
    let actions = [planner.actions(&incident, &down), planner.actions(&incident, &restored)].concat();
    for action in &actions {
        seen.insert((action.channel, action.kind as u8));
        assert_conforms("action.v1", &action.action_id, action);
        if let Some(c) = &action.credit {
            assert_conforms("credit.v1", &action.action_id, c);
        }
    }
    assert_eq!(seen.len(), 7, "sms+email down/restored, grant, revoke, credit: {seen:?}");
    for u in planner.ivr(&incident, &planner.footprint(&incident), t("2026-11-23T09:10:00Z")) {
        assert_conforms("ivr-upsert.v1", &u.region, &u);
    }
}

/// `outaged --check --alarms FILE`: before going live, an operator learns
/// which of the feed's elements and causes the configuration does not
/// cover; exit 1 while anything is not, 0 once it all is.
#[test]
fn check_alarms_names_the_elements_and_causes_the_configuration_does_not_cover() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let line = |id: &str, site: &str, cause: &str| {
        format!(
            r#"{{"alarm_id":"{id}","site_id":"{site}","state":"raised","severity":"critical","probable_cause":"{cause}","event_time":"2026-11-23T06:00:00Z"}}"#
        )
    };
    let covered = [line("A1", "S-CT-000001", "LOSS_OF_SIGNAL"), line("A2", "S-CT-000003", "power problem")];
    let mut all = covered.to_vec();
    all.push(line("A3", "S-CT-000004", "ALM-4471"));
    all.push(line("A4", "ENB-NOPE-1", "powerProblem"));
    let write = |name: &str, lines: &[String]| {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    };
    let (good, bad) = (write("good.jsonl", &covered), write("bad.jsonl", &all));
    let run = |file: &Path, config: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outaged"));
        cmd.current_dir(root).arg("--check").arg("--alarms").arg(file);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.env_remove("OUTAGE_CONFIG").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&bad, None);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("4 alarms, 1 not usable, 1 raises of unclassified causes"), "{out}");
    assert!(out.contains("\"ENB-NOPE-1\""), "the unknown element is named: {out}");
    assert!(out.contains("×1: \"ALM-4471\""), "the unclassified cause is named: {out}");
    assert!(out.contains("transmission 1") && out.contains("power 1"), "{out}");
    // A rule for the vendor string covers it; the element stays unknown.
    let cfg = dir.path().join("rules.toml");
    std::fs::write(&cfg, "[[causes.rules]]\nmatch = \"glob\"\npattern = \"ALM-44*\"\nclass = \"equipment\"\n").unwrap();
    let (code, out) = run(&bad, Some(&cfg));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("0 raises of unclassified causes") && out.contains("equipment 1"), "{out}");
    let (code, out) = run(&good, None);
    assert_eq!(code, Some(0), "everything covered: {out}");
    // A bad rule is a configuration error naming its key.
    std::fs::write(&cfg, "[[causes.rules]]\nmatch = \"regex\"\npattern = \"(\"\nclass = \"power\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outaged"))
        .current_dir(root)
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("causes.rules[0].pattern"), "{out:?}");
}
