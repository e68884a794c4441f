//! ONAP VES fault events and 3GPP FaultSupervision notifications carried in
//! the VES `stndDefined` domain → [`Alarm`] (and back, for the simulator and
//! tests). Contract: `schemas/ves-fault.v7.schema.json`.
//!
//! A record is one `{"event": {...}}` or a batch `{"eventList": [...]}`;
//! a batch may mix fault, `stndDefined` and other domains.
//!
//! **Fault domain** (VES event listener 5.x–7.x, `faultFieldsVersion` 1.x to
//! 4.x, as a string or a number; other versions are refused naming the
//! version):
//! - `alarm_id` ← `commonEventHeader.eventId`: VES keeps one `eventId` for the
//!   raise and every later change or clear of one fault;
//! - `site_id` ← `alarmAdditionalInformation.site_id` (or `siteId`), else
//!   the network element `commonEventHeader.sourceName` (mapped to its site
//!   by [`super::elements`]); coordinates from `lat`/`lon` (or
//!   `latitude`/`longitude`) there, as numbers or as the strings a VES
//!   hashMap carries (VES 5 sends `[{"name":…,"value":…}]`, also read);
//! - state and severity ← `faultFields.eventSeverity`: `NORMAL` is a clear;
//!   `CRITICAL`/`MAJOR`/`MINOR`/`WARNING` raise;
//! - `probable_cause` ← `faultFields.alarmCondition`, the short name the
//!   spec means for matching; `specific_problem` ← `specificProblem` (free
//!   text), left out when blank or a mere repeat of `alarmCondition`;
//! - `event_time` ← `commonEventHeader.lastEpochMicrosec` (when this change
//!   happened), else `startEpochMicrosec`: any JSON number (ONAP's samples
//!   write `1.633608637561E15`) or a quoted one (O-RAN SC's VES scripts),
//!   refused, naming the field, when not finite or out of range.
//!
//! **stndDefined domain**, namespace `3GPP-FaultSupervision` (or no
//! namespace and an alarm `notificationType` in `stndDefinedFields.data`,
//! the TS 28.532 FaultSupervision MnS notification):
//! - `notifyNewAlarm`, `notifyChangedAlarm`, `notifyChangedAlarmGeneral`
//!   raise with `perceivedSeverity` (case-insensitive; `INDETERMINATE` counts
//!   as warning), or clear when it is `CLEARED`; `notifyClearedAlarm` clears;
//! - `notifyAckStateChanged`, `notifyComments`,
//!   `notifyCorrelatedNotificationChanged` change no alarm's state: dead
//!   letters of class `no_alarm_change`, so they are counted, not lost;
//!   `notifyAlarmListRebuilt` (and `…RebuiltAlarm`),
//!   `notifyPotentialFaultyAlarmList` and unknown types: class
//!   `unsupported`, with a reason telling the NOC to re-align;
//! - `alarm_id` ← `alarmId` (string or integer); the network element ←
//!   `objectInstance` when present, else the DN in `href`'s path (its
//!   `Class=id` segments joined with `,`: `…/ManagedElement=ENB-0042/
//!   ENBFunction=1` → `ManagedElement=ENB-0042,ENBFunction=1`), else
//!   `sourceName`; `probable_cause` ← `probableCause` (a string, or an
//!   integer's decimal text: the spec lets vendors number causes);
//!   `specific_problem` ← `specificProblem` (string, integer or list);
//!   `event_time` ← `eventTime` (RFC 3339), else the header's epochs.
//!
//! Events of other domains (heartbeat, measurement, …) and `stndDefined`
//! events of other namespaces share the collector feed and carry no alarm:
//! they decode to nothing rather than to dead letters.

use crate::model::{Alarm, AlarmState, Severity};
use crate::sources::decode::{DecodeError, Decoded, Fields, Format};
use serde_json::{json, Map, Value};

/// Whether a JSON object is a VES record (`event` with a
/// `commonEventHeader`, or `eventList`).
pub fn detect(obj: &Map<String, Value>) -> bool {
    obj.contains_key("eventList") || obj.get("event").is_some_and(|e| e.get("commonEventHeader").is_some())
}

/// The alarms of one VES record: one result per event, so one bad event of
/// a batch is dead-lettered without losing the others.
pub fn decode(obj: &Map<String, Value>) -> Vec<Decoded> {
    if let Some(list) = obj.get("eventList") {
        let Some(list) = list.as_array() else {
            return vec![(Format::Ves, Err(DecodeError::field("eventList", "not an array")))];
        };
        return list
            .iter()
            .enumerate()
            .filter_map(|(i, ev)| {
                let (format, r) = event(ev);
                r.transpose().map(|r| (format, r.map_err(|e| e.at_item("eventList", i))))
            })
            .collect();
    }
    obj.get("event")
        .map(|ev| {
            let (format, r) = event(ev);
            r.transpose().map(|r| (format, r))
        })
        .into_iter()
        .flatten()
        .collect()
}

/// One event: `Ok(None)` for a domain that carries no alarm.
fn event(ev: &Value) -> (Format, Result<Option<Alarm>, DecodeError>) {
    let header = Fields::root(ev, "").and_then(|ev| Ok((ev.object("commonEventHeader")?, ev)));
    let (header, ev) = match header {
        Ok(x) => x,
        Err(e) => return (Format::Ves, Err(e)),
    };
    match header.str("domain") {
        Ok("fault") => (Format::Ves, fault(&header, &ev).map(Some)),
        Ok("stndDefined") => (Format::StndDefined, stnd_defined(&header, &ev)),
        Ok(_) => (Format::Ves, Ok(None)),
        Err(e) => (Format::Ves, Err(e)),
    }
}

fn fault(header: &Fields<'_>, ev: &Fields<'_>) -> Result<Alarm, DecodeError> {
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
    let probable_cause = fault.str("alarmCondition")?.trim();
    if probable_cause.is_empty() {
        return Err(DecodeError::field("faultFields.alarmCondition", "empty"));
    }
    let specific_problem = fault.opt_text("specificProblem")?.filter(|s| s.trim() != probable_cause);
    Ok(Alarm {
        alarm_id: header.str("eventId")?.to_string(),
        site_id,
        state,
        severity,
        probable_cause: probable_cause.to_string(),
        specific_problem,
        event_time: epochs(header)?,
        lat,
        lon,
    })
}

/// `lastEpochMicrosec`, else `startEpochMicrosec`.
fn epochs(header: &Fields<'_>) -> Result<chrono::DateTime<chrono::Utc>, DecodeError> {
    match header.opt_epoch_micros("lastEpochMicrosec")? {
        Some(t) => Ok(t),
        None => header
            .opt_epoch_micros("startEpochMicrosec")?
            .ok_or_else(|| DecodeError::field("commonEventHeader.startEpochMicrosec", "missing")),
    }
}

/// The 3GPP TS 28.532 alarm notification types (`AlarmNotificationType`).
const ALARM_NOTIFICATIONS: [&str; 12] = [
    "notifyNewAlarm",
    "notifyChangedAlarm",
    "notifyChangedAlarmGeneral",
    "notifyClearedAlarm",
    "notifyAckStateChanged",
    "notifyComments",
    "notifyCorrelatedNotificationChanged",
    "notifyAlarmListRebuilt",
    "notifyAlarmListRebuiltAlarm",
    "notifyPotentialFaultyAlarmList",
    "notifyNewSecAlarm",
    "notifyChangedSecAlarmGeneral",
];

/// A `stndDefined` event: `Ok(None)` for a namespace that is not fault
/// supervision.
fn stnd_defined(header: &Fields<'_>, ev: &Fields<'_>) -> Result<Option<Alarm>, DecodeError> {
    let fields = ev.object("stndDefinedFields")?;
    let namespace = header.opt_str("stndDefinedNamespace")?;
    let data = match (namespace, fields.opt_object("data")?) {
        (Some("3GPP-FaultSupervision"), Some(data)) => data,
        (Some("3GPP-FaultSupervision"), None) => return Err(DecodeError::field("stndDefinedFields.data", "missing")),
        (None, Some(data))
            if data
                .get("notificationType")
                .and_then(Value::as_str)
                .is_some_and(|t| ALARM_NOTIFICATIONS.contains(&t)) =>
        {
            data
        }
        _ => return Ok(None),
    };
    let kind = data.str("notificationType")?;
    // Notifications that change no alarm's state, first: some carry no
    // alarm id at all (an alarm list rebuilt).
    let of_alarm = || data.id("alarmId").map(|id| format!(" of alarm {id:?}")).unwrap_or_default();
    match kind {
        "notifyNewAlarm" | "notifyChangedAlarm" | "notifyChangedAlarmGeneral" | "notifyClearedAlarm" => {}
        "notifyAckStateChanged" | "notifyComments" | "notifyCorrelatedNotificationChanged" => {
            return Err(DecodeError::NoAlarmChange(format!("stndDefined {kind}{}", of_alarm())))
        }
        "notifyAlarmListRebuilt" | "notifyAlarmListRebuiltAlarm" | "notifyPotentialFaultyAlarmList" => {
            let reason = data.get("reason").and_then(Value::as_str).map(|r| format!(" ({r})")).unwrap_or_default();
            return Err(DecodeError::Unsupported(format!(
                "stndDefined {kind}{reason}: the NMS rebuilt (or doubts) its alarm list, so raises and clears \
                 may have been missed; re-align the sites' state from the NMS"
            )));
        }
        "notifyNewSecAlarm" | "notifyChangedSecAlarmGeneral" => {
            return Err(DecodeError::Unsupported(format!(
                "stndDefined {kind}{}: a security alarm, not a network element fault; not applied",
                of_alarm()
            )))
        }
        other => {
            return Err(DecodeError::Unsupported(format!(
                "stndDefined notificationType {other:?} is not a 3GPP FaultSupervision alarm notification"
            )))
        }
    }
    let alarm_id = data.id("alarmId")?;
    let severity = match data.opt_str("perceivedSeverity")? {
        None if kind == "notifyClearedAlarm" => "CLEARED",
        None => data.str("perceivedSeverity")?,
        Some(s) => s,
    };
    let severity = match severity.to_ascii_uppercase().as_str() {
        "CRITICAL" => Severity::Critical,
        "MAJOR" => Severity::Major,
        "MINOR" => Severity::Minor,
        "WARNING" | "INDETERMINATE" => Severity::Warning,
        "CLEARED" => Severity::Cleared,
        _ => {
            return Err(DecodeError::field(
                "stndDefinedFields.data.perceivedSeverity",
                format!("{severity:?} is not CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE or CLEARED"),
            ))
        }
    };
    let (state, severity) = match (kind, severity) {
        ("notifyClearedAlarm", _) | (_, Severity::Cleared) => (AlarmState::Cleared, Severity::Cleared),
        (_, s) => (AlarmState::Raised, s),
    };
    let element = match data.opt_str("objectInstance")?.filter(|s| !s.trim().is_empty()) {
        Some(dn) => dn.to_string(),
        None => match data.get("href").and_then(Value::as_str).and_then(href_dn) {
            Some(dn) => dn,
            None => header.str("sourceName")?.to_string(),
        },
    };
    let probable_cause = match data.get("probableCause") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => return Err(DecodeError::field("stndDefinedFields.data.probableCause", "missing")),
        Some(_) => {
            return Err(DecodeError::field(
                "stndDefinedFields.data.probableCause",
                "not a non-empty string or an integer",
            ))
        }
    };
    let event_time = match data.opt_time("eventTime")? {
        Some(t) => t,
        None => epochs(header)?,
    };
    Ok(Some(Alarm {
        alarm_id,
        site_id: element,
        state,
        severity,
        probable_cause,
        specific_problem: data.opt_text("specificProblem")?,
        event_time,
        lat: None,
        lon: None,
    }))
}

/// The DN of a TS 32.158 object URI: its path's `Class=id` segments,
/// joined with `,`. `None` when the path has none.
fn href_dn(href: &str) -> Option<String> {
    let path = href.split_once("://").map_or(href, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let rdns: Vec<&str> = path.split('/').filter(|s| s.contains('=')).collect();
    (!rdns.is_empty()).then(|| rdns.join(","))
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
        Some("1" | "2" | "3" | "4") => Ok(()),
        _ => {
            Err(DecodeError::field(FIELD, format!("version {text:?} is not 1.x to 4.x (VES 5.x to 7.x fault fields)")))
        }
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
            "alarmCondition": a.probable_cause,
            "specificProblem": a.specific_problem.as_deref().unwrap_or(&a.probable_cause),
            "eventSeverity": severity,
            "eventSourceType": "site",
            "vfStatus": "Active",
            "alarmAdditionalInformation": info
        }
    })
}

/// One alarm as a VES 7.2 `stndDefined` event carrying a 3GPP TS 28.532
/// `notifyNewAlarm` (a raise) or `notifyClearedAlarm` (a clear), the
/// `event` object's content; deterministic. The network element is
/// `ManagedElement=<site_id>` (in `href`'s path), so a decoder maps it back
/// to the site with the rule `^ManagedElement=(?P<site>[^,]+)$` for format
/// `stnddefined` (see [`super::elements`]).
pub fn encode_stnd_defined(a: &Alarm, sequence: u64) -> Value {
    let micros = a.event_time.timestamp_micros();
    let time = a.event_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let (kind, severity) = match (a.is_clear(), a.severity) {
        (true, _) | (false, Severity::Cleared) => ("notifyClearedAlarm", "CLEARED"),
        (false, Severity::Critical) => ("notifyNewAlarm", "CRITICAL"),
        (false, Severity::Major) => ("notifyNewAlarm", "MAJOR"),
        (false, Severity::Minor) => ("notifyNewAlarm", "MINOR"),
        (false, Severity::Warning) => ("notifyNewAlarm", "WARNING"),
    };
    let schema = if kind == "notifyNewAlarm" { "NotifyNewAlarm" } else { "NotifyClearedAlarm" };
    let mut data = json!({
        "href": format!("https://outage-simulator.invalid/3GPPManagement/ProvMnS/v1/ManagedElement={}", a.site_id),
        "notificationId": sequence,
        "notificationType": kind,
        "eventTime": time,
        "systemDN": "ManagedElement=outage-simulator",
        "alarmId": a.alarm_id,
        "alarmType": "EQUIPMENT_ALARM",
        "probableCause": a.probable_cause,
        "perceivedSeverity": severity,
    });
    if let Some(s) = &a.specific_problem {
        data["specificProblem"] = s.clone().into();
    }
    json!({
        "commonEventHeader": {
            "domain": "stndDefined",
            "stndDefinedNamespace": "3GPP-FaultSupervision",
            "eventId": format!("{}:{sequence}", a.alarm_id),
            "eventName": format!("stndDefined_FaultSupervision_{kind}"),
            "sourceName": format!("ManagedElement={}", a.site_id),
            "reportingEntityName": "outage-simulator",
            "priority": if a.severity == Severity::Critical { "High" } else { "Normal" },
            "sequence": sequence,
            "startEpochMicrosec": micros,
            "lastEpochMicrosec": micros,
            "version": "4.1",
            "vesEventListenerVersion": "7.2.1"
        },
        "stndDefinedFields": {
            "schemaReference": format!(
                "https://forge.3gpp.org/rep/sa5/MnS/blob/Rel-16/OpenAPI/TS28532_FaultMnS.yaml#components/schemas/{schema}"
            ),
            "data": data,
            "stndDefinedFieldsVersion": "1.0"
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

    #[test]
    fn epochs_are_any_json_number_and_out_of_range_ones_are_refused() {
        let good = json!({ "event": encode_event(&alarm(AlarmState::Raised, Severity::Major), 1) });
        let at = |v: Value| {
            let mut r = good.clone();
            r["event"]["commonEventHeader"]["lastEpochMicrosec"] = v;
            decode_all(r.to_string().as_bytes()).remove(0)
        };
        let onap = at(serde_json::from_str("1.633608637561E15").unwrap()).unwrap();
        assert_eq!(onap.event_time, "2021-10-07T12:10:37.561Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        let fraction = at(serde_json::from_str("1795407129000000.2").unwrap()).unwrap();
        assert_eq!(fraction.event_time.timestamp_micros(), 1_795_407_129_000_000, "rounded to the microsecond");
        for bad in ["1e300", "-1e300", "18446744073709551615", "9.3e18"] {
            let err = at(serde_json::from_str(bad).unwrap()).unwrap_err().to_string();
            assert!(
                err.contains("commonEventHeader.lastEpochMicrosec") && err.contains("out of range"),
                "{bad}: {err}"
            );
        }
        for (quoted, ok) in [("1795407129000000", true), (" 1.7954071290E15 ", true), ("NaN", false), ("inf", false)] {
            let got = at(json!(quoted));
            assert_eq!(got.is_ok(), ok, "{quoted}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("lastEpochMicrosec") && e.to_string().contains("finite"), "{e}");
            }
        }
        // JSON has no NaN or infinity: such a record is not JSON at all.
        let inf = good.to_string().replace("1795413600250000", "1e400");
        let nan = good.to_string().replace("\"lastEpochMicrosec\":1795413600250000", "\"lastEpochMicrosec\":NaN");
        for rec in [inf, nan] {
            let got = decode_all(rec.as_bytes());
            assert!(got.iter().all(Result::is_err), "{rec}: {got:?}");
        }
    }

    #[test]
    fn old_fault_field_versions_decode_and_unknown_ones_name_the_version() {
        let mut rec = json!({ "event": encode_event(&alarm(AlarmState::Raised, Severity::Major), 1) });
        for v in [json!(1.0), json!("2.0"), json!(3), json!("4.0")] {
            rec["event"]["faultFields"]["faultFieldsVersion"] = v.clone();
            assert!(decode_all(rec.to_string().as_bytes())[0].is_ok(), "{v}");
        }
        rec["event"]["faultFields"]["faultFieldsVersion"] = json!(5.1);
        let err = decode_all(rec.to_string().as_bytes()).remove(0).unwrap_err().to_string();
        assert!(err.contains("\"5.1\"") && err.contains("faultFieldsVersion"), "{err}");
    }

    #[test]
    fn probable_cause_is_the_alarm_condition_and_specific_problem_the_detail() {
        let detailed =
            Alarm { specific_problem: Some("LOS on CPRI 1".into()), ..alarm(AlarmState::Raised, Severity::Major) };
        let rec = json!({ "event": encode_event(&detailed, 1) });
        assert_eq!(rec["event"]["faultFields"]["alarmCondition"], "mains power failure");
        assert_eq!(decode_all(rec.to_string().as_bytes()), vec![Ok(detailed)]);
        let mut rec = rec;
        rec["event"]["faultFields"]["alarmCondition"] = json!(" ");
        let err = decode_all(rec.to_string().as_bytes()).remove(0).unwrap_err().to_string();
        assert!(err.contains("alarmCondition"), "{err}");
    }

    #[test]
    fn stnd_defined_round_trips_through_the_element_rule_and_other_namespaces_are_skipped() {
        use crate::sources::decode::{decode_formats, Format};
        let raise = Alarm { specific_problem: Some("LOS".into()), ..alarm(AlarmState::Raised, Severity::Critical) };
        let clear = alarm(AlarmState::Cleared, Severity::Critical);
        let rec = json!({ "eventList": [encode_stnd_defined(&raise, 1), encode_stnd_defined(&clear, 2)] });
        let mut got = decode_formats(rec.to_string().as_bytes());
        assert_eq!(got.len(), 2);
        let (format, a) = got.remove(0);
        let a = a.unwrap();
        assert_eq!((format, a.site_id.as_str()), (Format::StndDefined, "ManagedElement=S-1"));
        assert_eq!(Alarm { site_id: "S-1".into(), ..a }, raise);
        let c = got.remove(0).1.unwrap();
        assert!(c.is_clear() && c.alarm_id == raise.alarm_id && c.event_time == clear.event_time, "{c:?}");
        // Without a namespace, the notification type says it is an alarm.
        let mut bare = json!({ "event": encode_stnd_defined(&raise, 1) });
        bare["event"]["commonEventHeader"].as_object_mut().unwrap().remove("stndDefinedNamespace");
        assert!(decode_all(bare.to_string().as_bytes())[0].is_ok());
        let mut other = json!({ "event": encode_stnd_defined(&raise, 1) });
        other["event"]["commonEventHeader"]["stndDefinedNamespace"] = json!("3GPP-Provisioning");
        assert!(decode_all(other.to_string().as_bytes()).is_empty(), "not fault supervision: no alarm");
    }

    #[test]
    fn stnd_defined_elements_prefer_object_instance_then_the_href_dn() {
        assert_eq!(
            href_dn("https://gnb-7.MeContext.CT.SubNetwork/ManagedElement=gnb-7/GNBCUCPFunction=1?x=1").as_deref(),
            Some("ManagedElement=gnb-7,GNBCUCPFunction=1")
        );
        assert_eq!(href_dn("href1"), None);
        assert_eq!(href_dn("https://nms.example/alarms/7"), None);
        let mut rec = json!({ "event": encode_stnd_defined(&alarm(AlarmState::Raised, Severity::Major), 1) });
        rec["event"]["stndDefinedFields"]["data"]["objectInstance"] = json!("SubNetwork=RI,ManagedElement=X");
        assert_eq!(decode_all(rec.to_string().as_bytes()).remove(0).unwrap().site_id, "SubNetwork=RI,ManagedElement=X");
        rec["event"]["stndDefinedFields"]["data"]["objectInstance"] = Value::Null;
        rec["event"]["stndDefinedFields"]["data"]["href"] = json!(1);
        assert_eq!(
            decode_all(rec.to_string().as_bytes()).remove(0).unwrap().site_id,
            "ManagedElement=S-1",
            "sourceName"
        );
        rec["event"]["stndDefinedFields"]["data"]["notificationType"] = json!("notifyEverythingFine");
        let err = decode_all(rec.to_string().as_bytes()).remove(0).unwrap_err();
        assert!(err.class() == "unsupported" && err.to_string().contains("notifyEverythingFine"), "{err}");
    }
}
