//! The awesome-counter web tier: a Spin HTTP component.
//!
//! Every `GET /` is one page hit. The component names it (a fresh [`HitId`], this
//! replica's [`ServerId`], the time), hands it to the gateway, and answers with the
//! grand total the gateway counted it as. The component keeps no state of its own,
//! so the web tier scales by adding replicas; the gateway owns the data.
//!
//! Routes:
//! - `GET /`: record a hit, answer `Hello World! I have been seen by N.`
//! - `GET /stats`: an HTML page of the totals and the latest hits (records nothing).
//! - `GET /api/stats`: the same as JSON (records nothing).
//! - `GET /healthz`: 200 while the component runs and its configuration is valid;
//!   never calls the gateway.
//! - anything else: 404, never counted.

mod badge;
mod chart;
mod config;
mod gateway;
mod page_stats_page;
mod query;
mod stats_page;

use std::time::{SystemTime, UNIX_EPOCH};

use counter_api::{EpochMillis, Hit, HitId, LatestHits, Summary};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Response};

use crate::config::Config;
use crate::gateway::{Gateway, GatewayError};

/// How many of the newest hits the stats views show.
const LATEST_HITS_SHOWN: usize = 20;

// Exported only from the wasm build: a native build of this crate exists for the
// unit tests, and the export's WIT name is not a valid native symbol.
#[cfg_attr(target_family = "wasm", spin_sdk::http_component)]
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn handle(request: IncomingRequest) -> Response {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let path = path_with_query.split('?').next().unwrap_or_default();
    let method = request.method();

    let Some(route) = Route::from_path(path) else {
        return plain(
            404,
            "Not found. The counter lives at /, its statistics at /stats.\n",
        );
    };
    if !matches!(method, Method::Get) {
        return Response::builder()
            .status(405)
            .header("allow", "GET")
            .header("content-type", "text/plain; charset=utf-8")
            .body(format!("Method not allowed: {path} only answers GET.\n"))
            .build();
    }
    // A replica whose configuration is broken is not healthy either.
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return plain(500, &format!("The counter is misconfigured: {error}\n"));
        }
    };
    let gateway = Gateway::new(&config);
    let answer = match route {
        Route::Healthz => return plain(200, "ok\n"),
        Route::Counter => count_hit(&gateway, &config),
        Route::StatsPage => stats(&gateway).map(|(summary, latest)| {
            html(&stats_page::render(&summary, &latest, &config.server_id))
        }),
        Route::StatsJson => stats(&gateway).map(|(summary, latest)| {
            let body = json!({
                "total_hits": summary.total_hits,
                "servers": summary.servers,
                "latest_hits": latest.hits,
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(body.to_string())
                .build()
        }),
    };
    answer.unwrap_or_else(|error| unavailable(&error))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Counter,
    StatsPage,
    StatsJson,
    Healthz,
}

impl Route {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/" | "" => Some(Self::Counter),
            "/stats" => Some(Self::StatsPage),
            "/api/stats" => Some(Self::StatsJson),
            "/healthz" => Some(Self::Healthz),
            _ => None,
        }
    }
}

fn count_hit(gateway: &Gateway, config: &Config) -> Result<Response, GatewayError> {
    let hit = Hit {
        // Version 7: time-ordered like the tutorial's uuid1, but without the MAC
        // address, and new ids land at the end of the store's key order.
        id: HitId::from_uuid(uuid::Uuid::now_v7()).expect("a v7 UUID is never nil"),
        server: config.server_id.clone(),
        ts: now(),
    };
    let recorded = gateway.record_hit(&hit)?;
    let mut response = plain(
        200,
        &format!("Hello World! I have been seen by {}.", recorded.total_hits),
    );
    response.set_header("cache-control", "no-store");
    Ok(response)
}

fn stats(gateway: &Gateway) -> Result<(Summary, LatestHits), GatewayError> {
    Ok((gateway.summary()?, gateway.latest_hits(LATEST_HITS_SHOWN)?))
}

fn now() -> EpochMillis {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    // Only a host clock set before 2001 or after 2099 fails here.
    EpochMillis::new(millis as i128).expect("the host clock is set to a date between 2001 and 2100")
}

/// The gateway could not count the hit: say so plainly, never a 200 page with an
/// error inside it.
fn unavailable(error: &GatewayError) -> Response {
    eprintln!("gateway call failed: {error}");
    Response::builder()
        .status(503)
        .header("content-type", "text/plain; charset=utf-8")
        .header("retry-after", "1")
        .header("cache-control", "no-store")
        .body(format!(
            "The counter is unavailable right now ({}). Please retry in a moment.\n",
            error.short()
        ))
        .build()
}

fn plain(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body.to_owned())
        .build()
}

fn html(body: &str) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(body.to_owned())
        .build()
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/"), Some(Route::Counter));
        assert_eq!(Route::from_path("/stats"), Some(Route::StatsPage));
        assert_eq!(Route::from_path("/api/stats"), Some(Route::StatsJson));
        assert_eq!(Route::from_path("/favicon.ico"), None);
        assert_eq!(Route::from_path("/stats/"), None);
        assert_eq!(Route::from_path("/index.html"), None);
    }
}
