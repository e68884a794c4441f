//! ONAP VES 7.x fault events → [`Alarm`] (and back, for the simulator and
//! tests). Contract: `schemas/ves-fault.v7.schema.json`.
//!
//! A record is one `{"event": {...}}` or a batch `{"eventList": [...]}`.
//! Mapping (VES event listener 7.x, fault fields 4.0):
//! - `alarm_id` ← `commonEventHeader.eventId`: VES keeps one `eventId` for the
//!   raise and every later change or clear of one fault;
//! - `site_id` ← `alarmAdditionalInformation.site_id` (or `siteId`), else
//!   `commonEventHeader.sourceName`; coordinates from `lat`/`lon` (or
//!   `latitude`/`longitude`) there, as numbers or as the strings a VES
//!   hashMap carries;
//! - state and severity ← `faultFields.eventSeverity`: `NORMAL` is a clear;
//!   `CRITICAL`/`MAJOR`/`MINOR`/`WARNING` raise;
//! - `probable_cause` ← `faultFields.specificProblem`, else `alarmCondition`;
//! - `event_time` ← `commonEventHeader.lastEpochMicrosec` (when this change
//!   happened), else `startEpochMicrosec`.
//!
//! Events of other domains (heartbeat, measurement, …) share the collector
//! feed and carry no alarm: they decode to nothing rather than to dead
//! letters. `faultFieldsVersion` may be a string (`"4.0"`) or a number (`4`,
//! `4.0`); versions other than 3.x and 4.x are refused.

use crate::model::{Alarm, AlarmState, Severity};
use crate::sources::decode::{DecodeError, Fields};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// Whether a JSON object is a VES record (`event` with a
/// `commonEventHeader`, or `eventList`).
pub fn detect(obj: &Map<String, Value>) -> bool {
    obj.contains_key("eventList") || obj.get("event").is_some_and(|e| e.get("commonEventHeader").is_some())
}

/// The alarms of one VES record: one result per event, so one bad event of
/// a batch is dead-lettered without losing the others.
pub fn decode(obj: &Map<String, Value>) -> Vec<Result<Alarm, DecodeError>> {
    if let Some(list) = obj.get("eventList") {
        let Some(list) = list.as_array() else {
            return vec![Err(DecodeError::field("eventList", "not an array"))];
        };
        return list
            .iter()
            .enumerate()
            .filter_map(|(i, ev)| event(ev).transpose().map(|r| r.map_err(|e| e.at_item("eventList", i))))
            .collect();
    }
    obj.get("event").map(|ev| event(ev).transpose()).into_iter().flatten().collect()
}

/// One event: `Ok(None)` for a non-fault domain.
fn event(ev: &Value) -> Result<Option<Alarm>, DecodeError> {
    let ev = Fields::root(ev, "")?;
    let header = ev.object("commonEventHeader")?;
    let domain = header.str("domain")?;
    if domain != "fault" {
        return Ok(None);
    }
    let fault = ev.object("faultFields")?;
    check_version(fault.get("faultFieldsVersion"))?;
    let severity = fault.str("eventSeverity")?;
    let (state, severity) = match severity.to_ascii_uppercase().as_str() {
        "NORMAL" => (AlarmState::Cleared, Severity::Cleared),
        "CRITICAL" => (AlarmState::Raised, Severity::Critical),
        "MAJOR" => (AlarmState::Raised, Severity::Major),
        "MINOR" => (AlarmState::Raised, Severity::Minor),
        "WARNING" => (AlarmState::Raised, Severity::Warning),
        other => {
            return Err(DecodeError::field(
                "faultFields.eventSeverity",
                format!("{other:?} is not CRITICAL, MAJOR, MINOR, WARNING or NORMAL"),
            ))
        }
    };
    let info = match fault.get("alarmAdditionalInformation") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => additional_information(v)?,
    };
    let info_str = |keys: &[&str]| keys.iter().find_map(|k| info.get(*k)).cloned();
    let site_id = match info_str(&["site_id", "siteId"]) {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => {
            return Err(DecodeError::field("faultFields.alarmAdditionalInformation.site_id", "not a non-empty string"))
        }
        None => header.str("sourceName")?.to_string(),
    };
    let coord = |keys: &[&str], field: &'static str| -> Result<Option<f64>, DecodeError> {
        match info_str(keys) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| DecodeError::field(field, format!("{s:?} is not a number"))),
            Some(_) => Err(DecodeError::field(field, "not a number")),
        }
    };
    let lat = coord(&["lat", "latitude"], "faultFields.alarmAdditionalInformation.lat")?;
    let lon = coord(&["lon", "longitude"], "faultFields.alarmAdditionalInformation.lon")?;
    let probable_cause = match fault.opt_str("specificProblem")? {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => fault.str("alarmCondition")?.to_string(),
    };
    let micros = match header.opt_i64("lastEpochMicrosec")? {
        Some(m) => m,
        None => header.i64("startEpochMicrosec")?,
    };
    let event_time = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| {
        DecodeError::field("commonEventHeader.lastEpochMicrosec", format!("{micros} is out of range"))
    })?;
    Ok(Some(Alarm {
        alarm_id: header.str("eventId")?.to_string(),
        site_id,
        state,
        severity,
        probable_cause,
        event_time,
        lat,
        lon,
        specific_problem: None,
    }))
}

/// VES 7 sends a hashMap (object); VES 5 sent `[{"name":…,"value":…}]`.
fn additional_information(v: &Value) -> Result<Map<String, Value>, DecodeError> {
    const FIELD: &str = "faultFields.alarmAdditionalInformation";
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::Array(items) => items
            .iter()
            .map(|item| match (item.get("name").and_then(Value::as_str), item.get("value")) {
                (Some(k), Some(v)) => Ok((k.to_string(), v.clone())),
                _ => Err(DecodeError::field(FIELD, "array items need `name` and `value`")),
            })
            .collect(),
        _ => Err(DecodeError::field(FIELD, "not an object")),
    }
}

fn check_version(v: Option<&Value>) -> Result<(), DecodeError> {
    const FIELD: &str = "faultFields.faultFieldsVersion";
    let text = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(DecodeError::field(FIELD, "not a string or a number")),
        None => return Err(DecodeError::field(FIELD, "missing")),
    };
    match text.trim().split('.').next() {
        Some("3" | "4") => Ok(()),
        _ => Err(DecodeError::field(FIELD, format!("version {text:?} is not 3.x or 4.x"))),
    }
}

/// One alarm as a VES 7.2 fault event (the `event` object's content),
/// deterministic: the same alarm gives the same bytes. `sequence` is the
/// event's place in its source's stream.
pub fn encode_event(a: &Alarm, sequence: u64) -> Value {
    let micros = a.event_time.timestamp_micros();
    let severity = match (a.is_clear(), a.severity) {
        (true, _) | (false, Severity::Cleared) => "NORMAL",
        (false, Severity::Critical) => "CRITICAL",
        (false, Severity::Major) => "MAJOR",
        (false, Severity::Minor) => "MINOR",
        (false, Severity::Warning) => "WARNING",
    };
    let mut info = Map::new();
    info.insert("site_id".into(), a.site_id.clone().into());
    if let (Some(lat), Some(lon)) = (a.lat, a.lon) {
        info.insert("lat".into(), lat.to_string().into());
        info.insert("lon".into(), lon.to_string().into());
    }
    json!({
        "commonEventHeader": {
            "domain": "fault",
            "eventId": a.alarm_id,
            "eventName": format!("Fault_Site_{}", camel(&a.probable_cause)),
            "sourceName": a.site_id,
            "reportingEntityName": "outage-simulator",
            "priority": if a.severity == Severity::Critical { "High" } else { "Medium" },
            "sequence": sequence,
            "startEpochMicrosec": micros,
            "lastEpochMicrosec": micros,
            "version": "4.1",
            "vesEventListenerVersion": "7.2.1"
        },
        "faultFields": {
            "faultFieldsVersion": "4.0",
            "alarmCondition": camel(&a.probable_cause),
            "specificProblem": a.probable_cause,
            "eventSeverity": severity,
            "eventSourceType": "site",
            "vfStatus": "Active",
            "alarmAdditionalInformation": info
        }
    })
}

/// `"mains power failure"` → `"mainsPowerFailure"`, the usual shape of a VES
/// `alarmCondition`.
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, w) in s.split_whitespace().enumerate() {
        let mut cs = w.chars();
        if let Some(c) = cs.next() {
            if i == 0 {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            out.push_str(cs.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::decode::decode_all;

    fn alarm(state: AlarmState, severity: Severity) -> Alarm {
        Alarm {
            alarm_id: "ev-1".into(),
            site_id: "S-1".into(),
            state,
            severity,
            probable_cause: "mains power failure".into(),
            event_time: "2026-11-23T06:00:00.25Z".parse().unwrap(),
            lat: None,
            lon: None,
            specific_problem: None,
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity_up_to_clear_severity() {
        let raise = alarm(AlarmState::Raised, Severity::Critical);
        let rec = json!({ "event": encode_event(&raise, 1) }).to_string();
        assert_eq!(decode_all(rec.as_bytes()), vec![Ok(raise.clone())]);
        let clear = alarm(AlarmState::Cleared, Severity::Critical);
        let rec = json!({ "event": encode_event(&clear, 2) }).to_string();
        let got = decode_all(rec.as_bytes()).remove(0).unwrap();
        assert!(got.is_clear() && got.alarm_id == raise.alarm_id && got.event_time == raise.event_time);
    }

    #[test]
    fn event_list_keeps_good_events_and_names_the_bad_one() {
        let ev = |site: &str| {
            let mut a = alarm(AlarmState::Raised, Severity::Major);
            a.site_id = site.into();
            encode_event(&a, 1)
        };
        let mut bad = ev("S-2");
        bad["faultFields"]["eventSeverity"] = "LOUD".into();
        let mut heartbeat = ev("S-3");
        heartbeat["commonEventHeader"]["domain"] = "heartbeat".into();
        let rec = json!({ "eventList": [ev("S-1"), bad, heartbeat, ev("S-4")] }).to_string();
        let got = decode_all(rec.as_bytes());
        assert_eq!(got.len(), 3, "the heartbeat carries no alarm: {got:?}");
        assert_eq!(got[0].as_ref().unwrap().site_id, "S-1");
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("eventList[1]") && err.contains("LOUD"), "{err}");
        assert_eq!(got[2].as_ref().unwrap().site_id, "S-4");
    }

    #[test]
    fn site_and_coordinates_from_additional_information_in_either_shape() {
        let rec = r#"{"event":{"commonEventHeader":{"domain":"fault","eventId":"x1","sourceName":"ne-77",
            "startEpochMicrosec":1795413600000000,"lastEpochMicrosec":1795413601000000},
            "faultFields":{"faultFieldsVersion":4,"alarmCondition":"linkDown","eventSeverity":"MAJOR",
            "eventSourceType":"router","specificProblem":"","vfStatus":"Active",
            "alarmAdditionalInformation":[{"name":"siteId","value":"S-9"},{"name":"lat","value":"41.5"},
            {"name":"lon","value":"-71.25"}]}}}"#;
        let a = decode_all(rec.as_bytes()).remove(0).unwrap();
        assert_eq!((a.site_id.as_str(), a.lat, a.lon), ("S-9", Some(41.5), Some(-71.25)));
        assert_eq!(a.probable_cause, "linkDown", "empty specificProblem falls back to alarmCondition");
        assert_eq!(a.event_time.timestamp(), 1_795_413_601, "lastEpochMicrosec");
        let no_info = rec.replace(r#""alarmAdditionalInformation":"#, r#""x":"#);
        assert_eq!(decode_all(no_info.as_bytes()).remove(0).unwrap().site_id, "ne-77", "sourceName");
    }

    #[test]
    fn bad_fields_are_named() {
        let located = Alarm { lat: Some(41.0), lon: Some(-71.0), ..alarm(AlarmState::Raised, Severity::Major) };
        let good = json!({ "event": encode_event(&located, 1) });
        assert!(decode_all(good.to_string().as_bytes())[0].is_ok());
        let cases: [(&str, Value, &str); 6] = [
            ("/event/faultFields/faultFieldsVersion", json!("7.0"), "faultFieldsVersion"),
            ("/event/faultFields/faultFieldsVersion", json!(true), "faultFieldsVersion"),
            ("/event/commonEventHeader/lastEpochMicrosec", json!("soon"), "lastEpochMicrosec"),
            ("/event/commonEventHeader/eventId", json!(7), "eventId"),
            ("/event/faultFields/alarmAdditionalInformation/lat", json!("NaN"), "lat"),
            ("/event/faultFields/alarmAdditionalInformation/site_id", json!(""), "site_id"),
        ];
        crate::sources::decode::assert_refused_naming(&good, &cases);
    }
}
