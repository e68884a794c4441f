//! Loading and indexing reference data (sites, postcodes, customers, and the
//! optional network element → site table) from CSV.
//!
//! Owns: CSV parsing with errors that name file and line, validation of every
//! row, and the in-memory indexes the pure core queries (an R-tree of sites
//! and of postcodes, customers by postcode). Loading is the only I/O here;
//! everything after [`RefData::load`] is pure lookup.

use crate::geodesy::{self, GeoPoint};
use crate::model::money::{Currency, Money};
use crate::model::{Customer, OptOut, Postcode, Services, Site};
use foldhash::HashMap;
use rstar::RTree;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A reference-data error: always names the file and, for row errors, the
/// 1-based line number in that file (the header is line 1).
#[derive(Debug, thiserror::Error)]
pub enum RefDataError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Row { file: PathBuf, line: u64, message: String },
}

#[derive(Deserialize)]
struct SiteRow {
    site_id: String,
    lat: f64,
    lon: f64,
    radius_km: f64,
    #[serde(default)]
    group_id: Option<String>,
}

#[derive(Deserialize)]
struct ElementRow {
    element_id: String,
    site_id: String,
}

#[derive(Deserialize)]
struct PostcodeRow {
    postcode: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    population: Option<u64>,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Deserialize)]
struct CustomerRow {
    customer_id: String,
    #[serde(default)]
    msisdn: Option<String>,
    #[serde(default)]
    email: Option<String>,
    postcode: String,
    language: String,
    services: String,
    /// Optional column: `sms;email`, either, or empty.
    #[serde(default)]
    opt_out: Option<String>,
    monthly_fee: String,
    avg_bill_3m: String,
    currency: String,
}

/// Read every row of a CSV file with a header into `T`, converting each with
/// `check`; the first bad row stops the load with its file and line.
fn read_csv<R, T>(path: &Path, mut check: impl FnMut(R) -> Result<T, String>) -> Result<Vec<T>, RefDataError>
where
    R: for<'de> Deserialize<'de>,
{
    let file = std::fs::File::open(path).map_err(|source| RefDataError::Io { file: path.to_path_buf(), source })?;
    let mut rdr =
        csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    let headers = rdr
        .headers()
        .map_err(|e| RefDataError::Row { file: path.to_path_buf(), line: 1, message: e.to_string() })?
        .clone();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                return Err(RefDataError::Row { file: path.to_path_buf(), line, message: e.to_string() });
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(line);
        let row_err = |message: String| RefDataError::Row { file: path.to_path_buf(), line, message };
        let row: R = rec.deserialize(Some(&headers)).map_err(|e| row_err(csv_message(&e)))?;
        out.push(check(row).map_err(row_err)?);
    }
    Ok(out)
}

/// The csv crate's message without its own (record-relative) position.
fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!("field {}: {}", i + 1, err.kind()),
            None => err.kind().to_string(),
        },
        _ => e.to_string(),
    }
}

fn check_coords(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("coordinates out of range: lat {lat}, lon {lon}"));
    }
    Ok(())
}

fn nonempty(field: &str, v: String) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("{field} is empty"))
    } else {
        Ok(v)
    }
}

/// Customer ids are part of action ids (`incident/customer/channel/kind`),
/// so they cannot hold a `/`.
fn customer_id(v: String) -> Result<String, String> {
    if v.contains('/') {
        return Err(format!("customer_id {v:?} contains '/'"));
    }
    nonempty("customer_id", v)
}

pub fn load_sites(path: &Path) -> Result<Vec<Site>, RefDataError> {
    read_csv(path, |r: SiteRow| {
        check_coords(r.lat, r.lon)?;
        if !(r.radius_km > 0.0 && r.radius_km <= 100.0) {
            return Err(format!("radius_km {} is not in (0, 100]", r.radius_km));
        }
        Ok(Site {
            site_id: nonempty("site_id", r.site_id)?,
            lat: r.lat,
            lon: r.lon,
            radius_km: r.radius_km,
            group_id: r.group_id.filter(|g| !g.is_empty()),
        })
    })
}

pub fn load_postcodes(path: &Path) -> Result<Vec<Postcode>, RefDataError> {
    read_csv(path, |r: PostcodeRow| {
        check_coords(r.lat, r.lon)?;
        Ok(Postcode {
            postcode: nonempty("postcode", r.postcode)?,
            lat: r.lat,
            lon: r.lon,
            population: r.population,
            timezone: r.timezone.filter(|t| !t.is_empty()),
        })
    })
}

pub fn load_customers(path: &Path) -> Result<Vec<Customer>, RefDataError> {
    read_csv(path, |r: CustomerRow| {
        let currency = Currency::parse(&r.currency).map_err(|e| format!("currency: {e}"))?;
        let services = Services::parse(&r.services).map_err(|e| format!("services: {e}"))?;
        let opt_out = OptOut::parse(r.opt_out.as_deref().unwrap_or_default()).map_err(|e| format!("opt_out: {e}"))?;
        let monthly_fee = Money::parse(&r.monthly_fee, currency).map_err(|e| format!("monthly_fee: {e}"))?;
        let avg_bill_3m = Money::parse(&r.avg_bill_3m, currency).map_err(|e| format!("avg_bill_3m: {e}"))?;
        if monthly_fee.minor < 0 || avg_bill_3m.minor < 0 {
            return Err("money fields must not be negative".into());
        }
        Ok(Customer {
            customer_id: customer_id(r.customer_id)?,
            // Missing contact details are legal (the customer is skipped on
            // that channel with a counted reason), so they stay optional here.
            msisdn: r.msisdn.filter(|m| !m.is_empty()),
            email: r.email.filter(|m| !m.is_empty()),
            postcode: nonempty("postcode", r.postcode)?,
            language: nonempty("language", r.language)?,
            services,
            opt_out,
            monthly_fee,
            avg_bill_3m,
        })
    })
}

/// The network element → site table (CSV `element_id,site_id`): every
/// site must be in `sites`, every element listed once. Errors name file
/// and line.
pub fn load_elements(path: &Path, sites: &[Site]) -> Result<Vec<(String, String)>, RefDataError> {
    let known: std::collections::HashSet<&str> = sites.iter().map(|s| s.site_id.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    read_csv(path, |r: ElementRow| {
        let element = nonempty("element_id", r.element_id)?;
        let site = nonempty("site_id", r.site_id)?;
        if !known.contains(site.as_str()) {
            return Err(format!("site_id {site:?} (of element {element:?}) is not in the sites file"));
        }
        if !seen.insert(element.clone()) {
            return Err(format!("element_id {element:?} is listed twice"));
        }
        Ok((element, site))
    })
}

/// Where to load reference data from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefDataPaths {
    pub sites: PathBuf,
    pub postcodes: PathBuf,
    pub customers: PathBuf,
    /// Optional network element → site table (`element_id,site_id`), for
    /// feeds that name elements (`sourceName`, `alarmedObject.id`, DNs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<PathBuf>,
}

/// A site or postcode in an R-tree, by its index in the owning vector.
pub type Indexed = rstar::primitives::GeomWithData<[f64; 3], u32>;

/// The loaded, indexed reference data. Immutable once built; a reload builds
/// a new one and swaps the `Arc`.
pub struct RefData {
    pub sites: Vec<Site>,
    pub postcodes: Vec<Postcode>,
    pub customers: Vec<Customer>,
    /// Inline keys (ids up to 24 bytes live in the table itself): a lookup
    /// is one cache miss, not two, and every alarm makes one.
    site_by_id: HashMap<compact_str::CompactString, u32>,
    postcode_by_code: HashMap<String, u32>,
    site_tree: RTree<Indexed>,
    postcode_tree: RTree<Indexed>,
    /// Customers (indexes into `customers`) by billing postcode.
    customers_by_postcode: HashMap<String, Vec<u32>>,
    /// The largest site radius, to bound neighbour searches.
    max_radius_km: f64,
    /// Per site: the postcodes whose centroid its coverage contains.
    site_postcodes: Vec<Vec<u32>>,
    /// Power/backhaul group → its sites (a failure upstream takes them all).
    /// Per site: the members of its power/backhaul group (indexes into
    /// `groups`), so a raise finds its peers without hashing the group id.
    site_group: Vec<Option<u32>>,
    groups: Vec<Vec<u32>>,
    /// Network element → site (index into `sites`).
    element_site: HashMap<compact_str::CompactString, u32>,
}

impl RefData {
    pub fn load(paths: &RefDataPaths) -> Result<Self, RefDataError> {
        let sites = load_sites(&paths.sites)?;
        let elements = paths.elements.as_deref().map(|p| load_elements(p, &sites)).transpose()?;
        let rd = Self::build(sites, load_postcodes(&paths.postcodes)?, load_customers(&paths.customers)?).map_err(
            |(file, message)| RefDataError::Row {
                file: match file {
                    "sites" => paths.sites.clone(),
                    _ => paths.postcodes.clone(),
                },
                line: 0,
                message,
            },
        )?;
        match (elements, &paths.elements) {
            (Some(rows), Some(file)) => {
                rd.with_elements(rows).map_err(|message| RefDataError::Row { file: file.clone(), line: 0, message })
            }
            _ => Ok(rd),
        }
    }

    /// These data with the network element → site table `rows`
    /// (`(element_id, site_id)`); fails on an unknown site or an element
    /// listed twice.
    pub fn with_elements(mut self, rows: Vec<(String, String)>) -> Result<Self, String> {
        let mut table = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (element, site) in rows {
            let Some(i) = self.site_index(&site) else {
                return Err(format!("site_id {site:?} (of element {element:?}) is not in the sites file"));
            };
            if table.insert(compact_str::CompactString::from(element.as_str()), i).is_some() {
                return Err(format!("element_id {element:?} is listed twice"));
            }
        }
        self.element_site = table;
        Ok(self)
    }

    /// The site id of network element `element`, from the element table.
    pub fn element_site(&self, element: &str) -> Option<&str> {
        self.element_site.get(element).map(|&i| self.sites[i as usize].site_id.as_str())
    }

    /// Index already-validated rows. Fails on duplicate site ids or postcodes.
    pub fn build(
        sites: Vec<Site>,
        postcodes: Vec<Postcode>,
        customers: Vec<Customer>,
    ) -> Result<Self, (&'static str, String)> {
        let mut site_by_id = HashMap::with_capacity_and_hasher(sites.len(), Default::default());
        for (i, s) in sites.iter().enumerate() {
            if site_by_id.insert(compact_str::CompactString::from(s.site_id.as_str()), i as u32).is_some() {
                return Err(("sites", format!("duplicate site_id {}", s.site_id)));
            }
        }
        let site_tree = RTree::bulk_load(
            sites.iter().enumerate().map(|(i, s)| Indexed::new(GeoPoint::new(s.lat, s.lon).xyz(), i as u32)).collect(),
        );
        let mut postcode_by_code = HashMap::with_capacity_and_hasher(postcodes.len(), Default::default());
        for (i, p) in postcodes.iter().enumerate() {
            if postcode_by_code.insert(p.postcode.clone(), i as u32).is_some() {
                return Err(("postcodes", format!("duplicate postcode {}", p.postcode)));
            }
        }
        let postcode_tree = RTree::bulk_load(
            postcodes
                .iter()
                .enumerate()
                .map(|(i, p)| Indexed::new(GeoPoint::new(p.lat, p.lon).xyz(), i as u32))
                .collect(),
        );
        let mut customers_by_postcode: HashMap<String, Vec<u32>> = HashMap::default();
        for (i, c) in customers.iter().enumerate() {
            customers_by_postcode.entry(c.postcode.clone()).or_default().push(i as u32);
        }
        let max_radius_km = sites.iter().map(|s| s.radius_km).fold(0.0, f64::max);
        let site_postcodes = sites
            .iter()
            .map(|s| {
                let p = GeoPoint::new(s.lat, s.lon).xyz();
                postcode_tree.locate_within_distance(p, geodesy::chord2_for_km(s.radius_km)).map(|e| e.data).collect()
            })
            .collect();
        let (mut group_ids, mut groups): (HashMap<&str, u32>, Vec<Vec<u32>>) = Default::default();
        let site_group: Vec<Option<u32>> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let g = s.group_id.as_deref()?;
                let n = *group_ids.entry(g).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() as u32 - 1
                });
                groups[n as usize].push(i as u32);
                Some(n)
            })
            .collect();
        Ok(RefData {
            site_group,
            groups,
            sites,
            postcodes,
            customers,
            site_by_id,
            postcode_by_code,
            site_tree,
            postcode_tree,
            customers_by_postcode,
            max_radius_km,
            site_postcodes,
            element_site: HashMap::default(),
        })
    }

    pub fn site_index(&self, site_id: &str) -> Option<u32> {
        self.site_by_id.get(site_id).copied()
    }

    pub fn postcode_index(&self, postcode: &str) -> Option<u32> {
        self.postcode_by_code.get(postcode).copied()
    }

    pub fn site(&self, idx: u32) -> &Site {
        &self.sites[idx as usize]
    }

    pub fn max_radius_km(&self) -> f64 {
        self.max_radius_km
    }

    /// Sites whose centre is within `km` of `p` (great-circle).
    pub fn sites_within(&self, p: GeoPoint, km: f64) -> impl Iterator<Item = u32> + '_ {
        self.site_tree.locate_within_distance(p.xyz(), geodesy::chord2_for_km(km)).map(|e| e.data)
    }

    /// Postcodes whose centroid is within `km` of `p`.
    pub fn postcodes_within(&self, p: GeoPoint, km: f64) -> impl Iterator<Item = u32> + '_ {
        self.postcode_tree.locate_within_distance(p.xyz(), geodesy::chord2_for_km(km)).map(|e| e.data)
    }

    /// The other sites of site `idx`'s power/backhaul group.
    pub fn group_peers(&self, idx: u32) -> impl Iterator<Item = u32> + '_ {
        let group = self.site_group.get(idx as usize).copied().flatten().map(|g| &self.groups[g as usize]);
        group.into_iter().flatten().copied().filter(move |&i| i != idx)
    }

    /// Postcodes (indexes into `postcodes`) whose centroid lies in the
    /// coverage of site `idx`: the footprint's building block.
    pub fn site_postcodes(&self, idx: u32) -> &[u32] {
        &self.site_postcodes[idx as usize]
    }

    /// Sites (indexes into `sites`) whose coverage contains postcode `idx`'s
    /// centroid: the inverse of [`Self::site_postcodes`].
    pub fn postcode_sites(&self, idx: u32) -> impl Iterator<Item = u32> + '_ {
        let p = &self.postcodes[idx as usize];
        self.sites_within(GeoPoint::new(p.lat, p.lon), self.max_radius_km)
            .filter(move |&s| self.site_postcodes[s as usize].contains(&idx))
    }

    pub fn customers_in(&self, postcode: &str) -> &[u32] {
        self.customers_by_postcode.get(postcode).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(body.as_bytes()).unwrap();
        p
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "customers.csv",
            "customer_id,msisdn,email,postcode,language,services,monthly_fee,avg_bill_3m,currency\n\
             C1,+15550100,a@example.com,02901,en,mobile;voice,35.00,40.10,USD\n\
             C2,,,02902,es,mobile;fax,35.00,40.10,USD\n",
        );
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("customers.csv:3:"), "{err}");
        assert!(err.contains("fax"), "{err}");

        let p = write(d.path(), "sites.csv", "site_id,lat,lon,radius_km\nS1,41.8,-71.4,2\nS2,141.8,-71.4,2\n");
        let err = load_sites(&p).unwrap_err().to_string();
        assert!(err.contains("sites.csv:3:") && err.contains("out of range"), "{err}");

        let p = write(d.path(), "postcodes.csv", "postcode,lat,lon\n02901,41.8,-71.4\n02902,north,-71.4\n");
        let err = load_postcodes(&p).unwrap_err().to_string();
        assert!(err.contains("postcodes.csv:3:") && err.contains("field 2"), "{err}");
    }

    #[test]
    fn money_is_parsed_exactly_and_contacts_are_optional() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "customers.csv",
            "customer_id,msisdn,email,postcode,language,services,monthly_fee,avg_bill_3m,currency\n\
             C1,,,02901,en,broadband,29.9,0.10,EUR\n",
        );
        let c = &load_customers(&p).unwrap()[0];
        assert_eq!(c.monthly_fee.minor, 2990);
        assert_eq!(c.avg_bill_3m.minor, 10);
        assert_eq!(c.msisdn, None);
        assert!(c.services.broadband && !c.services.mobile);
        assert_eq!(c.opt_out, OptOut::default(), "no opt_out column: no opt-outs");
    }

    #[test]
    fn opt_outs_are_an_optional_column_checked_per_row() {
        let d = tempfile::tempdir().unwrap();
        let header = "customer_id,msisdn,email,postcode,language,services,opt_out,monthly_fee,avg_bill_3m,currency\n";
        let p = write(
            d.path(),
            "customers.csv",
            &format!("{header}C1,,,02901,en,voice,sms,1,1,EUR\nC2,,,02901,en,voice,,1,1,EUR\nC3,,,02901,en,voice,email;sms,1,1,EUR\n"),
        );
        let opt: Vec<OptOut> = load_customers(&p).unwrap().iter().map(|c| c.opt_out).collect();
        assert_eq!(opt, [OptOut { sms: true, email: false }, OptOut::default(), OptOut { sms: true, email: true }]);
        let p = write(
            d.path(),
            "bad.csv",
            &format!("{header}C1,,,02901,en,voice,fax,1,1,EUR\nC/2,,,02901,en,voice,,1,1,EUR\n"),
        );
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("bad.csv:2:") && err.contains("opt_out") && err.contains("fax"), "{err}");
        let p = write(d.path(), "slash.csv", &format!("{header}C/2,,,02901,en,voice,,1,1,EUR\n"));
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("slash.csv:2:") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn spatial_queries_find_nearby_rows_only() {
        let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
        let rd = RefData::build(
            vec![site("A", 41.80, -71.40), site("B", 41.81, -71.40), site("C", 42.50, -71.40)],
            vec![],
            vec![],
        )
        .unwrap();
        let mut near: Vec<_> = rd.sites_within(GeoPoint::new(41.80, -71.40), 5.0).collect();
        near.sort();
        assert_eq!(near, vec![0, 1]);
        assert!(RefData::build(vec![site("A", 0.0, 0.0), site("A", 1.0, 1.0)], vec![], vec![]).is_err());
    }

    #[test]
    fn the_element_table_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let sites = load_sites(&write(d.path(), "sites.csv", "site_id,lat,lon,radius_km\nS1,41.8,-71.4,2\n")).unwrap();
        let ok = write(d.path(), "elements.csv", "element_id,site_id\nENB-1,S1\nCELL-1-1,S1\n");
        let rows = load_elements(&ok, &sites).unwrap();
        let rd = RefData::build(sites.clone(), vec![], vec![]).unwrap().with_elements(rows).unwrap();
        assert_eq!((rd.element_site("CELL-1-1"), rd.element_site("S1")), (Some("S1"), None));
        let unknown = write(d.path(), "unknown.csv", "element_id,site_id\nENB-1,S1\nENB-2,S9\n");
        let err = load_elements(&unknown, &sites).unwrap_err().to_string();
        assert!(err.contains("unknown.csv:3") && err.contains("S9"), "{err}");
        let twice = write(d.path(), "twice.csv", "element_id,site_id\nENB-1,S1\nENB-1,S1\n");
        let err = load_elements(&twice, &sites).unwrap_err().to_string();
        assert!(err.contains("twice.csv:3") && err.contains("twice"), "{err}");
        let empty = write(d.path(), "empty.csv", "element_id,site_id\n,S1\n");
        assert!(load_elements(&empty, &sites).unwrap_err().to_string().contains("empty.csv:2"));
    }
}
