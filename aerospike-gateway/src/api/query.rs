//! Paths and query strings: a counter's key, day ranges and limits, parsed
//! before the handler runs.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use counter_api::{InvalidPage, PageKey};
use counter_store::MAX_LATEST_HITS;
use counter_store::pages::DayRange;
use serde::Deserialize;

use super::Problem;
use crate::visitors::today;

/// The most days of history one read returns: the 400 days a counter keeps
/// at least, and then some.
pub const MAX_DAYS: u32 = 400;
/// The most counters one top list holds.
pub const MAX_TOP: usize = 100;

/// The counter key after `/v1/pages/`.
pub(super) struct Key(pub PageKey);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(key) = Path::<String>::from_request_parts(parts, state).await?;
        key.parse().map(Self).map_err(|e: InvalidPage| {
            Problem::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
        })
    }
}

/// The query of the `/v1/pages` reads, as sent.
#[derive(Deserialize)]
struct PagesParams {
    days: Option<String>,
    limit: Option<String>,
}

impl PagesParams {
    fn of(parts: &Parts) -> Result<Self, Problem> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(params)| params)
            .map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{e}; the parameters are days and limit"),
                )
            })
    }

    /// `days` (1..=[`MAX_DAYS`], default 30) ending today, by the gateway's clock.
    fn days(&self) -> Result<DayRange, Problem> {
        let days = whole_number(self.days.as_deref(), "days", 30, MAX_DAYS as usize)?;
        Ok(DayRange::ending(today(), days as u32))
    }
}

/// `?days=D` of one counter's stats.
pub(super) struct Days(pub DayRange);

impl<S: Send + Sync> FromRequestParts<S> for Days {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        PagesParams::of(parts)?.days().map(Self)
    }
}

/// `?limit=N&days=D` of the pages overview: the top `limit` (1..=[`MAX_TOP`],
/// default 10) counters over `days`.
pub(super) struct Overview {
    pub limit: usize,
    pub days: DayRange,
}

impl<S: Send + Sync> FromRequestParts<S> for Overview {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let params = PagesParams::of(parts)?;
        let days = params.days()?;
        let limit = whole_number(params.limit.as_deref(), "limit", 10, MAX_TOP)?;
        Ok(Self { limit, days })
    }
}

/// `?limit=N` of the latest hits: 1..=[`MAX_LATEST_HITS`], default 20.
pub(super) struct Latest(pub usize);

impl<S: Send + Sync> FromRequestParts<S> for Latest {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        #[derive(Deserialize)]
        struct Params {
            limit: Option<String>,
        }
        let Query(params) = Query::<Params>::try_from_uri(&parts.uri)
            .map_err(|_| not_a_whole_number("limit", MAX_LATEST_HITS))?;
        whole_number(params.limit.as_deref(), "limit", 20, MAX_LATEST_HITS).map(Self)
    }
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
