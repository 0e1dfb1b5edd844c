//! The awesome-counter gateway: the one service that owns the hit counter's data.
//!
//! Web replicas are Wasm components with no database driver; they post each hit
//! here over HTTP. The gateway holds one long-lived store handle per process (one
//! Aerospike client that follows the cluster, or an embedded redb file), batches
//! concurrent hits into group commits ([`recorder`]) and serves the totals.
//!
//! The data flow reads top to bottom: [`api`] parses a request into a
//! [`counter_api::Hit`], the [`recorder::Recorder`] batches it, and a
//! [`counter_store::Store`] writes the batch. With an OTLP endpoint configured, each
//! step is a span in the caller's trace ([`telemetry`]).

pub mod api;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod recorder;
pub mod telemetry;
pub mod visitors;

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api::AppState;
use crate::config::{Config, StoreChoice};
use crate::recorder::{HitKind, Recorder};
use counter_store::audit as reconcile;
use counter_store::{Events, Retention, Store};
use store_aerospike::AerospikeStore;
use store_embedded::EmbeddedStore;

/// Opens the configured store and serves the API until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    match config.store() {
        StoreChoice::Embedded { data_dir } => {
            let store = EmbeddedStore::open(&data_dir, metrics::store_events())?
                .retaining(config.page_hit_retention, config.hit_retention)
                .keeping_visitors(config.visitor_retention);
            tracing::info!(data_dir = %data_dir.display(), "using the embedded store");
            run(listener, store, &config).await
        }
        StoreChoice::Aerospike { seeds, namespace } => {
            let store = AerospikeStore::connect(
                &seeds,
                &namespace,
                config.store_timeout(),
                metrics::store_events(),
            )?
            .retaining(config.page_hit_retention, config.hit_retention)
            .keeping_visitors(config.visitor_retention);
            tracing::info!(?seeds, %namespace, "using Aerospike");
            run(listener, store, &config).await
        }
    }
}

/// Compares the `summary` counters with the hit records and, with `apply`, adds
/// the differences to the counters. See [`reconcile`].
pub async fn reconcile(config: Config, apply: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.hit_retention == Retention::FOREVER,
        "hit records expire here (HIT_RETENTION), so they no longer add up to the counters: \
         there is nothing to reconcile against"
    );
    match config.store() {
        StoreChoice::Embedded { data_dir } => {
            reconcile_store(EmbeddedStore::open(&data_dir, Events::none())?, apply).await
        }
        StoreChoice::Aerospike { seeds, namespace } => {
            let store = AerospikeStore::connect(
                &seeds,
                &namespace,
                config.store_timeout(),
                Events::none(),
            )?;
            reconcile_store(store, apply).await
        }
    }
}

async fn reconcile_store<S: Store>(store: S, apply: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while let Err(error) = store.check_ready().await {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{error}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let differences = reconcile::differences(&store).await?;
    if differences.is_empty() {
        println!("The summary counters match the hit records.");
        return Ok(());
    }
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "counter", "summary", "hit records", "change"
    );
    for d in &differences {
        println!(
            "{:<40} {:>12} {:>12} {:>+8}",
            d.key,
            d.counter,
            d.hit_records,
            d.delta()
        );
    }
    if apply {
        reconcile::apply(&store, &differences).await?;
        println!("Applied: each counter now equals its hit records.");
    } else {
        println!(
            "Nothing changed. With --apply, and no hits flowing, each change is added to its counter."
        );
    }
    Ok(())
}

async fn run<S: Store>(listener: TcpListener, store: S, config: &Config) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let recorder = group_commit(
        HitKind::Tutorial,
        &store,
        config,
        |store, hits| async move { store.record_hits(hits).await },
    );
    let page_recorder = group_commit(HitKind::Page, &store, config, |store, hits| async move {
        store.record_page_hits(hits).await
    });
    let visitors = visitors::VisitorHasher::new(store.clone());
    let app = api::router(AppState {
        store,
        recorder,
        page_recorder,
        visitors,
    })
    .layer(axum::middleware::from_fn(telemetry::continue_trace));
    tracing::info!("gateway listening on http://{}", listener.local_addr()?);
    let listener = listener::QuickAckListener::new(listener);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the API")?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The group commit of one kind of hit: batches of its hits, written by `write`
/// into the one store both kinds share.
fn group_commit<S, H, A, F>(
    kind: HitKind,
    store: &Arc<S>,
    config: &Config,
    write: fn(Arc<S>, Vec<H>) -> F,
) -> Recorder<H, A>
where
    S: Store,
    H: Send + 'static,
    A: recorder::Answer + Send + 'static,
    F: Future<Output = Vec<Result<A, counter_store::StoreError>>> + Send + 'static,
{
    let store = store.clone();
    Recorder::start(
        kind,
        move |hits| write(store.clone(), hits),
        config.max_batch(),
        config.store_timeout(),
    )
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// `GET url` over plain HTTP/1.1; Ok only on a 200. For container health checks in
/// images that have no curl.
pub async fn check_health(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // Read the whole answer: hanging up early makes the server log a reset.
        let mut answer = Vec::new();
        (&mut stream)
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), check)
        .await
        .with_context(|| format!("{url} did not answer within 3 s"))?
        .with_context(|| format!("requesting {url}"))?;
    let status_line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    anyhow::ensure!(
        status_line.starts_with("HTTP/1.1 200 "),
        "{url} answered {status_line:?}"
    );
    Ok(())
}
