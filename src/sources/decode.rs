//! bytes → [`Alarm`]s. Owns format detection (per record, automatically:
//! the native v1 contract `schemas/alarm.v1.schema.json`, ONAP VES 5.x–7.x
//! fault events and 3GPP FaultSupervision notifications in the VES
//! `stndDefined` domain in [`super::ves`], TMF642 in [`super::tmf642`]),
//! ingest limits, and the checks
//! every decoded alarm must pass whatever its format. Every way a record can
//! be unusable is a [`DecodeError`] whose text is the dead-letter reason, so
//! an operator reading `noc.alarms.dlq` sees what to fix. Decoding never
//! panics on input.
//!
//! A record decodes to a list of results: a VES `eventList` carries several
//! alarms, and one bad event in it must not lose the others.

use crate::model::Alarm;
#[cfg(test)]
use crate::model::Severity;
use crate::sources::{tmf642, ves, SourceRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an alarm object: {0}")]
    Shape(String),
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("{list}[{index}]: {source}")]
    Item { list: &'static str, index: usize, source: Box<DecodeError> },
    #[error("record of {size} bytes is over the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("event_time {at} is more than {ahead} ahead of the clock ({now})")]
    Future { at: DateTime<Utc>, now: DateTime<Utc>, ahead: String },
    /// A notification the feed's standard defines that changes no alarm's
    /// state (an acknowledgement, a comment): understood, not applied.
    #[error("{0}: changes no alarm's state, not applied")]
    NoAlarmChange(String),
    /// A notification we do not apply and the operator must know about
    /// (an alarm list rebuilt: alarms may have been missed), or an unknown
    /// notification type.
    #[error("{0}")]
    Unsupported(String),
}

impl DecodeError {
    /// A stable name for the kind of problem, for counting dead letters.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::Shape(_) => "bad_shape",
            DecodeError::Field { .. } => "bad_field",
            DecodeError::Item { source, .. } => source.class(),
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Future { .. } => "future_time",
            DecodeError::NoAlarmChange(_) => "no_alarm_change",
            DecodeError::Unsupported(_) => "unsupported",
        }
    }

    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError::Field { field: field.into(), message: message.into() }
    }

    /// This error, as the problem of item `index` of the array `list`.
    pub(crate) fn at_item(self, list: &'static str, index: usize) -> Self {
        DecodeError::Item { list, index, source: Box::new(self) }
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

/// The input formats, detected per record (per event in a VES
/// `eventList`, which may mix fault and `stndDefined` events). Their names
/// (`native`, `ves`, `stnddefined`, `tmf642`) are what `[[ingest.elements]]`
/// rules are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Native,
    /// VES `fault` domain events.
    Ves,
    /// 3GPP FaultSupervision notifications in VES `stndDefined` events.
    StndDefined,
    Tmf642,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Ves => "ves",
            Format::StndDefined => "stnddefined",
            Format::Tmf642 => "tmf642",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One result of decoding a record, with the format it came in.
pub type Decoded = (Format, Result<Alarm, DecodeError>);

/// Decode one record at `now` under `limits`: one result per alarm the
/// record carries (a record-level problem is a single error).
pub fn decode_checked(payload: &[u8], now: DateTime<Utc>, limits: &Limits) -> Vec<Result<Alarm, DecodeError>> {
    decode_record(payload, now, limits).into_iter().map(|(_, r)| r).collect()
}

/// [`decode_checked`], each result with its format (what element → site
/// resolution, [`super::elements::Elements`], needs).
pub fn decode_record(payload: &[u8], now: DateTime<Utc>, limits: &Limits) -> Vec<Decoded> {
    if payload.len() > limits.max_bytes {
        return vec![(Format::Native, Err(DecodeError::Oversized { size: payload.len(), limit: limits.max_bytes }))];
    }
    let mut out = decode_formats(payload);
    for (_, r) in &mut out {
        if let Ok(a) = r {
            if a.event_time > now + limits.max_future {
                let ahead = limits.max_future.to_std().map(humantime::format_duration).map(|d| d.to_string());
                *r = Err(DecodeError::Future { at: a.event_time, now, ahead: ahead.unwrap_or_default() });
            }
        }
    }
    out
}

/// Decode one record value in whichever format it is, without limits.
pub fn decode_all(payload: &[u8]) -> Vec<Result<Alarm, DecodeError>> {
    decode_formats(payload).into_iter().map(|(_, r)| r).collect()
}

/// [`decode_all`], each result with its format.
pub fn decode_formats(payload: &[u8]) -> Vec<Decoded> {
    match native_direct(payload) {
        Some(a) => vec![(Format::Native, validate(a))],
        None => decode_general(payload),
    }
}

/// [`decode_all`] through the JSON tree: format detection, then the format's
/// adapter; the only path for VES, TMF642 and every record in error.
fn decode_general(payload: &[u8]) -> Vec<Decoded> {
    let (format, obj) = match parse(payload) {
        Ok(x) => x,
        Err(e) => return vec![(Format::Native, Err(e))],
    };
    let results = match format {
        Format::Native => vec![(format, native(Value::Object(obj)))],
        Format::Ves | Format::StndDefined => ves::decode(&obj),
        Format::Tmf642 => vec![(format, tmf642::decode(&obj))],
    };
    results.into_iter().map(|(f, r)| (f, r.and_then(validate))).collect()
}

/// Decode a record that must carry exactly one alarm (any format).
pub fn decode(payload: &[u8]) -> Result<Alarm, DecodeError> {
    let mut all = decode_all(payload);
    match all.len() {
        1 => all.remove(0),
        0 => Err(DecodeError::Shape("no fault event in the record".into())),
        n => Err(DecodeError::Shape(format!("{n} alarms in a record where one was expected"))),
    }
}

/// The record's JSON object and its format.
fn parse(payload: &[u8]) -> Result<(Format, Map<String, Value>), DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let v: Value = serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(DecodeError::Shape(format!("a JSON {}", kind(&v))));
    };
    let format = if ves::detect(&obj) {
        Format::Ves
    } else if tmf642::detect(&obj) {
        Format::Tmf642
    } else {
        Format::Native
    };
    Ok((format, obj))
}

/// The native shape read straight from the bytes, with no `Value` tree in
/// between: the common case, taken only when it is unambiguous. `None` (a
/// non-object, a duplicate or missing field, a wrong type, or a key that
/// makes the record VES or TMF642) sends the record down the general path,
/// which gives the same alarm or names what is wrong.
fn native_direct(payload: &[u8]) -> Option<Alarm> {
    // A struct also deserializes from a JSON array; only objects are alarms.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let d: NativeDirect = serde_json::from_slice(payload).ok()?;
    if d.event_list || d.event || d.perceived_severity || d.alarmed_object {
        return None;
    }
    let NativeDirect {
        alarm_id, site_id, state, severity, probable_cause, specific_problem, event_time, lat, lon, ..
    } = d;
    Some(Alarm { alarm_id, site_id, state, severity, probable_cause, specific_problem, event_time, lat, lon })
}

/// [`Alarm`]'s fields, plus whether the keys that format detection looks
/// at (`ves::detect`, `tmf642::detect`) are present, whatever their value.
#[derive(Deserialize)]
struct NativeDirect {
    alarm_id: String,
    site_id: String,
    state: crate::model::AlarmState,
    severity: crate::model::Severity,
    probable_cause: String,
    #[serde(default)]
    specific_problem: Option<String>,
    event_time: DateTime<Utc>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(rename = "eventList", default, deserialize_with = "present")]
    event_list: bool,
    #[serde(default, deserialize_with = "present")]
    event: bool,
    #[serde(rename = "perceivedSeverity", default, deserialize_with = "present")]
    perceived_severity: bool,
    #[serde(rename = "alarmedObject", default, deserialize_with = "present")]
    alarmed_object: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

fn native(v: Value) -> Result<Alarm, DecodeError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::Shape(if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) })
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What every alarm must satisfy, whatever format it came in.
fn validate(a: Alarm) -> Result<Alarm, DecodeError> {
    let field = |field: &str, message: &str| Err(DecodeError::field(field, message));
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
    Ok(a)
}

/// Typed access to one JSON object of a foreign format, with the path of
/// the field in every error.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// `v`, which must be an object; `path` names it in errors.
    pub fn root(v: &'a Value, path: &str) -> Result<Self, DecodeError> {
        match v {
            Value::Object(map) => Ok(Fields { map, path: path.to_string() }),
            other => Err(DecodeError::field(path, format!("a JSON {}, not an object", kind(other)))),
        }
    }

    /// The fields of `map`.
    pub fn of(map: &'a Map<String, Value>, path: &str) -> Self {
        Fields { map, path: path.to_string() }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn object(&self, key: &str) -> Result<Fields<'a>, DecodeError> {
        match self.map.get(key) {
            Some(v) => Fields::root(v, &self.name(key)),
            None => Err(DecodeError::field(self.name(key), "missing")),
        }
    }

    pub fn opt_object(&self, key: &str) -> Result<Option<Fields<'a>>, DecodeError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Fields::root(v, &self.name(key)).map(Some),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.opt_str(key)?.ok_or_else(|| DecodeError::field(self.name(key), "missing"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(DecodeError::field(self.name(key), format!("a JSON {}, not a string", kind(other)))),
        }
    }

    /// An epoch in microseconds, as any JSON number (an integer, a
    /// fraction, an exponent: ONAP writes `1.633608637561E15`), or such a
    /// number quoted (O-RAN SC's VES client scripts send
    /// `"startEpochMicrosec": "1639985336443218"`); fractions of a
    /// microsecond are rounded. Refused, naming the field, when not a
    /// number, not finite (`"NaN"`, `"inf"`) or out of the time range.
    pub fn opt_epoch_micros(&self, key: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        let in_range = |f: f64| (f.is_finite() && f.abs() < 9.2e18).then(|| f.round() as i64);
        let micros = match self.map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().and_then(in_range)),
            Some(Value::String(s)) => {
                let t = s.trim();
                match (t.parse::<i64>(), t.parse::<f64>()) {
                    (Ok(i), _) => Some(i),
                    (_, Ok(f)) if !f.is_finite() => {
                        return Err(DecodeError::field(self.name(key), format!("{s:?} is not a finite number")))
                    }
                    (_, Ok(f)) => in_range(f),
                    _ => return Err(DecodeError::field(self.name(key), format!("{s:?} is not a number"))),
                }
            }
            Some(other) => {
                return Err(DecodeError::field(self.name(key), format!("a JSON {}, not a number", kind(other))))
            }
        };
        micros
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .map(Some)
            .ok_or_else(|| DecodeError::field(self.name(key), "out of range for a time in microseconds since 1970"))
    }

    /// An id the standard types as a string but feeds (and TMF642 v4's
    /// swagger) send as an integer too: the integer's decimal text.
    pub fn id(&self, key: &str) -> Result<String, DecodeError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(DecodeError::field(self.name(key), "missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(other) => {
                Err(DecodeError::field(self.name(key), format!("a JSON {}, not a string or an integer", kind(other))))
            }
        }
    }

    /// Free text that some feeds send as a number or a list of strings
    /// (3GPP `specificProblem`): `None` when absent or blank.
    pub fn opt_text(&self, key: &str) -> Result<Option<String>, DecodeError> {
        let text = match self.map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")
            }
            Some(other) => return Err(DecodeError::field(self.name(key), format!("a JSON {}, not text", kind(other)))),
        };
        Ok(Some(text).filter(|t| !t.trim().is_empty()))
    }

    /// An RFC 3339 timestamp, converted to UTC.
    pub fn opt_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| DecodeError::field(self.name(key), format!("{s:?} is not an RFC 3339 time: {e}"))),
        }
    }
}

/// Test helper for the adapters: `good` with the value at each JSON
/// pointer replaced must be refused with an error naming the field.
#[cfg(test)]
pub(crate) fn assert_refused_naming(good: &Value, cases: &[(&str, Value, &str)]) {
    for (ptr, value, needle) in cases {
        let mut v = good.clone();
        *v.pointer_mut(ptr).unwrap_or_else(|| panic!("no {ptr} in {good}")) = value.clone();
        let got = decode_all(v.to_string().as_bytes());
        let err = got[0].as_ref().map(|a| format!("accepted {a:?}")).unwrap_or_else(|e| e.to_string());
        assert!(err.contains(needle), "{ptr} = {value}: {err}");
    }
}

/// A record the alarm source could not use (`schemas/dlq.v1.schema.json`).
///
/// Always far below the producer's record limit
/// ([`crate::kafka::RECORD_MAX_BYTES`]), whatever the original: the
/// original is kept up to [`DLQ_PAYLOAD_MAX_BYTES`] (then cut, with
/// `payload_truncated`), its full size and SHA-256 alongside, and the
/// reason up to [`DLQ_REASON_MAX_BYTES`]. Even all escaped (`\u0001`, six
/// bytes a byte), that is under 400 kB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqRecord {
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The original value as text (lossy for non-UTF-8 bytes), cut to
    /// [`DLQ_PAYLOAD_MAX_BYTES`] of the original when `payload_truncated`.
    pub payload: String,
    /// Whether `payload` is only the beginning of the original.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// The original value's size in bytes (absent in records written
    /// before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// SHA-256 of the original value's bytes, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Bytes of the original record a dead letter keeps.
pub const DLQ_PAYLOAD_MAX_BYTES: usize = 64 * 1024;
/// Bytes of the reason a dead letter keeps (a reason can quote the input:
/// an unknown site's id).
pub const DLQ_REASON_MAX_BYTES: usize = 2048;

/// `bytes` cut to at most `max` bytes, not inside a UTF-8 sequence.
fn prefix(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut cut = max;
    // Back off continuation bytes (at most 3 for valid UTF-8).
    while cut > 0 && max - cut < 3 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    &bytes[..cut]
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl DlqRecord {
    pub fn new(rec: &SourceRecord, reason: String, now: DateTime<Utc>) -> Self {
        let kept = prefix(&rec.payload, DLQ_PAYLOAD_MAX_BYTES);
        let reason = if reason.len() > DLQ_REASON_MAX_BYTES {
            format!("{}…", String::from_utf8_lossy(prefix(reason.as_bytes(), DLQ_REASON_MAX_BYTES)))
        } else {
            reason
        };
        DlqRecord {
            reason,
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            payload: String::from_utf8_lossy(kept).into_owned(),
            payload_truncated: kept.len() < rec.payload.len(),
            payload_bytes: Some(rec.payload.len() as u64),
            payload_sha256: Some(sha256_hex(&rec.payload)),
            received_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_of_any_record_fits_the_producer_limit() {
        let rec =
            |payload: Vec<u8>| SourceRecord { topic: "noc.alarms".into(), partition: 0, offset: 7, key: None, payload };
        let now = Utc::now();
        // 2 MB of text, 200 kB of control bytes (each escaped to six), a
        // cut inside a multi-byte character, a huge reason.
        let cases = [b"x".repeat(2_000_000), vec![1u8; 200_000], "é".repeat(DLQ_PAYLOAD_MAX_BYTES).into_bytes()];
        for payload in cases {
            let d = DlqRecord::new(&rec(payload.clone()), "r".repeat(1_000_000), now);
            let json = serde_json::to_vec(&d).unwrap();
            assert!(json.len() < crate::kafka::RECORD_MAX_BYTES / 2, "{} bytes", json.len());
            assert!(d.payload_truncated);
            assert_eq!(d.payload_bytes, Some(payload.len() as u64));
            assert_eq!(d.payload_sha256.as_deref(), Some(sha256_hex(&payload).as_str()));
            assert!(!d.payload.contains('\u{FFFD}'), "cut on a character boundary");
            assert!(payload.starts_with(d.payload.as_bytes()));
            assert!(d.reason.len() <= DLQ_REASON_MAX_BYTES + 3);
        }
        let small = DlqRecord::new(&rec(b"not json".to_vec()), "bad".into(), now);
        assert!(!small.payload_truncated);
        assert_eq!(small.payload, "not json");
        assert_eq!(small.payload_bytes, Some(8));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

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
    fn the_direct_native_path_leaves_other_shapes_to_the_general_one() {
        let good: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        assert!(native_direct(GOOD.as_bytes()).is_some());
        let with = |k: &str, v: serde_json::Value| {
            let mut g = good.clone();
            g[k] = v;
            g.to_string()
        };
        // Format markers, even null, make the record VES or TMF642.
        for k in ["eventList", "event", "perceivedSeverity", "alarmedObject"] {
            let rec = with(k, serde_json::Value::Null);
            assert!(native_direct(rec.as_bytes()).is_none(), "{rec}");
            assert_eq!(decode_formats(rec.as_bytes()), decode_general(rec.as_bytes()));
        }
        let fields = ["alarm_id", "site_id", "state", "severity", "probable_cause", "event_time"];
        let array = serde_json::Value::Array(fields.iter().map(|f| good[f].clone()).collect()).to_string();
        assert!(native_direct(array.as_bytes()).is_none(), "an array is not an alarm");
        assert_eq!(decode_formats(array.as_bytes()), decode_general(array.as_bytes()));
        let doubled = GOOD.replacen('{', "{\"site_id\": \"X\", ", 1);
        assert!(native_direct(doubled.as_bytes()).is_none(), "a doubled key: {doubled}");
        assert_eq!(decode_formats(doubled.as_bytes()), decode_general(doubled.as_bytes()));
    }

    #[test]
    fn every_bad_record_has_a_reason_naming_the_problem() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "empty"),
            (b"\xff\xfe", "not JSON"),
            (b"{\"alarm_id\":", "not JSON"),
            (b"[1,2]", "JSON array"),
            (br#"{"event":{"commonEventHeader":{}}}"#, "commonEventHeader.domain"),
            (br#"{"eventList":{}}"#, "eventList"),
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
        let one = |payload: &str| {
            let mut all = decode_checked(payload.as_bytes(), now, &limits);
            assert_eq!(all.len(), 1, "{payload}");
            all.remove(0)
        };
        assert!(one(GOOD).is_ok());
        let big = GOOD.replace("mains power failure", &"x".repeat(400));
        assert_eq!(one(&big).unwrap_err().class(), "oversized");
        let later = GOOD.replace("06:00:00Z", "06:06:00Z");
        let err = one(&later).unwrap_err();
        assert_eq!(err.class(), "future_time", "{err}");
        let soon = GOOD.replace("06:00:00Z", "06:04:00Z");
        assert!(one(&soon).is_ok(), "a clock a little ahead is tolerated");
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

        /// Every JSON pointer inside `v` (objects and arrays, not the root).
        fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
            let children: Vec<(String, &serde_json::Value)> = match v {
                serde_json::Value::Object(m) => m.iter().map(|(k, v)| (format!("{at}/{k}"), v)).collect(),
                serde_json::Value::Array(a) => a.iter().enumerate().map(|(i, v)| (format!("{at}/{i}"), v)).collect(),
                _ => vec![],
            };
            for (p, child) in children {
                out.push(p.clone());
                pointers(child, p, out);
            }
        }

        /// Valid records of every format, one field replaced by a value of
        /// any type (or removed), so the adapters' every branch is hit.
        fn mutated_records() -> impl Strategy<Value = String> {
            let a: Alarm = serde_json::from_str(super::GOOD).unwrap_or_else(|_| unreachable!());
            let ves1 = serde_json::json!({ "event": crate::sources::ves::encode_event(&a, 1) });
            let ves_list = serde_json::json!({ "eventList": [ves1["event"].clone(), ves1["event"].clone()] });
            let tmf = crate::sources::tmf642::encode_notification(&a);
            let stnd = serde_json::json!({ "event": crate::sources::ves::encode_stnd_defined(&a, 1) });
            let bases = vec![
                stnd,
                serde_json::to_value(&a).unwrap_or_default(),
                ves1,
                ves_list,
                tmf.clone(),
                tmf["event"]["alarm"].clone(),
            ];
            let value = prop_oneof![
                Just(None),
                Just(Some(serde_json::Value::Null)),
                any::<bool>().prop_map(|b| Some(b.into())),
                any::<i64>().prop_map(|n| Some(n.into())),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(serde_json::Value::Number)),
                ".{0,20}".prop_map(|s| Some(s.into())),
                Just(Some("NaN".into())),
                Just(Some("NORMAL".into())),
                Just(Some(serde_json::json!({}))),
                Just(Some(serde_json::json!([]))),
            ];
            (proptest::sample::select(bases), any::<proptest::sample::Index>(), value).prop_map(
                |(mut base, ix, value)| {
                    let mut ptrs = Vec::new();
                    pointers(&base, String::new(), &mut ptrs);
                    if !ptrs.is_empty() {
                        let p = &ptrs[ix.index(ptrs.len())];
                        let (parent, key) = p.rsplit_once('/').unwrap_or_default();
                        match (base.pointer_mut(parent), value) {
                            (Some(serde_json::Value::Object(m)), None) => {
                                m.remove(key);
                            }
                            (_, Some(v)) => {
                                if let Some(slot) = base.pointer_mut(p) {
                                    *slot = v;
                                }
                            }
                            _ => {}
                        }
                    }
                    base.to_string()
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn mutated_records_of_every_format_decode_or_say_why(json in mutated_records()) {
                for r in decode_checked(json.as_bytes(), now(), &Limits::default()) {
                    match r {
                        Ok(a) => {
                            prop_assert!(!a.alarm_id.trim().is_empty() && !a.site_id.trim().is_empty());
                            prop_assert!(a.lat.is_none_or(|l| (-90.0..=90.0).contains(&l)), "{json}");
                        }
                        Err(e) => prop_assert!(!e.to_string().is_empty() && !e.class().is_empty()),
                    }
                }
            }

            #[test]
            fn the_direct_native_path_agrees_with_the_general_one(json in prop_oneof![alarmish(), mutated_records()]) {
                if let Some(a) = native_direct(json.as_bytes()) {
                    prop_assert_eq!(decode_general(json.as_bytes()), vec![(Format::Native, validate(a))], "{}", json);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = decode_checked(&bytes, now(), &Limits::default());
            }

            #[test]
            fn alarm_shaped_json_decodes_or_says_why(json in alarmish()) {
                for r in decode_checked(json.as_bytes(), now(), &Limits::default()) {
                    match r {
                        Ok(a) => prop_assert!(!a.alarm_id.trim().is_empty() && !a.site_id.trim().is_empty()),
                        Err(e) => prop_assert!(!e.to_string().is_empty()),
                    }
                }
            }
        }
    }
}
