//! Badges that take what people paste (issue 27), through the real component on
//! both runtimes and the real gateway on both stores: shields.io's parameter
//! names and colors, `cacheSeconds`, and the badge URLs of other counters.

use counter_api::PageImported;
use e2e::{Counter, Setup, badge_count, http_client, on_every_runtime_and_backend};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

include!("../../src/shields_io_colors.rs");

on_every_runtime_and_backend!(
    colors_render_what_shields_io_renders,
    shields_io_names_and_the_older_ones_draw_the_same_badge,
    cache_seconds_sets_max_age_within_shields_io_floor_and_a_year,
    other_counters_urls_answer_with_their_counts,
    other_counters_urls_refuse_what_they_cannot_take,
    an_import_counts_once_under_retries_and_needs_the_stats_credentials,
    imports_are_off_without_stats_credentials,
);

/// Keys of this test run only: the Aerospike cluster is shared and keeps data.
fn run_prefix() -> String {
    format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(client: &reqwest::Client, url: &str) -> Answer {
    let response = client.get(url).send().await.expect("GET");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a text body"),
    }
}

/// A badge that must be served: its SVG.
async fn svg(client: &reqwest::Client, url: &str) -> String {
    let answer = get(client, url).await;
    assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.body);
    assert_eq!(
        answer.headers["content-type"], "image/svg+xml; charset=utf-8",
        "{url}"
    );
    answer.body
}

/// The fills of a flat badge's label and message rectangles.
fn fills(svg: &str) -> (String, String) {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    let mut fills = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| n.parent().is_none_or(|p| !p.has_tag_name("clipPath")))
        .filter_map(|n| n.attribute("fill").map(str::to_owned));
    let label = fills.next().expect("a label rectangle");
    let message = fills.next().expect("a message rectangle");
    (label, message)
}

/// The badge's title (its accessible name), e.g. `hits: 3 / 1,234`.
fn title(svg: &str) -> String {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    doc.descendants()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .expect("a badge has a title")
        .to_owned()
}

/// The texts a badge draws, each once (shields draws a shadow copy of each).
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    let mut texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().to_owned())
        .collect();
    texts.dedup();
    texts
}

/// A color written into a URL's query as a person would: `#` as `%23`, a space
/// as `%20`, and `%` left as typed.
fn in_query(color: &str) -> String {
    color.replace('#', "%23").replace(' ', "%20")
}

async fn colors_render_what_shields_io_renders(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/colors", run_prefix());
    let plain = svg(&client, &format!("{web}/badge/{key}.svg?count=false")).await;
    assert_eq!(fills(&plain).1, "#007ec6", "shields' blue by default");
    for &(color, _shields_io, ours) in SHIELDS_IO_COLORS {
        for parameter in ["color", "labelColor"] {
            let url = format!(
                "{web}/badge/{key}.svg?count=false&{parameter}={}",
                in_query(color)
            );
            let answer = get(&client, &url).await;
            match ours {
                Some(fill) => {
                    assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.body);
                    let (label, message) = fills(&answer.body);
                    let drawn = if parameter == "color" { message } else { label };
                    assert_eq!(drawn, fill, "{url}");
                }
                None => {
                    assert_eq!(
                        answer.status,
                        StatusCode::BAD_REQUEST,
                        "{url}: {}",
                        answer.body
                    );
                    let says = format!("{parameter}=");
                    assert!(
                        answer.body.starts_with("Bad badge option: ")
                            && answer.body.contains(&says)
                            && answer.body.contains("is not a color")
                            && answer.body.contains("rgb(0,128,255)"),
                        "{url}: {}",
                        answer.body
                    );
                }
            }
        }
    }
    // The issue's own URLs: a white logo on a for-the-badge badge, and colors
    // pasted with a raw %.
    let issue = [
        "logo=github&logo_color=white&style=for-the-badge",
        "logoColor=white&labelColor=555",
        "color=rgb(0,128,255)",
        "color=hsl(120,100%,25%)",
        "color=lightgrey",
    ];
    for query in issue {
        svg(
            &client,
            &format!("{web}/badge/{key}.svg?count=false&{query}"),
        )
        .await;
    }
    let hsl = svg(
        &client,
        &format!("{web}/badge/{key}.svg?count=false&color=hsl(120,100%,25%)"),
    )
    .await;
    assert_eq!(fills(&hsl).1, "hsl(120,100%,25%)");
    assert_eq!(
        counter.gateway.page_stats(&key, 1).await.total,
        0,
        "count=false and refusals count nothing"
    );
}

async fn shields_io_names_and_the_older_ones_draw_the_same_badge(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/aliases", run_prefix());
    let plain = svg(&client, &format!("{web}/badge/{key}.svg?count=false")).await;
    for (camel, snake) in [
        ("labelColor=white", "label_color=white"),
        (
            "logo=github&logoColor=orange",
            "logo=github&logo_color=orange",
        ),
        (
            "logo=github&logoSize=auto&logoColor=red",
            "logo=github&logo_size=auto&logo_color=red",
        ),
    ] {
        let shields_io = svg(
            &client,
            &format!("{web}/badge/{key}.svg?count=false&{camel}"),
        )
        .await;
        let older = svg(
            &client,
            &format!("{web}/badge/{key}.svg?count=false&{snake}"),
        )
        .await;
        assert_eq!(shields_io, older, "{camel} and {snake}");
        assert_ne!(shields_io, plain, "{camel} changes the badge");
    }
    let white = svg(
        &client,
        &format!("{web}/badge/{key}.svg?count=false&labelColor=white"),
    )
    .await;
    assert_eq!(fills(&white).0, "white");
    for (query, says) in [
        (
            "labelColor=red&label_color=blue",
            "labelColor and label_color are two spellings of the same option",
        ),
        ("logoColor=red&logoColor=blue", "given more than once"),
        ("logoSize=big", "the only size shields.io takes is auto"),
        (
            "labelcolour=red",
            "the parameters allowed here are label, color, labelColor (or label_color), style, \
             logo, logoColor (or logo_color), logoSize (or logo_size), link, cacheSeconds (or \
             cache_seconds), count",
        ),
    ] {
        let answer = get(&client, &format!("{web}/badge/{key}.svg?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(answer.body.contains(says), "{query}: {}", answer.body);
    }
    assert_eq!(counter.gateway.page_stats(&key, 1).await.total, 0);
}

async fn cache_seconds_sets_max_age_within_shields_io_floor_and_a_year(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/cached", run_prefix());
    let uncached = get(&client, &format!("{web}/badge/{key}.svg")).await;
    assert_eq!(uncached.status, StatusCode::OK);
    assert_eq!(
        uncached.headers["cache-control"],
        "max-age=0, no-cache, no-store, must-revalidate, private",
        "the default stays uncacheable"
    );
    assert_eq!(uncached.headers["pragma"], "no-cache");
    assert_eq!(uncached.headers["expires"], "0");
    for (query, max_age) in [
        ("cacheSeconds=3600", 3600),
        ("cache_seconds=86400", 86400),
        ("cacheSeconds=0", 120),
        ("cacheSeconds=60", 120),
        ("cacheSeconds=120", 120),
        ("cacheSeconds=99999999999", 31_536_000),
    ] {
        let answer = get(&client, &format!("{web}/badge/{key}.svg?{query}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
        assert_eq!(
            answer.headers["cache-control"],
            format!("max-age={max_age}, s-maxage={max_age}").as_str(),
            "{query}"
        );
        assert!(answer.headers.get("pragma").is_none(), "{query}");
        assert!(answer.headers.get("expires").is_none(), "{query}");
        assert!(answer.headers.contains_key("content-security-policy"));
    }
    for bad in ["soon", "-1", "1.5", ""] {
        let answer = get(
            &client,
            &format!("{web}/badge/{key}.svg?cacheSeconds={bad}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(
            answer
                .body
                .contains("is not a number of seconds: give a whole number"),
            "{bad:?}: {}",
            answer.body
        );
    }
    assert_eq!(
        counter.gateway.page_stats(&key, 1).await.total,
        7,
        "each served badge counted once, the refused ones not at all"
    );
}

async fn other_counters_urls_answer_with_their_counts(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let prefix = run_prefix();
    let repo = format!("github.com/{prefix}/repo");

    // HITS: the page in the path, its defaults (hits, #4c1 on #555), the count
    // in full.
    for n in 1..=3 {
        let badge = svg(&client, &format!("{web}/{repo}.svg")).await;
        assert_eq!(title(&badge), format!("hits: {n}"));
        assert_eq!(fills(&badge), ("#555".to_owned(), "#4c1".to_owned()));
    }
    let badge = svg(
        &client,
        &format!("{web}/{repo}.svg?view=today-total&label=views&color=%2379C83D&labelColor=white&extraCount=1000"),
    )
    .await;
    assert_eq!(texts(&badge), ["views", "4 / 1,004"]);
    assert_eq!(fills(&badge), ("white".to_owned(), "#79c83d".to_owned()));
    // The same counter as /badge/<key>.svg.
    let ours = svg(&client, &format!("{web}/badge/{repo}.svg?count=false")).await;
    assert_eq!(badge_count(&ours), 4);

    // hits.seeyoufarm.com: the page's address in url=, `today / total`.
    let url = format!("https%3A%2F%2Fgithub.com%2F{prefix}%2Frepo");
    let generated = format!(
        "url={url}&count_bg=%2379C83D&title_bg=%23555555&icon=&icon_color=%23E7E7E7&title=hits&edge_flat=false"
    );
    let badge = svg(
        &client,
        &format!("{web}/api/count/incr/badge.svg?{generated}"),
    )
    .await;
    assert_eq!(texts(&badge), ["hits", "5 / 5"]);
    assert_eq!(fills(&badge), ("#555555".to_owned(), "#79c83d".to_owned()));
    let keep = svg(
        &client,
        &format!("{web}/api/count/keep/badge.svg?url={url}%2F"),
    )
    .await;
    assert_eq!(
        texts(&keep),
        ["hits", "5 / 5"],
        "keep shows without counting"
    );
    let square = svg(
        &client,
        &format!(
            "{web}/api/count/incr/badge.svg?url={url}&edge_flat=true&title=visits&icon=github.svg"
        ),
    )
    .await;
    assert_eq!(texts(&square), ["visits", "6 / 6"]);
    assert!(square.contains("<image "), "the icon is drawn: {square}");
    assert!(!square.contains(r#"rx="3""#), "square corners: {square}");

    // komarev: the profile github.com/<username>, `Profile views`, in full.
    let username = prefix.clone();
    for n in 1..=2 {
        let badge = svg(&client, &format!("{web}/ghpvc/?username={username}")).await;
        assert_eq!(texts(&badge), ["Profile views", n.to_string().as_str()]);
    }
    let badge = svg(
        &client,
        &format!(
            "{web}/ghpvc/?username={username}&label=Views&color=0e75b6&style=flat-square&base=1234"
        ),
    )
    .await;
    assert_eq!(texts(&badge), ["Views", "1,237"]);
    assert_eq!(fills(&badge).1, "#0e75b6");
    let badge = svg(
        &client,
        &format!("{web}/ghpvc/?username={username}&base=1234&abbreviated=true"),
    )
    .await;
    assert_eq!(texts(&badge), ["Profile views", "1.2k"]);
    assert_eq!(title(&badge), "Profile views: 1,238");
    let pixel = svg(
        &client,
        &format!("{web}/ghpvc?username={username}&style=pixel"),
    )
    .await;
    assert!(pixel.contains(r#"width="1" height="1""#), "{pixel}");

    let profile = format!("github.com/{username}");
    assert_eq!(counter.gateway.page_stats(&profile, 1).await.total, 5);
    let stats = counter.gateway.page_stats(&repo, 1).await;
    assert_eq!(
        stats.total, 6,
        "HITS and seeyoufarm URLs count on one counter"
    );
    assert_eq!(stats.today.hits, 6);
    // Served as uncacheable as our own badges.
    let answer = get(&client, &format!("{web}/ghpvc/?username={username}")).await;
    assert_eq!(
        answer.headers["cache-control"],
        "max-age=0, no-cache, no-store, must-revalidate, private"
    );
}

async fn other_counters_urls_refuse_what_they_cannot_take(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let prefix = run_prefix();
    let repo = format!("github.com/{prefix}/refused");
    let url = format!("https%3A%2F%2F{repo}");
    let cases = [
        (
            format!("/{repo}.svg?colour=red"),
            400,
            "the parameters allowed here are view, style, label, color, labelColor, link, logo, logoWidth, extraCount",
        ),
        (
            format!("/{repo}.svg?view=daily"),
            400,
            "total (the default) or today-total",
        ),
        (
            format!("/{repo}.svg?extraCount=-5"),
            400,
            "extraCount=\"-5\" is not a count to add",
        ),
        (format!("/{repo}.svg?logoWidth=500"), 400, "from 0 to 100"),
        (format!("/{repo}.svg?color=nope"), 400, "is not a color"),
        (format!("/{repo}.svg?style=3d"), 400, "is not a badge style"),
        ("/github.com//x.svg".to_owned(), 400, "segment"),
        ("/favicon.svg".to_owned(), 404, "Not found"),
        (
            "/api/count/incr/badge.svg".to_owned(),
            400,
            "url is missing",
        ),
        (
            "/api/count/incr/badge.svg?url=".to_owned(),
            400,
            "url is missing",
        ),
        (
            "/api/count/incr/badge.svg?url=ftp%3A%2F%2Fx.org".to_owned(),
            400,
            "is not a page's address",
        ),
        (
            "/api/count/incr/badge.svg?url=https%3A%2F%2Fx.org%3A8080%2F".to_owned(),
            400,
            "is not one this counter can hold",
        ),
        (
            format!("/api/count/incr/badge.svg?url={url}&edge_flat=maybe"),
            400,
            "true (square corners) or false",
        ),
        (
            format!("/api/count/incr/badge.svg?url={url}&count_bg=%23zz"),
            400,
            "count_bg=\"#zz\" is not a color",
        ),
        (
            format!("/api/count/incr/badge.svg?url={url}&icon=nosuchicon.svg"),
            400,
            "Simple Icons slug",
        ),
        (
            format!("/api/count/incr/badge.svg?url={url}&color=red"),
            400,
            "the parameters allowed here are url, title, title_bg, count_bg, icon, icon_color, edge_flat",
        ),
        ("/ghpvc/".to_owned(), 400, "username is missing"),
        (
            "/ghpvc/?username=a%2Fb".to_owned(),
            400,
            "is not a GitHub username",
        ),
        (
            "/ghpvc/?username=-a".to_owned(),
            400,
            "is not a GitHub username",
        ),
        (
            format!("/ghpvc/?username={prefix}&abbreviated=yes"),
            400,
            "true (1.2k) or false",
        ),
        (
            format!("/ghpvc/?username={prefix}&base=lots"),
            400,
            "base=\"lots\" is not a count to add",
        ),
        (
            format!("/ghpvc/?username={prefix}&style=3d"),
            400,
            "is not a badge style",
        ),
        (
            format!("/ghpvc/?username={prefix}&logo=github"),
            400,
            "the parameters allowed here are username, label, color, style, base, abbreviated",
        ),
    ];
    for (path, status, says) in cases {
        let answer = get(&client, &format!("{web}{path}")).await;
        assert_eq!(answer.status.as_u16(), status, "{path}: {}", answer.body);
        assert!(
            answer.body.contains(says),
            "{path}: {:?} should say {says:?}",
            answer.body
        );
    }
    let post = client
        .post(format!("{web}/{repo}.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    for key in [repo, format!("github.com/{prefix}")] {
        assert_eq!(
            counter.gateway.page_stats(&key, 1).await.total,
            0,
            "{key}: nothing counted"
        );
    }
}

const CREDENTIALS: (&str, &str) = ("admin", "e2e-import:secret");

type Refusal<'a> = (
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    &'a str,
    u16,
    &'a str,
    &'a str,
);

/// `POST /api/pages/<key>/import`: its status and JSON body.
async fn import(
    client: &reqwest::Client,
    web: &str,
    key: &str,
    credentials: Option<(&str, &str)>,
    idempotency_key: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut request = client
        .post(format!("{web}/api/pages/{key}/import"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    if let Some(id) = idempotency_key {
        request = request.header("idempotency-key", id);
    }
    let response = request.send().await.expect("POST import");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, json)
}

async fn an_import_counts_once_under_retries_and_needs_the_stats_credentials(setup: Setup) {
    let credentials = format!("{}:{}", CREDENTIALS.0, CREDENTIALS.1);
    let counter = Counter::start_with(setup, 1, &[], &[("STATS_CREDENTIALS", &credentials)]).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/imported", run_prefix());
    for _ in 0..3 {
        svg(&client, &format!("{web}/badge/{key}.svg")).await;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let body = r#"{"count": 5000}"#;

    // Refused, each with its status and what to do, and nothing imported.
    // (credentials, Idempotency-Key, body, status, error code, what the message says)
    let refusals: [Refusal; 9] = [
        (None, Some(&id), body, 401, "unauthorized", "HTTP Basic"),
        (
            Some((CREDENTIALS.0, "wrong")),
            Some(&id),
            body,
            401,
            "unauthorized",
            "HTTP Basic",
        ),
        (
            Some(("root", CREDENTIALS.1)),
            Some(&id),
            body,
            401,
            "unauthorized",
            "HTTP Basic",
        ),
        (
            Some(CREDENTIALS),
            None,
            body,
            400,
            "missing_idempotency_key",
            "uuidgen",
        ),
        (
            Some(CREDENTIALS),
            Some("not-a-uuid"),
            body,
            400,
            "invalid_idempotency_key",
            "UUID",
        ),
        (
            Some(CREDENTIALS),
            Some(&id),
            r#"{"count": 0}"#,
            400,
            "invalid_import",
            "from 1 to 1000000000000000",
        ),
        (
            Some(CREDENTIALS),
            Some(&id),
            r#"{"count": 1000000000000001}"#,
            400,
            "invalid_import",
            "out of range",
        ),
        (
            Some(CREDENTIALS),
            Some(&id),
            r#"{"count": "5000"}"#,
            400,
            "invalid_import",
            "{\"count\": N}",
        ),
        (
            Some(CREDENTIALS),
            Some(&id),
            r#"{"count": 5000, "base": 1}"#,
            400,
            "invalid_import",
            "unknown field",
        ),
    ];
    for (credentials, idempotency_key, body, status, error, says) in refusals {
        let (got, headers, json) =
            import(&client, web, &key, credentials, idempotency_key, body).await;
        let case = format!("{credentials:?} {idempotency_key:?} {body}");
        assert_eq!(got.as_u16(), status, "{case}: {json}");
        assert_eq!(json["error"], error, "{case}: {json}");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{case}: {message:?} should say {says:?}"
        );
        if status == 401 {
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic realm="),
                "{case}"
            );
        }
    }
    let stats = counter.gateway.page_stats(&key, 1).await;
    assert_eq!((stats.total, stats.base), (3, None), "nothing was imported");

    // The import and 20 retries of it at once: counted once.
    let tries = (0..21).map(|_| {
        let (client, web, key, id) = (client.clone(), web.clone(), key.clone(), id.clone());
        tokio::spawn(async move {
            import(&client, &web, &key, Some(CREDENTIALS), Some(&id), body).await
        })
    });
    let mut created = 0;
    for answer in futures::future::join_all(tries).await {
        let (status, _, json) = answer.expect("an import task");
        let imported: PageImported =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!((imported.base, imported.total), (5000, 5003), "{json}");
        assert_eq!(imported.key.as_str(), key);
        match status {
            StatusCode::CREATED => {
                assert!(!imported.duplicate);
                created += 1;
            }
            StatusCode::OK => assert!(imported.duplicate, "{json}"),
            other => panic!("{other}: {json}"),
        }
    }
    assert_eq!(
        created, 1,
        "exactly one try imported, the others were retries of it"
    );

    // Another import on the same counter: its start is set once.
    let other = uuid::Uuid::new_v4().to_string();
    let (status, _, json) = import(
        &client,
        web,
        &key,
        Some(CREDENTIALS),
        Some(&other),
        r#"{"count": 7}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(json["error"], "already_imported");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("already starts from an imported 5000"),
        "{json}"
    );

    // The next hit follows the base, on every form of badge.
    let badge = svg(&client, &format!("{web}/badge/{key}.svg")).await;
    assert_eq!(badge_count(&badge), 5004);
    let stats = counter.gateway.page_stats(&key, 30).await;
    let base = stats.base.expect("the counter's history keeps its base");
    assert_eq!((stats.total, base.count), (5004, 5000));
    assert_eq!(
        stats.days.iter().map(|d| d.hits).sum::<u64>(),
        stats.total - base.count,
        "the days hold the hits, the base is apart"
    );
    let page = get(&client, &format!("{web}/stats/{key}")).await;
    assert!(
        page.body
            .contains("of which 5,000 imported from another counter"),
        "{}",
        page.body
    );
    // The audit reads the total as base plus days: it agrees.
    let audit = counter.gateway.settled_audit().await;
    assert_eq!(audit.pages.totals_off_days, 0, "{audit:?}");
    assert!(audit.pages.consistent, "{audit:?}");
}

async fn imports_are_off_without_stats_credentials(setup: Setup) {
    let counter = Counter::start(setup, 1).await;
    let web = &counter.webs[0].url;
    let client = http_client();
    let key = format!("{}/not-imported", run_prefix());
    let id = uuid::Uuid::new_v4().to_string();
    for credentials in [None, Some(CREDENTIALS)] {
        let (status, _, json) = import(
            &client,
            web,
            &key,
            credentials,
            Some(&id),
            r#"{"count": 10}"#,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
        assert_eq!(json["error"], "imports_disabled");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("STATS_CREDENTIALS=user:password"),
            "{json}"
        );
    }
    assert_eq!(counter.gateway.page_stats(&key, 1).await.total, 0);
    // GET still reads a counter whose key ends in /import.
    let answer = get(&client, &format!("{web}/api/pages/{key}/import")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
