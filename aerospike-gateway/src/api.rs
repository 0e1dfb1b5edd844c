//! The gateway's HTTP API: routes, request parsing and error answers.
//!
//! Every refusal is a JSON [`ApiError`] with a status that says whose fault it is:
//! 4xx for input the caller can fix (and nothing is written), 503 with
//! `Retry-After` when the store is unavailable, 500 when it failed.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use counter_api::{
    ApiError, Audit, Batch, BatchOutcomes, Hit, ImportOutcome, LatestHits, MAX_BATCH_HITS, Outcome,
    PageHit, PageImport, PageKey, PageRecorded, PageStats, PagesOverview, Recorded, Summary, paths,
};
use futures::StreamExt;
use futures::future::join_all;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::metrics::METRICS;
use crate::recorder::Recorder;
use crate::telemetry::CallerTrace;
use crate::visitors::{VisitorHasher, today};
use counter_store::audit::{audit_window, compare_pages};
use counter_store::pages::{DayRange, PageHitToCount};
use counter_store::{MAX_LATEST_HITS, Store, StoreError};

/// The most days of history one read returns: the 400 days a counter keeps
/// at least, and then some.
pub const MAX_DAYS: u32 = 400;
/// The most counters one top list holds.
pub const MAX_TOP: usize = 100;

/// A hit is about 120 bytes of JSON; anything near this is not a hit.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Room for [`MAX_BATCH_HITS`] hits, with their longest server ids, and a
/// `traceparent` each.
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH_HITS * (256 + 64);
/// How much of an oversized body is read and discarded before answering 413.
const DRAIN_BYTES: usize = 64 * 1024;

pub struct AppState<S> {
    pub store: Arc<S>,
    pub recorder: Recorder<Hit, Recorded>,
    pub page_recorder: Recorder<PageHitToCount, PageRecorded>,
    pub visitors: VisitorHasher<S>,
}

pub fn router<S: Store>(state: AppState<S>) -> Router {
    Router::new()
        .route(paths::HITS, post(record_hit::<S>))
        .route(paths::HIT_BATCHES, post(record_hit_batch::<S>))
        .route(paths::SUMMARY, get(summary::<S>))
        .route(paths::LATEST_HITS, get(latest_hits::<S>))
        .route(paths::AUDIT, get(audit::<S>))
        .route(paths::PAGE_HITS, post(record_page_hit::<S>))
        .route(paths::PAGE_HIT_BATCHES, post(record_page_hit_batch::<S>))
        .route(paths::PAGE_IMPORTS, post(import_page_base::<S>))
        .route(paths::PAGES, get(pages_overview::<S>))
        .route(&format!("{}/{{*key}}", paths::PAGES), get(page_stats::<S>))
        .route(
            paths::HEALTHZ,
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(paths::READYZ, get(readyz::<S>))
        .route(paths::METRICS, get(metrics))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see the README for the gateway API",
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(Arc::new(state))
}

async fn record_hit<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let hit: Hit = parse_json(&headers, body, "invalid_hit", HIT_SHAPE).await?;
    let recorded = state.recorder.record(hit, None).await?;
    let status = if recorded.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(recorded)).into_response())
}

/// Hits that met at one web replica: each goes into the recorder's queue at once,
/// so they normally share one store batch, and each is answered on its own.
async fn record_hit_batch<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchOutcomes<Recorded>>, Problem> {
    let hits = parse_batch::<Hit>(&headers, body, HIT_SHAPE).await?;
    METRICS.call_carried("tutorial", hits.len());
    let results = join_all(
        hits.into_iter()
            .map(|(hit, caller)| state.recorder.record(hit, caller)),
    )
    .await;
    Ok(Json(outcomes(results)))
}

/// [`record_hit_batch`] for page hits.
async fn record_page_hit_batch<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchOutcomes<PageRecorded>>, Problem> {
    let hits = parse_batch::<PageHit>(&headers, body, PAGE_HIT_SHAPE).await?;
    METRICS.call_carried("page", hits.len());
    let results = join_all(hits.into_iter().map(|(hit, caller)| async {
        let hit = state.visitors.prepare(hit, today()).await?;
        state.page_recorder.record(hit, caller).await
    }))
    .await;
    Ok(Json(outcomes(results)))
}

/// A batch of 1 to [`MAX_BATCH_HITS`] hits, each a valid hit of `shape`, with
/// the trace each hit's span belongs in when it is not the request's; one bad
/// hit refuses the whole batch, before anything is queued.
async fn parse_batch<H: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    shape: &str,
) -> Result<Vec<(H, Option<CallerTrace>)>, Problem> {
    let shape = format!(
        "a batch is {{\"hits\": [<hit>, ...], \"traceparents\": [<traceparent or null>, ...] (optional, one per hit)}} with 1 to {MAX_BATCH_HITS} hits; {shape}"
    );
    let batch: Batch<H> = parse_json_limited(
        headers,
        body,
        MAX_BATCH_BODY_BYTES,
        "invalid_hit_batch",
        &shape,
    )
    .await?;
    if !(1..=MAX_BATCH_HITS).contains(&batch.hits.len()) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_hit_batch",
            format!(
                "a batch holds 1 to {MAX_BATCH_HITS} hits, not {}",
                batch.hits.len()
            ),
        ));
    }
    if !batch.traceparents.is_empty() && batch.traceparents.len() != batch.hits.len() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_hit_batch",
            format!(
                "traceparents, when given, holds one entry (a traceparent or null) per hit: {} for {} hits",
                batch.traceparents.len(),
                batch.hits.len()
            ),
        ));
    }
    let mut traceparents = batch.traceparents.into_iter();
    Ok(batch
        .hits
        .into_iter()
        .map(|hit| {
            let caller = traceparents.next().flatten();
            (hit, caller.and_then(|tp| CallerTrace::of_hit(&tp)))
        })
        .collect())
}

fn outcomes<A>(results: Vec<Result<A, StoreError>>) -> BatchOutcomes<A> {
    let outcomes = results
        .into_iter()
        .map(|result| match result {
            Ok(answer) => Outcome::Recorded(answer),
            Err(error) => Outcome::Failed(Problem::from(error).body),
        })
        .collect();
    BatchOutcomes { outcomes }
}

const HIT_SHAPE: &str = "a hit is {\"id\": \"<uuid>\", \"server\": \"<server id>\", \"ts\": <milliseconds since the epoch>}";
const PAGE_HIT_SHAPE: &str = "a page hit is {\"id\": \"<uuid>\", \"key\": \"<counter key>\", \"ts\": <milliseconds since the epoch>, \"visitor\": {\"addr\": \"<ip>\", \"user_agent\": \"<text>\"} (optional)}";

async fn record_page_hit<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let hit: PageHit = parse_json(&headers, body, "invalid_page_hit", PAGE_HIT_SHAPE).await?;
    let hit = state.visitors.prepare(hit, today()).await?;
    let recorded = state.page_recorder.record(hit, None).await?;
    let status = if recorded.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(recorded)).into_response())
}

const PAGE_IMPORT_SHAPE: &str = "an import is {\"id\": \"<uuid: the Idempotency-Key>\", \"key\": \"<counter key>\", \"count\": <1 to 10^15>, \"ts\": <milliseconds since the epoch>}";

/// A counter's starting count, from another service: `201` when set, `200`
/// with `duplicate` for the same import again, `409` when the counter already
/// has another import's base.
async fn import_page_base<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let import: PageImport =
        parse_json(&headers, body, "invalid_page_import", PAGE_IMPORT_SHAPE).await?;
    let outcome = METRICS
        .timed("import_page_base", state.store.import_page_base(import))
        .await?;
    Ok(match outcome {
        ImportOutcome::Imported(imported) => {
            let status = if imported.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(imported)).into_response()
        }
        ImportOutcome::AlreadyImported { base } => Problem::new(
            StatusCode::CONFLICT,
            "already_imported",
            format!(
                "this counter already starts from an imported {} (imported at {} ms since the \
                 epoch); a counter's start is set once, by one import",
                base.count,
                base.ts.as_u64()
            ),
        )
        .into_response(),
    })
}

#[derive(Deserialize)]
struct PagesQuery {
    days: Option<String>,
    limit: Option<String>,
}

/// `days` (1..=[`MAX_DAYS`], default 30) ending today, by the gateway's clock.
fn day_range(days: Option<&str>) -> Result<DayRange, Problem> {
    let days = whole_number(days, "days", 30, MAX_DAYS as usize)?;
    Ok(DayRange::ending(today(), days as u32))
}

/// The query parameter `name`: a whole number from 1 to `max`, `default` when
/// absent; anything else is refused.
fn whole_number(
    value: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Problem> {
    match value {
        None => Ok(default),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| not_a_whole_number(name, max)),
    }
}

fn not_a_whole_number(name: &str, max: usize) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        &format!("invalid_{name}"),
        format!("{name} must be a whole number from 1 to {max}"),
    )
}

fn pages_query(
    query: Result<Query<PagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<PagesQuery, Problem> {
    query.map(|Query(q)| q).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{e}; the parameters are days and limit"),
        )
    })
}

async fn page_stats<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Path(key): Path<String>,
    query: Result<Query<PagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PageStats>, Problem> {
    let key: PageKey = key.parse().map_err(|e: counter_api::InvalidPage| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
    })?;
    let query = pages_query(query)?;
    let days = day_range(query.days.as_deref())?;
    Ok(Json(
        METRICS
            .timed("page_stats", state.store.page_stats(&key, days))
            .await?,
    ))
}

async fn pages_overview<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    query: Result<Query<PagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PagesOverview>, Problem> {
    let query = pages_query(query)?;
    let days = day_range(query.days.as_deref())?;
    let limit = whole_number(query.limit.as_deref(), "limit", 10, MAX_TOP)?;
    Ok(Json(
        METRICS
            .timed("pages_overview", state.store.pages_overview(limit, days))
            .await?,
    ))
}

/// Reads at most `limit` bytes. A body over the limit is still read and thrown
/// away up to [`DRAIN_BYTES`] more, so the client, still sending, gets the 413
/// instead of a connection reset; past that the connection is dropped.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body must be at most {limit} bytes of JSON"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit + DRAIN_BYTES) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(256).min(limit));
    let mut seen = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        } else if seen > limit + DRAIN_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Content type, size and every field are checked before anything is queued.
/// `invalid` is the error code for a body that is JSON but not a valid `T`,
/// whose expected `shape` the message repeats.
async fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    invalid: &str,
    shape: &str,
) -> Result<T, Problem> {
    parse_json_limited(headers, body, MAX_BODY_BYTES, invalid, shape).await
}

/// [`parse_json`] for a body of up to `limit` bytes.
async fn parse_json_limited<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    invalid: &str,
    shape: &str,
) -> Result<T, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the hit as JSON with Content-Type: application/json (got {content_type:?})"
            ),
        ));
    }
    let bytes = read_body(headers, body, limit).await?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                invalid,
                format!("{e}; {shape}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            ),
        }
    })?;
    // serde also reads a struct from a JSON array; the API takes objects only.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid,
            format!("the body must be a JSON object; {shape}"),
        ));
    }
    Ok(value)
}

async fn summary<S: Store>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<Summary>, Problem> {
    Ok(Json(METRICS.timed("summary", state.store.summary()).await?))
}

#[derive(Deserialize)]
struct LatestQuery {
    limit: Option<String>,
}

async fn latest_hits<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    query: Result<Query<LatestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LatestHits>, Problem> {
    let Query(query) = query.map_err(|_| not_a_whole_number("limit", MAX_LATEST_HITS))?;
    let limit = whole_number(query.limit.as_deref(), "limit", 20, MAX_LATEST_HITS)?;
    let hits = METRICS
        .timed("latest_hits", state.store.latest_hits(limit))
        .await?;
    Ok(Json(LatestHits { hits }))
}

/// Counters next to a recount of the hit records: they differ only after a
/// gateway died between writing hits and counting them, or while hits are in flight.
async fn audit<S: Store>(State(state): State<Arc<AppState<S>>>) -> Result<Json<Audit>, Problem> {
    let hit_records = METRICS
        .timed("count_hit_records", state.store.count_hit_records())
        .await?;
    let summary = METRICS.timed("summary", state.store.summary()).await?;
    METRICS
        .audit_drift
        .set(summary.total_hits as i64 - hit_records.total_hits as i64);
    let since = audit_window(
        state.store.page_hit_retention(),
        std::time::SystemTime::now(),
    );
    let page_tallies = METRICS
        .timed("page_tallies", state.store.page_tallies(since))
        .await?;
    let mut pages = compare_pages(&page_tallies);
    METRICS.audit_page_drift.set(pages.drift.len() as i64);
    pages.drift.truncate(counter_api::PagesAudit::MAX_DRIFT);
    let mut findings = state.store.findings().await;
    findings.extend(pages.drift.iter().map(|drift| match &drift.key {
        Some(key) => format!(
            "counter {key} holds {} hit(s) on {} but has {} page hit record(s) that day",
            drift.counted, drift.day, drift.hit_records
        ),
        None => format!(
            "the day total of {} holds {} hit(s) but that day has {} page hit record(s)",
            drift.day, drift.counted, drift.hit_records
        ),
    }));
    if pages.totals_off_days > 0 {
        findings.push(format!(
            "{} counter(s) have a total that is not their imported base (if any) plus the sum of their days",
            pages.totals_off_days
        ));
    }
    let consistent = match state.store.hit_retention().0 {
        None => summary == hit_records,
        Some(window) => {
            findings.push(format!(
                "hit records expire {} s after they are written (HIT_RETENTION): the audit \
                 checks only that each counter holds at least its hit records, and repairs nothing",
                window.as_secs()
            ));
            holds_its_records(&summary, &hit_records)
        }
    };
    if !consistent || !pages.consistent {
        state.store.suspect_drift();
    }
    Ok(Json(Audit {
        consistent: consistent && pages.consistent,
        summary,
        hit_records,
        findings,
        pages,
    }))
}

/// Every counter counts at least the hit records still there: all that can be
/// checked once records expire.
fn holds_its_records(summary: &Summary, hit_records: &Summary) -> bool {
    summary.total_hits >= hit_records.total_hits
        && hit_records.servers.iter().all(|records| {
            summary
                .servers
                .iter()
                .find(|s| s.server == records.server)
                .is_some_and(|s| s.total >= records.total)
        })
}

/// The gateway's own figures, for Prometheus to scrape.
async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.encode(),
    )
        .into_response()
}

async fn readyz<S: Store>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<serde_json::Value>, Problem> {
    state.store.check_ready().await?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// An error answer: status plus [`ApiError`] body.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    body: ApiError,
}

impl Problem {
    fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: error.to_owned(),
                message: message.into(),
            },
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable(_) => {
                tracing::warn!(%error, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    error.to_string(),
                )
            }
            StoreError::Failed(_) => {
                tracing::error!(%error, "store failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_failed",
                    error.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
