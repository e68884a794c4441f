//! Probable causes → cause classes. Owns the built-in table of the
//! standards' probable causes (ITU-T X.733/X.721, the X.736 security
//! causes, 3GPP TS 32.111-2 Annex B), the operator's extra rules for vendor
//! strings (`[[causes.rules]]`), and the tally of causes nobody classified.
//! The class decides whether a raise can take service down (with the
//! correlator's severity rule) and which words customers read. Pure.
//!
//! Matching ignores case and separators: `lossOfSignal`, `LOSS_OF_SIGNAL`,
//! `loss of signal` and `Loss-Of-Signal` are one cause. Operator rules are
//! tried first (first match wins), then the table; what neither knows is
//! *unclassified*: counted by value so an operator sees what the
//! configuration does not cover.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

/// What kind of failure a probable cause describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CauseClass {
    /// Mains, batteries, rectifiers, generators, fuses.
    Power,
    /// Lines and links: loss of signal or frame, AIS, bit errors, links down.
    Transmission,
    /// Boards, radios, antennas, processors, replaceable units.
    Equipment,
    /// The site's surroundings: temperature, humidity, doors, fire, flood,
    /// cooling. Not service-affecting by default.
    Environment,
    /// Software, configuration, data, memory.
    Software,
    /// Quality of service: congestion, thresholds, degraded performance.
    Capacity,
    /// X.736 security alarms. Not service-affecting by default.
    Security,
    /// The standards' catch-alls (`indeterminate`, `unspecifiedReason`,
    /// `outOfService`, …): a failure of unknown kind.
    Other,
}

impl CauseClass {
    pub const ALL: [CauseClass; 8] = [
        CauseClass::Power,
        CauseClass::Transmission,
        CauseClass::Equipment,
        CauseClass::Environment,
        CauseClass::Software,
        CauseClass::Capacity,
        CauseClass::Security,
        CauseClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CauseClass::Power => "power",
            CauseClass::Transmission => "transmission",
            CauseClass::Equipment => "equipment",
            CauseClass::Environment => "environment",
            CauseClass::Software => "software",
            CauseClass::Capacity => "capacity",
            CauseClass::Security => "security",
            CauseClass::Other => "other",
        }
    }
}

/// How a [`CauseRule`] pattern is matched against a cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The whole cause, ignoring case and separators (as the table).
    #[default]
    Exact,
    /// A shell-style glob (`*`, `?`) over the whole cause, ignoring case.
    Glob,
    /// A regular expression (Rust `regex` syntax), searched in the cause as
    /// sent; anchor it and add `(?i)` as needed.
    Regex,
}

/// One operator rule: causes matching `pattern` belong to `class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CauseRule {
    /// How `pattern` is read. Default `exact`.
    #[serde(default, rename = "match")]
    pub kind: MatchKind,
    pub pattern: String,
    pub class: CauseClass,
}

/// `[causes]`: the operator's extra classification and how the
/// unclassified are reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CausesConfig {
    /// Vendor strings the standards' table does not know, tried before it
    /// (first match wins). Default: none.
    pub rules: Vec<CauseRule>,
    /// How many of the most frequent unclassified causes `/metrics`, the
    /// periodic log line and reports name. Default 10.
    pub report_top: usize,
    /// How often the daemon logs the most frequent unclassified causes
    /// seen since the last such line (nothing when there are none).
    /// Default 5m.
    #[serde(with = "humantime_serde")]
    pub report_every: std::time::Duration,
}

impl Default for CausesConfig {
    fn default() -> Self {
        CausesConfig { rules: Vec::new(), report_top: 10, report_every: std::time::Duration::from_secs(300) }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("causes.rules[{index}].pattern: {message}")]
pub struct RuleError {
    pub index: usize,
    pub message: String,
}

enum Matcher {
    Exact(String),
    Regex(regex::Regex),
}

/// The built-in table plus the operator's rules, compiled.
pub struct Classifier {
    rules: Vec<(Matcher, CauseClass)>,
}

impl Default for Classifier {
    /// The built-in table only.
    fn default() -> Self {
        Classifier { rules: Vec::new() }
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("rules", &self.rules.len()).finish()
    }
}

impl Classifier {
    /// Compile `cfg`'s rules; a bad pattern names its rule.
    pub fn new(cfg: &CausesConfig) -> Result<Self, RuleError> {
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let err = |message: String| RuleError { index, message };
                let m = match r.kind {
                    MatchKind::Exact => {
                        let n = normalize(&r.pattern);
                        if n.is_empty() {
                            return Err(err("has no letters or digits".into()));
                        }
                        Matcher::Exact(n)
                    }
                    MatchKind::Glob => Matcher::Regex(
                        regex::RegexBuilder::new(&glob_to_regex(r.pattern.trim()))
                            .case_insensitive(true)
                            .build()
                            .map_err(|e| err(e.to_string()))?,
                    ),
                    MatchKind::Regex => Matcher::Regex(regex::Regex::new(&r.pattern).map_err(|e| err(e.to_string()))?),
                };
                Ok((m, r.class))
            })
            .collect::<Result<_, _>>()?;
        Ok(Classifier { rules })
    }

    /// The class of `cause`, or `None` when neither the operator's rules
    /// nor the standards' table know it.
    pub fn classify(&self, cause: &str) -> Option<CauseClass> {
        let cause = cause.trim();
        let norm = normalize(cause);
        for (m, class) in &self.rules {
            let hit = match m {
                Matcher::Exact(n) => *n == norm,
                Matcher::Regex(re) => re.is_match(cause),
            };
            if hit {
                return Some(*class);
            }
        }
        TABLE.get(norm.as_str()).copied()
    }
}

/// `*.x?` → `^.*\.x.$`.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut lit = String::new();
    for c in glob.chars() {
        if c == '*' || c == '?' {
            out.push_str(&regex::escape(&lit));
            lit.clear();
            out.push_str(if c == '*' { ".*" } else { "." });
        } else {
            lit.push(c);
        }
    }
    out.push_str(&regex::escape(&lit));
    out.push('$');
    out
}

/// A cause's matching key: its letters and digits, lower case.
pub fn normalize(cause: &str) -> String {
    cause.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Every probable cause of ITU-T X.721/X.733 (with the M.3100 and X.736
/// additions) and 3GPP TS 32.111-2 Annex B, by the name the standards
/// give, with its class. Names are normalized when the table is built, so
/// the spelling here is the standards' own.
pub const STANDARD_CAUSES: &[(&str, CauseClass)] = {
    use CauseClass::*;
    &[
        // Power (X.733 powerProblem; 3GPP's power and environmental-power causes).
        ("powerProblem", Power),
        ("Power Supply Failure", Power),
        ("Commercial Power Failure", Power),
        ("Commercial Power Problem", Power),
        ("Battery Charging Failure", Power),
        ("Battery Discharging", Power),
        ("Battery Failure", Power),
        ("Low Battery Threshold", Power),
        ("Low Battery", Power),
        ("Rectifier Failure", Power),
        ("Rectifier High Voltage", Power),
        ("Rectifier Low F Voltage", Power),
        ("Rectifier Low Voltage", Power),
        ("Generator Failure", Power),
        ("Engine Failure", Power),
        ("Fuse Failure", Power),
        ("Low Fuel", Power),
        // Transmission (X.733 communications alarms; 3GPP communications causes).
        ("lossOfSignal", Transmission),
        ("lossOfFrame", Transmission),
        ("Loss Of Multi Frame", Transmission),
        ("Loss Of Pointer", Transmission),
        ("framingError", Transmission),
        ("Frame Alignment Error", Transmission),
        ("degradedSignal", Transmission),
        ("Alarm Indication Signal", Transmission),
        ("Alarm Indication Signal (AIS)", Transmission),
        ("AIS", Transmission),
        ("Remote Alarm Indication", Transmission),
        ("Far End Receiver Failure", Transmission),
        ("Excessive Bit Error Rate", Transmission),
        ("Excessive Error Rate", Transmission),
        ("Transmission Error", Transmission),
        ("transmitFailure", Transmission),
        ("receiveFailure", Transmission),
        ("Communications Receive Failure", Transmission),
        ("Communications Transmit Failure", Transmission),
        ("communicationsSubsystemFailure", Transmission),
        ("communicationsProtocolError", Transmission),
        ("Connection Establishment Error", Transmission),
        ("callEstablishmentError", Transmission),
        ("Call Set-up Failure", Transmission),
        ("localNodeTransmissionError", Transmission),
        ("remoteNodeTransmissionError", Transmission),
        ("lANError", Transmission),
        ("dTE-DCEInterfaceError", Transmission),
        ("dataSetOrModemError", Transmission),
        ("Data Set Problem", Transmission),
        ("Path Trace Mismatch", Transmission),
        ("Payload Type Mismatch", Transmission),
        ("Signal Label Mismatch", Transmission),
        ("Unavailable", Transmission),
        ("Loss Of Synchronisation", Transmission),
        ("Loss Of Synchronization", Transmission),
        ("Synchronisation Source Mismatch", Transmission),
        ("Sync Loss Or Mismatch", Transmission),
        ("timingProblem", Transmission),
        ("Protection Path Failure", Transmission),
        ("Routing Failure", Transmission),
        ("Modulation Failure", Transmission),
        ("Demodulation Failure", Transmission),
        // Names public VES samples use for a link failure.
        ("linkDown", Transmission),
        ("linkFailure", Transmission),
        // Equipment (X.733 equipment alarms; 3GPP equipment causes).
        ("equipmentMalfunction", Equipment),
        ("adapterError", Equipment),
        ("Back Plane Failure", Equipment),
        ("Equipment Identifier Duplication", Equipment),
        ("External Device Problem", Equipment),
        ("Line Card Problem", Equipment),
        ("multiplexerProblem", Equipment),
        ("NE Identifier Duplication", Equipment),
        ("processorProblem", Equipment),
        ("receiverFailure", Equipment),
        ("transmitterFailure", Equipment),
        ("Replaceable Unit Missing", Equipment),
        ("Replaceable Unit Type Mismatch", Equipment),
        ("Replaceable Unit Problem", Equipment),
        ("Terminal Problem", Equipment),
        ("Trunk Card Problem", Equipment),
        ("Real Time Clock Failure", Equipment),
        ("Antenna Failure", Equipment),
        ("Disk Failure", Equipment),
        ("Frequency Hopping Failure", Equipment),
        ("inputOutputDeviceError", Equipment),
        ("Input/Output Device Error", Equipment),
        ("inputDeviceError", Equipment),
        ("outputDeviceError", Equipment),
        ("ouputDeviceError", Equipment),
        ("Loss Of Redundancy", Equipment),
        ("Signal Quality Evaluation Failure", Equipment),
        ("Transceiver Failure", Equipment),
        ("Protection Mechanism Failure", Equipment),
        ("Protecting Resource Failure", Equipment),
        ("External Equipment Failure", Equipment),
        ("External Point Failure", Equipment),
        ("Broadcast Channel Failure", Equipment),
        ("Memory Mismatch", Equipment),
        ("Sensor Failure", Equipment),
        ("materialSupplyExhausted", Equipment),
        ("Element Unavailable", Equipment),
        ("Element Missing", Equipment),
        // Environment (X.733 environmental alarms; 3GPP environmental causes).
        ("enclosureDoorOpen", Environment),
        ("excessiveVibration", Environment),
        ("fireDetected", Environment),
        ("Fire", Environment),
        ("Fire Detector Failure", Environment),
        ("floodDetected", Environment),
        ("Flood", Environment),
        ("heatingOrVentilationOrCoolingSystemProblem", Environment),
        ("HVAC Problem", Environment),
        ("humidityUnacceptable", Environment),
        ("High Humidity", Environment),
        ("Low Humidity", Environment),
        ("leakDetected", Environment),
        ("Non-Toxic Leak Detected", Environment),
        ("toxicLeakDetected", Environment),
        ("Toxic Gas", Environment),
        ("Explosive Gas", Environment),
        ("pressureUnacceptable", Environment),
        ("Low Cable Pressure", Environment),
        ("pumpFailure", Environment),
        ("temperatureUnacceptable", Environment),
        ("High Temperature", Environment),
        ("Low Temperature", Environment),
        ("Air Compressor Failure", Environment),
        ("Air Conditioning Failure", Environment),
        ("Air Dryer Failure", Environment),
        ("Cooling Fan Failure", Environment),
        ("Fan Failure", Environment),
        ("Cooling System Failure", Environment),
        ("Ventilation System Failure", Environment),
        ("High Wind", Environment),
        ("High Winds", Environment),
        ("Ice Build Up", Environment),
        ("Intrusion Detection", Environment),
        ("Low Water", Environment),
        ("Smoke", Environment),
        // Software (X.733 processing errors; 3GPP processing causes).
        ("applicationSubsystemFailure", Software),
        ("configurationOrCustomizationError", Software),
        ("Configuration Or Customisation Error", Software),
        ("corruptData", Software),
        ("cpuCyclesLimitExceeded", Software),
        ("Out Of CPU Cycles", Software),
        ("fileError", Software),
        ("outOfMemory", Software),
        ("softwareError", Software),
        ("softwareProgramAbnormallyTerminated", Software),
        ("softwareProgramError", Software),
        ("storageCapacityProblem", Software),
        ("versionMismatch", Software),
        ("Software Environment Problem", Software),
        ("Software Download Failure", Software),
        ("Loss Of Real Time", Software),
        ("Database Inconsistency", Software),
        ("Timeout Expired", Software),
        ("underlyingResourceUnavailable", Software),
        ("Reduced Logging Capability", Software),
        ("Element Reinitialized", Software),
        // Capacity (X.733 quality-of-service alarms).
        ("bandwidthReduced", Capacity),
        ("congestion", Capacity),
        ("performanceDegraded", Capacity),
        ("queueSizeExceeded", Capacity),
        ("resourceAtOrNearingCapacity", Capacity),
        ("responseTimeExcessive", Capacity),
        ("responseTimeExecessive", Capacity),
        ("Excessive Response Time", Capacity),
        ("retransmissionRateExcessive", Capacity),
        ("Excessive Retransmission Rate", Capacity),
        ("thresholdCrossed", Capacity),
        ("System Resources Overload", Capacity),
        // Security (X.736).
        ("authenticationFailure", Security),
        ("breachOfConfidentiality", Security),
        ("cableTamper", Security),
        ("delayedInformation", Security),
        ("denialOfService", Security),
        ("duplicateInformation", Security),
        ("informationMissing", Security),
        ("informationModificationDetected", Security),
        ("informationOutOfSequence", Security),
        ("keyExpired", Security),
        ("nonRepudiationFailure", Security),
        ("outOfHoursActivity", Security),
        ("proceduralError", Security),
        ("unauthorizedAccessAttempt", Security),
        ("unexpectedInformation", Security),
        // The catch-alls.
        ("indeterminate", Other),
        ("unspecifiedReason", Other),
        ("outOfService", Other),
        ("other", Other),
        ("unknown", Other),
    ]
};

static TABLE: LazyLock<HashMap<String, CauseClass>> =
    LazyLock::new(|| STANDARD_CAUSES.iter().map(|(name, class)| (normalize(name), *class)).collect());

/// Raises whose cause nobody classified, by cause as sent, and raises by
/// class: what `/metrics`, the log and the replay report show. Bounded:
/// past `MAX_DISTINCT` distinct causes, new ones are only counted in
/// `overflow`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CauseTally {
    unclassified: HashMap<String, u64>,
    /// Unclassified raises whose cause did not fit in the map.
    pub overflow: u64,
    /// Raises by class (`CauseClass::ALL` order).
    pub by_class: [u64; 8],
}

impl CauseTally {
    pub const MAX_DISTINCT: usize = 1000;

    pub fn record(&mut self, cause: &str, class: Option<CauseClass>) {
        match class {
            Some(c) => self.by_class[c as usize] += 1,
            None => self.unclassified(cause, 1),
        }
    }

    /// `n` more unclassified raises of `cause`.
    pub fn unclassified(&mut self, cause: &str, n: u64) {
        if let Some(v) = self.unclassified.get_mut(cause) {
            *v += n;
        } else if self.unclassified.len() < Self::MAX_DISTINCT {
            self.unclassified.insert(cause.to_string(), n);
        } else {
            self.overflow += n;
        }
    }

    /// Every unclassified raise, including the overflow.
    pub fn unclassified_total(&self) -> u64 {
        self.unclassified.values().sum::<u64>() + self.overflow
    }

    /// The `n` most frequent unclassified causes, most frequent first (ties
    /// by name).
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.unclassified.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Raises by class name.
    pub fn classes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CauseClass::ALL.iter().map(|c| (c.as_str(), self.by_class[*c as usize]))
    }

    /// What was counted here and not in `earlier` (a tally this one grew
    /// from): the unclassified causes since then, for the periodic log.
    pub fn since(&self, earlier: &CauseTally) -> CauseTally {
        let mut d = CauseTally { overflow: self.overflow - earlier.overflow.min(self.overflow), ..Default::default() };
        for (k, v) in &self.unclassified {
            let before = earlier.unclassified.get(k).copied().unwrap_or(0);
            if *v > before {
                d.unclassified.insert(k.clone(), v - before);
            }
        }
        for (i, c) in d.by_class.iter_mut().enumerate() {
            *c = self.by_class[i].saturating_sub(earlier.by_class[i]);
        }
        d
    }

    /// What `/metrics` shows: raises by class, the `n` most frequent
    /// unclassified causes and how many unclassified raises in all.
    pub fn summary(&self, n: usize) -> TallySummary {
        TallySummary { by_class: self.by_class, top: self.top(n), unclassified: self.unclassified_total() }
    }

    /// `cause (n), cause (n), …` of the top `n`, for a log line.
    pub fn describe_top(&self, n: usize) -> String {
        let mut s = self.top(n).into_iter().map(|(c, k)| format!("{c:?} ({k})")).collect::<Vec<_>>().join(", ");
        if self.overflow > 0 {
            s.push_str(&format!(", and {} more raises of other causes", self.overflow));
        }
        s
    }
}

/// A [`CauseTally`] as published (on [`crate::runtime::Stats`]).
pub use crate::runtime::stats::TallySummary;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_cause_are_one_cause() {
        let c = Classifier::default();
        for s in ["lossOfSignal", "LOSS_OF_SIGNAL", "loss of signal", " Loss-Of-Signal ", "LossOfSignal"] {
            assert_eq!(c.classify(s), Some(CauseClass::Transmission), "{s}");
        }
        assert_eq!(c.classify("powerProblem"), Some(CauseClass::Power));
        assert_eq!(c.classify("COMMERCIAL_POWER_FAILURE"), Some(CauseClass::Power));
        assert_eq!(c.classify("equipmentMalfunction"), Some(CauseClass::Equipment));
        assert_eq!(c.classify("Alarm Indication Signal (AIS)"), Some(CauseClass::Transmission));
        assert_eq!(c.classify("HIGH_TEMPERATURE"), Some(CauseClass::Environment));
        assert_eq!(c.classify("enclosure door open"), Some(CauseClass::Environment));
        assert_eq!(c.classify("unauthorizedAccessAttempt"), Some(CauseClass::Security));
        assert_eq!(c.classify("ALM-4471 cabinet"), None);
        assert_eq!(c.classify(""), None);
        assert_eq!(c.classify("Аварія"), None, "non-ASCII never panics");
    }

    #[test]
    fn the_table_has_no_name_in_two_classes() {
        let mut seen: HashMap<String, (&str, CauseClass)> = HashMap::new();
        for (name, class) in STANDARD_CAUSES {
            let n = normalize(name);
            assert!(!n.is_empty(), "{name}");
            if let Some((other, c)) = seen.insert(n, (name, *class)) {
                assert_eq!(c, *class, "{name} and {other} normalize alike in different classes");
            }
        }
        assert!(TABLE.len() > 180, "{}", TABLE.len());
    }

    #[test]
    fn operator_rules_come_first_and_name_their_key_when_bad() {
        let rule = |kind, pattern: &str, class| CauseRule { kind, pattern: pattern.into(), class };
        let cfg = CausesConfig {
            rules: vec![
                rule(MatchKind::Exact, "MAINS_FAIL", CauseClass::Power),
                rule(MatchKind::Glob, "ALM-44??*", CauseClass::Equipment),
                rule(MatchKind::Regex, r"^(?i)vendor\.rf\.\d+$", CauseClass::Equipment),
                rule(MatchKind::Exact, "temperatureUnacceptable", CauseClass::Power),
            ],
            ..Default::default()
        };
        let c = Classifier::new(&cfg).unwrap();
        assert_eq!(c.classify("mains fail"), Some(CauseClass::Power));
        assert_eq!(c.classify("alm-4471 cabinet"), Some(CauseClass::Equipment));
        assert_eq!(c.classify("ALM-45"), None);
        assert_eq!(c.classify("VENDOR.RF.12"), Some(CauseClass::Equipment));
        assert_eq!(c.classify("TEMPERATURE_UNACCEPTABLE"), Some(CauseClass::Power), "a rule overrides the table");
        assert_eq!(c.classify("lossOfSignal"), Some(CauseClass::Transmission), "the table still applies");
        let bad = CausesConfig { rules: vec![rule(MatchKind::Regex, "(", CauseClass::Power)], ..Default::default() };
        let err = Classifier::new(&bad).unwrap_err().to_string();
        assert!(err.starts_with("causes.rules[0].pattern"), "{err}");
        let blank =
            CausesConfig { rules: vec![rule(MatchKind::Exact, " - ", CauseClass::Power)], ..Default::default() };
        assert!(Classifier::new(&blank).is_err());
        assert_eq!(glob_to_regex("a.b*c?"), r"^a\.b.*c.$");
    }

    #[test]
    fn the_tally_keeps_the_most_frequent_and_stays_bounded() {
        let mut t = CauseTally::default();
        for (cause, n) in [("ALM-1", 3), ("ALM-2", 5), ("ALM-3", 1)] {
            for _ in 0..n {
                t.record(cause, None);
            }
        }
        t.record("lossOfSignal", Some(CauseClass::Transmission));
        assert_eq!(t.top(2), vec![("ALM-2".to_string(), 5), ("ALM-1".to_string(), 3)]);
        assert_eq!(t.by_class[CauseClass::Transmission as usize], 1);
        let before = t.clone();
        t.record("ALM-3", None);
        t.record("ALM-9", None);
        let d = t.since(&before);
        assert_eq!(d.top(5), vec![("ALM-3".to_string(), 1), ("ALM-9".to_string(), 1)]);
        for i in 0..CauseTally::MAX_DISTINCT + 10 {
            t.record(&format!("X{i}"), None);
        }
        assert_eq!(t.unclassified.len(), CauseTally::MAX_DISTINCT);
        assert!(t.overflow > 0);
        assert_eq!(t.unclassified_total(), 3 + 5 + 2 + 1 + CauseTally::MAX_DISTINCT as u64 + 10);
        assert!(t.describe_top(1).contains("more raises"));
    }
}
