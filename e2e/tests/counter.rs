//! The whole hit path: HTTP client → web component in wasmtime or Spin → gateway → store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    Backend, Counter, Runtime, Setup, WireClient, http_client, on_every_runtime_and_backend,
    seen_by,
};
use tokio::io::AsyncWriteExt;

on_every_runtime_and_backend!(
    concurrent_hits_get_distinct_counts,
    restart_keeps_counts,
    gateway_down_slow_or_failing_answers_503_and_counting_resumes,
    stats_views_record_nothing,
    unknown_paths_and_other_methods_are_not_counted,
);

// Only Spin sends with Nagle's algorithm on (no TCP_NODELAY on its accepted
// sockets), so only there does an answer in two writes wait for the client's
// delayed ACK; `wasmtime serve` sets TCP_NODELAY, and its answers often leave
// as a head and then a body, at no cost.
mod spin_wire {
    mod embedded {
        e2e::__e2e_runs!([super::super]
            e2e::Setup { backend: e2e::Backend::Embedded, runtime: e2e::Runtime::Spin },
            not(spin), "SPIN does not name a Spin CLI, so there is no Spin to run on";
            every_answer_leaves_spin_in_one_segment);
    }
    mod aerospike {
        e2e::__e2e_runs!([super::super]
            e2e::Setup { backend: e2e::Backend::Aerospike, runtime: e2e::Runtime::Spin },
            any(not(spin), not(aerospike)),
            "needs both a Spin CLI in SPIN and an Aerospike cluster in AEROSPIKE_HOSTS";
            every_answer_leaves_spin_in_one_segment);
    }
}

/// Hits that share gateway calls are answered together, which is when Spin used
/// to write a head before its body (4-13% of answers at 16 clients, each then
/// 40 ms late). Counted on the client's sockets, so no timing is involved: each
/// answer must arrive as one segment carrying data, whole in the first read.
async fn every_answer_leaves_spin_in_one_segment(setup: Setup) {
    const CLIENTS: usize = 16;
    const HITS_EACH: usize = 50;
    assert_eq!(setup.runtime, Runtime::Spin);
    let counter = Counter::start(setup, 1).await;
    let base = counter.baseline.total_hits;
    let authority = counter.webs[0].url.trim_start_matches("http://").to_owned();
    let clients = (0..CLIENTS).map(|_| {
        let authority = authority.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = WireClient::connect(&authority);
            (0..HITS_EACH).map(|_| client.get("/")).collect::<Vec<_>>()
        })
    });
    let answers: Vec<_> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flat_map(|answers| answers.expect("client thread"))
        .collect();
    let mut counts: Vec<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            seen_by(&a.body)
        })
        .collect();
    counts.sort_unstable();
    let hits = (CLIENTS * HITS_EACH) as u64;
    assert_eq!(counts, (base + 1..=base + hits).collect::<Vec<_>>());
    let split: Vec<_> = answers
        .iter()
        .filter(|a| a.data_segments != 1 || a.first_read != a.length)
        .collect();
    assert!(
        split.is_empty(),
        "{} of {} answers did not arrive in one segment, e.g. {:?}",
        split.len(),
        answers.len(),
        split.first()
    );
}

async fn hit(client: &reqwest::Client, url: &str) -> u64 {
    let response = client.get(format!("{url}/")).send().await.expect("GET /");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    seen_by(&response.text().await.expect("body"))
}

async fn concurrent_hits_get_distinct_counts(setup: Setup) {
    const HITS: u64 = 1000;
    const CLIENTS: usize = 16;
    let counter = Counter::start(setup, 2).await;
    let base = counter.baseline.total_hits;
    let left = Arc::new(AtomicU64::new(HITS));
    let urls: Arc<Vec<String>> = Arc::new(counter.webs.iter().map(|w| w.url.clone()).collect());

    let clients = (0..CLIENTS).map(|client_no| {
        let (left, urls) = (left.clone(), urls.clone());
        tokio::spawn(async move {
            let client = http_client();
            let mut seen = Vec::new();
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let url = &urls[(client_no + seen.len()) % urls.len()];
                seen.push(hit(&client, url).await);
            }
            seen
        })
    });
    let mut counts: Vec<u64> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flat_map(|seen| seen.expect("client task"))
        .collect();
    counts.sort_unstable();
    let expected: Vec<u64> = (base + 1..=base + HITS).collect();
    assert!(
        counts == expected,
        "answered counts are not exactly {}..={}",
        base + 1,
        base + HITS
    );

    let summary = counter.gateway.summary().await;
    assert_eq!(summary.total_hits, base + HITS);
    let per_server = counter.server_totals(&summary);
    assert_eq!(
        per_server.iter().map(|(_, n)| n).sum::<u64>(),
        HITS,
        "{per_server:?}"
    );
    assert!(
        per_server.iter().all(|(_, n)| *n > 0),
        "both replicas served: {per_server:?}"
    );

    let audit = counter.gateway.audit().await;
    assert_eq!(
        counter.hit_records(&audit),
        per_server,
        "one hit record per counted hit"
    );
    if setup.backend == Backend::Embedded {
        assert_eq!(audit.hit_records.total_hits, HITS);
        assert!(audit.consistent, "{audit:?}");
    }
}

async fn restart_keeps_counts(setup: Setup) {
    let mut counter = Counter::start(setup, 1).await;
    let base = counter.baseline.total_hits;
    let client = http_client();
    let web = counter.webs[0].url.clone();
    for n in 1..=5 {
        assert_eq!(hit(&client, &web).await, base + n);
    }
    let before = counter.gateway.summary().await;

    counter.gateway.stop().await;
    counter.gateway.restart().await;

    let after = counter.gateway.summary().await;
    assert_eq!(
        counter.server_totals(&after),
        counter.server_totals(&before)
    );
    assert_eq!(after.total_hits, base + 5);
    assert_eq!(
        hit(&client, &web).await,
        base + 6,
        "the next hit continues the count"
    );
}

async fn gateway_down_slow_or_failing_answers_503_and_counting_resumes(setup: Setup) {
    const TIMEOUT_MS: u64 = 1000;
    let timeout = Duration::from_millis(TIMEOUT_MS);
    let mut counter = Counter::start_with(
        setup,
        1,
        &[],
        &[("GATEWAY_TIMEOUT_MS", &TIMEOUT_MS.to_string())],
    )
    .await;
    let base = counter.baseline.total_hits;
    let client = http_client();
    let web = counter.webs[0].url.clone();
    assert_eq!(hit(&client, &web).await, base + 1);

    let gateway_addr = counter.gateway.url.trim_start_matches("http://").to_owned();
    counter.gateway.stop().await;

    // Down: nothing listens.
    let started = Instant::now();
    assert_unavailable(&client, &web).await;
    assert!(started.elapsed() < timeout + Duration::from_secs(5));

    // Slow: something accepts the connection and never answers.
    let stalled = tokio::net::TcpListener::bind(&gateway_addr).await.unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    assert_unavailable(&client, &web).await;
    let waited = started.elapsed();
    assert!(
        waited >= timeout,
        "answered after {waited:?}, before the gateway could have"
    );
    assert!(
        waited < timeout + Duration::from_secs(5),
        "waited {waited:?}"
    );
    holder.abort();
    let _ = holder.await;

    // Failing: something answers 500.
    let failing = tokio::net::TcpListener::bind(&gateway_addr).await.unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = failing.accept().await {
            let body = r#"{"error":"store_failed","message":"disk on fire"}"#;
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    assert_unavailable(&client, &web).await;
    server.abort();
    let _ = server.await;

    counter.gateway.restart().await;
    assert_eq!(
        hit(&client, &web).await,
        base + 2,
        "counting resumes; no failed hit was counted"
    );
    counter.webs[0].assert_running();
}

async fn assert_unavailable(client: &reqwest::Client, web: &str) {
    let response = client.get(format!("{web}/")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with("The counter is unavailable right now"),
        "{body:?}"
    );
    assert!(!body.contains("Hello World"), "{body:?}");
}

async fn stats_views_record_nothing(setup: Setup) {
    let counter = Counter::start(setup, 2).await;
    let base = counter.baseline.total_hits;
    let client = http_client();
    for (web, hits) in counter.webs.iter().zip([3, 2]) {
        for _ in 0..hits {
            hit(&client, &web.url).await;
        }
    }
    let web = &counter.webs[0].url;

    let response = client.get(format!("{web}/api/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let stats: serde_json::Value = response.json().await.unwrap();
    assert_eq!(stats["total_hits"], base + 5);
    for (web, hits) in counter.webs.iter().zip([3, 2]) {
        let row = stats["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server"] == web.server_id.as_str())
            .unwrap_or_else(|| panic!("{} missing from {stats}", web.server_id));
        assert_eq!(row["total"], hits);
    }
    let latest = stats["latest_hits"].as_array().unwrap();
    let ours = latest
        .iter()
        .filter(|h| {
            counter
                .webs
                .iter()
                .any(|w| h["server"] == w.server_id.as_str())
        })
        .count();
    assert_eq!(ours, 5, "the five newest hits are ours: {latest:?}");
    let times: Vec<u64> = latest.iter().map(|h| h["ts"].as_u64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let response = client.get(format!("{web}/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains(&format!(r#"<div class="total">{}</div>"#, base + 5)));
    for web in &counter.webs {
        assert!(
            page.contains(&web.server_id),
            "{} missing from the page",
            web.server_id
        );
    }
    // An inline SVG names its XML namespace with a URL, which loads nothing;
    // any other URL would be an external asset.
    let loaded = page.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
    assert!(
        !loaded.contains("http://") && !loaded.contains("https://"),
        "no external assets"
    );

    assert_eq!(
        counter.gateway.summary().await.total_hits,
        base + 5,
        "viewing stats counts nothing"
    );
}

async fn unknown_paths_and_other_methods_are_not_counted(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let base = counter.baseline.total_hits;
    let client = http_client();
    let web = &counter.webs[0].url;
    for path in [
        "/favicon.ico",
        "/robots.txt",
        "/index.html",
        "/stats/",
        "/api",
    ] {
        let response = client.get(format!("{web}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    for (method, path) in [
        (reqwest::Method::POST, "/"),
        (reqwest::Method::PUT, "/"),
        (reqwest::Method::DELETE, "/"),
        (reqwest::Method::HEAD, "/"),
        (reqwest::Method::POST, "/stats"),
        (reqwest::Method::POST, "/api/stats"),
    ] {
        let response = client
            .request(method.clone(), format!("{web}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], "GET", "{method} {path}");
    }
    assert_eq!(
        hit(&client, web).await,
        base + 1,
        "none of the above was counted"
    );
}
