//! The awesome-counter web tier: a Spin HTTP component.
//!
//! Every `GET /` is one hit of the tutorial's counter, and every badge or
//! `POST /api/pages/<key>` one hit of a named counter. The component names the hit
//! (a fresh [`HitId`], this replica's [`ServerId`] or the counter key, the time,
//! the visitor), hands it to the gateway, and answers with the number the gateway
//! counted it as. Hits that one instance serves at the same moment share one
//! gateway call ([`group_commit`]). The component keeps no state beyond the hits
//! it is sending, so the web tier scales by adding replicas; the gateway owns the
//! data.
//!
//! Routes:
//! - `GET /`: record a hit, answer `Hello World! I have been seen by N.`
//! - `GET /stats`: an HTML page of the totals, the latest hits and the top named
//!   counters (records nothing); `GET /api/stats`: the tutorial's part as JSON.
//! - `GET /badge/<key>.svg`: count a hit on `<key>` and answer an SVG badge.
//! - `POST /api/pages/<key>`: count a hit on `<key>`, answer its number as JSON;
//!   `GET /api/pages/<key>`: read it without counting; `GET /api/pages`: the top
//!   counters and hits per day.
//! - `GET /stats/<key>`: one counter's page: totals, history, unique visitors.
//! - `GET /healthz`: 200 while the component runs and its configuration is valid;
//!   never calls the gateway.
//! - anything else: 404, never counted.

mod badge;
mod chart;
mod config;
mod gateway;
mod group_commit;
mod markup;
mod migration;
mod page_stats_page;
mod query;
mod stats_page;
mod trace_context;
mod visitor;

use std::time::{SystemTime, UNIX_EPOCH};

use counter_api::{
    ApiError, EpochMillis, Hit, HitId, InvalidPage, LatestHits, PageHit, PageKey, Summary,
};
use serde::Serialize;
use serde_json::json;
use spin_sdk::http::{HeaderValue, Method, Request};

use crate::config::Config;
use crate::gateway::{Gateway, GatewayError};
use crate::trace_context::TraceContext;

/// How many of the newest hits the stats views show.
const LATEST_HITS_SHOWN: usize = 20;
/// How many counters the top lists on `/stats` show.
const TOP_SHOWN: usize = 10;
/// The history a counter's page charts, and the most days a read may ask for.
const PAGE_DAYS_SHOWN: u32 = 365;
const MAX_DAYS: u32 = 400;
const MAX_TOP: usize = 100;

/// Every answer is a whole body the component has already made.
type Response = http::Response<String>;

// Exported only from the wasm build: a native build of this crate exists for the
// unit tests, and the export's WIT name is not a valid native symbol.
#[cfg_attr(target_family = "wasm", spin_sdk::http_service)]
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
async fn handle(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let method = &parts.method;

    let Some(route) = Route::from_path(path) else {
        return plain(
            404,
            "Not found. The counter lives at /, its statistics at /stats, badges at /badge/<key>.svg.\n",
        );
    };
    if !route.allows(method) {
        return http::Response::builder()
            .status(405)
            .header("allow", route.allow())
            .header("content-type", "text/plain; charset=utf-8")
            .body(format!(
                "Method not allowed: {path} only answers {}.\n",
                route.allow()
            ))
            .expect("a valid status and headers");
    }
    // A replica whose configuration is broken is not healthy either.
    let config = match instance_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return plain(500, &format!("The counter is misconfigured: {error}\n"));
        }
    };
    let config = &*config;
    // A header sent on several lines is one comma-separated list (RFC 9110): a
    // client's own X-Forwarded-For line must not hide the one a proxy added.
    let header = |name: &str| {
        let values = parts.headers.get_all(name);
        values.iter().next().is_some().then(|| {
            values
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let gateway = Gateway::new(config, TraceContext::from_headers(&parts.headers));
    match route {
        Route::Healthz => plain(200, "ok\n"),
        Route::Counter => count_hit(&gateway, config)
            .await
            .unwrap_or_else(|e| unavailable(&e)),
        Route::StatsPage => stats_page(&gateway, config)
            .await
            .unwrap_or_else(|e| unavailable(&e)),
        Route::StatsJson => stats(&gateway)
            .await
            .map(|(summary, latest)| {
                json_response(
                    200,
                    &json!({
                        "total_hits": summary.total_hits,
                        "servers": summary.servers,
                        "latest_hits": latest.hits,
                    }),
                )
            })
            .unwrap_or_else(|e| unavailable(&e)),
        Route::Badge(Ok(key)) => badge(&gateway, config, key, query, &header).await,
        Route::PageStatsPage(Ok(key)) => page_stats_page(&gateway, &key, query).await,
        Route::PageApi(Ok(key)) if *method == Method::POST => match imported_key(&key) {
            Some(key) => import_page_base(&gateway, config, key, query, &header, body).await,
            None => count_page_hit_api(&gateway, config, key, query, &header).await,
        },
        Route::PageApi(Ok(key)) => read_page_api(&gateway, &key, query).await,
        Route::Badge(Err(error)) => plain(
            400,
            &format!("Bad counter key in the badge URL: {error}.\n"),
        ),
        Route::PageStatsPage(Err(error)) => plain(400, &format!("Bad counter key: {error}.\n")),
        Route::PageApi(Err(error)) => json_error(400, "invalid_key", &error.to_string()),
        Route::PagesApi => pages_api(&gateway, query).await,
        Route::Foreign(form, Ok(key)) => {
            foreign_badge(&gateway, config, form, key, query, &header).await
        }
        Route::Foreign(_, Err(error)) => plain(400, &format!("Bad badge URL: {error}.\n")),
    }
}

/// The configuration, read once per instance: an instance serves many requests
/// (WASIp3), and its environment cannot change while it lives.
fn instance_config() -> Result<std::rc::Rc<Config>, std::rc::Rc<config::ConfigError>> {
    thread_local! {
        static CONFIG: std::cell::OnceCell<Result<std::rc::Rc<Config>, std::rc::Rc<config::ConfigError>>> =
            const { std::cell::OnceCell::new() };
    }
    CONFIG.with(|config| {
        config
            .get_or_init(|| {
                Config::from_env()
                    .map(std::rc::Rc::new)
                    .map_err(std::rc::Rc::new)
            })
            .clone()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Counter,
    StatsPage,
    StatsJson,
    Healthz,
    /// `/badge/<key>.svg`. The key is parsed here, once, for every route that
    /// names a counter; a bad one is answered with what is allowed, not a 404.
    Badge(Result<PageKey, InvalidPage>),
    PageStatsPage(Result<PageKey, InvalidPage>),
    PageApi(Result<PageKey, InvalidPage>),
    PagesApi,
    /// Another counter's badge URL ([`migration`]); HITS' names its page in the
    /// path, the others in the query.
    Foreign(
        migration::Form,
        Result<Option<PageKey>, migration::ForeignError>,
    ),
}

impl Route {
    fn from_path(path: &str) -> Option<Self> {
        let route = match path {
            "/" | "" => Self::Counter,
            "/stats" => Self::StatsPage,
            "/api/stats" => Self::StatsJson,
            "/api/pages" => Self::PagesApi,
            "/healthz" => Self::Healthz,
            "/api/count/incr/badge.svg" => {
                Self::Foreign(migration::Form::SeeYouFarm { count: true }, Ok(None))
            }
            "/api/count/keep/badge.svg" => {
                Self::Foreign(migration::Form::SeeYouFarm { count: false }, Ok(None))
            }
            "/ghpvc/" | "/ghpvc" => Self::Foreign(migration::Form::Komarev, Ok(None)),
            _ => {
                // A prefix with no key at all names nothing: 404, as before.
                let key = |prefix: &str| path.strip_prefix(prefix).filter(|k| !k.is_empty());
                if let Some(rest) = key("/badge/") {
                    Self::Badge(rest.strip_suffix(".svg")?.parse())
                } else if let Some(key) = key("/stats/") {
                    Self::PageStatsPage(key.parse())
                } else if let Some(key) = key("/api/pages/") {
                    Self::PageApi(key.parse())
                } else {
                    let key = migration::hits_key(path)?;
                    Self::Foreign(migration::Form::Hits, key.map(Some))
                }
            }
        };
        Some(route)
    }

    fn allow(&self) -> &'static str {
        match self {
            Self::PageApi(_) => "GET, POST",
            _ => "GET",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        *method == Method::GET || (*method == Method::POST && matches!(self, Self::PageApi(_)))
    }
}

async fn count_hit(gateway: &Gateway<'_>, config: &Config) -> Result<Response, GatewayError> {
    let hit = Hit {
        id: new_hit_id(),
        server: config.server_id.clone(),
        ts: now(),
    };
    let recorded = group_commit::record_hit(gateway, hit).await?;
    let mut response = plain(
        200,
        &format!("Hello World! I have been seen by {}.", recorded.total_hits),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn stats(gateway: &Gateway<'_>) -> Result<(Summary, LatestHits), GatewayError> {
    Ok((
        gateway.summary().await?,
        gateway.latest_hits(LATEST_HITS_SHOWN).await?,
    ))
}

/// `GET /stats`: the tutorial's totals, the newest hits and the top counters.
async fn stats_page(gateway: &Gateway<'_>, config: &Config) -> Result<Response, GatewayError> {
    let (summary, latest) = stats(gateway).await?;
    let pages = gateway.pages_overview(TOP_SHOWN, 30).await?;
    Ok(html(&stats_page::render(
        &summary,
        &latest,
        &config.server_id,
        &pages,
    )))
}

/// `GET /badge/<key>.svg`: counts a hit (unless `count=false`) and draws it.
async fn badge(
    gateway: &Gateway<'_>,
    config: &Config,
    key: PageKey,
    query: &str,
    header: &dyn Fn(&str) -> Option<String>,
) -> Response {
    let options = match query::parse(query)
        .map_err(|e| e.to_string())
        .and_then(|pairs| badge::BadgeOptions::from_query(&pairs).map_err(|e| e.to_string()))
    {
        Ok(options) => options,
        Err(error) => return plain(400, &format!("Bad badge option: {error}\n")),
    };
    let count = if options.count {
        group_commit::record_page_hit(gateway, page_hit(config, key, new_hit_id(), header))
            .await
            .map(|recorded| recorded.total)
    } else {
        gateway.page_stats(&key, 1).await.map(|stats| stats.total)
    };
    match count {
        Ok(count) => svg(badge::render(&options, count), options.cache),
        Err(error) => unavailable(&error),
    }
}

/// A badge URL of another counter ([`migration`]): counts (unless it only
/// shows) and draws it the way that service did.
async fn foreign_badge(
    gateway: &Gateway<'_>,
    config: &Config,
    form: migration::Form,
    key: Option<PageKey>,
    query: &str,
    header: &dyn Fn(&str) -> Option<String>,
) -> Response {
    let badge = match query::parse(query)
        .map_err(migration::ForeignError::from)
        .and_then(|pairs| migration::parse(form, key, &pairs))
    {
        Ok(badge) => badge,
        Err(error) => return plain(400, &format!("Bad badge option: {error}\n")),
    };
    let counts = if badge.options.count {
        let hit = page_hit(config, badge.key.clone(), new_hit_id(), header);
        group_commit::record_page_hit(gateway, hit)
            .await
            .map(|recorded| (recorded.total, recorded.today))
    } else {
        gateway
            .page_stats(&badge.key, 1)
            .await
            .map(|stats| (stats.total, stats.today.hits))
    };
    match counts {
        Ok((total, today)) => svg(migration::render(&badge, total, today), None),
        Err(error) => unavailable(&error),
    }
}

/// A badge's answer: uncacheable unless `cache` allows it.
fn svg(body: String, cache: Option<badge::CacheSeconds>) -> Response {
    let builder = http::Response::builder()
        .status(200)
        .header("content-type", "image/svg+xml; charset=utf-8");
    let builder = match cache {
        // shields.io's header for a badge it lets caches keep.
        Some(cache) => builder.header(
            "cache-control",
            format!("max-age={0}, s-maxage={0}", cache.seconds()),
        ),
        // Image proxies such as GitHub's camo cache what they may: forbid it,
        // so every view of a README fetches, and counts, again.
        None => builder
            .header(
                "cache-control",
                "max-age=0, no-cache, no-store, must-revalidate, private",
            )
            .header("pragma", "no-cache")
            .header("expires", "0"),
    };
    builder
        // Opened on its own, the SVG is a document: it may run nothing. It may
        // show its logo, a `data:` image, and the social style's hover colors.
        .header(
            "content-security-policy",
            "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        )
        .header("x-content-type-options", "nosniff")
        .body(body)
        .expect("a valid status and headers")
}

/// `POST /api/pages/<key>`: counts a hit. An `Idempotency-Key` header holding a
/// UUID names the hit, so a client that retries it is counted once.
async fn count_page_hit_api(
    gateway: &Gateway<'_>,
    config: &Config,
    key: PageKey,
    query: &str,
    header: &dyn Fn(&str) -> Option<String>,
) -> Response {
    if let Err(error) = query::parse(query).and_then(|pairs| query::reject_unknown(&pairs, &[])) {
        return json_error(400, "invalid_query", &error.to_string());
    }
    let id = match header("idempotency-key") {
        None => new_hit_id(),
        Some(value) => match value.trim().parse::<HitId>() {
            Ok(id) => id,
            Err(error) => {
                return json_error(
                    400,
                    "invalid_idempotency_key",
                    &format!("Idempotency-Key must be a UUID: {error}"),
                );
            }
        },
    };
    match group_commit::record_page_hit(gateway, page_hit(config, key, id, header)).await {
        Ok(recorded) => json_response(if recorded.duplicate { 200 } else { 201 }, &recorded),
        Err(error) => json_unavailable(&error),
    }
}

/// The counter `POST /api/pages/<key>/import` names: `<key>`.
///
/// Only for `POST`: `GET` still reads a counter whose key ends in `/import`, and
/// such a counter takes its hits from badges.
fn imported_key(key: &PageKey) -> Option<PageKey> {
    key.as_str().strip_suffix("/import")?.parse().ok()
}

/// The body of `POST /api/pages/<key>/import`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    count: counter_api::BaseCount,
}

/// `POST /api/pages/<key>/import` with `{"count": N}`: starts the counter at N,
/// the count it had on another service, once. Behind the stats credentials,
/// and named by a required `Idempotency-Key`, so a retry adds nothing.
async fn import_page_base(
    gateway: &Gateway<'_>,
    config: &Config,
    key: PageKey,
    query: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: spin_sdk::wasip3::http_compat::IncomingRequestBody,
) -> Response {
    // Credentials first: nobody learns anything about a counter without them.
    let Some(credentials) = &config.stats_credentials else {
        return json_error(
            403,
            "imports_disabled",
            "imports are turned off on this counter: its operator sets STATS_CREDENTIALS=user:password on the web tier to allow them",
        );
    };
    if !header("authorization").is_some_and(|given| credentials.admit(&given)) {
        let mut response = json_error(
            401,
            "unauthorized",
            "an import needs the stats credentials: send them with HTTP Basic authentication (curl -u user:password)",
        );
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"awesome-counter\", charset=\"UTF-8\""),
        );
        return response;
    }
    if let Err(error) = query::parse(query).and_then(|pairs| query::reject_unknown(&pairs, &[])) {
        return json_error(400, "invalid_query", &error.to_string());
    }
    let id = match header("idempotency-key").map(|value| value.trim().parse::<HitId>()) {
        Some(Ok(id)) => id,
        Some(Err(error)) => {
            return json_error(
                400,
                "invalid_idempotency_key",
                &format!("Idempotency-Key must be a UUID: {error}"),
            );
        }
        None => {
            return json_error(
                400,
                "missing_idempotency_key",
                "an import needs an Idempotency-Key header holding a UUID (uuidgen makes one): \
                 it makes a retry of the import add nothing; send the same one when retrying",
            );
        }
    };
    use spin_sdk::http::body::IncomingBodyExt;
    let bytes = match body.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => {
            return json_error(
                400,
                "unreadable_body",
                &format!("the body could not be read: {error:?}"),
            );
        }
    };
    let request: ImportRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return json_error(
                400,
                "invalid_import",
                &format!(
                    "{error}; the body is {{\"count\": N}}, N the count the counter had elsewhere, from 1 to {}",
                    counter_api::BaseCount::MAX
                ),
            );
        }
    };
    let import = counter_api::PageImport {
        id,
        key,
        count: request.count,
        ts: now(),
    };
    match gateway.import_page_base(&import).await {
        Ok(imported) => json_response(if imported.duplicate { 200 } else { 201 }, &imported),
        Err(GatewayError::Refused {
            status: 409,
            message,
        }) => json_error(409, "already_imported", &message),
        Err(error) => json_unavailable(&error),
    }
}

/// `GET /api/pages/<key>?days=N`: the counter without counting.
async fn read_page_api(gateway: &Gateway<'_>, key: &PageKey, query: &str) -> Response {
    let days = match query::parse(query)
        .map_err(|e| e.to_string())
        .and_then(|pairs| {
            query::reject_unknown(&pairs, &["days"]).map_err(|e| e.to_string())?;
            number_param(&pairs, "days", 30, MAX_DAYS as usize)
        }) {
        Ok(days) => days as u32,
        Err(message) => return json_error(400, "invalid_query", &message),
    };
    match gateway.page_stats(key, days).await {
        Ok(stats) => json_response(200, &stats),
        Err(error) => json_unavailable(&error),
    }
}

/// `GET /api/pages?limit=N&days=D`: the top counters and all hits per day.
async fn pages_api(gateway: &Gateway<'_>, query: &str) -> Response {
    let params = query::parse(query)
        .map_err(|e| e.to_string())
        .and_then(|pairs| {
            query::reject_unknown(&pairs, &["limit", "days"]).map_err(|e| e.to_string())?;
            Ok((
                number_param(&pairs, "limit", TOP_SHOWN, MAX_TOP)?,
                number_param(&pairs, "days", 30, MAX_DAYS as usize)?,
            ))
        });
    let (limit, days) = match params {
        Ok(params) => params,
        Err(message) => return json_error(400, "invalid_query", &message),
    };
    match gateway.pages_overview(limit, days as u32).await {
        Ok(overview) => json_response(200, &overview),
        Err(error) => json_unavailable(&error),
    }
}

/// `GET /stats/<key>`: one counter's page.
async fn page_stats_page(gateway: &Gateway<'_>, key: &PageKey, query: &str) -> Response {
    if let Err(error) = query::parse(query).and_then(|pairs| query::reject_unknown(&pairs, &[])) {
        return plain(400, &format!("{error}\n"));
    }
    match gateway.page_stats(key, PAGE_DAYS_SHOWN).await {
        Ok(stats) => html(&page_stats_page::render(&stats)),
        Err(error) => unavailable(&error),
    }
}

fn page_hit(
    config: &Config,
    key: PageKey,
    id: HitId,
    header: &dyn Fn(&str) -> Option<String>,
) -> PageHit {
    PageHit {
        id,
        key,
        ts: now(),
        visitor: visitor::visitor(header, &config.trusted_proxies),
    }
}

/// A whole number parameter from 1 to `max`, `default` when absent.
fn number_param(
    pairs: &[(String, String)],
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    match query::one(pairs, name).map_err(|e| e.to_string())? {
        None => Ok(default),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{name} must be a whole number from 1 to {max}, not {value:?}")),
    }
}

/// Version 7: time-ordered like the tutorial's uuid1, but without the MAC
/// address, and new ids land at the end of the store's key order.
fn new_hit_id() -> HitId {
    HitId::from_uuid(uuid::Uuid::now_v7()).expect("a v7 UUID is never nil")
}

fn now() -> EpochMillis {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    // Only a host clock set before 2001 or after 2099 fails here.
    EpochMillis::new(millis as i128).expect("the host clock is set to a date between 2001 and 2100")
}

/// The gateway could not count the hit: say so plainly, never a 200 page with an
/// error inside it.
fn unavailable(error: &GatewayError) -> Response {
    eprintln!("gateway call failed: {error}");
    http::Response::builder()
        .status(503)
        .header("content-type", "text/plain; charset=utf-8")
        .header("retry-after", "1")
        .header("cache-control", "no-store")
        .body(format!(
            "The counter is unavailable right now ({}). Please retry in a moment.\n",
            error.short()
        ))
        .expect("a valid status and headers")
}

/// [`unavailable`] for the JSON API.
fn json_unavailable(error: &GatewayError) -> Response {
    eprintln!("gateway call failed: {error}");
    let mut response = json_error(
        503,
        "unavailable",
        &format!(
            "the counter is unavailable right now ({}); retry in a moment",
            error.short()
        ),
    );
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

fn json_error(status: u16, error: &str, message: &str) -> Response {
    json_response(
        status,
        &ApiError {
            error: error.to_owned(),
            message: message.to_owned(),
        },
    )
}

fn json_response(status: u16, body: &impl Serialize) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(serde_json::to_string(body).expect("answers always serialise"))
        .expect("a valid status and headers")
}

fn plain(status: u16, body: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body.to_owned())
        .expect("a valid status and headers")
}

fn html(body: &str) -> Response {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(body.to_owned())
        .expect("a valid status and headers")
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/"), Some(Route::Counter));
        assert_eq!(Route::from_path("/stats"), Some(Route::StatsPage));
        assert_eq!(Route::from_path("/api/stats"), Some(Route::StatsJson));
        assert_eq!(Route::from_path("/favicon.ico"), None);
        assert_eq!(Route::from_path("/stats/"), None);
        assert_eq!(Route::from_path("/api/pages/"), None);
        assert_eq!(Route::from_path("/index.html"), None);
        assert_eq!(
            Route::from_path("/badge/github.com/o/r.svg"),
            Some(Route::Badge("github.com/o/r".parse()))
        );
        assert_eq!(Route::from_path("/badge/x.png"), None);
        assert_eq!(
            Route::from_path("/api/pages/blog/x"),
            Some(Route::PageApi("blog/x".parse()))
        );
        assert_eq!(Route::from_path("/api/pages"), Some(Route::PagesApi));
        assert_eq!(
            Route::from_path("/stats/a//b"),
            Some(Route::PageStatsPage("a//b".parse()))
        );
        assert!(matches!(
            Route::from_path("/stats/a//b"),
            Some(Route::PageStatsPage(Err(_)))
        ));
        assert!(Route::PageApi("k".parse()).allows(&spin_sdk::http::Method::POST));
        assert!(!Route::Counter.allows(&spin_sdk::http::Method::POST));
    }
}
