//! What a call that records hits answers, for either kind of hit.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use counter_api::{BatchOutcomes, Outcome};
use counter_store::StoreError;
use futures::future::join_all;
use serde::Serialize;

use super::Problem;
use crate::metrics::METRICS;
use crate::telemetry::CallerTrace;

/// One hit's answer: 201 Created when it was counted now, 200 OK when a hit
/// with its id had been already (`duplicate`).
pub(super) fn recorded(duplicate: bool, answer: impl Serialize) -> Response {
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(answer)).into_response()
}

/// A batch's answer: each hit goes into its recorder's queue at once, so they
/// normally share one store batch, and each is answered on its own.
pub(super) async fn each<H, A, F>(
    kind: &'static str,
    hits: Vec<(H, Option<CallerTrace>)>,
    record: impl Fn(H, Option<CallerTrace>) -> F,
) -> Json<BatchOutcomes<A>>
where
    F: Future<Output = Result<A, StoreError>>,
{
    METRICS.call_carried(kind, hits.len());
    let results = join_all(hits.into_iter().map(|(hit, caller)| record(hit, caller))).await;
    let outcomes = results
        .into_iter()
        .map(|result| match result {
            Ok(answer) => Outcome::Recorded(answer),
            Err(error) => Outcome::Failed(Problem::of_hit(error)),
        })
        .collect();
    Json(BatchOutcomes { outcomes })
}
