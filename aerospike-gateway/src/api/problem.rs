//! [`Problem`]: the one error answer, for refused input and failed stores alike.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use counter_api::ApiError;
use counter_store::StoreError;

/// An error answer: status plus [`ApiError`] body. What every extractor rejects
/// with and every handler fails with.
#[derive(Debug)]
pub struct Problem(Answer);

#[derive(Debug)]
enum Answer {
    Api {
        status: StatusCode,
        body: ApiError,
    },
    /// A path that does not decode (invalid UTF-8 once percent-decoded) is
    /// answered as axum answers it, in plain text, as it always was.
    Undecodable(PathRejection),
}

impl Problem {
    pub(super) fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self(Answer::Api {
            status,
            body: ApiError {
                error: error.to_owned(),
                message: message.into(),
            },
        })
    }

    /// The body alone, for one hit's outcome inside a batch's answer.
    pub(super) fn of_hit(error: StoreError) -> ApiError {
        store_failure(&error).1
    }
}

/// 503 when the store is unavailable, 500 when it failed; logged here, once.
fn store_failure(error: &StoreError) -> (StatusCode, ApiError) {
    let (status, code) = match error {
        StoreError::Unavailable(_) => {
            tracing::warn!(%error, "store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        StoreError::Failed(_) => {
            tracing::error!(%error, "store failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "store_failed")
        }
    };
    let body = ApiError {
        error: code.to_owned(),
        message: error.to_string(),
    };
    (status, body)
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        let (status, body) = store_failure(&error);
        Self(Answer::Api { status, body })
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Self(Answer::Undecodable(rejection))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        match self.0 {
            Answer::Api { status, body } => {
                let mut response = (status, Json(body)).into_response();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                }
                response
            }
            Answer::Undecodable(rejection) => rejection.into_response(),
        }
    }
}
