//! Network elements → sites. Real feeds name the network element that
//! raised an alarm (VES `sourceName`, TMF642 `alarmedObject.id`, a 3GPP DN
//! like `SubNetwork=RI,ManagedElement=ENB-0042,ENBFunction=1`, a cell),
//! several per site; the correlator works on sites. [`Elements`] rewrites
//! an alarm's `site_id` before correlation, in the daemon and in
//! `outagectl replay` alike, so an element nobody can place is a dead letter
//! of class `unknown_site` naming the element, never a counted
//! `not_service_affecting` or a silent ad-hoc site.
//!
//! Resolution, first match wins:
//! 1. the name is a site id of the sites reference data: as is;
//! 2. the element table (`refdata.elements`, CSV `element_id,site_id`);
//! 3. the `[[ingest.elements]]` rules for the alarm's format, in order: a
//!    regex whose named group `site` captures a known site id, or an element
//!    of the table (rules whose capture is neither are skipped);
//! 4. the alarm carries `lat`/`lon`: an ad-hoc site named as the element
//!    (as before);
//! 5. else refused: [`UnknownElement`].
//!
//! Pure: no I/O, no clock; built from the configuration, given the
//! reference data per call (it is reloadable).

use crate::model::Alarm;
use crate::refdata::RefData;
use crate::sources::decode::Format;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// One `[[ingest.elements]]` rule as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementRule {
    /// The input format the rule applies to: `native`, `ves`,
    /// `stnddefined` or `tmf642`.
    pub format: Format,
    /// A regex (Rust `regex` syntax) with a named group `site`, searched in
    /// the element name; anchor it (`^…$`) to match the whole name.
    pub pattern: String,
}

/// A rule that cannot be compiled; `key` is its configuration key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

/// An alarm whose element maps to no site and which has no coordinates.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "unknown site: {format} element {element:?} is not a site id, not in the element table (refdata.elements) \
     and matches no [[ingest.elements]] rule giving a known site, and the alarm has no coordinates"
)]
pub struct UnknownElement {
    pub element: String,
    pub format: Format,
}

/// The compiled resolver.
#[derive(Debug, Clone, Default)]
pub struct Elements {
    rules: Vec<(Format, Regex)>,
}

impl Elements {
    /// Compile `rules`, configured at `ingest.elements`.
    pub fn new(rules: &[ElementRule]) -> Result<Self, RuleError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let err = |message: String| RuleError { key: format!("ingest.elements[{i}].pattern"), message };
                let re = Regex::new(&r.pattern).map_err(|e| err(e.to_string()))?;
                if !re.capture_names().any(|n| n == Some("site")) {
                    return Err(err(format!("{:?} has no named group `site` (write `(?P<site>…)`)", r.pattern)));
                }
                Ok((r.format, re))
            })
            .collect::<Result<_, _>>()?;
        Ok(Elements { rules: compiled })
    }

    /// The site of `element` (an alarm of `format`), if the reference data
    /// or a rule knows it: steps 1–3 of the module's order.
    pub fn site_of<'a>(&self, rd: &'a RefData, format: Format, element: &str) -> Option<&'a str> {
        let known = |name: &str| -> Option<&'a str> {
            match rd.site_index(name) {
                Some(i) => Some(rd.site(i).site_id.as_str()),
                None => rd.element_site(name),
            }
        };
        if let Some(site) = known(element) {
            return Some(site);
        }
        self.rules
            .iter()
            .filter(|(f, _)| *f == format)
            .filter_map(|(_, re)| re.captures(element)?.name("site"))
            .find_map(|m| known(m.as_str()))
    }

    /// Rewrite `alarm.site_id` from its element name to its site, or leave
    /// it for an ad-hoc site when the alarm has coordinates.
    pub fn resolve(&self, rd: &RefData, format: Format, alarm: &mut Alarm) -> Result<(), UnknownElement> {
        match self.site_of(rd, format, &alarm.site_id) {
            Some(site) => {
                if site != alarm.site_id {
                    alarm.site_id = site.to_string();
                }
                Ok(())
            }
            None if alarm.lat.is_some() && alarm.lon.is_some() => Ok(()),
            None => Err(UnknownElement { element: alarm.site_id.clone(), format }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmState, Severity, Site};

    fn site(id: &str) -> Site {
        Site { site_id: id.into(), lat: 41.8, lon: -71.4, radius_km: 2.0, group_id: None }
    }

    fn refdata() -> RefData {
        RefData::build(vec![site("S-RI-000241"), site("S-RI-000242")], vec![], vec![])
            .unwrap()
            .with_elements(vec![
                ("ENB-0042".into(), "S-RI-000242".into()),
                ("CELL-0042-1".into(), "S-RI-000242".into()),
            ])
            .unwrap()
    }

    fn rule(format: Format, pattern: &str) -> ElementRule {
        ElementRule { format, pattern: pattern.into() }
    }

    fn alarm(element: &str) -> Alarm {
        Alarm {
            alarm_id: "a1".into(),
            site_id: element.into(),
            state: AlarmState::Raised,
            severity: Severity::Critical,
            probable_cause: "lossOfSignal".into(),
            specific_problem: None,
            event_time: "2026-11-23T06:00:00Z".parse().unwrap(),
            lat: None,
            lon: None,
        }
    }

    #[test]
    fn resolution_order_site_table_rules_coordinates_then_refused() {
        let rd = refdata();
        let elements = Elements::new(&[
            rule(Format::Ves, r"^(?P<site>S-[A-Z]{2}-\d+)-"),
            rule(Format::StndDefined, r"ManagedElement=(?P<site>[^,]+)"),
            rule(Format::Tmf642, r"^(?P<site>NOPE)"),
            rule(Format::Tmf642, r"^(?P<site>CELL-\d+-\d+)/"),
        ])
        .unwrap();
        let got = |format: Format, element: &str| {
            let mut a = alarm(element);
            elements.resolve(&rd, format, &mut a).map(|()| a.site_id)
        };
        assert_eq!(got(Format::Native, "S-RI-000241").unwrap(), "S-RI-000241", "a site id as is");
        assert_eq!(got(Format::Native, "ENB-0042").unwrap(), "S-RI-000242", "the element table");
        assert_eq!(got(Format::Ves, "S-RI-000241-gnb-2").unwrap(), "S-RI-000241", "a rule");
        let dn = "SubNetwork=RI,ManagedElement=ENB-0042,ENBFunction=1";
        assert_eq!(got(Format::StndDefined, dn).unwrap(), "S-RI-000242", "a rule, then the table");
        assert_eq!(got(Format::Tmf642, "CELL-0042-1/sector-2").unwrap(), "S-RI-000242", "the first rule that fits");
        let err = got(Format::Ves, dn).unwrap_err();
        assert!(err.to_string().contains(dn) && err.to_string().contains("ves"), "{err}");
        let err = got(Format::Tmf642, "S-RI-000241-gnb-2").unwrap_err();
        assert_eq!(err.format, Format::Tmf642, "rules are per format");
        let mut located = alarm("ne-new-77");
        (located.lat, located.lon) = (Some(41.0), Some(-71.0));
        assert!(elements.resolve(&rd, Format::Ves, &mut located).is_ok() && located.site_id == "ne-new-77");
    }

    #[test]
    fn bad_rules_name_their_key() {
        let err = Elements::new(&[rule(Format::Ves, "^ok(?P<site>.+)$"), rule(Format::Ves, "(unclosed")]).unwrap_err();
        assert_eq!(err.key, "ingest.elements[1].pattern", "{err}");
        let err = Elements::new(&[rule(Format::Tmf642, "^(?P<cell>.+)$")]).unwrap_err();
        assert!(err.key == "ingest.elements[0].pattern" && err.message.contains("site"), "{err}");
    }
}
