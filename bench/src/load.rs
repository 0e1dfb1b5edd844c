//! The load generator: `clients` keep-alive HTTP/1.1 connections, each sending its
//! next request as soon as the last is answered, for a fixed time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::badges::{self, BadgeKeys};

/// What a target is asked, and how its answer is judged.
#[derive(Debug, Clone)]
pub enum Ask {
    /// `GET /` answered `Hello World! I have been seen by N.`
    CounterPage,
    /// `POST /v1/hits` of a new hit, answered 201 with the hit's N.
    GatewayHit { server: String },
    /// `GET /` answered 200, whatever the body.
    AnyPage,
    /// `GET /badge/<key>.svg` on a key picked by its popularity, answered 200 with
    /// the key's N in the SVG's title.
    Badge(Arc<BadgeKeys>),
    /// `POST /v1/page-hits/batch` of [`DISTINCT_BATCH`] hits, each on a counter
    /// never hit before (`<prefix>/<uuid>`), every one answered as counted with
    /// N = 1: a public badge service's long tail, at the gateway.
    DistinctKeys { prefix: String },
}

/// Hits per request of [`Ask::DistinctKeys`]: a web instance's batch.
pub const DISTINCT_BATCH: usize = 256;

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
    /// Same for hits on named counters: the key's rank and the hit's N.
    pub key_counts: Vec<(u32, u64)>,
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
        total.key_counts.extend(outcome.key_counts);
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
            key_counts: Vec::new(),
            first_error: None,
        }
    }
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(authority: &str) -> anyhow::Result<Sender> {
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
            Ok(counted) => {
                outcome.ok += match counted {
                    Counted::Batch(hits) => hits,
                    _ => 1,
                };
                let micros = sent.elapsed().as_micros().max(1) as u64;
                outcome.latency.saturating_record(micros);
                match counted {
                    Counted::Unknown | Counted::Batch(_) => {}
                    Counted::Hit(n) => outcome.counts.push(n),
                    Counted::KeyHit { rank, n } => outcome.key_counts.push((rank, n)),
                }
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

/// What an acknowledged answer says was counted.
enum Counted {
    /// Nothing, or nothing the answer tells.
    Unknown,
    /// A hit on the tutorial's counter, given this N.
    Hit(u64),
    /// A hit on the named counter of this rank, given this N.
    KeyHit { rank: u32, n: u64 },
    /// This many hits, each counted as asked.
    Batch(u64),
}

async fn ask_once(target: &Target, sender: &mut Option<Sender>) -> anyhow::Result<Counted> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(&target.authority).await?);
    }
    let sender = sender.as_mut().expect("connected above");
    sender.ready().await?;
    let (request, rank) = request(target)?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body = std::str::from_utf8(&body).unwrap_or("<not UTF-8>");
    if let Ask::DistinctKeys { .. } = target.ask {
        return judge_distinct(status, body);
    }
    let n = judge(&target.ask, status, body)?;
    Ok(match (rank, n) {
        (Some(rank), Some(n)) => Counted::KeyHit { rank, n },
        (None, Some(n)) => Counted::Hit(n),
        (_, None) => Counted::Unknown,
    })
}

/// The request to send, and the rank of the named counter it hits, if any: the
/// key is picked here, and the answer's N is filed under it.
fn request(target: &Target) -> anyhow::Result<(Request<Full<Bytes>>, Option<u32>)> {
    let get = |path: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", &target.authority)
            .body(Full::new(Bytes::new()))
    };
    let post = |path: &str, json: serde_json::Value| {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", &target.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json.to_string())))
    };
    Ok(match &target.ask {
        Ask::CounterPage | Ask::AnyPage => (get("/")?, None),
        Ask::GatewayHit { server } => {
            let hit = serde_json::json!({
                "id": uuid::Uuid::now_v7().to_string(),
                "server": server,
                "ts": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
            });
            (post(counter_api::paths::HITS, hit)?, None)
        }
        Ask::Badge(keys) => {
            let rank = keys.pick();
            (get(&format!("/badge/{}.svg", keys.key(rank)))?, Some(rank))
        }
        Ask::DistinctKeys { prefix } => {
            let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let hits: Vec<serde_json::Value> = (0..DISTINCT_BATCH)
                .map(|_| {
                    serde_json::json!({
                        "id": uuid::Uuid::now_v7().to_string(),
                        "key": format!("{prefix}/{}", uuid::Uuid::now_v7().simple()),
                        "ts": ts.as_millis() as u64,
                    })
                })
                .collect();
            let batch = serde_json::json!({ "hits": hits });
            (post(counter_api::paths::PAGE_HIT_BATCHES, batch)?, None)
        }
    })
}

/// A batch of hits on new counters: every hit counted, each its counter's first.
fn judge_distinct(status: hyper::StatusCode, body: &str) -> anyhow::Result<Counted> {
    anyhow::ensure!(
        status == 200,
        "{status}: {}",
        body.chars().take(120).collect::<String>()
    );
    let answer: counter_api::BatchOutcomes<counter_api::PageRecorded> = serde_json::from_str(body)?;
    anyhow::ensure!(answer.outcomes.len() == DISTINCT_BATCH, "outcomes missing");
    for outcome in &answer.outcomes {
        match outcome {
            counter_api::Outcome::Recorded(recorded)
                if recorded.total == 1 && !recorded.duplicate => {}
            other => anyhow::bail!("a hit on a new counter was answered {other:?}"),
        }
    }
    Ok(Counted::Batch(DISTINCT_BATCH as u64))
}

/// The N an answer gave its hit, if it says; an error if the answer is wrong.
fn judge(ask: &Ask, status: hyper::StatusCode, body: &str) -> anyhow::Result<Option<u64>> {
    let refused = || anyhow::anyhow!("{status}: {}", body.chars().take(120).collect::<String>());
    match ask {
        Ask::CounterPage => {
            let n = body
                .strip_prefix("Hello World! I have been seen by ")
                .and_then(|rest| rest.strip_suffix('.'))
                .and_then(|n| n.parse().ok());
            match n {
                Some(n) if status == 200 => Ok(Some(n)),
                _ => Err(refused()),
            }
        }
        Ask::GatewayHit { .. } => {
            if status != 201 {
                return Err(refused());
            }
            let recorded: counter_api::Recorded = serde_json::from_str(body)?;
            Ok(Some(recorded.total_hits))
        }
        Ask::AnyPage => {
            anyhow::ensure!(status == 200, "{status}");
            Ok(None)
        }
        Ask::Badge(_) => match badges::count_in_title(body) {
            Some(n) if status == 200 => Ok(Some(n)),
            _ => Err(refused()),
        },
        Ask::DistinctKeys { .. } => unreachable!("judged by judge_distinct"),
    }
}
