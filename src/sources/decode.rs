//! bytes → [`Alarm`]: the native v1 contract (`schemas/alarm.v1.schema.json`).
//! Every way a record can be unusable is a [`DecodeError`] whose text is the
//! dead-letter reason, so an operator reading `noc.alarms.dlq` sees what to
//! fix. Decoding never panics on input.
//!
//! ONAP VES 7.x and TMF642 feeds are accepted by the correlation issue; their
//! records currently dead-letter with a reason that says so.

use crate::model::Alarm;
#[cfg(test)]
use crate::model::Severity;
use crate::sources::SourceRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an alarm object: {0}")]
    Shape(String),
    #[error("{format} alarms are not accepted yet")]
    Unsupported { format: &'static str },
    #[error("field `{field}`: {message}")]
    Field { field: &'static str, message: String },
    #[error("record of {size} bytes is over the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("event_time {at} is more than {ahead} ahead of the clock ({now})")]
    Future { at: DateTime<Utc>, now: DateTime<Utc>, ahead: String },
}

impl DecodeError {
    /// A stable name for the kind of problem, for counting dead letters.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::Shape(_) => "bad_shape",
            DecodeError::Unsupported { .. } => "unsupported_format",
            DecodeError::Field { .. } => "bad_field",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Future { .. } => "future_time",
        }
    }
}

/// What a record may be before it is decoded at all.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger records are refused unread.
    pub max_bytes: usize,
    /// Event times further ahead of the clock than this are refused: a
    /// wrong NMS clock would otherwise hold timers hostage.
    pub max_future: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 1 << 20, max_future: chrono::Duration::minutes(5) }
    }
}

/// Decode one record at `now` under `limits`: the record's alarms (a VES
/// `eventList` carries several).
pub fn decode_checked(payload: &[u8], now: DateTime<Utc>, limits: &Limits) -> Result<Vec<Alarm>, DecodeError> {
    if payload.len() > limits.max_bytes {
        return Err(DecodeError::Oversized { size: payload.len(), limit: limits.max_bytes });
    }
    let alarms = vec![decode(payload)?];
    for a in &alarms {
        if a.event_time > now + limits.max_future {
            let ahead = limits.max_future.to_std().map(humantime::format_duration).map(|d| d.to_string());
            return Err(DecodeError::Future { at: a.event_time, now, ahead: ahead.unwrap_or_default() });
        }
    }
    Ok(alarms)
}

/// Decode one record value.
pub fn decode(payload: &[u8]) -> Result<Alarm, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let serde_json::Value::Object(obj) = &v else {
        return Err(DecodeError::Shape(format!("a JSON {}", kind(&v))));
    };
    if obj.contains_key("event") || obj.contains_key("eventList") {
        return Err(DecodeError::Unsupported { format: "ONAP VES" });
    }
    if obj.contains_key("perceivedSeverity") {
        return Err(DecodeError::Unsupported { format: "TMF642" });
    }
    let alarm: Alarm = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::Shape(if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) })
    })?;
    validate(&alarm)?;
    Ok(alarm)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn validate(a: &Alarm) -> Result<(), DecodeError> {
    let field = |field, message: &str| Err(DecodeError::Field { field, message: message.into() });
    if a.alarm_id.trim().is_empty() {
        return field("alarm_id", "empty");
    }
    if a.site_id.trim().is_empty() {
        return field("site_id", "empty");
    }
    match (a.lat, a.lon) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) {
                return field("lat", "out of range -90..90");
            }
            if !(-180.0..=180.0).contains(&lon) {
                return field("lon", "out of range -180..180");
            }
        }
        (None, None) => {}
        _ => return field("lat", "lat and lon come together"),
    }
    Ok(())
}

/// A record the alarm source could not use (`schemas/dlq.v1.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqRecord {
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The original value as text (lossy for non-UTF-8 bytes).
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

impl DlqRecord {
    pub fn new(rec: &SourceRecord, reason: String, now: DateTime<Utc>) -> Self {
        DlqRecord {
            reason,
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            payload: String::from_utf8_lossy(&rec.payload).into_owned(),
            received_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"alarm_id":"A1","site_id":"S1","state":"raised","severity":"critical",
        "probable_cause":"mains power failure","event_time":"2026-11-23T06:00:00Z"}"#;

    #[test]
    fn native_v1_decodes() {
        let a = decode(GOOD.as_bytes()).unwrap();
        assert_eq!(a.site_id, "S1");
        assert_eq!(a.severity, Severity::Critical);
        assert!(!a.is_clear());
    }

    #[test]
    fn every_bad_record_has_a_reason_naming_the_problem() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "empty"),
            (b"\xff\xfe", "not JSON"),
            (b"{\"alarm_id\":", "not JSON"),
            (b"[1,2]", "JSON array"),
            (br#"{"event":{"commonEventHeader":{}}}"#, "ONAP VES"),
            (
                br#"{"alarm_id":"A1","site_id":"S1","state":"raised","severity":"loud","probable_cause":"x","event_time":"2026-11-23T06:00:00Z"}"#,
                "loud",
            ),
            (
                br#"{"alarm_id":"A1","site_id":"S1","state":"raised","severity":"major","probable_cause":"x","event_time":"yesterday"}"#,
                "event_time",
            ),
            (
                br#"{"alarm_id":" ","site_id":"S1","state":"raised","severity":"major","probable_cause":"x","event_time":"2026-11-23T06:00:00Z"}"#,
                "alarm_id",
            ),
        ];
        for (input, needle) in cases {
            let err = decode(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{:?}: {err}", String::from_utf8_lossy(input));
        }
        let missing = r#"{"alarm_id":"A1","state":"raised","severity":"major","probable_cause":"x","event_time":"2026-11-23T06:00:00Z"}"#;
        assert!(decode(missing.as_bytes()).unwrap_err().to_string().contains("site_id"));
        let half = GOOD.replace("\"state\"", "\"lat\":41.0,\"state\"");
        assert!(decode(half.as_bytes()).unwrap_err().to_string().contains("lat and lon"));
    }

    #[test]
    fn limits_refuse_oversized_records_and_clocks_from_the_future() {
        let now: DateTime<Utc> = "2026-11-23T06:00:00Z".parse().unwrap();
        let limits = Limits { max_bytes: 300, ..Limits::default() };
        assert_eq!(decode_checked(GOOD.as_bytes(), now, &limits).unwrap().len(), 1);
        let big = GOOD.replace("mains power failure", &"x".repeat(400));
        assert_eq!(decode_checked(big.as_bytes(), now, &limits).unwrap_err().class(), "oversized");
        let later = GOOD.replace("06:00:00Z", "06:06:00Z");
        let err = decode_checked(later.as_bytes(), now, &limits).unwrap_err();
        assert_eq!(err.class(), "future_time", "{err}");
        let soon = GOOD.replace("06:00:00Z", "06:04:00Z");
        assert!(decode_checked(soon.as_bytes(), now, &limits).is_ok(), "a clock a little ahead is tolerated");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn now() -> DateTime<Utc> {
            "2026-11-23T06:00:00Z".parse().unwrap_or_default()
        }

        /// JSON values that look like alarms: the right keys with values of
        /// any type, some keys missing, some extra.
        fn alarmish() -> impl Strategy<Value = String> {
            let value = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,40}".prop_map(serde_json::Value::from),
                Just(serde_json::Value::from("2026-11-23T06:00:00Z")),
                Just(serde_json::Value::from("raised")),
                Just(serde_json::Value::from("critical")),
            ];
            const KEYS: [&str; 12] = [
                "alarm_id",
                "site_id",
                "state",
                "severity",
                "probable_cause",
                "event_time",
                "lat",
                "lon",
                "event",
                "eventList",
                "perceivedSeverity",
                "extra",
            ];
            proptest::collection::vec((proptest::sample::select(&KEYS[..]), value), 0..12).prop_map(|kv| {
                let obj: serde_json::Map<String, serde_json::Value> =
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                serde_json::Value::Object(obj).to_string()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = decode_checked(&bytes, now(), &Limits::default());
            }

            #[test]
            fn alarm_shaped_json_decodes_or_says_why(json in alarmish()) {
                match decode_checked(json.as_bytes(), now(), &Limits::default()) {
                    Ok(alarms) => {
                        for a in alarms {
                            prop_assert!(!a.alarm_id.trim().is_empty() && !a.site_id.trim().is_empty());
                        }
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
