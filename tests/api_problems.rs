//! The NOC API answers every error as RFC 9457 problem details
//! (`application/problem+json`), axum's extractor rejections and unknown
//! routes included, naming the field that failed; 401s carry
//! `WWW-Authenticate: Bearer`; the scheme is matched in any case; a
//! self-intersecting polygon is refused with 422. The router runs
//! in-process over an empty reference data set (no pipeline behind it:
//! every case here is answered before a command would reach it).

use outage::api::{channels, router, ApiState, ApiToken, Role};
use outage::refdata::RefData;
use outage::runtime::Stats;
use serde_json::{json, Value};
use std::sync::Arc;

const OPERATOR: &str = "o-secret";
const VIEWER: &str = "v-secret";

/// The router on a loopback port; its base URL. The command and snapshot
/// channels' other ends are kept alive by the task.
async fn serve() -> String {
    let (side, commands, snapshots) = channels();
    let mut cfg = outage::config::Config::default();
    cfg.api.tokens = vec![
        ApiToken { name: "noc".into(), role: Role::Operator, token: OPERATOR.into() },
        ApiToken { name: "agent".into(), role: Role::Viewer, token: VIEWER.into() },
    ];
    let rd = Arc::new(RefData::build(vec![], vec![], vec![]).unwrap());
    let state = ApiState::new(
        cfg.api_settings(),
        rd,
        commands,
        snapshots,
        Arc::new(Stats::default()),
        Box::new(chrono::Utc::now),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _side = side;
        axum::serve(listener, router(Arc::new(state))).await.unwrap()
    });
    format!("http://{addr}")
}

fn http() -> reqwest::Client {
    outage::tls::http_client(&Default::default()).build().unwrap()
}

/// Status, `WWW-Authenticate`, and the body, which must be a problem:
/// `application/problem+json` with type, title, status (= the HTTP
/// status) and detail.
async fn problem(r: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let auth = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "{status}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["status"], status, "{body}");
    assert!(body["type"].as_str().unwrap().starts_with("https://schemas.outage.invalid/problems/"), "{body}");
    assert!(!body["title"].as_str().unwrap().is_empty() && !body["detail"].as_str().unwrap().is_empty(), "{body}");
    let errors: Vec<String> = problem_schema().iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{body} against the OpenAPI's Problem: {errors:?}");
    (status, auth, body)
}

/// `components.schemas.Problem` of `schemas/noc-api.v1.openapi.json`, the
/// published contract, closed for this test: an undocumented field fails.
fn problem_schema() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/noc-api.v1.openapi.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut schema = doc["components"]["schemas"]["Problem"].clone();
        schema["additionalProperties"] = json!(false);
        jsonschema::draft202012::options().should_validate_formats(true).build(&schema).unwrap()
    })
}

fn declare(base: &str, body: Value) -> reqwest::RequestBuilder {
    http().post(format!("{base}/v1/incidents")).bearer_auth(OPERATOR).json(&body)
}

#[tokio::test]
async fn a_401_is_a_problem_with_a_bearer_challenge() {
    let base = serve().await;
    let (status, auth, body) = problem(http().get(format!("{base}/v1/incidents"))).await;
    assert_eq!(status, 401);
    assert_eq!(auth.as_deref(), Some("Bearer realm=\"outage\""));
    assert!(body["type"].as_str().unwrap().ends_with("/unauthorized"), "{body}");
    let (status, auth, _) = problem(http().get(format!("{base}/v1/incidents")).bearer_auth("nope")).await;
    assert_eq!(status, 401);
    assert_eq!(auth.as_deref(), Some("Bearer realm=\"outage\", error=\"invalid_token\""));
    // The token is checked before the body is read: no token and a
    // malformed body is 401, not 400.
    let r = http()
        .post(format!("{base}/v1/incidents/INC-1/update"))
        .header("content-type", "application/json")
        .body("{\"etr\": ");
    assert_eq!(problem(r).await.0, 401);
    // A viewer asking for an operator's command: 403, a problem too.
    let r = http().post(format!("{base}/v1/incidents")).bearer_auth(VIEWER).json(&json!({}));
    assert_eq!(problem(r).await.0, 403);
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let base = serve().await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = http().get(format!("{base}/v1/incidents")).header("authorization", format!("{scheme} {VIEWER}"));
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let r = http().get(format!("{base}/v1/incidents")).header("authorization", format!("Basic {VIEWER}"));
    assert_eq!(problem(r).await.0, 401, "another scheme is no bearer token");
}

#[tokio::test]
async fn a_bow_tie_polygon_is_refused_with_422_naming_the_problem() {
    let base = serve().await;
    // The ring crosses itself between (0,0)-(1,1) and (1,0)-(0,1).
    let bow_tie = json!({"type": "Polygon", "coordinates": [[[-71.4, 41.8], [-71.3, 41.9], [-71.3, 41.8], [-71.4, 41.9], [-71.4, 41.8]]]});
    let (status, _, body) = problem(declare(&base, json!({"cause": "fibre cut", "area": {"polygon": bow_tie}}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "area.polygon", "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("/invalid-geometry"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("self-intersection"), "{body}");
    // The same square drawn in order is a valid polygon: what refuses it
    // then is that the (empty) reference data has no postcode in it.
    let square = json!({"type": "Polygon", "coordinates": [[[-71.4, 41.8], [-71.3, 41.8], [-71.3, 41.9], [-71.4, 41.9], [-71.4, 41.8]]]});
    let (status, _, body) = problem(declare(&base, json!({"cause": "fibre cut", "area": {"polygon": square}}))).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("no postcode"), "{body}");
}

#[tokio::test]
async fn body_rejections_name_the_field() {
    let base = serve().await;
    // Two area kinds: said in words, not "expected value at line 1 column 42".
    let two = json!({"cause": "x", "area": {"postcodes": ["02903"], "sites": ["S-1"]}});
    let (status, _, body) = problem(declare(&base, two)).await;
    assert_eq!((status, &body["field"]), (422, &json!("area")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("exactly one area kind"), "{body}");
    // A wrong type deep inside: its path.
    let bad_lat = json!({"cause": "x", "area": {"circle": {"lat": "north", "lon": -71.4, "radius_km": 3}}});
    let (status, _, body) = problem(declare(&base, bad_lat)).await;
    assert_eq!((status, &body["field"]), (422, &json!("area.circle.lat")), "{body}");
    // A field the API does not know.
    let (status, _, body) =
        problem(declare(&base, json!({"cause": "x", "area": {"postcodes": ["1"]}, "colour": "red"}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("colour"), "{body}");
    // An ETR in the past.
    let (status, _, body) =
        problem(declare(&base, json!({"cause": "x", "area": {"postcodes": ["1"]}, "etr": "2020-01-01T00:00:00Z"})))
            .await;
    assert_eq!((status, &body["field"]), (422, &json!("etr")), "{body}");
    // Not JSON at all: 400; JSON without its content type: 415 (axum's
    // own rejections would be text/plain).
    let r = http()
        .post(format!("{base}/v1/incidents"))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body("{\"cause\": ");
    assert_eq!(problem(r).await.0, 400);
    let r = http().post(format!("{base}/v1/incidents")).bearer_auth(OPERATOR).body("{}");
    assert_eq!(problem(r).await.0, 415);
    let r = http().post(format!("{base}/v1/incidents/INC-1/cancel")).bearer_auth(OPERATOR).json(&json!({"why": 1}));
    let (status, _, body) = problem(r).await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn query_routes_and_methods_answer_problems() {
    let base = serve().await;
    let r = http().get(format!("{base}/v1/incidents?state=sleeping")).bearer_auth(VIEWER);
    let (status, _, body) = problem(r).await;
    assert_eq!((status, &body["field"]), (400, &json!("state")), "{body}");
    let r = http().get(format!("{base}/v1/impact?postcode=1&msisdn=2")).bearer_auth(VIEWER);
    assert_eq!(problem(r).await.0, 400);
    let r = http().get(format!("{base}/v1/impact?customer_id=NOBODY")).bearer_auth(VIEWER);
    let (status, _, body) = problem(r).await;
    assert_eq!((status, &body["field"]), (404, &json!("customer_id")), "{body}");
    let (status, _, _) = problem(http().get(format!("{base}/v2/nothing"))).await;
    assert_eq!(status, 404);
    let (status, _, body) = problem(http().delete(format!("{base}/v1/incidents")).bearer_auth(OPERATOR)).await;
    assert_eq!(status, 405, "{body}");
    let (status, _, body) = problem(http().get(format!("{base}/v1/incidents/NOPE")).bearer_auth(VIEWER)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["detail"], "no incident NOPE");
}

/// `outagectl` against this server: exit code, stderr.
async fn outagectl(args: Vec<String>) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_outagectl"))
            .args(&args)
            .env_remove("OUTAGECTL_SERVER")
            .env_remove("OUTAGECTL_TOKEN")
            .env_remove("OUTAGE_SERVER")
            .env_remove("OUTAGE_TOKEN")
            .env_remove("OUTAGECTL_CONFIG")
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn outagectl_prints_the_problems_detail_with_the_documented_exit_code() {
    let base = serve().await;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Global flags before the command; the daemon's 422 is exit 6 with its words and field.
    let (code, err) = outagectl(s(&[
        "--server",
        &base,
        "--token",
        OPERATOR,
        "declare",
        "--postcode",
        "02903",
        "--cause",
        "fibre cut",
        "--etr",
        "2020-01-01T00:00:00Z",
    ]))
    .await;
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("request refused: etr 2020-01-01T00:00:00Z is not in the future"), "{err}");
    // The same flags after the command; no token: exit 4, the daemon's words.
    let (code, err) = outagectl(s(&["incidents", "--server", &base])).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("a bearer token is required"), "{err}");
    // Unknown incident: 5.
    let (code, err) = outagectl(s(&["show", "INC-NOPE", "--server", &base, "--token", VIEWER])).await;
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("no incident INC-NOPE"), "{err}");
    // Usage errors: exit 2 with clap's message, nothing sent.
    for args in [
        s(&["--server", "ftp://noc", "incidents"]),
        s(&["declare", "--server", &base, "--cause", "x", "--polygon", "/nonexistent/area.geojson"]),
        s(&["declare", "--server", &base, "--cause", "x", "--circle", "NaN,-71.4,3"]),
        s(&["declare", "--server", &base, "--cause", "x", "--circle", "41.8,-200,3"]),
        s(&["update", "INC-1", "--server", &base, "--etr=-1h"]),
        s(&["update", "INC-1", "--server", &base, "--etr", "-1h"]),
    ] {
        let (code, err) = outagectl(args.clone()).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
