//! The component's side of the gateway API: one bounded HTTP call per operation.
//!
//! Every call races a monotonic-clock timer, so it ends within its deadline
//! whatever the gateway does (down, slow, or trickling bytes), in any runtime,
//! whichever request options that runtime honours.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use counter_api::{
    ApiError, Batch, BatchOutcomes, Hit, LatestHits, Outcome, PageHit, PageImport, PageImported,
    PageKey, PageRecorded, PageStats, PagesOverview, Recorded, Summary, paths,
};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::Method;
use spin_sdk::wasip3::clocks::monotonic_clock::{self, Mark};
use spin_sdk::wasip3::http::types::ErrorCode;

use crate::config::{Config, GatewayUrl};
use crate::trace_context::TraceContext;

/// Gateway answers are small JSON documents; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot reach the gateway at {authority}: {detail}")]
    Unreachable { authority: String, detail: String },
    #[error("the gateway did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the gateway answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the gateway's answer could not be read: {0}")]
    BadAnswer(String),
}

impl GatewayError {
    /// What a visitor is told; the details go to the log.
    pub fn short(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "the hit store cannot be reached",
            Self::TimedOut(_) => "the hit store did not answer in time",
            Self::Refused { .. } | Self::BadAnswer(_) => "the hit store reported an error",
        }
    }
}

/// A hit and the `traceparent` of the request it came with.
pub type Traced<H> = (H, Option<String>);

pub struct Gateway<'a> {
    url: &'a GatewayUrl,
    timeout: Duration,
    /// The trace of the request these calls serve, continued by the gateway.
    trace: Option<TraceContext>,
}

impl<'a> Gateway<'a> {
    pub fn new(config: &'a Config, trace: Option<TraceContext>) -> Self {
        Self {
            url: &config.gateway,
            timeout: config.gateway_timeout,
            trace,
        }
    }

    /// The `traceparent` of the request these calls serve, if it came with one.
    pub fn traceparent(&self) -> Option<String> {
        self.trace.as_ref().map(|t| t.traceparent().to_owned())
    }

    /// Records hits that arrived together in one call, each with the
    /// `traceparent` of the request it came with; answers each hit's outcome, in
    /// order.
    pub async fn record_hits(&self, hits: Vec<Traced<Hit>>) -> Vec<Result<Recorded, GatewayError>> {
        self.record_batch(paths::HIT_BATCHES, hits).await
    }

    /// [`Gateway::record_hits`] for hits on named counters.
    pub async fn record_page_hits(
        &self,
        hits: Vec<Traced<PageHit>>,
    ) -> Vec<Result<PageRecorded, GatewayError>> {
        self.record_batch(paths::PAGE_HIT_BATCHES, hits).await
    }

    async fn record_batch<H: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        hits: Vec<Traced<H>>,
    ) -> Vec<Result<A, GatewayError>> {
        let count = hits.len();
        let (hits, mut traceparents): (Vec<H>, Vec<Option<String>>) = hits.into_iter().unzip();
        // Even a lone hit's: Spin 4.0.2, tracing, replaces the call's
        // `traceparent` header with one of a trace of its own (see trace_context).
        if traceparents.iter().all(Option::is_none) {
            traceparents.clear();
        }
        let body =
            serde_json::to_vec(&Batch { hits, traceparents }).expect("hits always serialise");
        let error = match self
            .call::<BatchOutcomes<A>>(Method::POST, path, Some(body))
            .await
        {
            Ok(answer) if answer.outcomes.len() == count => {
                return answer
                    .outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Outcome::Recorded(answer) => Ok(answer),
                        Outcome::Failed(error) => Err(GatewayError::Refused {
                            status: if error.error == "store_failed" {
                                500
                            } else {
                                503
                            },
                            message: error.message,
                        }),
                    })
                    .collect();
            }
            Ok(answer) => GatewayError::BadAnswer(format!(
                "{} outcomes for {count} hits",
                answer.outcomes.len()
            )),
            Err(error) => error,
        };
        (0..count).map(|_| Err(error.clone())).collect()
    }

    pub async fn summary(&self) -> Result<Summary, GatewayError> {
        self.call(Method::GET, paths::SUMMARY, None).await
    }

    pub async fn latest_hits(&self, limit: usize) -> Result<LatestHits, GatewayError> {
        let path = format!("{}?limit={limit}", paths::LATEST_HITS);
        self.call(Method::GET, &path, None).await
    }

    /// `days` must be within the gateway's limit (1..=400).
    pub async fn page_stats(&self, key: &PageKey, days: u32) -> Result<PageStats, GatewayError> {
        // Keys are URL-safe by construction: no escaping needed.
        let path = format!("{}/{key}?days={days}", paths::PAGES);
        self.call(Method::GET, &path, None).await
    }

    /// Starts a counter at an imported count, once: the gateway answers the same
    /// import again as a duplicate, and another import on the counter `409`.
    pub async fn import_page_base(
        &self,
        import: &PageImport,
    ) -> Result<PageImported, GatewayError> {
        let body = serde_json::to_vec(import).expect("an import serialises");
        self.call(Method::POST, paths::PAGE_IMPORTS, Some(body))
            .await
    }

    pub async fn pages_overview(
        &self,
        limit: usize,
        days: u32,
    ) -> Result<PagesOverview, GatewayError> {
        let path = format!("{}?limit={limit}&days={days}", paths::PAGES);
        self.call(Method::GET, &path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, GatewayError> {
        let deadline = monotonic_clock::now().saturating_add(self.timeout.as_nanos() as u64);
        let body = Bytes::from(body.unwrap_or_default());
        // A gateway that cannot be reached got nothing, and a hit carries its id, so
        // trying again is safe: it rides out a gateway replica being replaced, or
        // a name that does not resolve yet in a container that just started.
        let mut pause = Duration::from_millis(25);
        let (status, bytes) = loop {
            let exchange = self.exchange(method.clone(), path, body.clone());
            match within(deadline, exchange).await {
                None => return Err(GatewayError::TimedOut(self.timeout)),
                Some(Err(GatewayError::Unreachable { .. }))
                    if monotonic_clock::now().saturating_add(pause.as_nanos() as u64)
                        < deadline =>
                {
                    monotonic_clock::wait_for(pause.as_nanos() as u64).await;
                    pause *= 2;
                }
                Some(result) => break result?,
            }
        };
        if !(200..300).contains(&status) {
            let message = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => error.message,
                Err(_) => String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            };
            return Err(GatewayError::Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::BadAnswer(e.to_string()))
    }

    /// One request and its whole answer: the status and the body.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Vec<u8>), GatewayError> {
        let unreachable = |detail: String| GatewayError::Unreachable {
            authority: self.url.authority.clone(),
            detail,
        };
        let scheme = if self.url.https { "https" } else { "http" };
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!(
                "{scheme}://{}{}{path}",
                self.url.authority, self.url.base_path
            ))
            .header("accept", "application/json");
        if let Some(trace) = &self.trace {
            request = trace.inject(request);
        }
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .header("content-length", body.len());
        }
        // Only fails on values the config already ruled out.
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = spin_sdk::http::send(request).await.map_err(|e| match e {
            ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionTimeout => {
                GatewayError::TimedOut(self.timeout)
            }
            other => unreachable(describe(&other)),
        })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| GatewayError::BadAnswer(format!("{e:?}")))?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_ANSWER_BYTES {
                    return Err(GatewayError::BadAnswer("answer too large".into()));
                }
            }
        }
        Ok((status, bytes))
    }
}

/// `work`'s output, or `None` once the clock passes `deadline`; `work` is dropped
/// (and its call cancelled) then.
pub async fn within<T>(deadline: Mark, work: impl Future<Output = T>) -> Option<T> {
    let mut work = pin!(work);
    let mut timer = pin!(monotonic_clock::wait_until(deadline));
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            Poll::Ready(Some(output))
        } else if timer.as_mut().poll(cx).is_ready() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

fn describe(error: &ErrorCode) -> String {
    match error {
        ErrorCode::DnsError(dns) => format!(
            "DNS lookup failed ({})",
            dns.rcode.as_deref().unwrap_or("no such host")
        ),
        ErrorCode::ConnectionRefused => "connection refused".into(),
        other => format!("{other:?}"),
    }
}
