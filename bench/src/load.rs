//! The load generator: `clients` keep-alive HTTP/1.1 connections, each sending its
//! next request as soon as the last is answered, for a fixed time.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a target is asked, and how its answer is judged.
#[derive(Debug, Clone)]
pub enum Ask {
    /// `GET /` answered `Hello World! I have been seen by N.`
    CounterPage,
    /// `POST /v1/hits` of a new hit, answered 201 with the hit's N.
    GatewayHit { server: String },
    /// `GET /` answered 200, whatever the body.
    AnyPage,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// `host:port`
    pub authority: String,
    pub ask: Ask,
}

pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of answered requests, in microseconds.
    pub latency: Histogram<u64>,
    /// The N each acknowledged hit was given, where the answer says.
    pub counts: Vec<u64>,
    pub first_error: Option<String>,
}

pub async fn run(target: &Target, clients: usize, duration: Duration) -> Outcome {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(target.clone(), deadline)))
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        let outcome = worker.await.expect("load worker");
        total.ok += outcome.ok;
        total.errors += outcome.errors;
        total
            .latency
            .add(&outcome.latency)
            .expect("same histogram bounds");
        total.counts.extend(outcome.counts);
        total.first_error = total.first_error.or(outcome.first_error);
    }
    total.elapsed = started.elapsed();
    total
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            // 1 µs to 60 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            counts: Vec::new(),
            first_error: None,
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn client(target: Target, deadline: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sender: Option<Sender> = None;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match ask_once(&target, &mut sender).await {
            Ok(count) => {
                outcome.ok += 1;
                let micros = sent.elapsed().as_micros().max(1) as u64;
                outcome.latency.saturating_record(micros);
                outcome.counts.extend(count);
            }
            Err(error) => {
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
                sender = None;
                // Do not spin on a target that refuses connections.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    outcome
}

async fn ask_once(target: &Target, sender: &mut Option<Sender>) -> anyhow::Result<Option<u64>> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(&target.authority).await?);
    }
    let sender = sender.as_mut().expect("connected above");
    sender.ready().await?;
    let request = match &target.ask {
        Ask::CounterPage | Ask::AnyPage => Request::builder()
            .method(Method::GET)
            .uri("/")
            .header("host", &target.authority)
            .body(Full::new(Bytes::new()))?,
        Ask::GatewayHit { server } => {
            let hit = serde_json::json!({
                "id": uuid::Uuid::now_v7().to_string(),
                "server": server,
                "ts": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
            });
            Request::builder()
                .method(Method::POST)
                .uri(counter_api::paths::HITS)
                .header("host", &target.authority)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(hit.to_string())))?
        }
    };
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body = std::str::from_utf8(&body).unwrap_or("<not UTF-8>");
    match &target.ask {
        Ask::CounterPage => {
            let n = body
                .strip_prefix("Hello World! I have been seen by ")
                .and_then(|rest| rest.strip_suffix('.'))
                .and_then(|n| n.parse().ok());
            match n {
                Some(n) if status == 200 => Ok(Some(n)),
                _ => anyhow::bail!("{status}: {}", body.chars().take(120).collect::<String>()),
            }
        }
        Ask::GatewayHit { .. } => {
            anyhow::ensure!(
                status == 201,
                "{status}: {}",
                body.chars().take(120).collect::<String>()
            );
            let recorded: counter_api::Recorded = serde_json::from_str(body)?;
            Ok(Some(recorded.total_hits))
        }
        Ask::AnyPage => {
            anyhow::ensure!(status == 200, "{status}");
            Ok(None)
        }
    }
}
