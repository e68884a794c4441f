//! `outagectl publish` onto librdkafka's embedded mock cluster (the broker
//! the other Kafka tests use): a file mixing the three formats is read
//! back from the topic with every record, keyed by site, retimed so the
//! earliest alarm is now; a file the daemon would dead-letter publishes
//! nothing.

use chrono::{DateTime, Utc};
use outage::kafka::EmbeddedCluster;
use outage::sources::decode::decode_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

fn fixture(p: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/feeds/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const NATIVE: &str = r#"{"alarm_id":"A1","site_id":"S-RI-000241","state":"raised","severity":"critical","probable_cause":"powerProblem","event_time":"2026-11-23T04:00:00Z"}
{"alarm_id":"A2","site_id":"S-RI-000242","state":"raised","severity":"critical","probable_cause":"powerProblem","event_time":"2026-11-23T04:00:30Z"}"#;

/// (key, payload) of every record on `topic`, waiting up to `wait` for `n`.
fn read_back(bootstrap: &str, topic: &str, n: usize, wait: Duration) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "publish-test").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
            out.push((key, m.payload().unwrap_or_default().to_vec()));
        }
    }
    // Anything beyond n would be a duplicate: give it a moment to show.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((String::from_utf8_lossy(m.key().unwrap_or_default()).into(), m.payload().unwrap().to_vec()));
        }
    }
    out
}

fn publish(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl")).arg("publish").args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn publish_puts_every_format_on_the_topic_keyed_by_site_and_retimed() {
    let mock = EmbeddedCluster::start(1).unwrap();
    let topic = "noc.alarms.publish";
    mock.create_topic(topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.jsonl");
    // Native JSON lines, then pretty-printed VES and TMF642 documents.
    let text = format!(
        "{NATIVE}\n{}\n{}\n",
        fixture("ves/fault-7.2-los-raise.json"),
        fixture("tmf642/alarm-create-event-los.json")
    );
    std::fs::write(&file, &text).unwrap();
    let expected_keys: Vec<String> = {
        let mut v = vec!["S-RI-000241".to_string(), "S-RI-000242".to_string()];
        for p in ["ves/fault-7.2-los-raise.json", "tmf642/alarm-create-event-los.json"] {
            v.push(decode_all(fixture(p).as_bytes())[0].as_ref().unwrap().site_id.clone());
        }
        v
    };
    let started = Utc::now();
    let (code, err) = publish(&[
        file.to_str().unwrap(),
        "--kafka",
        mock.bootstrap(),
        "--topic",
        topic,
        "--retime",
        "now",
        "--rate",
        "50",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("published 4 records"), "{err}");

    let records = read_back(mock.bootstrap(), topic, 4, Duration::from_secs(20));
    assert_eq!(records.len(), 4, "every record once");
    let mut keys: Vec<String> = records.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    let mut want = expected_keys.clone();
    want.sort();
    assert_eq!(keys, want);
    // Every record decodes as the daemon would, under its own key; the
    // earliest alarm is now and the native pair keeps its 30 s spacing.
    let mut times: Vec<(String, DateTime<Utc>)> = Vec::new();
    for (key, payload) in &records {
        let alarms = decode_all(payload);
        assert_eq!(alarms.len(), 1, "{}", String::from_utf8_lossy(payload));
        let a = alarms[0].as_ref().unwrap();
        assert_eq!(&a.site_id, key);
        times.push((a.alarm_id.clone(), a.event_time));
    }
    let earliest = times.iter().map(|(_, t)| *t).min().unwrap();
    assert!(earliest >= started - chrono::Duration::seconds(1) && earliest <= Utc::now(), "{earliest} vs {started}");
    let at = |id: &str| times.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!(at("A2") - at("A1"), chrono::Duration::seconds(30));
}

#[test]
fn a_file_the_daemon_would_dead_letter_publishes_nothing() {
    let mock = EmbeddedCluster::start(1).unwrap();
    let topic = "noc.alarms.refused";
    mock.create_topic(topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.jsonl");
    std::fs::write(&file, format!("{NATIVE}\n{{\"alarm_id\": \"A3\"}}\n")).unwrap();
    let (code, err) = publish(&[file.to_str().unwrap(), "--kafka", mock.bootstrap(), "--topic", topic]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("record 3") && err.contains("nothing was published"), "{err}");
    assert!(read_back(mock.bootstrap(), topic, 1, Duration::from_secs(3)).is_empty());
    // A file that does not exist is a usage error.
    let (code, err) = publish(&["/nonexistent/feed.jsonl", "--kafka", mock.bootstrap()]);
    assert_eq!(code, Some(2), "{err}");
}
