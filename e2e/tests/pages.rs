//! Named counters through the whole path: HTTP client → web component in wasmtime
//! → gateway → store. Badges, the JSON API, daily history, unique visitors and
//! the stats pages, on both stores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use counter_api::{BatchOutcomes, Outcome, PageRecorded, PageStats, PagesOverview};
use e2e::{
    Backend, Counter, Runtime, Setup, badge_count, get_json, get_text, http_client,
    on_every_backend, on_every_runtime_and_backend,
};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

on_every_runtime_and_backend!(
    hits_on_many_keys_get_exact_numbers_and_days_add_up,
    a_retried_hit_is_counted_once,
    bad_keys_and_options_are_refused_and_count_nothing,
    badges_are_escaped_uncached_and_readable,
    unique_visitors_are_estimated_and_nobody_is_stored,
    stats_pages_show_top_counters_and_charts,
    counts_survive_a_gateway_restart,
);

// At the gateway, without a web tier: the load of a public badge service.
on_every_backend!(
    a_hundred_thousand_counters_in_a_day_keep_day_totals_and_top_lists_exact,
    page_hit_records_expire_after_the_idempotency_window,
    the_audit_covers_named_counters_and_a_counter_edited_by_hand_is_repaired,
    unique_visitors_cost_storage_in_proportion_until_a_hyperloglog_is_smaller,
    per_day_visitors_go_after_their_retention_while_totals_and_days_stay,
);

/// Keys of this test run only: the Aerospike cluster is shared and keeps data.
fn run_prefix() -> String {
    format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn post_hit(client: &reqwest::Client, web: &str, key: &str) -> PageRecorded {
    let response = client
        .post(format!("{web}/api/pages/{key}"))
        .send()
        .await
        .expect("POST /api/pages/<key>");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_str(&body).expect("a PageRecorded")
}

async fn badge(client: &reqwest::Client, web: &str, key: &str, query: &str) -> String {
    let response = client
        .get(format!("{web}/badge/{key}.svg{query}"))
        .send()
        .await
        .expect("GET /badge");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn stats(client: &reqwest::Client, web: &str, key: &str, days: u32) -> PageStats {
    let response = client
        .get(format!("{web}/api/pages/{key}?days={days}"))
        .send()
        .await
        .expect("GET /api/pages/<key>");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("PageStats")
}

async fn hits_on_many_keys_get_exact_numbers_and_days_add_up(setup: Setup) {
    const HITS: usize = 1200;
    const KEYS: usize = 12;
    const CLIENTS: usize = 16;
    let counter = Counter::start(setup, 2).await;
    let prefix = run_prefix();
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|k| format!("{prefix}/k{k}")).collect());
    let urls: Arc<Vec<String>> = Arc::new(counter.webs.iter().map(|w| w.url.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));

    let clients = (0..CLIENTS).map(|_| {
        let (keys, urls, next) = (keys.clone(), urls.clone(), next.clone());
        tokio::spawn(async move {
            let client = http_client();
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= HITS {
                    return seen;
                }
                // Uneven keys (key k gets a share that grows with k), both
                // replicas, and badges and the JSON API alike.
                let key = &keys[(i * i) % KEYS];
                let url = &urls[i % urls.len()];
                let n = if i % 2 == 0 {
                    badge_count(&badge(&client, url, key, "").await)
                } else {
                    post_hit(&client, url, key).await.total
                };
                seen.push((key.clone(), n));
            }
        })
    });
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for seen in futures::future::join_all(clients).await {
        for (key, n) in seen.expect("client task") {
            per_key.entry(key).or_default().push(n);
        }
    }
    let client = http_client();
    let mut counted = 0;
    for (key, mut numbers) in per_key {
        numbers.sort_unstable();
        let n = numbers.len() as u64;
        assert!(
            numbers == (1..=n).collect::<Vec<_>>(),
            "{key}: the {n} hits were not answered exactly 1..={n}: {numbers:?}"
        );
        let stats = stats(&client, &counter.webs[0].url, &key, 400).await;
        assert_eq!(stats.total, n, "{key}");
        assert_eq!(stats.today.hits, n, "{key}: every hit was today");
        assert_eq!(stats.days.len(), 400);
        assert_eq!(
            stats.days.iter().map(|d| d.hits).sum::<u64>(),
            stats.total,
            "{key}: the days add up to the total"
        );
        counted += n;
    }
    assert_eq!(counted, HITS as u64);

    // The tutorial's counter is a counter of its own: untouched.
    let summary = counter.gateway.summary().await;
    assert_eq!(
        counter.server_totals(&summary),
        counter.server_totals(&counter.baseline)
    );
    assert!(counter.gateway.audit().await.consistent || setup.backend == Backend::Aerospike);
}

async fn a_retried_hit_is_counted_once(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let key = format!("{}/retried", run_prefix());
    let client = http_client();
    let id = uuid::Uuid::new_v4().to_string();
    let post = |id: String| {
        let (client, url) = (client.clone(), format!("{web}/api/pages/{key}"));
        async move {
            let response = client
                .post(url)
                .header("Idempotency-Key", id)
                .send()
                .await
                .expect("POST");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, first) = post(id.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["total"], 1);
    // The same id again, also spelled in upper case, and 20 at once.
    let (status, again) = post(id.to_uppercase()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["total"], 1);
    let retries = futures::future::join_all((0..20).map(|_| post(id.clone()))).await;
    assert!(
        retries
            .iter()
            .all(|(s, b)| *s == StatusCode::OK && b["duplicate"] == true)
    );
    // A new id counts.
    let (status, second) = post(uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["total"], 2);

    let (status, bad) = post("not-a-uuid".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"], "invalid_idempotency_key");
    assert!(bad["message"].as_str().unwrap().contains("UUID"), "{bad}");
    assert_eq!(stats(&client, web, &key, 1).await.total, 2);
}

async fn bad_keys_and_options_are_refused_and_count_nothing(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/refused", run_prefix());
    let long = "k".repeat(201);

    // (method, path, status, what the message must say)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/badge/a%20b.svg".into(), 400, "A-Z a-z 0-9"),
        ("GET", "/badge/a<b>.svg".into(), 400, "not allowed"),
        ("GET", "/badge/a//b.svg".into(), 400, "segment"),
        ("GET", "/badge/a/.svg".into(), 400, "segment"),
        ("GET", format!("/badge/{long}.svg"), 400, "at most 200"),
        ("GET", format!("/badge/{key}.svg?style=3d"), 400, "flat"),
        (
            "GET",
            format!("/badge/{key}.svg?color=javascript:alert(1)"),
            400,
            "brightgreen",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?labelcolour=red"),
            400,
            "unknown parameter",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?count=maybe"),
            400,
            "true or false",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?label=a&label=b"),
            400,
            "more than once",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?label=%FF"),
            400,
            "not valid UTF-8",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?logo=nosuchicon"),
            400,
            "Simple Icons slug",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?logo=%3Csvg%2F%3E"),
            400,
            "Simple Icons slug",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?logo_color=purple-ish"),
            400,
            "brightgreen",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?link=javascript:alert(1)"),
            400,
            "http:// or https://",
        ),
        (
            "GET",
            format!("/badge/{key}.svg?link=https://a.example&link=https://b.example"),
            400,
            "more than once",
        ),
        ("POST", "/api/pages/a%20b".into(), 400, "A-Z a-z 0-9"),
        (
            "POST",
            format!("/api/pages/{key}?x=1"),
            400,
            "unknown parameter",
        ),
        (
            "GET",
            format!("/api/pages/{key}?days=0"),
            400,
            "from 1 to 400",
        ),
        (
            "GET",
            format!("/api/pages/{key}?days=401"),
            400,
            "from 1 to 400",
        ),
        ("GET", "/api/pages?limit=1000".into(), 400, "from 1 to 100"),
        ("GET", "/api/pages?top=3".into(), 400, "unknown parameter"),
        ("GET", "/stats/a%20b".into(), 400, "A-Z a-z 0-9"),
        ("PUT", format!("/api/pages/{key}"), 405, "GET, POST"),
        ("POST", format!("/badge/{key}.svg"), 405, "only answers GET"),
    ];
    for (method, path, status, says) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), format!("{web}{path}"))
            .send()
            .await
            .expect("request");
        let got = response.status().as_u16();
        let json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(
            body.contains(says),
            "{method} {path}: {body:?} should say {says:?}"
        );
        if path.starts_with("/api/") && status == 400 {
            assert!(json, "{path}: the JSON API answers errors as JSON");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].is_string() && error["message"].is_string());
        }
    }
    assert_eq!(
        stats(&client, web, &key, 1).await.total,
        0,
        "no refused request counted a hit"
    );

    // The gateway refuses bad page hits on its own too.
    let gateway = &counter.gateway.url;
    for (body, says) in [
        (
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"a b","ts":1732000000000}"#,
            "not allowed",
        ),
        (
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"a","ts":1732000000}"#,
            "out of range",
        ),
        (
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"a","ts":1732000000000,"visitor":{"addr":"nope","user_agent":"x"}}"#,
            "invalid IP",
        ),
        (
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"a","ts":1732000000000,"server":"x"}"#,
            "unknown field",
        ),
    ] {
        let response = client
            .post(format!("{gateway}/v1/page-hits"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_page_hit");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
}

async fn badges_are_escaped_uncached_and_readable(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/badge", run_prefix());

    let response = client
        .get(format!(
            "{web}/badge/{key}.svg?label=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%2F%3E&color=orange&style=flat-square"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/svg+xml; charset=utf-8");
    let cache = headers["cache-control"].to_str().unwrap();
    for directive in ["no-cache", "no-store", "max-age=0", "must-revalidate"] {
        assert!(
            cache.contains(directive),
            "cache-control {cache:?} lacks {directive}"
        );
    }
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    );
    let svg = response.text().await.unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the badge is well-formed XML");
    assert!(
        !doc.descendants().any(|n| n.has_tag_name("script")),
        "markup in the label must stay text: {svg}"
    );
    assert!(
        doc.descendants()
            .any(|n| n.text() == Some("<script>alert(1)</script>\"/>")),
        "the label is shown as text: {svg}"
    );
    assert_eq!(badge_count(&svg), 1);

    // Showing without counting, in every style.
    for style in shields::BadgeStyle::ALL.map(|s| s.as_str()) {
        let svg = badge(&client, web, &key, &format!("?count=false&style={style}")).await;
        assert_eq!(badge_count(&svg), 1, "{style}");
    }

    // A large count is abbreviated, with the exact one in the title.
    let rest = 1233;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks = (0..16).map(|_| {
        let (client, url, next) = (
            client.clone(),
            format!("{web}/api/pages/{key}"),
            next.clone(),
        );
        tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < rest {
                let status = client.post(&url).send().await.unwrap().status();
                assert_eq!(status, StatusCode::CREATED);
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let svg = badge(&client, web, &key, "?count=false").await;
    assert_eq!(badge_count(&svg), 1234);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        doc.descendants().any(|n| n.text() == Some("1.2k")),
        "1,234 shows as 1.2k: {svg}"
    );

    // The component draws what the shields crate draws for the same parameters,
    // but names the exact count.
    use shields::{BadgeParams, BadgeStyle};
    for (query, params, shown, exact) in [
        (
            "",
            BadgeParams::new("hits", "1.2k"),
            "hits: 1.2k",
            "hits: 1,234",
        ),
        (
            "label=views&color=brightgreen&style=flat-square",
            BadgeParams {
                style: BadgeStyle::FlatSquare,
                message_color: Some("brightgreen"),
                ..BadgeParams::new("views", "1.2k")
            },
            "views: 1.2k",
            "views: 1,234",
        ),
        (
            "style=plastic&label_color=%23abc&color=FE7D37",
            BadgeParams {
                style: BadgeStyle::Plastic,
                label_color: Some("#abc"),
                message_color: Some("#fe7d37"),
                ..BadgeParams::new("hits", "1.2k")
            },
            "hits: 1.2k",
            "hits: 1,234",
        ),
        (
            "style=social&logo=github&link=https%3A%2F%2Fgithub.com%2Fo%2Fr%3Fa%3D1%26b%3D2",
            BadgeParams {
                style: BadgeStyle::Social,
                logo: Some("github"),
                link: Some("https://github.com/o/r?a=1&b=2"),
                ..BadgeParams::new("hits", "1.2k")
            },
            "Hits: 1.2k",
            "hits: 1,234",
        ),
        (
            "style=for-the-badge&logo=Rust&logo_color=orange&label=&color=critical",
            BadgeParams {
                style: BadgeStyle::ForTheBadge,
                logo: Some("rust"),
                logo_color: Some("orange"),
                message_color: Some("critical"),
                ..BadgeParams::new("", "1.2k")
            },
            "1.2K",
            "1,234",
        ),
    ] {
        let ours = badge(&client, web, &key, &format!("?count=false&{query}")).await;
        let named = |name: &str| format!(r#"aria-label="{name}"><title>{name}</title>"#);
        let expected = shields::render_badge_svg(&params).replace(&named(shown), &named(exact));
        assert!(expected.contains(&named(exact)), "{expected}");
        assert_eq!(ours, expected, "?{query}");
        assert_eq!(ours.contains("<image "), query.contains("logo="), "{ours}");
    }
    assert_eq!(
        stats(&client, web, &key, 1).await.total,
        1234,
        "previews count nothing"
    );
}

async fn unique_visitors_are_estimated_and_nobody_is_stored(setup: Setup) {
    const VISITORS: u32 = 10_000;
    const REPEATS: u32 = 1_000;
    const AGENT: &str = "e2e-agent-3f9c1d/1.0";
    let counter = Counter::start_with(setup, 1, &[], &[("TRUSTED_PROXIES", "*")]).await;
    let web = counter.webs[0].url.clone();
    let key = format!("{}/visitors", run_prefix());
    let next = Arc::new(AtomicUsize::new(0));
    // Visitor i is 198.18.x.y; the first REPEATS come back once more.
    let tasks = (0..32).map(|_| {
        let (client, url, next) = (
            http_client(),
            format!("{web}/api/pages/{key}"),
            next.clone(),
        );
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as u32;
                if i >= VISITORS + REPEATS {
                    return;
                }
                let visitor = std::net::Ipv4Addr::from(0xc612_0000 + i % VISITORS);
                let response = client
                    .post(&url)
                    .header("x-forwarded-for", format!("10.9.9.9, {visitor}"))
                    .header("user-agent", AGENT)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let client = http_client();
    let today = stats(&client, &web, &key, 1).await.today;
    assert_eq!(today.hits, u64::from(VISITORS + REPEATS));
    let error = (today.visitors as f64 - f64::from(VISITORS)) / f64::from(VISITORS);
    println!(
        "{setup:?}: {VISITORS} visitors ({REPEATS} of them twice) estimated as {} ({:+.2}%)",
        today.visitors,
        error * 100.0
    );
    assert!(
        error.abs() <= 0.02,
        "estimate {} is off by {:+.2}%",
        today.visitors,
        error * 100.0
    );

    // Without a trusted proxy, X-Forwarded-For is anybody's say: Spin's peer
    // address is the visitor (one, however the header varies); wasmtime passes
    // none, so there is no visitor at all.
    let untrusted = e2e::Web::start_on(
        setup.runtime,
        &counter.gateway.url,
        "untrusted",
        counter.dir.path(),
        &[],
    )
    .await;
    let key2 = format!("{key}-untrusted");
    for claimed in ["203.0.113.5", "203.0.113.6"] {
        let response = client
            .post(format!("{}/api/pages/{key2}", untrusted.url))
            .header("x-forwarded-for", claimed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let today = stats(&client, &web, &key2, 1).await.today;
    let peers = match setup.runtime {
        Runtime::Spin => 1,
        Runtime::Wasmtime => 0,
    };
    assert_eq!((today.hits, today.visitors), (2, peers));
    untrusted.stop().await;

    // A counter-day of three visitors, in the store's exact form (a list of
    // keyed hashes on Aerospike): the check below reads it too.
    let few = format!("{key}-few");
    for i in 0..3 {
        let visitor = std::net::Ipv4Addr::from(0xc612_0000 + i);
        let response = client
            .post(format!("{web}/api/pages/{few}"))
            .header("x-forwarded-for", format!("10.9.9.9, {visitor}"))
            .header("user-agent", AGENT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    assert_eq!(stats(&client, &web, &few, 1).await.today.visitors, 3);

    // Nothing of the visitors is stored: not their addresses, not their agent.
    let needles: Vec<Vec<u8>> = [0, 1, 4242, VISITORS - 1]
        .map(|i| {
            std::net::Ipv4Addr::from(0xc612_0000 + i)
                .to_string()
                .into_bytes()
        })
        .into_iter()
        .chain([AGENT.as_bytes().to_vec()])
        .collect();
    match setup.backend {
        Backend::Embedded => {
            let file = std::fs::read(counter.dir.path().join("data/counter.redb")).unwrap();
            for needle in &needles {
                assert!(
                    !file.windows(needle.len()).any(|w| w == needle),
                    "{} is in the store file",
                    String::from_utf8_lossy(needle)
                );
            }
        }
        Backend::Aerospike => {
            let bytes = aerospike_page_data().await;
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} is in Aerospike",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}

/// Every key and bin of the named counters' sets on the cluster under test, as
/// bytes to search.
async fn aerospike_page_data() -> Vec<u8> {
    use ::aerospike::query::{PartitionFilter, Statement};
    use ::aerospike::{Bins, Client, ClientPolicy, QueryPolicy, Value};

    fn bytes_of(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            Value::Blob(b) | Value::Hll(b) => out.extend_from_slice(b),
            Value::List(items) | Value::MultiResult(items) => {
                items.iter().for_each(|v| bytes_of(v, out))
            }
            Value::KeyValueList(pairs) => pairs.iter().for_each(|(k, v)| {
                bytes_of(k, out);
                bytes_of(v, out);
            }),
            Value::SortedMap(map) => map.iter().for_each(|(k, v)| {
                bytes_of(k, out);
                bytes_of(v, out);
            }),
            Value::HashMap(map) => map.iter().for_each(|(k, v)| {
                bytes_of(k, out);
                bytes_of(v, out);
            }),
            Value::OrderedMap(map) => map.iter().for_each(|(k, v)| {
                bytes_of(k, out);
                bytes_of(v, out);
            }),
            other => out.extend_from_slice(format!("{other}").as_bytes()),
        }
        out.push(0);
    }

    let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
    let client = Client::new(&ClientPolicy::default(), &hosts)
        .await
        .expect("connecting to Aerospike");
    let mut bytes = Vec::new();
    for set in [
        "page_hits",
        "pages",
        "page_visitors",
        "page_days",
        "page_tops",
        "visitor_salts",
    ] {
        let records = client
            .query(
                &QueryPolicy::default(),
                PartitionFilter::all(),
                Statement::new("test", set, Bins::All),
            )
            .await
            .expect("querying a set");
        let mut stream = records.into_stream();
        while let Some(record) = stream.next().await {
            let record = record.expect("a record");
            if let Some(key) = record.key.as_ref().and_then(|k| k.user_key()) {
                bytes_of(key, &mut bytes);
            }
            for value in record.bins.values() {
                bytes_of(value, &mut bytes);
            }
        }
    }
    bytes
}

async fn stats_pages_show_top_counters_and_charts(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let prefix = run_prefix();
    // Keys far above anything else on a shared cluster, so they top the lists.
    let hits = [("most", 30), ("middle", 20), ("least", 10)];
    for (name, n) in hits {
        for _ in 0..n {
            post_hit(&client, web, &format!("{prefix}/{name}")).await;
        }
    }
    let overview: PagesOverview = get_json(&format!("{web}/api/pages?limit=100&days=7")).await;
    let ours: Vec<(String, u64)> = overview
        .top_today
        .iter()
        .filter(|p| p.key.as_str().starts_with(&prefix))
        .map(|p| (p.key.to_string(), p.hits))
        .collect();
    assert_eq!(
        ours,
        hits.map(|(name, n)| (format!("{prefix}/{name}"), n))
            .to_vec()
    );
    assert_eq!(overview.days.len(), 7);
    assert!(overview.days.last().unwrap().hits >= 60);

    // /stats lists the top counters (on a shared cluster, not necessarily
    // ours), each a link to a page of a counter that has hits.
    let page = client.get(format!("{web}/stats")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    let linked: Vec<&str> = page
        .split("href=\"/stats/")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').expect("a closed href")])
        .collect();
    assert!(!linked.is_empty(), "/stats lists the top counters");
    for key in linked {
        assert!(stats(&client, web, key, 1).await.total > 0, "{key}");
    }
    let charts = svg_charts(&page);
    assert!(!charts.is_empty(), "/stats has a chart of hits per day");

    let page = client
        .get(format!("{web}/stats/{prefix}/most"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().await.unwrap();
    assert!(!page.contains("<script"), "no scripts");
    assert!(
        page.contains(&format!("/badge/{prefix}/most.svg")),
        "shows how to embed the badge"
    );
    let charts = svg_charts(&page);
    let sizes: Vec<usize> = charts.iter().map(|bars| bars.len()).collect();
    assert_eq!(sizes, [30, 365], "a 30-day and a 365-day chart");
    for bars in &charts {
        let (today_hits, today_height) = *bars.last().unwrap();
        assert_eq!(today_hits, 30, "today's bar is today's count");
        assert!(today_height > 0.0, "today's bar is drawn");
        for &(hits, height) in &bars[..bars.len() - 1] {
            assert_eq!((hits, height), (0, 0.0), "no hits on other days");
        }
    }
    // Viewing the page counted nothing.
    assert_eq!(
        stats(&client, web, &format!("{prefix}/most"), 1)
            .await
            .total,
        30
    );
}

/// Every `<svg>` chart of an HTML page as (hits, drawn height) per bar, parsed
/// with an XML parser: a broken chart fails here.
fn svg_charts(page: &str) -> Vec<Vec<(u64, f64)>> {
    let mut charts = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        // Charts nest an <svg> for the bars: find the matching close.
        let (mut depth, mut at) = (0, start);
        let end = loop {
            let open = rest[at..].find("<svg").map(|i| i + at);
            let close = rest[at..].find("</svg>").expect("a closed <svg>") + at;
            match open {
                Some(open) if open < close => {
                    depth += 1;
                    at = open + 4;
                }
                _ => {
                    depth -= 1;
                    at = close + "</svg>".len();
                    if depth == 0 {
                        break at;
                    }
                }
            }
        };
        let fragment = &rest[start..end];
        let doc = roxmltree::Document::parse(fragment)
            .unwrap_or_else(|e| panic!("a chart is not well-formed ({e}): {fragment}"));
        let bars: Vec<(u64, f64)> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .map(|n| {
                let hits = n.attribute("data-hits").unwrap().parse().unwrap();
                let height: f64 = n.attribute("height").unwrap().parse().unwrap();
                assert!(height.is_finite() && height >= 0.0, "{fragment}");
                (hits, height)
            })
            .collect();
        if !bars.is_empty() {
            charts.push(bars);
        }
        rest = &rest[end..];
    }
    charts
}

async fn counts_survive_a_gateway_restart(setup: Setup) {
    let mut counter = Counter::start(setup, 1).await;
    let web = counter.webs[0].url.clone();
    let client = http_client();
    let key = format!("{}/restart", run_prefix());
    for n in 1..=5 {
        assert_eq!(post_hit(&client, &web, &key).await.total, n);
    }
    counter.gateway.stop().await;
    counter.gateway.restart().await;
    assert_eq!(post_hit(&client, &web, &key).await.total, 6);
    let stats = stats(&client, &web, &key, 30).await;
    assert_eq!((stats.total, stats.today.hits), (6, 6));
}

/// Epoch milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Posts page hits straight to the gateway in batches of 256 from 8 clients,
/// as the issue's load did; answers every hit's answer, in order.
async fn post_page_hits(gateway: &str, hits: Vec<Value>) -> Vec<PageRecorded> {
    let client = http_client();
    let url = format!("{gateway}/v1/page-hits/batch");
    let batches: Vec<Vec<Value>> = hits.chunks(256).map(<[Value]>::to_vec).collect();
    let answers: Vec<Vec<PageRecorded>> = futures::stream::iter(batches)
        .map(|batch| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(url)
                    .json(&serde_json::json!({ "hits": batch }))
                    .send()
                    .await
                    .expect("POST /v1/page-hits/batch");
                assert_eq!(response.status(), StatusCode::OK);
                let outcomes: BatchOutcomes<PageRecorded> = response.json().await.unwrap();
                outcomes
                    .outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Outcome::Recorded(recorded) => recorded,
                        Outcome::Failed(error) => panic!("a page hit failed: {error:?}"),
                    })
                    .collect()
            }
        })
        .buffered(8)
        .collect()
        .await;
    answers.into_iter().flatten().collect()
}

fn page_hit(id: &str, key: &str, ts: u64) -> Value {
    serde_json::json!({ "id": id, "key": key, "ts": ts })
}

/// What a top list must show: the `limit` best of the counters it lists that
/// are not this run's (the store's own word for them, on a shared cluster)
/// and of this run's counters with their exact counts; most hits first, ties
/// by key.
fn expected_top(
    listed: &[counter_api::PageTotal],
    ours: &BTreeMap<String, u64>,
    prefix: &str,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = listed
        .iter()
        .filter(|p| !p.key.as_str().starts_with(prefix))
        .map(|p| (p.key.to_string(), p.hits))
        .chain(ours.iter().map(|(k, n)| (k.clone(), *n)))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(limit);
    all
}

fn listed(list: &[counter_api::PageTotal]) -> Vec<(String, u64)> {
    list.iter().map(|p| (p.key.to_string(), p.hits)).collect()
}

/// 100,000 counters with one hit each and one with 500, in one day: today's
/// total and both top lists stay exact (no record holds every counter of a
/// day). Prints how long recording, the overview and the audit took, and the
/// gateway's peak RSS during the audit: the figures the README quotes, not
/// asserted.
///
/// `PAGE_SCALE_COUNTERS` (default 100,000) sets the cold counters and
/// `PAGE_SCALE_DAYS` (1..=7, default 1) spreads their hits over that many
/// days back from today, all of them inside the 7 days the audit covers.
async fn a_hundred_thousand_counters_in_a_day_keep_day_totals_and_top_lists_exact(
    backend: Backend,
) {
    // The README's figures for a million counters come from
    // PAGE_SCALE_COUNTERS=1000000 PAGE_SCALE_DAYS=7.
    let cold: usize = std::env::var("PAGE_SCALE_COUNTERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let spread: usize = std::env::var("PAGE_SCALE_DAYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    assert!(
        (1..=7).contains(&spread),
        "PAGE_SCALE_DAYS is 1..=7, not {spread}"
    );
    const HOT: u64 = 500;
    let counter = Counter::start(backend, 0).await;
    let gateway = &counter.gateway.url;
    let prefix = run_prefix();
    let overview_url = format!("{gateway}/v1/pages?limit=100&days={spread}");
    let before: PagesOverview = get_json(&overview_url).await;
    let all_days_before: u64 = before.days.iter().map(|d| d.hits).sum();

    let ts = now_ms();
    // Cold counter i is hit `i % spread` days back: today holds every
    // `spread`-th of them.
    let back = |i: usize| (i % spread) as u64;
    let hot = format!("{prefix}/hot");
    let mut hits: Vec<Value> = (0..cold)
        .map(|i| {
            page_hit(
                &uuid::Uuid::new_v4().to_string(),
                &format!("{prefix}/c{i:07}"),
                ts - back(i) * 86_400_000,
            )
        })
        .collect();
    // The hot counter's hits spread through the load.
    for n in 0..HOT as usize {
        let at = n * (cold / HOT as usize) + n;
        hits.insert(at, page_hit(&uuid::Uuid::new_v4().to_string(), &hot, ts));
    }
    let sent = hits.len();
    let started = std::time::Instant::now();
    let answers = post_page_hits(gateway, hits).await;
    let took = started.elapsed();
    println!(
        "{backend:?}: recorded {sent} page hits on {} counters over {spread} day(s) in {:.2} s ({:.0} hits/s)",
        cold + 1,
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );
    assert!(answers.iter().all(|a| !a.duplicate));
    let mut hot_numbers: Vec<u64> = answers
        .iter()
        .filter(|a| a.key.as_str() == hot)
        .map(|a| a.total)
        .collect();
    hot_numbers.sort_unstable();
    assert_eq!(
        hot_numbers,
        (1..=HOT).collect::<Vec<_>>(),
        "distinct numbers"
    );
    drop(answers);

    let mut latencies = Vec::new();
    let mut overview = before;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        overview = get_json(&overview_url).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "{backend:?}: GET /v1/pages?limit=100 with {} more counters: {:.1} ms median",
        cold + 1,
        latencies[2]
    );
    assert_eq!(
        overview.days.iter().map(|d| d.hits).sum::<u64>() - all_days_before,
        sent as u64,
        "the days' totals grew by every hit"
    );
    let today: BTreeMap<String, u64> = (0..cold)
        .filter(|i| back(*i) == 0)
        .map(|i| (format!("{prefix}/c{i:07}"), 1))
        .chain([(hot.clone(), HOT)])
        .collect();
    assert_eq!(
        listed(&overview.top_today),
        expected_top(&overview.top_today, &today, &prefix, 100),
        "today's top"
    );
    let ours: BTreeMap<String, u64> = (0..cold)
        .map(|i| (format!("{prefix}/c{i:07}"), 1))
        .chain([(hot.clone(), HOT)])
        .collect();
    assert_eq!(
        listed(&overview.top_all_time),
        expected_top(&overview.top_all_time, &ours, &prefix, 100),
        "the all-time top"
    );
    assert!(
        overview.top_today.iter().any(|p| p.key.as_str() == hot),
        "the hot counter is in today's top"
    );
    if backend == Backend::Embedded {
        let file = counter.dir.path().join("data").join("counter.redb");
        let bytes = std::fs::metadata(&file).expect("the store's file").len();
        println!(
            "Embedded: the store's file is {:.1} MB after {sent} page hits on {} counters ({:.0} bytes a hit)",
            bytes as f64 / 1e6,
            cold + 1,
            bytes as f64 / sent as f64
        );
    }
    let pid = counter.gateway.pid();
    let rss_before = vm_kb(pid, "VmRSS");
    // Peak RSS from here on: the audit's own, not the recording's.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak RSS");
    let started = std::time::Instant::now();
    let audit = counter.gateway.audit().await;
    let audit_took = started.elapsed();
    println!(
        "{backend:?}: GET /v1/audit over {} counters and {} page hit records on {} day(s): {:.2} s, \
         gateway RSS {:.1} MB before, peak {:.1} MB during; coverage {:?}",
        audit.pages.counters,
        audit.pages.hit_records,
        audit.pages.days.len(),
        audit_took.as_secs_f64(),
        rss_before as f64 / 1024.0,
        vm_kb(pid, "VmHWM") as f64 / 1024.0,
        audit.pages.coverage,
    );
    assert!(
        !audit.findings.iter().any(|f| f.contains("not retried")),
        "no write failed: {:?}",
        audit.findings
    );
    assert!(audit.pages.consistent, "{:?}", audit.pages);
}

/// A `kB` figure of `/proc/<pid>/status`, e.g. `VmHWM`.
fn vm_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// With a window of seconds: a retried hit inside it is a duplicate; once the
/// window has passed its record is gone (the same id counts again), while the
/// counter's total and days stay.
///
/// The hit is dated 10 days back: on a shared cluster every other gateway
/// keeps page hit records for 7 days and audits those days, and would take a
/// count of today without its (expired) records for drift and repair it, under
/// the feet of the tests that check the audit.
async fn page_hit_records_expire_after_the_idempotency_window(backend: Backend) {
    let counter = Counter::start_with(backend, 0, &[("PAGE_HIT_RETENTION", "3s")], &[]).await;
    let gateway = &counter.gateway.url;
    let key = format!("{}/expiring", run_prefix());
    let id = uuid::Uuid::new_v4().to_string();
    let ts = now_ms() - 10 * 86_400_000;
    let day = counter_api::Day::of(counter_api::EpochMillis::new(ts.into()).unwrap());
    let hit = page_hit(&id, &key, ts);
    let first = post_page_hits(gateway, vec![hit.clone()]).await;
    assert_eq!((first[0].total, first[0].duplicate), (1, false));
    let again = post_page_hits(gateway, vec![hit.clone()]).await;
    assert_eq!(
        (again[0].total, again[0].duplicate),
        (1, true),
        "a retry inside the window counts once"
    );
    // Past the window (and an embedded store's sweep after it), the record is
    // gone: the same id is a new hit.
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if started.elapsed() < std::time::Duration::from_secs(3) {
            continue;
        }
        let late = post_page_hits(gateway, vec![hit.clone()]).await;
        if !late[0].duplicate {
            assert_eq!(late[0].total, 2);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the hit record outlived its window by far"
        );
    }
    let stats: PageStats = get_json(&format!("{gateway}/v1/pages/{key}?days=11")).await;
    let hits = stats
        .days
        .iter()
        .find(|d| d.day == day)
        .map_or(0, |d| d.hits);
    assert_eq!((stats.total, hits), (2, 2), "totals and days stay");
}

/// A write no retry can mend (a counter's record grown past Aerospike's 1 MiB)
/// is answered to the hit, and also reaches `/readyz`, the audit's findings and
/// `/metrics`: not only a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn a_write_that_fails_for_good_reaches_readyz_the_audit_and_metrics() {
    use ::aerospike::{Bin, Client, ClientPolicy, Key, Value, WritePolicy};

    let counter = Counter::start(Backend::Aerospike, 0).await;
    let gateway = &counter.gateway.url;
    let key = format!("{}/full", run_prefix());
    // The counter's record, filled to within a few bytes of the largest record
    // the namespace takes: the next hit's `total` and `days` do not fit.
    let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
    let client = Client::new(&ClientPolicy::default(), &hosts)
        .await
        .expect("connecting to Aerospike");
    let record = Key::new("test", "pages", Value::from(key.clone())).unwrap();
    let policy = WritePolicy {
        send_key: true,
        ..WritePolicy::default()
    };
    let (mut fits, mut too_big) = (0_usize, 1 << 20);
    while too_big - fits > 1 {
        let size = (fits + too_big) / 2;
        let filler = Bin::new("filler", Value::Blob(vec![7; size]));
        match client.put(&policy, &record, &[filler]).await {
            Ok(()) => fits = size,
            Err(_) => too_big = size,
        }
    }
    let filler = Bin::new("filler", Value::Blob(vec![7; fits]));
    client.put(&policy, &record, &[filler]).await.unwrap();

    let hit = page_hit(&uuid::Uuid::new_v4().to_string(), &key, now_ms());
    let response = http_client()
        .post(format!("{gateway}/v1/page-hits"))
        .json(&hit)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    client
        .delete(&WritePolicy::default(), &record)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");

    let (status, body) = get_text(&format!("{gateway}/readyz")).await;
    assert!(!status.is_success(), "/readyz answered {status}");
    assert!(
        body.contains("set pages") && body.contains("too big"),
        "/readyz names the failure: {body}"
    );
    let audit = counter.gateway.audit().await;
    assert!(
        audit
            .findings
            .iter()
            .any(|f| f.contains("set pages") && f.contains("too big")),
        "the audit lists it: {:?}",
        audit.findings
    );
    let (_, metrics) = get_text(&format!("{gateway}/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"gateway_store_write_faults_total{set="pages",failed="true"} 1"#),
        "/metrics counts it:\n{metrics}"
    );
    // The hit was answered with the error and its batch left to the sweeper:
    // once the record is mended (here: deleted), the hit is counted once, and
    // its retry says so (503 until then).
    let started = std::time::Instant::now();
    let retried = loop {
        let response = http_client()
            .post(format!("{gateway}/v1/page-hits"))
            .json(&hit)
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            break response.json::<PageRecorded>().await.unwrap();
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the left batch was never finished: {}",
            response.text().await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(retried.total, 1, "{retried:?}");
    let stats: PageStats = get_json(&format!("{gateway}/v1/pages/{key}?days=1")).await;
    assert_eq!((stats.total, stats.today.hits), (1, 1), "counted once");
}

/// `GET /v1/audit` covers the named counters: after page hits, its pages part
/// counts them (counters, page hit records and day totals alike) and agrees.
/// On Aerospike, a `pages` record edited by hand (5 more in `total` and in
/// today's `days` entry) shows as drift naming the key and the day, and, with
/// no hits flowing, the gateway repairs it by itself (within a minute: the
/// audit that found it hands the drift to the repair, which recounts that
/// counter's records of the day): the audit agrees again and the counter is
/// back to its hit records. The same under load:
/// `a_counter_edited_by_hand_is_repaired_while_hits_keep_flowing`.
async fn the_audit_covers_named_counters_and_a_counter_edited_by_hand_is_repaired(
    backend: Backend,
) {
    const HITS: u64 = 10;
    const OTHER_HITS: u64 = 3;
    const EDIT: i64 = 5;
    let counter = Counter::start(backend, 0).await;
    let gateway = &counter.gateway.url;
    // On a shared cluster, what earlier suites left half done is finished
    // first, so the audits below are this test's.
    let before = counter.gateway.settled_audit().await;
    let prefix = run_prefix();
    let key = format!("{prefix}/edited");
    let other = format!("{prefix}/other");
    let ts = now_ms();
    let today = counter_api::Day::of(counter_api::EpochMillis::new(ts.into()).unwrap());
    let hits: Vec<Value> = (0..HITS)
        .map(|_| page_hit(&uuid::Uuid::now_v7().to_string(), &key, ts))
        .chain((0..OTHER_HITS).map(|_| page_hit(&uuid::Uuid::now_v7().to_string(), &other, ts)))
        .collect();
    let answers = post_page_hits(gateway, hits).await;
    assert!(answers.iter().all(|a| !a.duplicate));

    let audit = counter.gateway.audit().await;
    let pages = &audit.pages;
    assert!(audit.consistent && pages.consistent, "{audit:?}");
    assert!(pages.drift.is_empty(), "{pages:?}");
    assert_eq!(pages.totals_off_days, 0, "{pages:?}");
    assert!(pages.days.contains(&today), "today is audited: {pages:?}");
    let posted = HITS + OTHER_HITS;
    if backend == Backend::Embedded {
        // A store of this test's own: the audit covers exactly these hits.
        assert_eq!(pages.days, vec![today], "{pages:?}");
        assert_eq!(
            (
                pages.counters,
                pages.counted,
                pages.hit_records,
                pages.day_totals
            ),
            (2, posted, posted, posted),
            "{pages:?}"
        );
        return;
    }
    // A shared cluster: these hits come on top of what the audit saw before
    // (nothing else writes while this test has its turn).
    if before.pages.days == pages.days {
        assert_eq!(
            (
                pages.counted - before.pages.counted,
                pages.hit_records - before.pages.hit_records,
                pages.day_totals - before.pages.day_totals,
            ),
            (posted, posted, posted),
            "before: {:?}, after: {pages:?}",
            before.pages
        );
    }
    assert_eq!(
        (pages.counted, pages.day_totals),
        (pages.hit_records, pages.hit_records),
        "{pages:?}"
    );

    edit_page_counter(&key, today, EDIT).await;
    let stats: PageStats = get_json(&format!("{gateway}/v1/pages/{key}?days=1")).await;
    assert_eq!(
        (stats.total, stats.today.hits),
        (HITS + EDIT as u64, HITS + EDIT as u64),
        "the edit is in the counter"
    );
    let audit = counter.gateway.audit().await;
    assert!(
        !audit.consistent && !audit.pages.consistent,
        "the audit sees the edit: {audit:?}"
    );
    let drift = audit
        .pages
        .drift
        .iter()
        .find(|d| d.key.as_ref().is_some_and(|k| k.as_str() == key))
        .unwrap_or_else(|| panic!("no drift entry names {key}: {:?}", audit.pages));
    assert_eq!(
        (drift.day, drift.counted, drift.hit_records),
        (today, HITS + EDIT as u64, HITS),
        "{drift:?}"
    );
    assert!(
        audit
            .pages
            .drift
            .iter()
            .all(|d| d.key.as_ref().is_none_or(|k| k.as_str() != other)),
        "the counter nobody edited is not drift: {:?}",
        audit.pages
    );

    // With no hits flowing, the gateway repairs it by itself.
    let edited = std::time::Instant::now();
    let audit = loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let audit = counter.gateway.audit().await;
        if audit.consistent && audit.pages.consistent {
            break audit;
        }
        assert!(
            edited.elapsed() < std::time::Duration::from_secs(60),
            "the edited counter was not repaired within 60 s: {audit:?}"
        );
    };
    eprintln!(
        "a pages record edited by hand (+{EDIT}): repaired, audit consistent {:.1?} after the edit; findings {:?}",
        edited.elapsed(),
        audit.findings
    );
    for (key, hits) in [(&key, HITS), (&other, OTHER_HITS)] {
        let stats: PageStats = get_json(&format!("{gateway}/v1/pages/{key}?days=1")).await;
        assert_eq!(
            (stats.total, stats.today.hits),
            (hits, hits),
            "{key}: back to its hit records"
        );
    }
}

/// On Aerospike: a counter edited by hand (5 more in `total` and in its
/// `days` entry of the load's day) is repaired while a steady load of page hits (at least 200 a
/// second, through the gateway's HTTP API, one hit a request) flows on it and
/// on 100 other counters: within a minute the counter is back to its
/// acknowledged hits with the load still running; once the load stops every
/// counter equals its distinct acknowledged hits and the audit agrees.
/// Prints the time to repair and the rate achieved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn a_counter_edited_by_hand_is_repaired_while_hits_keep_flowing() {
    const KEYS: usize = 101;
    const RATE: f64 = 250.0;
    const EDIT: i64 = 5;
    let counter = Counter::start(Backend::Aerospike, 0).await;
    let gateway = counter.gateway.url.clone();
    counter.gateway.settled_audit().await;
    let prefix = run_prefix();
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("{prefix}/k{i:03}")).collect());
    let edited = keys[0].clone();
    // Five days back: inside the week the audit covers, and out of today's
    // top list, which the other tests on a shared node check for their own
    // counters (these get far more hits).
    const BACK_MS: u64 = 5 * 86_400_000;
    let day =
        counter_api::Day::of(counter_api::EpochMillis::new((now_ms() - BACK_MS).into()).unwrap());

    // One task a counter, each sending its next hit once the last is
    // acknowledged (a failed one again with the same id until it is), so
    // at most one hit a counter is in flight; together RATE a second.
    let acked: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = http_client();
    let load_started = std::time::Instant::now();
    let tasks: Vec<_> = (0..KEYS)
        .map(|i| {
            let (keys, acked, stop, client) =
                (keys.clone(), acked.clone(), stop.clone(), client.clone());
            let url = format!("{gateway}/v1/page-hits/batch");
            tokio::spawn(async move {
                let period = std::time::Duration::from_secs_f64(KEYS as f64 / RATE);
                // Spread the counters' ticks over one period.
                tokio::time::sleep(period.mul_f64(i as f64 / KEYS as f64)).await;
                let mut tick = tokio::time::interval(period);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let hit = page_hit(
                        &uuid::Uuid::now_v7().to_string(),
                        &keys[i],
                        now_ms() - BACK_MS,
                    );
                    loop {
                        let answer = client
                            .post(&url)
                            .json(&serde_json::json!({ "hits": [hit] }))
                            .send()
                            .await;
                        let recorded = match answer {
                            Ok(response) if response.status() == StatusCode::OK => matches!(
                                response
                                    .json::<BatchOutcomes<PageRecorded>>()
                                    .await
                                    .map(|o| o.outcomes.into_iter().next()),
                                Ok(Some(Outcome::Recorded(_)))
                            ),
                            _ => false,
                        };
                        if recorded {
                            acked[i].fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    // Until every counter has its record.
    while acked.iter().any(|n| n.load(Ordering::Relaxed) == 0) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    edit_page_counter(&edited, day, EDIT).await;
    let edit_at = std::time::Instant::now();
    let mut last_audit = std::time::Instant::now() - std::time::Duration::from_secs(10);
    let repaired_after = loop {
        // Audits ask for the repair, as an operator's or a probe's would.
        if last_audit.elapsed() >= std::time::Duration::from_secs(2) {
            counter.gateway.audit().await;
            last_audit = std::time::Instant::now();
        }
        let before = acked[0].load(Ordering::Relaxed) as u64;
        let total = counter.gateway.page_stats(&edited, 1).await.total;
        let after = acked[0].load(Ordering::Relaxed) as u64;
        // Unrepaired, the counter holds at least its hits acknowledged
        // before the read plus the edit; repaired, at most those
        // acknowledged after it plus the one in flight.
        if after - before < EDIT as u64 - 1 && total <= after + 1 {
            break edit_at.elapsed();
        }
        assert!(
            edit_at.elapsed() < std::time::Duration::from_secs(60),
            "{edited} was not repaired within 60 s under load: total {total}, {after} hits acknowledged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // The load goes on a little: a second repair must not take it off again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let load_took = load_started.elapsed();
    let sent: usize = acked.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    let audit = counter.gateway.settled_audit().await;
    println!(
        "a counter edited by hand (+{EDIT}) repaired {repaired_after:.1?} after the edit, under \
         {:.0} acknowledged hits/s on {KEYS} counters ({sent} hits in {load_took:.1?}); \
         audit coverage {:?}",
        sent as f64 / load_took.as_secs_f64(),
        audit.pages.coverage
    );
    assert!(
        sent as f64 / load_took.as_secs_f64() >= 200.0,
        "the load reached {:.0} hits/s",
        sent as f64 / load_took.as_secs_f64()
    );
    for (key, acked) in keys.iter().zip(acked.iter()) {
        let stats = counter.gateway.page_stats(key, 7).await;
        let on_day = stats
            .days
            .iter()
            .find(|d| d.day == day)
            .map_or(0, |d| d.hits);
        let acked = acked.load(Ordering::Relaxed) as u64;
        assert_eq!(
            (stats.total, on_day),
            (acked, acked),
            "{key}: its distinct acknowledged hits"
        );
    }
    assert!(audit.pages.consistent, "{:?}", audit.pages);
}

/// Adds `by` to a counter's `total` and to its `days` entry of `day`, straight
/// in its `pages` record, as an operator's mistake would.
async fn edit_page_counter(key: &str, day: counter_api::Day, by: i64) {
    use ::aerospike::operations::maps::{self, MapOrder};
    use ::aerospike::{Bin, Key, MapPolicy, MapWriteFlags, Value, WritePolicy, operations};

    let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
    let client = e2e::aerospike_client(&hosts).await;
    let record = Key::new(e2e::NAMESPACE, "pages", Value::from(key.to_owned())).unwrap();
    let key_ordered = MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);
    client
        .operate(
            &WritePolicy::default(),
            &record,
            &[
                operations::add(&Bin::new("total", Value::from(by))),
                maps::increment_value(
                    &key_ordered,
                    "days",
                    Value::from(day.to_string()),
                    Value::from(by),
                ),
            ],
        )
        .await
        .expect("editing the pages record");
    client.close().await.ok();
}

/// Gateways that keep page hit records for different times (a rolling change
/// of `PAGE_HIT_RETENTION`): once the records of the short-lived one expire,
/// the others must not take its counts for drift and "repair" them away. The
/// day's `keep` (the shortest retention that counted it) takes the day out of
/// every gateway's audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn a_gateway_with_a_shorter_retention_does_not_make_the_others_repair_its_days() {
    let short =
        Counter::start_with(Backend::Aerospike, 0, &[("PAGE_HIT_RETENTION", "3s")], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let long = e2e::Gateway::start(Backend::Aerospike, dir.path(), dir.path()).await;
    let key = format!("{}/short-lived", run_prefix());
    let id = uuid::Uuid::new_v4().to_string();
    // Three days back: inside the 7 days the other gateways audit, and a day
    // no other test writes to.
    let ts = now_ms() - 3 * 86_400_000;
    let day = counter_api::Day::of(counter_api::EpochMillis::new(ts.into()).unwrap());
    let first = post_page_hits(&short.gateway.url, vec![page_hit(&id, &key, ts)]).await;
    assert_eq!((first[0].total, first[0].duplicate), (1, false));

    let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
    let started = std::time::Instant::now();
    while e2e::missing_records(&hosts, "page_hits", std::slice::from_ref(&id))
        .await
        .is_empty()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the page hit record did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // The long-lived gateway audits (which would ask for a repair of any
    // drift it found), then has time for a few repair rounds.
    let audit = long.audit().await;
    assert!(
        !audit.pages.days.contains(&day),
        "{day} is audited although its records may have expired: {:?}",
        audit.pages
    );
    assert!(
        !audit
            .pages
            .drift
            .iter()
            .any(|d| d.key.as_ref().is_some_and(|k| k.as_str() == key)),
        "{:?}",
        audit.pages.drift
    );
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let stats = long.page_stats(&key, 4).await;
    let on_day = stats
        .days
        .iter()
        .find(|d| d.day == day)
        .map_or(0, |d| d.hits);
    assert_eq!((stats.total, on_day), (1, 1), "the count stays");
}

/// What the unique visitors of counter-days take in the store: records and
/// their bytes, summed over the visitor sets or tables.
#[derive(Debug, Clone, Copy, Default)]
struct VisitorStorage {
    records: u64,
    bytes: u64,
    /// On the embedded store, of `bytes`, the keys and values themselves.
    stored: u64,
}

impl VisitorStorage {
    /// Bytes per record of what was added since `before`.
    fn per_record_since(self, before: VisitorStorage) -> (f64, f64) {
        let records = (self.records - before.records).max(1) as f64;
        (
            (self.bytes - before.bytes) as f64 / records,
            (self.stored - before.stored) as f64 / records,
        )
    }
}

/// On Aerospike, `sets/test/page_visitors` of every seed node, as `asinfo`
/// shows it (`objects`, `data_used_bytes`); on the embedded store, the pages
/// of the file's visitor tables (all but the secrets) and the rows of
/// `page_visitors`, read with the gateway stopped (it holds the file's lock)
/// and started again.
async fn visitor_storage(counter: &mut Counter) -> VisitorStorage {
    match counter.setup.backend {
        Backend::Aerospike => {
            let hosts = Backend::aerospike_hosts().expect("AEROSPIKE_HOSTS");
            let mut storage = VisitorStorage::default();
            for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let address = std::net::ToSocketAddrs::to_socket_addrs(host)
                    .expect("a host:port")
                    .next()
                    .expect("an address");
                let answer = e2e::info(&address, "sets/test/page_visitors").expect("asinfo sets");
                let field = |name: &str| -> u64 {
                    answer
                        .split([':', ';'])
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                storage.records += field("objects");
                storage.bytes += field("data_used_bytes");
                storage.stored = storage.bytes;
            }
            storage
        }
        Backend::Embedded => {
            use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
            counter.gateway.stop().await;
            let storage = {
                let path = counter.dir.path().join("data/counter.redb");
                let db = redb::Database::open(&path).expect("opening the store's file");
                let txn = db.begin_read().expect("a read transaction");
                let mut storage = VisitorStorage::default();
                for table in txn.list_tables().expect("the tables") {
                    let name = table.name().to_owned();
                    if !name.contains("visitor") || name.contains("salt") {
                        continue;
                    }
                    let table = txn.open_untyped_table(table).expect("a visitor table");
                    let stats = table.stats().expect("table stats");
                    storage.bytes += (stats.leaf_pages() + stats.branch_pages()) * 4096;
                    storage.stored += stats.stored_bytes();
                    if name == "page_visitors" {
                        storage.records = table.len().expect("rows");
                    }
                }
                storage
            };
            counter.gateway.restart().await;
            storage
        }
    }
}

/// Storage that follows the visitors: 100,000 counters with 3 visitors each
/// today, 50 with 10, one with 1,000 and one with 10,000 (1,000 of them
/// twice), sent to the gateway as a badge service's load would. Prints the
/// bytes per counter-day each took (Aerospike: `asinfo` `sets/test`,
/// `data_used_bytes / objects`, one node; embedded: the visitor tables' pages
/// per row) and the estimate at 10,000; below the switch to a HyperLogLog the
/// counts are exact (1,365 on Aerospike, 128 on the embedded store). `VISITOR_SCALE_COUNTERS` runs it with another number of
/// 3-visitor counters.
async fn unique_visitors_cost_storage_in_proportion_until_a_hyperloglog_is_smaller(
    backend: Backend,
) {
    let small: usize = std::env::var("VISITOR_SCALE_COUNTERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    // A shared 2-core machine may keep a batch waiting past the default 2.5 s.
    let mut counter = Counter::start_with(backend, 0, &[("STORE_TIMEOUT_MS", "15000")], &[]).await;
    let prefix = run_prefix();
    let ts = now_ms();
    let hit = |key: &str, visitor: u32| {
        let mut hit = page_hit(&uuid::Uuid::new_v4().to_string(), key, ts);
        hit["visitor"] = serde_json::json!({
            "addr": std::net::Ipv4Addr::from(0x0a00_0000 + visitor).to_string(),
            "user_agent": "e2e-storage/1.0",
        });
        hit
    };
    // Each group's counters get their visitors one round after the other, so
    // a counter-day grows across batches, as on a busy day.
    let group = |name: &str, counters: usize, visitors: u32| -> (Vec<String>, Vec<Value>) {
        let keys: Vec<String> = (0..counters)
            .map(|i| format!("{prefix}/{name}{i:06}"))
            .collect();
        let hits = (0..visitors)
            .flat_map(|v| keys.iter().map(move |key| (key.clone(), v)))
            .map(|(key, v)| hit(&key, v))
            .collect();
        (keys, hits)
    };
    let mut figures = Vec::new();
    let mut measure = async |counter: &mut Counter, what: String, hits: Vec<Value>| {
        let before = visitor_storage(counter).await;
        let started = std::time::Instant::now();
        post_page_hits(&counter.gateway.url, hits).await;
        let took = started.elapsed();
        let after = visitor_storage(counter).await;
        let (per_record, stored) = after.per_record_since(before);
        println!(
            "{backend:?}: {what}: {} more records, {per_record:.0} B per counter-day \
             ({stored:.0} B of keys and values; hits sent in {:.1} s)",
            after.records - before.records,
            took.as_secs_f64()
        );
        figures.push((what, per_record));
        per_record
    };

    let (keys3, hits) = group("v3-", small, 3);
    let three = measure(
        &mut counter,
        format!("{small} counters with 3 visitors"),
        hits,
    )
    .await;
    // Few enough that today's top 100 of a shared cluster keeps room for the
    // other tests' counters of 10 hits.
    let (keys10, hits) = group("v10-", 50, 10);
    let ten = measure(&mut counter, "50 counters with 10 visitors".into(), hits).await;
    let (exact, hits) = group("v1000-", 1, 1_000);
    measure(&mut counter, "1 counter with 1,000 visitors".into(), hits).await;
    let (many, mut hits) = group("v10000-", 1, 10_000);
    hits.extend((0..1_000).map(|v| hit(&many[0], v)));
    measure(
        &mut counter,
        "1 counter with 10,000 visitors (1,000 of them twice)".into(),
        hits,
    )
    .await;

    let gateway = &counter.gateway;
    let today = gateway.page_stats(&many[0], 1).await.today;
    assert_eq!(today.hits, 11_000);
    let error = (today.visitors as f64 - 10_000.0) / 10_000.0;
    println!(
        "{backend:?}: 10,000 visitors (1,000 of them twice) estimated as {} ({:+.2}%)",
        today.visitors,
        error * 100.0
    );
    assert!(error.abs() <= 0.02, "off by {:+.2}%", error * 100.0);
    // Aerospike keeps up to 1,365 visitors exact, the embedded store's
    // estimator 128.
    let thousand = gateway.page_stats(&exact[0], 1).await.today;
    println!(
        "{backend:?}: 1,000 visitors counted as {}",
        thousand.visitors
    );
    for (keys, visitors) in [(&keys3, 3), (&keys10, 10)] {
        for key in keys.iter().step_by((keys.len() / 10).max(1)) {
            let today = gateway.page_stats(key, 1).await.today;
            assert_eq!(
                (today.hits, today.visitors),
                (visitors, visitors),
                "{key}: exact below the switch"
            );
        }
    }
    if backend == Backend::Aerospike {
        assert_eq!(thousand.visitors, 1_000, "exact below the switch");
        assert!(
            three <= 200.0 && ten <= 200.0,
            "at most 200 B per counter-day with up to 10 visitors: {figures:?}"
        );
    }
}

/// With `VISITOR_RETENTION=3s` a counter's visitors of today read as counted,
/// then, once the window has passed (a record TTL on Aerospike, the sweep on
/// the embedded store), as 0, while its total and today's hits stay.
async fn per_day_visitors_go_after_their_retention_while_totals_and_days_stay(backend: Backend) {
    let counter = Counter::start_with(backend, 0, &[("VISITOR_RETENTION", "3s")], &[]).await;
    let gateway = &counter.gateway;
    let key = format!("{}/forgotten-visitors", run_prefix());
    let ts = now_ms();
    let hits = (0..5)
        .map(|v| {
            let mut hit = page_hit(&uuid::Uuid::new_v4().to_string(), &key, ts);
            hit["visitor"] = serde_json::json!({
                "addr": format!("192.0.2.{v}"),
                "user_agent": "e2e-retention/1.0",
            });
            hit
        })
        .collect();
    post_page_hits(&gateway.url, hits).await;
    let started = std::time::Instant::now();
    let today = gateway.page_stats(&key, 1).await.today;
    assert_eq!((today.hits, today.visitors), (5, 5), "inside the window");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "read inside the window"
    );
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let stats = gateway.page_stats(&key, 1).await;
        if stats.today.visitors == 0 {
            assert_eq!(
                (stats.total, stats.today.hits),
                (5, 5),
                "totals and days stay"
            );
            println!(
                "{backend:?}: visitors gone {:.1} s after they were counted",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the visitors outlived their window by far"
        );
    }
}
