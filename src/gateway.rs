//! The component's side of the gateway API: one bounded HTTP call per operation.
//!
//! Built on the raw wasi:http@0.2.0 calls rather than `spin_sdk::http::send`,
//! because the gateway call must end within a deadline whatever the gateway does
//! (down, slow, or trickling bytes), and `send` has no way to pass timeouts. The
//! wait uses a monotonic-clock pollable as well as the request options, so the
//! deadline holds in any runtime, whichever options it honours.

use std::time::Duration;

use counter_api::{
    ApiError, Hit, LatestHits, PageHit, PageKey, PageRecorded, PageStats, PagesOverview, Recorded,
    Summary, paths,
};
use serde::de::DeserializeOwned;
use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use wasi::io::poll;
use wasi::io::streams::StreamError;

use crate::config::{Config, GatewayUrl};

/// Gateway answers are small JSON documents; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
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

pub struct Gateway<'a> {
    url: &'a GatewayUrl,
    timeout: Duration,
}

impl<'a> Gateway<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            url: &config.gateway,
            timeout: config.gateway_timeout,
        }
    }

    pub fn record_hit(&self, hit: &Hit) -> Result<Recorded, GatewayError> {
        let body = serde_json::to_vec(hit).expect("a hit always serialises");
        self.call(Method::Post, paths::HITS, Some(body))
    }

    pub fn summary(&self) -> Result<Summary, GatewayError> {
        self.call(Method::Get, paths::SUMMARY, None)
    }

    pub fn latest_hits(&self, limit: usize) -> Result<LatestHits, GatewayError> {
        let path = format!("{}?limit={limit}", paths::LATEST_HITS);
        self.call(Method::Get, &path, None)
    }

    pub fn record_page_hit(&self, hit: &PageHit) -> Result<PageRecorded, GatewayError> {
        let body = serde_json::to_vec(hit).expect("a page hit always serialises");
        self.call(Method::Post, paths::PAGE_HITS, Some(body))
    }

    /// `days` must be within the gateway's limit (1..=400).
    pub fn page_stats(&self, key: &PageKey, days: u32) -> Result<PageStats, GatewayError> {
        // Keys are URL-safe by construction: no escaping needed.
        let path = format!("{}/{key}?days={days}", paths::PAGES);
        self.call(Method::Get, &path, None)
    }

    pub fn pages_overview(&self, limit: usize, days: u32) -> Result<PagesOverview, GatewayError> {
        let path = format!("{}?limit={limit}&days={days}", paths::PAGES);
        self.call(Method::Get, &path, None)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, GatewayError> {
        let deadline = monotonic_clock::now().saturating_add(self.timeout.as_nanos() as u64);
        // A gateway that cannot be reached got nothing, and a hit carries its id, so
        // trying again is safe: it rides out a gateway replica being replaced, or
        // a name that does not resolve yet in a container that just started.
        let mut pause = Duration::from_millis(25);
        let response = loop {
            match self.send(method.clone(), path, body.clone(), deadline) {
                Err(GatewayError::Unreachable { .. })
                    if monotonic_clock::now().saturating_add(pause.as_nanos() as u64)
                        < deadline =>
                {
                    monotonic_clock::subscribe_duration(pause.as_nanos() as u64).block();
                    pause *= 2;
                }
                result => break result?,
            }
        };
        let status = response.status();
        let bytes = read_body(&response, deadline, self.timeout)?;
        if !(200..300).contains(&status) {
            let message = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => error.message,
                Err(_) => String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            };
            return Err(GatewayError::Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::BadAnswer(e.to_string()))
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        deadline: monotonic_clock::Instant,
    ) -> Result<IncomingResponse, GatewayError> {
        let unreachable = |detail: String| GatewayError::Unreachable {
            authority: self.url.authority.clone(),
            detail,
        };
        let mut headers = vec![("accept".to_owned(), b"application/json".to_vec())];
        if let Some(body) = &body {
            headers.push(("content-type".to_owned(), b"application/json".to_vec()));
            headers.push((
                "content-length".to_owned(),
                body.len().to_string().into_bytes(),
            ));
        }
        let headers = Fields::from_list(&headers).map_err(|e| unreachable(format!("{e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let scheme = if self.url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let path_with_query = format!("{}{path}", self.url.base_path);
        // These setters only fail on values the config already ruled out.
        let _ = request.set_method(&method);
        let _ = request.set_scheme(Some(&scheme));
        let _ = request.set_authority(Some(&self.url.authority));
        let _ = request.set_path_with_query(Some(&path_with_query));
        let outgoing_body = request.body().expect("a new request's body is taken once");

        let options = RequestOptions::new();
        let timeout = Some(self.timeout.as_nanos() as u64);
        // A runtime may refuse an option it does not support; the deadline below
        // still holds then.
        let _ = options.set_connect_timeout(timeout);
        let _ = options.set_first_byte_timeout(timeout);
        let _ = options.set_between_bytes_timeout(timeout);

        let future = outgoing_handler::handle(request, Some(options))
            .map_err(|e| unreachable(describe(&e)))?;
        if let Some(body) = body {
            let stream = outgoing_body
                .write()
                .expect("a body's stream is taken once");
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| unreachable(format!("sending the request: {e:?}")))?;
            }
            drop(stream);
        }
        OutgoingBody::finish(outgoing_body, None).map_err(|e| unreachable(describe(&e)))?;

        let ready = future.subscribe();
        let timer = monotonic_clock::subscribe_instant(deadline);
        loop {
            match future.get() {
                Some(Ok(Ok(response))) => return Ok(response),
                Some(Ok(Err(ErrorCode::ConnectionReadTimeout)))
                | Some(Ok(Err(ErrorCode::ConnectionTimeout))) => {
                    return Err(GatewayError::TimedOut(self.timeout));
                }
                Some(Ok(Err(error))) => return Err(unreachable(describe(&error))),
                Some(Err(())) => unreachable!("the response future is read once"),
                None if timer.ready() => return Err(GatewayError::TimedOut(self.timeout)),
                None => {
                    poll::poll(&[&ready, &timer]);
                }
            }
        }
    }
}

fn read_body(
    response: &IncomingResponse,
    deadline: monotonic_clock::Instant,
    timeout: Duration,
) -> Result<Vec<u8>, GatewayError> {
    let body = response
        .consume()
        .map_err(|()| GatewayError::BadAnswer("no body".into()))?;
    let stream = body
        .stream()
        .map_err(|()| GatewayError::BadAnswer("no body stream".into()))?;
    let ready = stream.subscribe();
    let timer = monotonic_clock::subscribe_instant(deadline);
    let mut bytes = Vec::new();
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if timer.ready() {
                    return Err(GatewayError::TimedOut(timeout));
                }
                poll::poll(&[&ready, &timer]);
            }
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_ANSWER_BYTES {
                    return Err(GatewayError::BadAnswer("answer too large".into()));
                }
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(GatewayError::BadAnswer(e.to_debug_string()));
            }
        }
    }
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
