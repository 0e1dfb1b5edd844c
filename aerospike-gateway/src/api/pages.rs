//! The named counters: `POST /v1/page-hits`, `POST /v1/page-hits/batch`,
//! `GET /v1/pages` (the overview) and `GET /v1/pages/<key>` (one counter).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use counter_api::{BatchOutcomes, PageHit, PageRecorded, PageStats, PagesOverview};
use counter_store::{Store, StoreError};

use super::body::{Batched, Parsed};
use super::{AppState, Problem, answer, query};
use crate::metrics::METRICS;
use crate::telemetry::CallerTrace;
use crate::visitors::today;

pub(super) async fn record<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Parsed(hit): Parsed<PageHit>,
) -> Result<Response, Problem> {
    let recorded = count(&state, hit, None).await?;
    Ok(answer::recorded(recorded.duplicate, recorded))
}

/// [`super::hits::record_batch`] for page hits.
pub(super) async fn record_batch<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Batched(hits): Batched<PageHit>,
) -> Json<BatchOutcomes<PageRecorded>> {
    answer::each("page", hits, |hit, caller| count(&state, hit, caller)).await
}

/// The visitor hashed (for a hit of about today), then the hit counted.
async fn count<S: Store>(
    state: &AppState<S>,
    hit: PageHit,
    caller: Option<CallerTrace>,
) -> Result<PageRecorded, StoreError> {
    let hit = state.visitors.prepare(hit, today()).await?;
    state.page_recorder.record(hit, caller).await
}

pub(super) async fn stats<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    query::Key(key): query::Key,
    query::Days(days): query::Days,
) -> Result<Json<PageStats>, Problem> {
    Ok(Json(
        METRICS
            .timed("page_stats", state.store.page_stats(&key, days))
            .await?,
    ))
}

pub(super) async fn overview<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    query::Overview { limit, days }: query::Overview,
) -> Result<Json<PagesOverview>, Problem> {
    Ok(Json(
        METRICS
            .timed("pages_overview", state.store.pages_overview(limit, days))
            .await?,
    ))
}
