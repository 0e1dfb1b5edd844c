//! The tutorial's hits: `POST /v1/hits`, `POST /v1/hits/batch`,
//! `GET /v1/summary` and `GET /v1/hits/latest`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use counter_api::{BatchOutcomes, Hit, LatestHits, Recorded, Summary};
use counter_store::Store;

use super::body::{Batched, Parsed};
use super::{AppState, Problem, answer, query};
use crate::metrics::METRICS;

pub(super) async fn record<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Parsed(hit): Parsed<Hit>,
) -> Result<Response, Problem> {
    let recorded = state.recorder.record(hit, None).await?;
    Ok(answer::recorded(recorded.duplicate, recorded))
}

/// Hits that met at one web replica, each answered on its own.
pub(super) async fn record_batch<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Batched(hits): Batched<Hit>,
) -> Json<BatchOutcomes<Recorded>> {
    answer::each("tutorial", hits, |hit, caller| {
        state.recorder.record(hit, caller)
    })
    .await
}

pub(super) async fn summary<S: Store>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<Summary>, Problem> {
    Ok(Json(METRICS.timed("summary", state.store.summary()).await?))
}

pub(super) async fn latest<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    query::Latest(limit): query::Latest,
) -> Result<Json<LatestHits>, Problem> {
    let hits = METRICS
        .timed("latest_hits", state.store.latest_hits(limit))
        .await?;
    Ok(Json(LatestHits { hits }))
}
