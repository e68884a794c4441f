//! Where the NOC says an incident is, when it declares one by hand: a list
//! of postcodes, a list of sites, a GeoJSON polygon or a circle. Owns the
//! shape as recorded in the incident log ([`Area`], in a `scoped` event)
//! and its resolution to postcodes: a postcode is in when its centroid is
//! inside the area — the same rule a site's coverage follows — so a NOC
//! incident and a correlated one over the same ground tell the same people.
//! Pure: reads the reference data, does no I/O.

use crate::geodesy::GeoPoint;
use crate::refdata::RefData;
use geo::{Contains, Coord, LineString, MultiPolygon, Point, Polygon};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The largest circle the NOC may draw (km): beyond that a typo is likelier
/// than an outage, and a polygon says it better.
pub const MAX_RADIUS_KM: f64 = 500.0;

/// A NOC-drawn incident area. JSON: `{"postcodes": [...]}`,
/// `{"sites": [...]}`, `{"polygon": <GeoJSON Polygon or MultiPolygon>}` or
/// `{"circle": {"lat": .., "lon": .., "radius_km": ..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Area {
    Postcodes(Vec<String>),
    /// Every postcode in these sites' coverage.
    Sites(Vec<String>),
    /// A GeoJSON geometry (`Polygon` or `MultiPolygon`, lon/lat order),
    /// kept as given so the log shows what the NOC drew.
    Polygon(serde_json::Value),
    Circle {
        lat: f64,
        lon: f64,
        radius_km: f64,
    },
}

/// Why an area names no postcodes we can act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AreaError {
    #[error("the area is empty: give at least one {0}")]
    EmptyList(&'static str),
    #[error("unknown postcodes (not in the reference data): {0}")]
    UnknownPostcodes(String),
    #[error("unknown sites (not in the inventory): {0}")]
    UnknownSites(String),
    #[error("polygon: {0}")]
    Polygon(String),
    #[error("circle: {0}")]
    Circle(String),
    #[error("the area contains no postcode centroid")]
    NoPostcodes,
}

impl Area {
    /// How the area was given, for messages (`postcodes`, `sites`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Area::Postcodes(_) => "postcodes",
            Area::Sites(_) => "sites",
            Area::Polygon(_) => "polygon",
            Area::Circle { .. } => "circle",
        }
    }

    /// A polygon area is a valid simple geometry (OGC Simple Features, as
    /// `geo::Validation` checks it): no ring crosses itself (a "bow tie"),
    /// holes lie inside their exterior, rings do not cross each other. The
    /// polygons of a MultiPolygon may overlap (the area is their union).
    /// Other kinds have nothing to check here. The error names the polygon
    /// and the ring.
    pub fn check_geometry(&self) -> Result<(), AreaError> {
        use geo::Validation;
        let Area::Polygon(g) = self else { return Ok(()) };
        let mp = multipolygon(g).map_err(AreaError::Polygon)?;
        let many = mp.0.len() > 1;
        for (i, p) in mp.0.iter().enumerate() {
            if let Err(e) = p.check_validation() {
                let which = if many { format!("polygon {i}: ") } else { String::new() };
                return Err(AreaError::Polygon(format!("{which}not a valid polygon: {e}")));
            }
        }
        Ok(())
    }

    /// The postcodes (indexes into `rd.postcodes`) the area covers, sorted
    /// by postcode. Every listed postcode or site must exist: a typo is an
    /// error, not a smaller incident.
    pub fn postcodes(&self, rd: &RefData) -> Result<Vec<u32>, AreaError> {
        let mut set = BTreeSet::new();
        match self {
            Area::Postcodes(list) => {
                let list = nonempty(list, "postcode")?;
                let unknown: Vec<&str> = list.iter().filter(|p| rd.postcode_index(p).is_none()).copied().collect();
                if !unknown.is_empty() {
                    return Err(AreaError::UnknownPostcodes(first_few(&unknown)));
                }
                set.extend(list.iter().filter_map(|p| rd.postcode_index(p)));
            }
            Area::Sites(list) => {
                let list = nonempty(list, "site")?;
                let unknown: Vec<&str> = list.iter().filter(|s| rd.site_index(s).is_none()).copied().collect();
                if !unknown.is_empty() {
                    return Err(AreaError::UnknownSites(first_few(&unknown)));
                }
                for s in list.iter().filter_map(|s| rd.site_index(s)) {
                    set.extend(rd.site_postcodes(s).iter().copied());
                }
            }
            Area::Polygon(geometry) => {
                let mp = multipolygon(geometry).map_err(AreaError::Polygon)?;
                for (i, p) in rd.postcodes.iter().enumerate() {
                    if mp.contains(&Point::new(p.lon, p.lat)) {
                        set.insert(i as u32);
                    }
                }
            }
            &Area::Circle { lat, lon, radius_km } => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(AreaError::Circle(format!("centre ({lat}, {lon}) is not a latitude/longitude")));
                }
                if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
                    return Err(AreaError::Circle(format!(
                        "radius_km {radius_km} must be above 0 and at most {MAX_RADIUS_KM}"
                    )));
                }
                set.extend(rd.postcodes_within(GeoPoint::new(lat, lon), radius_km));
            }
        }
        if set.is_empty() {
            return Err(AreaError::NoPostcodes);
        }
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_by(|a, b| rd.postcodes[*a as usize].postcode.cmp(&rd.postcodes[*b as usize].postcode));
        Ok(v)
    }
}

/// The trimmed, non-blank entries of a list; an error when none is left.
fn nonempty<'a>(list: &'a [String], what: &'static str) -> Result<Vec<&'a str>, AreaError> {
    let v: Vec<&str> = list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    if v.is_empty() {
        return Err(AreaError::EmptyList(what));
    }
    Ok(v)
}

/// Up to ten names, and how many more.
fn first_few(names: &[&str]) -> String {
    let mut s = names.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 10 {
        s.push_str(&format!(" and {} more", names.len() - 10));
    }
    s
}

/// A GeoJSON `Polygon` or `MultiPolygon` geometry as `geo` polygons, with
/// every position checked (two numbers in range, rings closed and of at
/// least four positions).
fn multipolygon(g: &serde_json::Value) -> Result<MultiPolygon<f64>, String> {
    let kind = g.get("type").and_then(|t| t.as_str()).ok_or("a GeoJSON geometry needs a \"type\"")?;
    let coords = g.get("coordinates").ok_or("a GeoJSON geometry needs \"coordinates\"")?;
    let polygons: Vec<&serde_json::Value> = match kind {
        "Polygon" => vec![coords],
        "MultiPolygon" => coords.as_array().ok_or("MultiPolygon coordinates must be an array")?.iter().collect(),
        other => return Err(format!("type {other:?}: only Polygon and MultiPolygon are areas")),
    };
    let polys = polygons.into_iter().map(polygon).collect::<Result<Vec<_>, _>>()?;
    if polys.is_empty() {
        return Err("no polygon in the MultiPolygon".into());
    }
    Ok(MultiPolygon::new(polys))
}

fn polygon(rings: &serde_json::Value) -> Result<Polygon<f64>, String> {
    let rings = rings.as_array().ok_or("polygon coordinates must be an array of rings")?;
    let mut rings = rings.iter().map(ring);
    let exterior = rings.next().ok_or("a polygon needs an exterior ring")??;
    let interiors = rings.collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

fn ring(r: &serde_json::Value) -> Result<LineString<f64>, String> {
    let positions = r.as_array().ok_or("a ring must be an array of [lon, lat] positions")?;
    let coords = positions
        .iter()
        .map(|p| {
            let xy = p.as_array().filter(|a| a.len() >= 2).ok_or("a position is [lon, lat]")?;
            let (lon, lat) = (xy[0].as_f64(), xy[1].as_f64());
            match (lon, lat) {
                (Some(lon), Some(lat)) if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) => {
                    Ok(Coord { x: lon, y: lat })
                }
                _ => Err(format!("position {p} is not [lon, lat] in range")),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    if coords.len() < 4 || coords.first() != coords.last() {
        return Err("a ring needs at least four positions, the last equal to the first".into());
    }
    Ok(LineString::new(coords))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Postcode, Site};
    use serde_json::json;

    /// Three postcodes on a line 1 km apart (P1, P2, P3 west to east) and a
    /// site covering P1 and P2.
    fn refdata() -> RefData {
        let origin = GeoPoint::new(41.82, -71.41);
        let pc = |code: &str, km: f64| {
            let p = origin.destination(90.0, km);
            Postcode { postcode: code.into(), lat: p.lat, lon: p.lon, population: None, timezone: None }
        };
        let site = Site { site_id: "S1".into(), lat: origin.lat, lon: origin.lon, radius_km: 1.5, group_id: None };
        RefData::build(vec![site], vec![pc("P1", 0.0), pc("P2", 1.0), pc("P3", 3.0)], vec![]).unwrap()
    }

    fn names(rd: &RefData, v: Vec<u32>) -> Vec<String> {
        v.into_iter().map(|i| rd.postcodes[i as usize].postcode.clone()).collect()
    }

    #[test]
    fn each_kind_of_area_resolves_to_the_postcodes_inside_it() {
        let rd = refdata();
        let by = |a: Area| a.postcodes(&rd).map(|v| names(&rd, v));
        assert_eq!(by(Area::Postcodes(vec![" P3".into(), "P1".into(), "P1".into()])).unwrap(), ["P1", "P3"]);
        assert_eq!(by(Area::Sites(vec!["S1".into()])).unwrap(), ["P1", "P2"]);
        assert_eq!(by(Area::Circle { lat: 41.82, lon: -71.41, radius_km: 1.2 }).unwrap(), ["P1", "P2"]);
        // A box around the two eastern postcodes.
        let p2 = &rd.postcodes[rd.postcode_index("P2").unwrap() as usize];
        let (w, e, s, n) = (p2.lon - 0.001, p2.lon + 0.05, p2.lat - 0.01, p2.lat + 0.01);
        let square = json!({"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]});
        assert_eq!(by(Area::Polygon(square.clone())).unwrap(), ["P2", "P3"]);
        let multi = json!({"type": "MultiPolygon", "coordinates": [square["coordinates"]]});
        assert_eq!(by(Area::Polygon(multi)).unwrap(), ["P2", "P3"]);
    }

    #[test]
    fn bad_areas_say_what_is_wrong() {
        let rd = refdata();
        let err = |a: Area| a.postcodes(&rd).unwrap_err().to_string();
        assert_eq!(
            err(Area::Postcodes(vec!["P1".into(), "NOPE".into()])),
            "unknown postcodes (not in the reference data): NOPE"
        );
        assert!(err(Area::Postcodes(vec![" ".into()])).contains("give at least one postcode"));
        assert!(err(Area::Sites(vec!["S9".into()])).contains("unknown sites"));
        assert!(err(Area::Circle { lat: 95.0, lon: 0.0, radius_km: 1.0 }).contains("not a latitude"));
        assert!(err(Area::Circle { lat: 0.0, lon: 0.0, radius_km: f64::NAN }).contains("radius_km"));
        assert!(err(Area::Circle { lat: 0.0, lon: 0.0, radius_km: 5.0 }).contains("no postcode"));
        assert!(err(Area::Polygon(json!({"type": "Point", "coordinates": [0, 0]}))).contains("only Polygon"));
        let open = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]});
        assert!(err(Area::Polygon(open)).contains("the last equal to the first"));
        let far = json!({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]});
        assert!(err(Area::Polygon(far)).contains("in range"));
    }

    #[test]
    fn json_names_the_kind() {
        let a: Area = serde_json::from_value(json!({"circle": {"lat": 1.0, "lon": 2.0, "radius_km": 3.0}})).unwrap();
        assert_eq!(a, Area::Circle { lat: 1.0, lon: 2.0, radius_km: 3.0 });
        assert_eq!(serde_json::to_value(Area::Postcodes(vec!["P1".into()])).unwrap(), json!({"postcodes": ["P1"]}));
    }
}
