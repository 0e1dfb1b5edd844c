//! For operators and orchestrators: `GET /healthz`, `GET /readyz` and
//! `GET /metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use counter_store::Store;
use serde_json::{Value, json};

use super::{AppState, Problem};
use crate::metrics::METRICS;

/// 200 while the process is alive.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 while the store can be used, 503 otherwise.
pub(super) async fn readyz<S: Store>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<Value>, Problem> {
    state.store.check_ready().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// The gateway's own figures, for Prometheus to scrape.
pub(super) async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.encode(),
    )
        .into_response()
}
