//! The gateway's HTTP API: one file per resource, the extractors that parse
//! requests, and the one type every refusal is.
//!
//! A request flows through four steps, each in one place:
//!
//! 1. The [`router`] picks the handler by path and method; an unknown path is a
//!    404, a known path with another method a 405.
//! 2. The handler's extractors parse the request into domain types before the
//!    handler runs: a JSON body into a [`counter_api::Hit`], a
//!    [`counter_api::PageHit`] or a batch of either ([`body`]), a path into a
//!    [`counter_api::PageKey`] and a query into day ranges and limits ([`query`]).
//!    Whatever does not parse is refused there, so nothing is written.
//! 3. The handler ([`hits`], [`pages`], [`audit`], [`health`]) hands the hits to
//!    the [`Recorder`]s, which batch them into group commits on the
//!    [`Store`], or reads from the store.
//! 4. The answer is JSON; every refusal is a [`Problem`]: a
//!    [`counter_api::ApiError`] with a status that says whose fault it is: 4xx
//!    for input the caller can fix (and nothing is written), 503 with
//!    `Retry-After` when the store is unavailable, 500 when it failed.

mod answer;
mod audit;
mod body;
mod health;
mod hits;
mod imports;
mod pages;
mod problem;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use counter_api::{Hit, PageRecorded, Recorded, paths};

use crate::recorder::Recorder;
use crate::visitors::VisitorHasher;
use counter_store::Store;
use counter_store::pages::PageHitToCount;

pub use body::{MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES};
pub use problem::Problem;
pub use query::{MAX_DAYS, MAX_TOP};

/// What every handler shares: the store, and the two group commits in front of it.
pub struct AppState<S> {
    pub store: Arc<S>,
    pub recorder: Recorder<Hit, Recorded>,
    pub page_recorder: Recorder<PageHitToCount, PageRecorded>,
    pub visitors: VisitorHasher<S>,
}

pub fn router<S: Store>(state: AppState<S>) -> Router {
    Router::new()
        .route(paths::HITS, post(hits::record::<S>))
        .route(paths::HIT_BATCHES, post(hits::record_batch::<S>))
        .route(paths::SUMMARY, get(hits::summary::<S>))
        .route(paths::LATEST_HITS, get(hits::latest::<S>))
        .route(paths::AUDIT, get(audit::audit::<S>))
        .route(paths::PAGE_HITS, post(pages::record::<S>))
        .route(paths::PAGE_HIT_BATCHES, post(pages::record_batch::<S>))
        .route(paths::PAGE_IMPORTS, post(imports::import::<S>))
        .route(paths::PAGES, get(pages::overview::<S>))
        .route(
            &format!("{}/{{*key}}", paths::PAGES),
            get(pages::stats::<S>),
        )
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::READYZ, get(health::readyz::<S>))
        .route(paths::METRICS, get(health::metrics))
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
