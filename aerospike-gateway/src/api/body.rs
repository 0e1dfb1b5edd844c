//! Request bodies: JSON parsed into the domain types the handlers take, before
//! they run. Content type, size and every field are checked first, so a body
//! that is refused queues nothing.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use counter_api::{Batch, Hit, MAX_BATCH_HITS, PageHit, PageImport};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::Problem;
use crate::telemetry::CallerTrace;

/// A hit is about 120 bytes of JSON; anything near this is not a hit.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Room for [`MAX_BATCH_HITS`] hits, with their longest server ids, and a
/// `traceparent` each.
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH_HITS * (256 + 64);
/// How much of an oversized body is read and discarded before answering 413.
const DRAIN_BYTES: usize = 64 * 1024;

/// A body the API takes as JSON, and what its refusals say.
pub(super) trait Payload: DeserializeOwned + Send {
    /// The error code for a body that is JSON but not a valid `Self`.
    const INVALID: &'static str;
    /// The most bytes its body may hold.
    const MAX_BYTES: usize = MAX_BODY_BYTES;
    /// What a valid one looks like; a refusal repeats it.
    fn shape() -> String;
}

impl Payload for Hit {
    const INVALID: &'static str = "invalid_hit";
    fn shape() -> String {
        "a hit is {\"id\": \"<uuid>\", \"server\": \"<server id>\", \"ts\": <milliseconds since the epoch>}".into()
    }
}

impl Payload for PageHit {
    const INVALID: &'static str = "invalid_page_hit";
    fn shape() -> String {
        "a page hit is {\"id\": \"<uuid>\", \"key\": \"<counter key>\", \"ts\": <milliseconds since the epoch>, \"visitor\": {\"addr\": \"<ip>\", \"user_agent\": \"<text>\"} (optional)}".into()
    }
}

impl Payload for PageImport {
    const INVALID: &'static str = "invalid_page_import";
    fn shape() -> String {
        "an import is {\"id\": \"<uuid: the Idempotency-Key>\", \"key\": \"<counter key>\", \"count\": <1 to 10^15>, \"ts\": <milliseconds since the epoch>}".into()
    }
}

impl<H: Payload> Payload for Batch<H> {
    const INVALID: &'static str = "invalid_hit_batch";
    const MAX_BYTES: usize = MAX_BATCH_BODY_BYTES;
    fn shape() -> String {
        format!(
            "a batch is {{\"hits\": [<hit>, ...], \"traceparents\": [<traceparent or null>, ...] (optional, one per hit)}} with 1 to {MAX_BATCH_HITS} hits; {}",
            H::shape()
        )
    }
}

/// A body that is a valid `T`, sent as a JSON object with
/// `Content-Type: application/json`, of at most `T::MAX_BYTES`.
pub(super) struct Parsed<T>(pub T);

impl<S: Send + Sync, T: Payload> FromRequest<S> for Parsed<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, _: &S) -> Result<Self, Problem> {
        let (parts, body) = request.into_parts();
        let content_type = parts
            .headers
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
        let bytes = read_body(&parts.headers, body, T::MAX_BYTES).await?;
        let value: T = serde_json::from_slice(&bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    T::INVALID,
                    format!("{e}; {}", T::shape()),
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
                T::INVALID,
                format!("the body must be a JSON object; {}", T::shape()),
            ));
        }
        Ok(Self(value))
    }
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

/// Hits that met at one web replica: a [`Batch`] of 1 to [`MAX_BATCH_HITS`]
/// valid hits, each with the trace its span belongs in when that is not the
/// request's. One bad hit refuses the whole batch, before anything is queued.
pub(super) struct Batched<H>(pub Vec<(H, Option<CallerTrace>)>);

impl<S: Send + Sync, H: Payload> FromRequest<S> for Batched<H> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let Parsed(batch) = Parsed::<Batch<H>>::from_request(request, state).await?;
        let refused = |message| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                <Batch<H>>::INVALID,
                message,
            )
        };
        if !(1..=MAX_BATCH_HITS).contains(&batch.hits.len()) {
            return Err(refused(format!(
                "a batch holds 1 to {MAX_BATCH_HITS} hits, not {}",
                batch.hits.len()
            )));
        }
        if !batch.traceparents.is_empty() && batch.traceparents.len() != batch.hits.len() {
            return Err(refused(format!(
                "traceparents, when given, holds one entry (a traceparent or null) per hit: {} for {} hits",
                batch.traceparents.len(),
                batch.hits.len()
            )));
        }
        let mut traceparents = batch.traceparents.into_iter();
        Ok(Self(
            batch
                .hits
                .into_iter()
                .map(|hit| {
                    let caller = traceparents.next().flatten();
                    (hit, caller.and_then(|tp| CallerTrace::of_hit(&tp)))
                })
                .collect(),
        ))
    }
}
