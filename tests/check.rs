//! `outaged --check` builds the real clients: a librdkafka property the
//! library refuses fails the check naming it, a secured cluster's settings
//! pass, and a bad `sinks.tls.ca_file` is named. Runs the binary, with the
//! demo reference data (the defaults, relative to the crate root).

use std::path::Path;
use std::process::Command;

fn check(dir: &Path, toml: &str) -> (bool, String) {
    let path = dir.join("outage.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outaged"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_refuses_a_bogus_kafka_property_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let (ok, out) = check(d.path(), "[kafka.client]\n\"bogus.prop\" = \"1\"\n");
    assert!(!ok, "{out}");
    assert!(out.contains("kafka.client.\"bogus.prop\""), "{out}");
}

#[test]
fn check_passes_sasl_ssl_with_scram_and_never_shows_the_password() {
    let d = tempfile::tempdir().unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let toml = format!(
        "[kafka]\nbootstrap = \"kafka-1.example.net:9093\"\n\
         [kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\
         \"sasl.username\" = \"outaged\"\n\"sasl.password\" = \"pw-must-not-show\"\n\"ssl.ca.location\" = {ca:?}\n\
         [sinks.tls]\nca_file = {ca:?}\n"
    );
    let (ok, out) = check(d.path(), &toml);
    assert!(ok, "{out}");
    assert!(out.contains("OK") && !out.contains("pw-must-not-show"), "{out}");
    // The same with a mechanism librdkafka does not know: named, no password.
    let (ok, out) = check(d.path(), &toml.replace("SCRAM-SHA-256", "SCRAM-SHA-999"));
    assert!(!ok && out.contains("sasl.mechanism") && !out.contains("pw-must-not-show"), "{out}");
}

#[test]
fn check_names_a_ca_file_it_cannot_use() {
    let d = tempfile::tempdir().unwrap();
    let (ok, out) = check(d.path(), "[sinks.tls]\nca_file = \"/nonexistent/ca.pem\"\n");
    assert!(!ok && out.contains("sinks.tls.ca_file") && out.contains("/nonexistent/ca.pem"), "{out}");
}

#[test]
fn check_summarises_a_damaged_export_and_fails_above_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/refdata-damaged");
    let toml = |ratio: &str| {
        format!(
            "[refdata]\nsites = {:?}\npostcodes = {:?}\ncustomers = {:?}\ndefault_country = \"US\"\n{ratio}",
            fx.join("sites.csv"),
            fx.join("postcodes.csv"),
            fx.join("customers.csv")
        )
    };
    let (ok, out) = check(d.path(), &toml(""));
    assert!(!ok, "above the default budget: {out}");
    assert!(out.contains("above the budget refdata.max_bad_ratio = 0.001"), "{out}");
    for line in ["bad_msisdn: 1", "bad_email: 1", "duplicate_id: 1", "unknown_postcode: 2", "unknown_timezone: 1"] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.contains("customers.csv:5: msisdn"), "{out}");
    assert!(!out.contains("c1@example.org") && !out.contains("backtrace"), "{out}");
    let (ok, out) = check(d.path(), &toml("max_bad_ratio = 1.0\n"));
    assert!(ok, "within the budget: {out}");
    assert!(out.contains("customers.csv: 11 rows, 8 rejected") && out.contains("which the daemon skips"), "{out}");
}
