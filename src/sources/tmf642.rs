//! TMF642 (Alarm Management API v4) alarms → [`Alarm`] (and back, for the
//! simulator and tests). Contract: `schemas/tmf642-alarm.v4.schema.json`.
//!
//! A record is either an `Alarm` resource or an event notification wrapping
//! one (`{"eventType": "AlarmCreateEvent", "event": {"alarm": {...}}}`, as a
//! TMF642 hub pushes them). Mapping:
//! - `alarm_id` ← `id` (a string, or an integer as the v4 swagger types it;
//!   one resource per alarm: its clear is a state change of the same id);
//! - `site_id` ← `alarmedObject.id` (string or integer), the network element
//!   [`super::elements`] maps to its site; TMF642 carries no coordinates we
//!   read;
//! - `eventType` decides first: `AlarmCreateEvent` raises (unless the alarm
//!   it carries is already cleared, by `state` or severity),
//!   `AlarmAttributeValueChangeEvent` and `AlarmStateChangeEvent` follow the
//!   alarm's `state` and severity, `AlarmClearedEvent` clears, and
//!   `AlarmDeleteEvent` never raises: it is taken as a clear of that id (the
//!   resource is gone from the NMS, so the condition cannot be active any
//!   more; a delete after its clear is a repeated clear the correlator
//!   counts and ignores). Other `…Event` types (`AckAlarmsCreateEvent`, …)
//!   change no alarm's state: dead letters of class `no_alarm_change`. A
//!   record without `eventType` follows its `state`;
//! - state ← `state`: `raised` and `updated` raise (an update is a repeat
//!   the correlator deduplicates), as do the states public implementations
//!   add — `active`, and `acknowledged`/`unacknowledged` (an acknowledged
//!   alarm is still active in X.733); `cleared`, `terminated` and `closed`
//!   clear (any case: implementations write `RAISED`, `CLOSED`);
//!   `perceivedSeverity` `cleared` clears whatever the state says;
//! - severity ← `perceivedSeverity` (lower case in the spec; upper case is
//!   tolerated); `indeterminate` counts as `warning`, below any sensible
//!   service-affecting threshold;
//! - `probable_cause` ← `probableCause` (the standard X.733 name);
//!   `specific_problem` ← `specificProblem` (free text);
//! - `event_time` ← `alarmRaisedTime` for a raise; `alarmChangedTime`, else
//!   `alarmRaisedTime`, for an update; `alarmClearedTime`, else
//!   `alarmChangedTime`, for a clear; the notification's `eventTime` when the
//!   resource has none of these (and first, for a delete).

use crate::model::{Alarm, AlarmState, Severity};
use crate::sources::decode::{DecodeError, Fields};
use serde_json::{json, Map, Value};

/// Whether a JSON object is a TMF642 alarm or alarm notification (also one
/// that wraps no alarm, like `AckAlarmsCreateEvent`: `eventType` `…Event`
/// with an `event` object, which the native fast path never takes).
pub fn detect(obj: &Map<String, Value>) -> bool {
    obj.contains_key("perceivedSeverity")
        || obj.contains_key("alarmedObject")
        || obj.get("event").is_some_and(|e| e.get("alarm").is_some())
        || (obj.get("event").is_some_and(Value::is_object)
            && obj.get("eventType").and_then(Value::as_str).is_some_and(|t| t.ends_with("Event")))
}

/// What the notification's `eventType` says of the alarm's state.
enum Kind {
    /// No `eventType`, or one that follows the resource's state.
    Follow,
    Create,
    Clear,
    Delete,
}

/// The alarm of one TMF642 record.
pub fn decode(obj: &Map<String, Value>) -> Result<Alarm, DecodeError> {
    let top = Fields::of(obj, "");
    let kind = match top.opt_str("eventType")? {
        None | Some("AlarmAttributeValueChangeEvent" | "AlarmStateChangeEvent") => Kind::Follow,
        Some("AlarmCreateEvent") => Kind::Create,
        Some("AlarmClearedEvent") => Kind::Clear,
        Some("AlarmDeleteEvent") => Kind::Delete,
        Some(other) => return Err(DecodeError::NoAlarmChange(format!("TMF642 eventType {other:?}"))),
    };
    let (alarm, event_time) = match top.opt_object("event")? {
        Some(event) => (event.object("alarm")?, top.opt_time("eventTime")?),
        None => (top, None),
    };
    let severity = alarm.str("perceivedSeverity")?;
    let severity = match severity.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "major" => Severity::Major,
        "minor" => Severity::Minor,
        "warning" | "indeterminate" => Severity::Warning,
        "cleared" => Severity::Cleared,
        other => {
            return Err(DecodeError::field(
                "perceivedSeverity",
                format!("{other:?} is not critical, major, minor, warning, indeterminate or cleared"),
            ))
        }
    };
    // The resource's state; a delete's is not read (it clears anyway).
    let state = match (&kind, alarm.opt_str("state")?) {
        (Kind::Delete, _) => "cleared",
        (_, Some(s)) => s,
        (_, None) => return Err(DecodeError::field("state", "missing")),
    };
    const RAISED: &[&str] = &["alarmRaisedTime"];
    const UPDATED: &[&str] = &["alarmChangedTime", "alarmRaisedTime"];
    const CLEARED: &[&str] = &["alarmClearedTime", "alarmChangedTime"];
    let state = match state.to_ascii_lowercase().as_str() {
        "raised" | "active" => (AlarmState::Raised, RAISED),
        "updated" | "acknowledged" | "unacknowledged" => (AlarmState::Raised, UPDATED),
        "cleared" | "terminated" | "closed" => (AlarmState::Cleared, CLEARED),
        other => {
            return Err(DecodeError::field(
                "state",
                format!(
                    "{other:?} is not raised, updated, cleared (or active, acknowledged, unacknowledged, terminated, closed)"
                ),
            ))
        }
    };
    let cleared = severity == Severity::Cleared;
    // Where this change's time is, best first; the notification's
    // `eventTime` comes after the resource's own field for the state.
    let (state, times, event_first) = match kind {
        Kind::Delete => (AlarmState::Cleared, CLEARED, true),
        Kind::Clear => (AlarmState::Cleared, CLEARED, false),
        _ if cleared => (AlarmState::Cleared, if state.0 == AlarmState::Cleared { state.1 } else { CLEARED }, false),
        Kind::Create if state.0 == AlarmState::Raised => (AlarmState::Raised, RAISED, false),
        _ => (state.0, state.1, false),
    };
    let mut when = if event_first { None } else { event_time };
    for field in times.iter().rev() {
        when = alarm.opt_time(field)?.or(when);
    }
    let when = if event_first { event_time.or(when) } else { when };
    let Some(event_time) = when else {
        return Err(DecodeError::field(times[0], "missing"));
    };
    let probable_cause = alarm.str("probableCause")?.trim();
    if probable_cause.is_empty() {
        return Err(DecodeError::field("probableCause", "empty"));
    }
    Ok(Alarm {
        alarm_id: alarm.id("id")?,
        site_id: alarm.object("alarmedObject")?.id("id")?,
        state,
        severity,
        probable_cause: probable_cause.to_string(),
        specific_problem: alarm.opt_text("specificProblem")?,
        event_time,
        lat: None,
        lon: None,
    })
}

/// One alarm as a TMF642 notification (`AlarmCreateEvent` for a raise,
/// `AlarmStateChangeEvent` for a clear), deterministic.
pub fn encode_notification(a: &Alarm) -> Value {
    let time = a.event_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let severity = match a.severity {
        Severity::Critical => "critical",
        Severity::Major => "major",
        Severity::Minor => "minor",
        Severity::Warning => "warning",
        Severity::Cleared => "cleared",
    };
    let mut alarm = json!({
        "id": a.alarm_id,
        "@type": "Alarm",
        "alarmType": "equipmentAlarm",
        "perceivedSeverity": severity,
        "probableCause": a.probable_cause,
        "state": if a.is_clear() { "cleared" } else { "raised" },
        "alarmedObjectType": "GeographicSite",
        "alarmedObject": { "id": a.site_id, "@referredType": "GeographicSite" },
        "sourceSystemId": "outage-simulator",
        "alarmReportingTime": time,
    });
    let (kind, field) = if a.is_clear() {
        ("AlarmStateChangeEvent", "alarmClearedTime")
    } else {
        ("AlarmCreateEvent", "alarmRaisedTime")
    };
    alarm[field] = time.clone().into();
    if let Some(s) = &a.specific_problem {
        alarm["specificProblem"] = s.clone().into();
    }
    json!({
        "eventId": format!("{}:{}", a.alarm_id, if a.is_clear() { "clear" } else { "raise" }),
        "eventTime": time,
        "eventType": kind,
        "event": { "alarm": alarm }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::decode::decode_all;

    fn alarm(state: AlarmState) -> Alarm {
        Alarm {
            alarm_id: "al-1".into(),
            site_id: "S-1".into(),
            state,
            severity: Severity::Major,
            probable_cause: "loss of signal".into(),
            event_time: "2026-11-23T06:00:00Z".parse().unwrap(),
            lat: None,
            lon: None,
            specific_problem: None,
        }
    }

    #[test]
    fn notifications_round_trip() {
        for state in [AlarmState::Raised, AlarmState::Cleared] {
            let a = alarm(state);
            let got = decode_all(encode_notification(&a).to_string().as_bytes());
            assert_eq!(got, vec![Ok(a)]);
        }
    }

    #[test]
    fn bare_resources_updates_and_indeterminate() {
        let rec = r#"{"id":"x9","perceivedSeverity":"MAJOR","probableCause":"powerProblem","state":"updated",
            "alarmedObject":{"id":"S-7"},"alarmRaisedTime":"2026-11-23T05:00:00+01:00",
            "alarmChangedTime":"2026-11-23T05:10:00+01:00"}"#;
        let a = decode_all(rec.as_bytes()).remove(0).unwrap();
        assert_eq!((a.site_id.as_str(), a.state, a.severity), ("S-7", AlarmState::Raised, Severity::Major));
        assert_eq!(a.probable_cause, "powerProblem", "no specificProblem: probableCause");
        assert_eq!(a.event_time, "2026-11-23T04:10:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        let ind = rec.replace("MAJOR", "indeterminate");
        assert_eq!(decode_all(ind.as_bytes()).remove(0).unwrap().severity, Severity::Warning);
        let cleared = rec.replace(r#""state":"updated""#, r#""state":"cleared""#);
        let a = decode_all(cleared.as_bytes()).remove(0).unwrap();
        assert!(a.is_clear() && a.event_time.to_rfc3339().contains("04:10"), "the change that cleared it: {a:?}");
        let no_time = cleared.replace("alarmChangedTime", "x");
        let err = decode_all(no_time.as_bytes()).remove(0).unwrap_err().to_string();
        assert!(err.contains("alarmClearedTime"), "a clear is never dated by its raise: {err}");
    }

    #[test]
    fn bad_fields_are_named() {
        let good = encode_notification(&alarm(AlarmState::Raised));
        let cases: [(&str, Value, &str); 5] = [
            ("/event/alarm/perceivedSeverity", json!("loud"), "perceivedSeverity"),
            ("/event/alarm/state", json!("dormant"), "state"),
            ("/event/alarm/alarmedObject", json!("S-1"), "alarmedObject"),
            ("/event/alarm/alarmRaisedTime", json!("yesterday"), "alarmRaisedTime"),
            ("/event/alarm/id", json!(" "), "alarm_id"),
        ];
        crate::sources::decode::assert_refused_naming(&good, &cases);
    }

    #[test]
    fn event_types_are_honoured() {
        let raise = encode_notification(&alarm(AlarmState::Raised));
        let with = |event_type: &str, state: &str, severity: &str| {
            let mut r = raise.clone();
            r["eventType"] = json!(event_type);
            r["event"]["alarm"]["state"] = json!(state);
            r["event"]["alarm"]["perceivedSeverity"] = json!(severity);
            r["event"]["alarm"]["alarmClearedTime"] = json!("2026-11-23T07:00:00Z");
            decode_all(r.to_string().as_bytes()).remove(0)
        };
        let a = with("AlarmCreateEvent", "raised", "major").unwrap();
        assert_eq!((a.state, a.severity), (AlarmState::Raised, Severity::Major));
        assert!(with("AlarmCreateEvent", "raised", "cleared").unwrap().is_clear(), "severity cleared clears");
        assert!(with("AlarmStateChangeEvent", "cleared", "major").unwrap().is_clear());
        assert!(!with("AlarmAttributeValueChangeEvent", "unacknowledged", "minor").unwrap().is_clear());
        assert!(!with("AlarmAttributeValueChangeEvent", "active", "minor").unwrap().is_clear());
        assert!(with("AlarmStateChangeEvent", "terminated", "minor").unwrap().is_clear());
        assert!(with("AlarmStateChangeEvent", "CLOSED", "MINOR").unwrap().is_clear());
        assert!(!with("AlarmStateChangeEvent", "ACKNOWLEDGED", "MINOR").unwrap().is_clear());
        assert!(with("AlarmClearedEvent", "raised", "major").unwrap().is_clear(), "the event type decides");
        let deleted = with("AlarmDeleteEvent", "raised", "critical").unwrap();
        assert!(deleted.is_clear(), "a delete never raises: {deleted:?}");
        assert_eq!(deleted.event_time.to_rfc3339(), "2026-11-23T06:00:00+00:00", "the deletion's eventTime");
        let err = with("CommentAlarmsCreateEvent", "raised", "major").unwrap_err();
        assert_eq!(err.class(), "no_alarm_change", "{err}");
    }

    #[test]
    fn integer_ids_are_their_decimal_text() {
        let mut r = encode_notification(&alarm(AlarmState::Raised));
        r["event"]["alarm"]["id"] = json!(4711);
        r["event"]["alarm"]["alarmedObject"]["id"] = json!(17);
        let a = decode_all(r.to_string().as_bytes()).remove(0).unwrap();
        assert_eq!((a.alarm_id.as_str(), a.site_id.as_str()), ("4711", "17"));
        r["event"]["alarm"]["id"] = json!(1.5);
        let err = decode_all(r.to_string().as_bytes()).remove(0).unwrap_err().to_string();
        assert!(err.contains("id"), "{err}");
    }
}
