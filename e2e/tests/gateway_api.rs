//! The gateway binary over HTTP, on its real store: idempotency, every bad input,
//! and the API's edges.

use counter_api::{HitId, Recorded};
use e2e::{Backend, Counter, http_client, on_every_backend};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_every_backend!(
    a_retried_hit_is_counted_once,
    a_batch_counts_each_hit_once_and_refuses_bad_batches_whole,
    bad_input_is_refused_and_nothing_is_written,
    latest_hits_limit_is_checked,
    health_and_unknown_endpoints,
    metrics_count_what_the_gateway_did,
    tutorial_hit_records_expire_only_when_asked_and_the_audit_says_so,
);

fn new_hit(server: &str) -> Value {
    json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "server": server,
        "ts": 1_732_000_000_000_u64,
    })
}

async fn post_hit(client: &reqwest::Client, gateway: &str, hit: &Value) -> (StatusCode, Value) {
    post_json(client, gateway, "/v1/hits", hit).await
}

/// POSTs `body` as JSON to the gateway's `path`; answers the status and the JSON.
async fn post_json(
    client: &reqwest::Client,
    gateway: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{gateway}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

async fn a_retried_hit_is_counted_once(backend: Backend) {
    let counter = Counter::start(backend, 0).await;
    let base = counter.baseline.total_hits;
    let client = http_client();
    let gateway = &counter.gateway.url;
    let server = format!("retry-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let hit = new_hit(&server);

    let (status, first) = post_hit(&client, gateway, &hit).await;
    assert_eq!(status, StatusCode::CREATED);
    let first: Recorded = serde_json::from_value(first).unwrap();
    assert_eq!(
        (first.total_hits, first.server_hits, first.duplicate),
        (base + 1, 1, false)
    );

    // The same hit again, and spelled differently: the same id.
    let mut shouted = hit.clone();
    shouted["id"] = json!(hit["id"].as_str().unwrap().to_uppercase());
    for retry in [&hit, &shouted] {
        let (status, again) = post_hit(&client, gateway, retry).await;
        assert_eq!(status, StatusCode::OK);
        let again: Recorded = serde_json::from_value(again).unwrap();
        assert!(again.duplicate);
        assert_eq!((again.total_hits, again.server_hits), (base + 1, 1));
    }

    // Twenty concurrent posts of one new hit: counted exactly once.
    let racing = new_hit(&server);
    let answers =
        futures::future::join_all((0..20).map(|_| post_hit(&client, gateway, &racing))).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let duplicates = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, duplicates), (1, 19), "{answers:?}");

    let summary = counter.gateway.summary().await;
    assert_eq!(summary.total_hits, base + 2);
    let ours: Vec<u64> = summary
        .servers
        .iter()
        .filter(|s| s.server.as_str() == server)
        .map(|s| s.total)
        .collect();
    assert_eq!(ours, [2]);
}

struct BadInput {
    what: &'static str,
    content_type: Option<&'static str>,
    body: reqwest::Body,
    status: StatusCode,
    error: &'static str,
    says: &'static str,
}

fn bad(
    what: &'static str,
    body: impl Into<reqwest::Body>,
    status: StatusCode,
    error: &'static str,
    says: &'static str,
) -> BadInput {
    BadInput {
        what,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        error,
        says,
    }
}

fn with(field: &str, value: Value) -> String {
    let mut hit = new_hit("web-1");
    hit[field] = value;
    hit.to_string()
}

fn without(field: &str) -> String {
    let mut hit = new_hit("web-1");
    hit.as_object_mut().unwrap().remove(field);
    hit.to_string()
}

async fn post_batch(client: &reqwest::Client, gateway: &str, body: &Value) -> (StatusCode, Value) {
    post_json(client, gateway, "/v1/hits/batch", body).await
}

/// The web tier's shared call: every hit of a batch is its own hit, with its own
/// N, counted once however often the batch is sent; a batch with one bad hit is
/// refused whole, with nothing written.
async fn a_batch_counts_each_hit_once_and_refuses_bad_batches_whole(backend: Backend) {
    let counter = Counter::start(backend, 0).await;
    let base = counter.gateway.summary().await.total_hits;
    let client = http_client();
    let gateway = &counter.gateway.url;
    let server = format!("batch-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let hits: Vec<Value> = (0..5).map(|_| new_hit(&server)).collect();

    let (status, answer) = post_batch(&client, gateway, &json!({ "hits": hits })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let recorded: Vec<Recorded> = answer["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| serde_json::from_value(o["recorded"].clone()).expect("a recorded hit"))
        .collect();
    let mut totals: Vec<u64> = recorded.iter().map(|r| r.total_hits).collect();
    totals.sort();
    assert_eq!(totals, (base + 1..=base + 5).collect::<Vec<_>>());
    let mut server_totals: Vec<u64> = recorded.iter().map(|r| r.server_hits).collect();
    server_totals.sort();
    assert_eq!(server_totals, vec![1, 2, 3, 4, 5]);
    assert!(recorded.iter().all(|r| !r.duplicate));

    // The same batch again, with one new hit: five duplicates, one counted.
    let mut again = hits.clone();
    again.push(new_hit(&server));
    let (status, answer) = post_batch(&client, gateway, &json!({ "hits": again })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let outcomes = answer["outcomes"].as_array().expect("outcomes");
    let duplicates: Vec<bool> = outcomes
        .iter()
        .map(|o| o["recorded"]["duplicate"].as_bool().expect("recorded"))
        .collect();
    assert_eq!(duplicates, [true, true, true, true, true, false]);
    assert_eq!(outcomes[5]["recorded"]["total_hits"], json!(base + 6));

    let audit_before = counter.gateway.settled_audit().await;
    let mut with_bad = vec![new_hit(&server), new_hit(&server)];
    with_bad[1]["id"] = json!("00000000-0000-0000-0000-000000000000");
    let too_many: Vec<Value> = (0..257).map(|_| new_hit(&server)).collect();
    let cases = [
        ("no hits", json!({ "hits": [] }), "1 to 256 hits, not 0"),
        (
            "257 hits",
            json!({ "hits": too_many }),
            "1 to 256 hits, not 257",
        ),
        ("one bad hit", json!({ "hits": with_bad }), "nil"),
        ("a hit, not a batch", new_hit(&server), "unknown field"),
        ("an array", json!([new_hit(&server)]), "a batch is {"),
    ];
    for (what, body, says) in cases {
        let (status, answer) = post_batch(&client, gateway, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_hit_batch", "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }
    let response = client
        .post(format!("{gateway}/v1/hits/batch"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"hits": [], "pad": "{}"}}"#,
            "x".repeat(200_000)
        ))
        .send()
        .await
        .expect("POST /v1/hits/batch");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        counter.gateway.audit().await,
        audit_before,
        "nothing written"
    );

    // Page hits, the same way: each its own number on its key.
    let key = format!("batch/{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let page_hit = || {
        json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "key": key,
            "ts": 1_732_000_000_000_u64,
        })
    };
    let pages = "/v1/page-hits/batch";
    let batch = json!({ "hits": [page_hit(), page_hit(), page_hit()] });
    let (status, answer) = post_json(&client, gateway, pages, &batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut totals: Vec<u64> = answer["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| {
            o["recorded"]["total"]
                .as_u64()
                .expect("a recorded page hit")
        })
        .collect();
    totals.sort();
    assert_eq!(totals, [1, 2, 3], "{answer}");
    let mut bad_key = page_hit();
    bad_key["key"] = json!("no spaces");
    let batch = json!({ "hits": [page_hit(), bad_key] });
    let (status, answer) = post_json(&client, gateway, pages, &batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let stats: Value = client
        .get(format!("{gateway}/v1/pages/{key}"))
        .send()
        .await
        .expect("GET /v1/pages/<key>")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(stats["total"], json!(3), "the refused batch wrote nothing");
}

async fn bad_input_is_refused_and_nothing_is_written(backend: Backend) {
    use StatusCode as S;
    let counter = Counter::start(backend, 0).await;
    let client = http_client();
    let gateway = &counter.gateway.url;
    let audit_before = counter.gateway.settled_audit().await;
    let latest_before = counter.gateway.latest_hits(50).await;

    let huge_padding = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    let chunked = futures::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])))
        .chain(futures::stream::once(async {
            Ok(new_hit("web-1").to_string().into_bytes())
        }));
    let cases = vec![
        bad(
            "truncated JSON",
            r#"{"id": "#,
            S::BAD_REQUEST,
            "malformed_json",
            "not valid JSON",
        ),
        bad(
            "not JSON",
            "hello",
            S::BAD_REQUEST,
            "malformed_json",
            "not valid JSON",
        ),
        bad(
            "empty body",
            "",
            S::BAD_REQUEST,
            "malformed_json",
            "not valid JSON",
        ),
        bad(
            "oversized body",
            huge_padding,
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "at most 4096 bytes",
        ),
        bad(
            "oversized chunked body",
            reqwest::Body::wrap_stream(chunked),
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "at most 4096 bytes",
        ),
        BadInput {
            content_type: Some("text/plain"),
            ..bad(
                "wrong content type",
                new_hit("web-1").to_string(),
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type: application/json",
            )
        },
        BadInput {
            content_type: None,
            ..bad(
                "no content type",
                new_hit("web-1").to_string(),
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type: application/json",
            )
        },
        bad(
            "an empty JSON array",
            "[]",
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "a hit is {",
        ),
        bad(
            "a hit as a JSON array",
            r#"["0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","web-1",1732000000000]"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "must be a JSON object",
        ),
        bad(
            "a JSON string",
            r#""hit""#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "invalid type",
        ),
        bad(
            "missing id",
            without("id"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "missing field `id`",
        ),
        bad(
            "missing server",
            without("server"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "missing field `server`",
        ),
        bad(
            "missing ts",
            without("ts"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "missing field `ts`",
        ),
        bad(
            "non-UUID id",
            with("id", json!("hit-42")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "is not a UUID",
        ),
        bad(
            "numeric id",
            with("id", json!(42)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "invalid type",
        ),
        bad(
            "nil UUID",
            with("id", json!("00000000-0000-0000-0000-000000000000")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "nil UUID",
        ),
        bad(
            "empty server id",
            with("server", json!("")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "must not be empty",
        ),
        bad(
            "over-long server id",
            with("server", json!("w".repeat(129))),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "at most 128",
        ),
        bad(
            "control character in server id",
            with("server", json!("web\u{7}1")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "control characters",
        ),
        bad(
            "newline in server id",
            with("server", json!("web\n1")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "control characters",
        ),
        bad(
            "padded server id",
            with("server", json!(" web-1")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "whitespace",
        ),
        bad(
            "server id total_hits",
            with("server", json!("total_hits")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "reserved",
        ),
        bad(
            "negative ts",
            with("ts", json!(-1)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "out of range",
        ),
        bad(
            "ts in seconds",
            with("ts", json!(1_732_000_000)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "out of range",
        ),
        bad(
            "ts in microseconds",
            with("ts", json!(1_732_000_000_000_000_u64)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "out of range",
        ),
        bad(
            "ts past u64",
            "{\"id\":\"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e\",\"server\":\"w\",\"ts\":100000000000000000000}",
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "out of range",
        ),
        bad(
            "fractional ts",
            with("ts", json!(1_732_000_000_000.5)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "whole number of milliseconds",
        ),
        bad(
            "ts as a string",
            with("ts", json!("1732000000000")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_hit",
            "invalid type",
        ),
    ];
    for case in cases {
        let mut request = client.post(format!("{gateway}/v1/hits")).body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert_eq!(response.status(), case.status, "{}", case.what);
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{}",
            case.what
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], case.error, "{}: {answer}", case.what);
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(case.says),
            "{}: {message:?} should say {:?}",
            case.what,
            case.says
        );
    }

    let audit_after = counter.gateway.audit().await;
    assert_eq!(audit_after, audit_before, "a refused hit writes nothing");
    assert_eq!(counter.gateway.latest_hits(50).await, latest_before);

    // The gateway still records a good hit afterwards.
    let (status, _) = post_hit(&client, gateway, &new_hit("web-1")).await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn latest_hits_limit_is_checked(backend: Backend) {
    let counter = Counter::start(backend, 0).await;
    let client = http_client();
    let gateway = &counter.gateway.url;
    for limit in ["0", "1001", "-1", "ten", ""] {
        let response = client
            .get(format!("{gateway}/v1/hits/latest?limit={limit}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "limit={limit}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_limit");
    }
    let server = format!("latest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut posted = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for n in 0..5_u64 {
        let mut hit = new_hit(&server);
        // Newer than any hit already stored, even on a shared cluster.
        hit["ts"] = json!(now + 1000 + n);
        post_hit(&client, gateway, &hit).await;
        posted.push(hit);
    }
    let latest = counter.gateway.latest_hits(3).await.hits;
    let ids: Vec<HitId> = latest.iter().map(|h| h.id).collect();
    let expected: Vec<HitId> = posted
        .iter()
        .rev()
        .take(3)
        .map(|h| h["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, expected, "the three newest, newest first");
}

async fn health_and_unknown_endpoints(backend: Backend) {
    let counter = Counter::start(backend, 0).await;
    let client = http_client();
    let gateway = &counter.gateway.url;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client
                .get(format!("{gateway}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let response = client
        .get(format!("{gateway}/v2/hits"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "not_found"
    );
    let response = client
        .get(format!("{gateway}/v1/hits"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
}

/// The value of one series in a Prometheus text scrape, e.g.
/// `gateway_hits_recorded_total{kind="tutorial"}`.
fn series(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {name} in the scrape:\n{scrape}"))
}

async fn scrape(client: &reqwest::Client, gateway: &str) -> String {
    let response = client
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

async fn metrics_count_what_the_gateway_did(backend: Backend) {
    let counter = Counter::start(backend, 0).await;
    let client = http_client();
    let gateway = &counter.gateway.url;
    let before = scrape(&client, gateway).await;
    let recorded = r#"gateway_hits_recorded_total{kind="tutorial"}"#;
    let duplicates = r#"gateway_duplicate_hits_total{kind="tutorial"}"#;
    let pages = r#"gateway_hits_recorded_total{kind="page"}"#;
    // The gateway is this test's own, so its figures start at zero.
    assert_eq!(series(&before, recorded), 0.0);
    assert_eq!(
        series(&before, r#"gateway_store_retries_total{cause="in_doubt"}"#),
        0.0
    );

    let hit = new_hit("metrics");
    for _ in 0..2 {
        post_hit(&client, gateway, &hit).await;
    }
    post_hit(&client, gateway, &new_hit("metrics")).await;
    let page_hit = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "key": format!("metrics/{}", uuid::Uuid::new_v4().simple()),
        "ts": 1_732_000_000_000_u64,
    });
    let response = client
        .post(format!("{gateway}/v1/page-hits"))
        .json(&page_hit)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let audit = counter.gateway.audit().await;

    let after = scrape(&client, gateway).await;
    assert_eq!(series(&after, recorded), 2.0);
    assert_eq!(series(&after, duplicates), 1.0);
    assert_eq!(series(&after, pages), 1.0);
    assert_eq!(
        series(&after, r#"gateway_batch_size_hits_count{kind="tutorial"}"#),
        3.0
    );
    assert!(
        series(
            &after,
            r#"gateway_store_operation_seconds_count{operation="record_hits"}"#
        ) >= 3.0
    );
    assert_eq!(
        series(&after, "gateway_audit_drift_hits"),
        audit.summary.total_hits as f64 - audit.hit_records.total_hits as f64
    );
}

/// `HIT_RETENTION` (off by default, as in the tutorial): the hit records go
/// once their window has passed, the counters stay, and the audit says what it
/// can still check.
async fn tutorial_hit_records_expire_only_when_asked_and_the_audit_says_so(backend: Backend) {
    let counter = Counter::start_with(backend, 0, &[("HIT_RETENTION", "2s")], &[]).await;
    // Whatever an earlier suite left half done on a shared cluster is finished
    // first, so the consistency checked below is this test's.
    counter.gateway.settled_audit().await;
    let client = http_client();
    let gateway = &counter.gateway.url;
    let server = format!(
        "expiring-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let hit = new_hit(&server);
    assert_eq!(
        post_hit(&client, gateway, &hit).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        post_hit(&client, gateway, &hit).await.0,
        StatusCode::OK,
        "a retry inside the window"
    );
    assert_eq!(
        post_hit(&client, gateway, &new_hit(&server)).await.0,
        StatusCode::CREATED
    );
    let ours = |summary: &counter_api::Summary| {
        summary
            .servers
            .iter()
            .find(|s| s.server.as_str() == server)
            .map_or(0, |s| s.total)
    };
    let audit = counter.gateway.audit().await;
    assert!(audit.consistent, "{audit:?}");
    assert!(
        audit.findings.iter().any(|f| f.contains("HIT_RETENTION")),
        "the audit says what it checks: {:?}",
        audit.findings
    );
    assert_eq!(ours(&audit.hit_records), 2);

    let started = std::time::Instant::now();
    let audit = loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let audit = counter.gateway.audit().await;
        if ours(&audit.hit_records) == 0 {
            break audit;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "hit records outlived their window by far: {audit:?}"
        );
    };
    assert_eq!(ours(&audit.summary), 2, "the counters stay");
    assert!(audit.consistent, "{audit:?}");
    if backend == Backend::Aerospike {
        forget_expired_hits(&server, 2).await;
    }
}

/// Takes `hits` whose records expired out of `total_hits` and drops `server`'s
/// counter, while this test still has its turn on the shared cluster: every
/// other gateway keeps hit records forever and would take the cluster's
/// counters for drifted and repair them.
async fn forget_expired_hits(server: &str, hits: i64) {
    use ::aerospike::{Bin, Client, ClientPolicy, Key, Value, WritePolicy, operations};

    let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
    let client = Client::new(&ClientPolicy::default(), &hosts)
        .await
        .expect("connecting to Aerospike");
    let total = Key::new("test", "summary", Value::from("total_hits")).unwrap();
    let add = Bin::new("total", Value::from(-hits));
    client
        .operate(&WritePolicy::default(), &total, &[operations::add(&add)])
        .await
        .expect("taking the expired hits out of total_hits");
    let ours = Key::new("test", "summary", Value::from(server.to_owned())).unwrap();
    client
        .delete(&WritePolicy::default(), &ours)
        .await
        .expect("dropping the test's server counter");
}
