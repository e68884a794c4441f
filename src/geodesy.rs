//! Small spherical-geometry helpers the spatial indexes need.
//!
//! Points are indexed in the R-tree as unit vectors on the sphere, so that a
//! "within d km" query is an exact chord-length query with no trouble at the
//! antimeridian or near the poles. Polygons (footprints) use the `geo` crate.

use geo::{Coord, LineString, MultiPolygon, Polygon};

/// Mean Earth radius (IUGG), in km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> Self {
        GeoPoint { lat, lon }
    }

    /// The point as a unit vector.
    pub fn xyz(self) -> [f64; 3] {
        let (la, lo) = (self.lat.to_radians(), self.lon.to_radians());
        [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
    }

    /// Great-circle distance in km (haversine).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        self.distance_km_from(self.cos_lat(), other)
    }

    /// The cosine of the latitude, for [`GeoPoint::distance_km_from`].
    pub fn cos_lat(self) -> f64 {
        self.lat.to_radians().cos()
    }

    /// [`GeoPoint::distance_km`] with this point's [`GeoPoint::cos_lat`]
    /// computed once for many distances (the same arithmetic).
    pub fn distance_km_from(self, cos_lat: f64, other: GeoPoint) -> f64 {
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dla = la2 - la1;
        let dlo = (other.lon - self.lon).to_radians();
        let a = (dla / 2.0).sin().powi(2) + cos_lat * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    /// The point `km` away on initial bearing `bearing_deg`.
    pub fn destination(self, bearing_deg: f64, km: f64) -> GeoPoint {
        let d = km / EARTH_RADIUS_KM;
        let (la, lo, b) = (self.lat.to_radians(), self.lon.to_radians(), bearing_deg.to_radians());
        let la2 = (la.sin() * d.cos() + la.cos() * d.sin() * b.cos()).asin();
        let lo2 = lo + (b.sin() * d.sin() * la.cos()).atan2(d.cos() - la.sin() * la2.sin());
        GeoPoint::new(la2.to_degrees(), (lo2.to_degrees() + 540.0) % 360.0 - 180.0)
    }
}

/// Squared chord length on the unit sphere for a great-circle distance.
pub fn chord2_for_km(km: f64) -> f64 {
    let theta = (km / EARTH_RADIUS_KM).min(std::f64::consts::PI);
    let c = 2.0 * (theta / 2.0).sin();
    c * c
}

/// A coverage circle as a polygon with `n` vertices (lon/lat order, as
/// GeoJSON wants).
pub fn circle(center: GeoPoint, km: f64, n: usize) -> Polygon<f64> {
    let mut ring: Vec<Coord<f64>> = (0..n)
        .map(|i| {
            let p = center.destination(360.0 * i as f64 / n as f64, km);
            Coord { x: p.lon, y: p.lat }
        })
        .collect();
    ring.push(ring[0]);
    Polygon::new(LineString::new(ring), vec![])
}

/// The union of coverage circles: the footprint of a set of down sites.
pub fn union_of_circles(circles: impl IntoIterator<Item = (GeoPoint, f64)>) -> MultiPolygon<f64> {
    let polys: Vec<Polygon<f64>> = circles.into_iter().map(|(c, r)| circle(c, r, 24)).collect();
    if polys.is_empty() {
        return MultiPolygon::new(vec![]);
    }
    geo::unary_union(&polys)
}

/// GeoJSON geometry object for a multipolygon.
pub fn to_geojson(mp: &MultiPolygon<f64>) -> serde_json::Value {
    let round = |v: f64| (v * 1e5).round() / 1e5;
    let polys: Vec<_> =
        mp.0.iter()
            .map(|p| {
                std::iter::once(p.exterior())
                    .chain(p.interiors())
                    .map(|ring| ring.0.iter().map(|c| vec![round(c.x), round(c.y)]).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            .collect();
    serde_json::json!({ "type": "MultiPolygon", "coordinates": polys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_agree_between_haversine_and_chord() {
        let a = GeoPoint::new(41.82, -71.41);
        let b = a.destination(45.0, 10.0);
        assert!((a.distance_km(b) - 10.0).abs() < 1e-6);
        let (pa, pb) = (a.xyz(), b.xyz());
        let c2: f64 = (0..3).map(|i| (pa[i] - pb[i]).powi(2)).sum();
        assert!((c2 - chord2_for_km(10.0)).abs() < 1e-12);
    }

    #[test]
    fn overlapping_circles_union_into_one_polygon() {
        let a = GeoPoint::new(41.8, -71.4);
        let mp = union_of_circles([(a, 2.0), (a.destination(90.0, 3.0), 2.0), (a.destination(0.0, 50.0), 2.0)]);
        assert_eq!(mp.0.len(), 2);
    }
}
