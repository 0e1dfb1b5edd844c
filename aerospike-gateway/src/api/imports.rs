//! `POST /v1/page-imports`: a counter's starting count, brought from another
//! service, kept as the counter's marked base.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use counter_api::{ImportOutcome, PageImport};
use counter_store::Store;

use super::body::Parsed;
use super::{AppState, Problem};
use crate::metrics::METRICS;

/// `201` when set, `200` with `duplicate` for the same import again, `409`
/// when the counter already has another import's base.
pub(super) async fn import<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Parsed(import): Parsed<PageImport>,
) -> Result<Response, Problem> {
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
