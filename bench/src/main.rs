//! `counter-bench`: drives the whole hit path (HTTP client → web component in
//! wasmtime → gateway → store) at several concurrency levels, side by side with
//! - the same path and static page on Spin, when `SPIN` names a Spin CLI;
//! - badges over many named counters, keys picked by a Zipf law: what counting
//!   on a named counter costs next to the tutorial's one counter;
//! - the gateway alone (its hit endpoint hit directly): what the component and
//!   runtime cost;
//! - batches of 256 page hits on counters never hit before, at the gateway: the
//!   long tail of a public badge service;
//! - the same runtime answering a static page: the web tier's ceiling;
//! - with `AEROSPIKE_HOSTS` set, the tutorial's Flask app on the same Aerospike
//!   server, under Flask's own server and under gunicorn: the baseline.
//!
//! Prints a table, checks that the stored totals equal the hits acknowledged and
//! that every acknowledged hit got its own N (per key, for badges), and writes the
//! figures as JSON.
//! `scripts/bench` builds everything and runs this.

mod badges;
mod cpu;
mod door;
mod load;
mod otlp_sink;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use e2e::{Artifacts, Backend, Gateway, Process, Runtime, Web, free_port};

use crate::badges::{BadgeKeys, BadgeTally};
use crate::cpu::Tiers;
use crate::load::{Ask, Target};
use crate::report::{Row, SPIN_HAPROXY_AEROSPIKE, Table};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks the awesome-counter hit path")]
struct Args {
    /// Seconds of load per target and concurrency level.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Where the figures go as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// The static-page component, the runtime's ceiling.
    #[arg(long, default_value = "target/wasm32-wasip2/release/static_page.wasm")]
    static_component: PathBuf,
    /// A Python with flask, gunicorn and aerospike, to run the tutorial's app.
    #[arg(long, env = "TUTORIAL_PYTHON")]
    python: Option<PathBuf>,
    /// Where the tutorial's app.py is.
    #[arg(long, default_value = "bench/tutorial")]
    tutorial_dir: PathBuf,
    /// Named counters the badge rows spread their hits over.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    badge_keys: u32,
    /// The exponent of the Zipf law the badge rows pick keys by: 1 is the classic
    /// law of page popularity, 0 spreads hits evenly.
    #[arg(long, default_value_t = 1.0)]
    badge_zipf: f64,
}

/// The target: the badge path stays within 20% of the tutorial page's hits/s.
const BADGE_FLOOR: f64 = 0.8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.badge_zipf.is_finite() && args.badge_zipf >= 0.0,
        "--badge-zipf must be a number from 0 up, not {}",
        args.badge_zipf
    );
    let duration = Duration::from_secs(args.duration);
    let keys = Arc::new(BadgeKeys::new(args.badge_keys, args.badge_zipf));
    let dir = tempfile::tempdir()?;
    let artifacts = Artifacts::get();
    eprintln!(
        "gateway {}\ncomponent {}\nruntime {}",
        artifacts.gateway_bin.display(),
        artifacts.component.display(),
        artifacts.wasmtime.display()
    );
    let mut table = Table::new(duration);

    // The embedded store, fresh.
    let gateway = Gateway::start(Backend::Embedded, &dir.path().join("embedded"), dir.path()).await;
    let web = Web::start(&gateway.url, "bench-web", dir.path(), &[]).await;
    let ceiling = Web::serve(
        &args.static_component,
        &gateway.url,
        "bench-static",
        dir.path(),
        &[],
    )
    .await;
    let badge_row = badge_row_name(&args, "embedded");
    table.compare(&badge_row, "full path, embedded", Some(BADGE_FLOOR));
    let full_path = Tiers::full_path(web.pid(), gateway.pid()).with_calls_from(&gateway.url);
    let gateway_alone = Tiers::gateway(gateway.pid());
    let targets = [
        (
            target("full path, embedded", &web.url, Ask::CounterPage),
            full_path.clone(),
        ),
        (
            target(&badge_row, &web.url, Ask::Badge(keys.clone())),
            full_path,
        ),
        (
            target(
                "gateway alone, embedded",
                &gateway.url,
                Ask::GatewayHit {
                    server: "bench-direct".into(),
                },
            ),
            gateway_alone.clone(),
        ),
        (
            target(
                "distinct keys, gateway alone, embedded",
                &gateway.url,
                distinct_keys(),
            ),
            gateway_alone,
        ),
        (
            target("static page (ceiling)", &ceiling.url, Ask::AnyPage),
            Tiers::web(ceiling.pid()),
        ),
    ];
    let mut targets = targets.to_vec();
    // The same component and the same static page on Spin, the runtime users run,
    // when there is a Spin CLI (SPIN): its figures next to wasmtime's.
    let _spin_webs = match &artifacts.spin {
        Some(_) => {
            let ceiling = Web::serve_on(
                Runtime::Spin,
                &args.static_component,
                &gateway.url,
                "bench-spin-static",
                dir.path(),
                &[],
            )
            .await;
            let web = spin_full_path(
                &mut table,
                &mut targets,
                &gateway,
                ("embedded", None),
                dir.path(),
            )
            .await;
            targets.push((
                target(SPIN_CEILING, &ceiling.url, Ask::AnyPage),
                Tiers::web(ceiling.pid()),
            ));
            Some((web, ceiling))
        }
        None => {
            eprintln!("SPIN does not name a Spin CLI: no Spin rows");
            None
        }
    };
    let acknowledged = run_all(&mut table, &targets, &args.concurrency, duration, 0).await;
    check_totals(&gateway, 0, acknowledged.hits, &table).await?;
    traced_full_path(&mut table, &args, duration, dir.path()).await?;
    check_badges(
        &gateway,
        &keys,
        &acknowledged.badges,
        &badge_row,
        &mut table,
    )
    .await?;

    if let Some(hosts) = Backend::aerospike_hosts() {
        // The node the tutorial's app and the CPU figures look at: the first seed.
        let seed = hosts.split(',').next().unwrap_or_default().trim();
        let (host, port) = seed.split_once(':').unwrap_or((seed, "3000"));
        let seed = format!("{host}:{port}");
        let gateway =
            Gateway::start(Backend::Aerospike, &dir.path().join("unused"), dir.path()).await;
        let web = Web::start(&gateway.url, "bench-web-aerospike", dir.path(), &[]).await;
        let base = gateway.summary().await.total_hits;
        let badge_row = badge_row_name(&args, "Aerospike");
        table.compare(&badge_row, "full path, Aerospike", Some(BADGE_FLOOR));
        let full_path = Tiers::full_path(web.pid(), gateway.pid())
            .with_calls_from(&gateway.url)
            .with_local_asd(&seed);
        let gateway_alone = Tiers::gateway(gateway.pid()).with_local_asd(&seed);
        let targets = [
            (
                target("full path, Aerospike", &web.url, Ask::CounterPage),
                full_path.clone(),
            ),
            (
                target(&badge_row, &web.url, Ask::Badge(keys.clone())),
                full_path,
            ),
            (
                target(
                    "gateway alone, Aerospike",
                    &gateway.url,
                    Ask::GatewayHit {
                        server: "bench-direct-aerospike".into(),
                    },
                ),
                gateway_alone.clone(),
            ),
            (
                target(
                    "distinct keys, gateway alone, Aerospike",
                    &gateway.url,
                    distinct_keys(),
                ),
                gateway_alone,
            ),
        ];
        let mut targets = targets.to_vec();
        let _spin_web = match &artifacts.spin {
            Some(_) => {
                let web = spin_full_path(
                    &mut table,
                    &mut targets,
                    &gateway,
                    ("Aerospike", Some(&seed)),
                    dir.path(),
                )
                .await;
                let door = match door::find() {
                    Some(haproxy) => {
                        let authority = web.url.trim_start_matches("http://");
                        let (door, url) = door::start(&haproxy, authority, dir.path()).await;
                        let tiers = Tiers::full_path(web.pid(), gateway.pid())
                            .with_door(door.pid().as_raw())
                            .with_calls_from(&gateway.url)
                            .with_local_asd(&seed);
                        targets.push((
                            target(SPIN_HAPROXY_AEROSPIKE, &url, Ask::CounterPage),
                            tiers,
                        ));
                        Some(door)
                    }
                    None => {
                        table.note(
                            "no haproxy (HAPROXY, PATH or /usr/sbin): no row behind HAProxy".into(),
                        );
                        None
                    }
                };
                Some((web, door))
            }
            None => None,
        };
        let acknowledged = run_all(&mut table, &targets, &args.concurrency, duration, base).await;
        check_totals(&gateway, base, acknowledged.hits, &table).await?;
        check_badges(
            &gateway,
            &keys,
            &acknowledged.badges,
            &badge_row,
            &mut table,
        )
        .await?;

        match &args.python {
            Some(python) => {
                for server in [TutorialServer::Flask, TutorialServer::Gunicorn] {
                    let (process, authority) = server
                        .start(python, &args.tutorial_dir, &seed, dir.path())
                        .await?;
                    let base = gateway.summary().await.total_hits;
                    let tutorial = target(
                        server.name(),
                        &format!("http://{authority}"),
                        Ask::CounterPage,
                    );
                    let tiers = Tiers::web(process.pid().as_raw()).with_local_asd(&seed);
                    let acknowledged = run_all(
                        &mut table,
                        &[(tutorial, tiers)],
                        &args.concurrency,
                        duration,
                        base,
                    )
                    .await
                    .hits;
                    let counted = gateway.summary().await.total_hits - base;
                    table.note(format!(
                        "{}: {acknowledged} hits acknowledged, total_hits grew by {counted}",
                        server.name()
                    ));
                    process.stop().await;
                }
            }
            None => table.note(
                "the tutorial's app was not run: no --python (scripts/bench provides one)".into(),
            ),
        }
    } else {
        table.note("AEROSPIKE_HOSTS is not set: no Aerospike runs, and no tutorial baseline (it needs Aerospike)".into());
    }

    table.print();
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&table.to_json())?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("figures written to {}", args.json.display());
    Ok(())
}

/// The full path on the embedded store with the gateway exporting every span
/// over OTLP to a stand-in collector: next to "full path, embedded", what
/// tracing costs when it is on (off, the gateway installs no span layer).
async fn traced_full_path(
    table: &mut Table,
    args: &Args,
    duration: Duration,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    const ROW: &str = "full path, embedded, traces exported";
    let collector = otlp_sink::start().await?;
    let gateway = Gateway::start_with(
        Backend::Embedded,
        &dir.join("embedded-traced"),
        dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            // Every span of a busy gateway, none dropped for a full queue.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ],
    )
    .await;
    let web = Web::start(&gateway.url, "bench-web-traced", dir, &[]).await;
    let tiers = Tiers::full_path(web.pid(), gateway.pid()).with_calls_from(&gateway.url);
    table.compare(ROW, "full path, embedded", None);
    let targets = [(target(ROW, &web.url, Ask::CounterPage), tiers)];
    let acknowledged = run_all(table, &targets, &args.concurrency, duration, 0).await;
    check_totals(&gateway, 0, acknowledged.hits, table).await
}

/// The row of Spin's static-page ceiling.
const SPIN_CEILING: &str = "static page on Spin (ceiling)";

/// Adds "full path on Spin, <store>" against `gateway` to the run, compared with
/// Spin's ceiling; `store` is the store's name and, for Aerospike, its seed node.
/// The web component it starts must live as long as the run.
async fn spin_full_path(
    table: &mut Table,
    targets: &mut Vec<(Target, Tiers)>,
    gateway: &Gateway,
    (store, seed): (&str, Option<&str>),
    dir: &std::path::Path,
) -> Web {
    let web = Web::start_on(
        Runtime::Spin,
        &gateway.url,
        &format!("bench-spin-{}", store.to_lowercase()),
        dir,
        &[],
    )
    .await;
    let name = format!("full path on Spin, {store}");
    table.compare(&name, SPIN_CEILING, None);
    let tiers = Tiers::full_path(web.pid(), gateway.pid()).with_calls_from(&gateway.url);
    let tiers = match seed {
        Some(seed) => tiers.with_local_asd(seed),
        None => tiers,
    };
    targets.push((target(&name, &web.url, Ask::CounterPage), tiers));
    web
}

fn target(name: &str, url: &str, ask: Ask) -> Target {
    Target {
        name: name.to_owned(),
        authority: url.trim_start_matches("http://").to_owned(),
        ask,
    }
}

/// Batches of page hits on counters unique to this run, each hit a new one.
fn distinct_keys() -> Ask {
    Ask::DistinctKeys {
        prefix: format!("bench-{}/distinct", uuid::Uuid::now_v7().simple()),
    }
}

/// The badge row's name, e.g. `badges, 10k keys Zipf, embedded`.
fn badge_row_name(args: &Args, store: &str) -> String {
    let keys = match args.badge_keys {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    };
    // The exponent shows only when it is not the usual 1, so rows stay comparable
    // across runs by name.
    let law = if args.badge_zipf == 1.0 {
        "Zipf".to_owned()
    } else {
        format!("Zipf {}", args.badge_zipf)
    };
    format!("badges, {keys} keys {law}, {store}")
}

/// What one store acknowledged over a set of targets.
struct Acknowledged {
    /// Hits on the tutorial's counter (`total_hits`).
    hits: u64,
    /// Badge hits, with the N each showed, by key.
    badges: BadgeTally,
}

/// Runs every target at every level; answers what was acknowledged, after noting
/// whether each hit on the tutorial's counter got a distinct N above `base`.
async fn run_all(
    table: &mut Table,
    targets: &[(Target, Tiers)],
    levels: &[usize],
    duration: Duration,
    base: u64,
) -> Acknowledged {
    let mut acknowledged = Acknowledged {
        hits: 0,
        badges: BadgeTally::default(),
    };
    let mut counts = Vec::new();
    for (target, tiers) in targets {
        for &clients in levels {
            if let Some(pid) = tiers.gateway {
                reset_peak_rss(pid);
            }
            let before = tiers.read();
            let calls_before = calls(tiers).await;
            let outcome = load::run(target, clients, duration).await;
            let cost = tiers.read().since(&before, outcome.ok);
            let hits_per_call = match (calls_before, calls(tiers).await) {
                (Some((hits0, calls0)), Some((hits1, calls1))) if calls1 > calls0 => {
                    Some((hits1 - hits0) / (calls1 - calls0))
                }
                _ => None,
            };
            let peak_rss = tiers.gateway.and_then(peak_rss_bytes);
            if matches!(target.ask, Ask::CounterPage | Ask::GatewayHit { .. }) {
                acknowledged.hits += outcome.ok;
            }
            counts.extend_from_slice(&outcome.counts);
            acknowledged.badges.add(&outcome.key_counts);
            eprintln!(
                "{:<34} {clients:>4} clients: {:>9.0} hits/s, {} errors, {:.0} µs CPU per hit",
                target.name,
                outcome.ok as f64 / outcome.elapsed.as_secs_f64(),
                outcome.errors,
                cost.all_us().unwrap_or(f64::NAN)
            );
            table.push(Row::new(
                target,
                clients,
                &outcome,
                peak_rss,
                cost,
                hits_per_call,
            ));
        }
    }
    counts.sort_unstable();
    let distinct = counts.windows(2).all(|w| w[0] != w[1]);
    let in_range = counts.first().is_none_or(|&n| n > base);
    table.note(format!(
        "{}: {} counts answered, all distinct and above the starting total: {}",
        // Badge hits count on their own keys, checked by `check_badges`.
        targets
            .iter()
            .filter(|(t, _)| !matches!(t.ask, Ask::Badge(_)))
            .map(|(t, _)| t.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        counts.len(),
        distinct && in_range
    ));
    acknowledged
}

async fn check_totals(
    gateway: &Gateway,
    base: u64,
    acknowledged: u64,
    table: &Table,
) -> anyhow::Result<()> {
    let summary = gateway.summary().await;
    let counted = summary.total_hits - base;
    let per_server: u64 = summary
        .servers
        .iter()
        .filter(|s| s.server.as_str().starts_with("bench-"))
        .map(|s| s.total)
        .sum();
    eprintln!(
        "stored total {counted} (per-server {per_server}) for {acknowledged} acknowledged hits"
    );
    ensure!(
        counted == acknowledged,
        "the store counted {counted} hits but {acknowledged} were acknowledged\n{}",
        table.render()
    );
    Ok(())
}

/// Fails unless every key the badges hit counted exactly the hits acknowledged on
/// it, each with its own N.
async fn check_badges(
    gateway: &Gateway,
    keys: &Arc<BadgeKeys>,
    tally: &BadgeTally,
    row: &str,
    table: &mut Table,
) -> anyhow::Result<()> {
    let authority = gateway.url.trim_start_matches("http://");
    let check = badges::check(authority, keys, tally).await?;
    eprintln!(
        "{row}: {} keys touched, {} problems",
        check.keys_touched,
        check.problems.len()
    );
    ensure!(
        check.hits > 0,
        "{row}: no badge hit was acknowledged\n{}",
        table.render()
    );
    ensure!(
        check.problems.is_empty(),
        "{row}: {} of {} keys did not count their badge hits exactly:\n{}\n{}",
        check.problems.len(),
        check.keys_touched,
        check
            .problems
            .iter()
            .take(20)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        table.render()
    );
    table.note(format!(
        "{row}: {} badge hits acknowledged on {} of {} keys (the most hit key took {:.1}%); \
         per key, counts distinct and stored total equal to the hits acknowledged: true",
        check.hits,
        check.keys_touched,
        keys.count(),
        check.top_share * 100.0
    ));
    Ok(())
}

/// The hits and the batch calls the gateway has received from the web tier,
/// all kinds together (`gateway_hits_per_call`'s sum and count).
async fn calls(tiers: &Tiers) -> Option<(f64, f64)> {
    let url = tiers.gateway_url.as_ref()?;
    let (status, text) = e2e::get_text(&format!("{url}/metrics")).await;
    if !status.is_success() {
        return None;
    }
    let (mut hits, mut calls) = (0.0, 0.0);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("gateway_hits_per_call_sum") {
            hits += value;
        } else if name.starts_with("gateway_hits_per_call_count") {
            calls += value;
        }
    }
    Some((hits, calls))
}

/// Zeroes the kernel's high-water mark of the process's resident set.
fn reset_peak_rss(pid: i32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak_rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Clone, Copy)]
enum TutorialServer {
    /// `python app.py`: Flask's own server with `debug=True`, as printed.
    Flask,
    /// gunicorn, one worker per core: what a Python user would deploy.
    Gunicorn,
}

impl TutorialServer {
    fn name(self) -> &'static str {
        match self {
            Self::Flask => "tutorial app, Flask debug",
            Self::Gunicorn => "tutorial app, gunicorn",
        }
    }

    async fn start(
        self,
        python: &std::path::Path,
        app_dir: &std::path::Path,
        aerospike: &str,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<(Process, String)> {
        let (host, port) = aerospike.split_once(':').unwrap_or((aerospike, "3000"));
        let mut command = tokio::process::Command::new(python);
        command
            .current_dir(app_dir)
            .env("AEROSPIKE_HOST", host)
            .env("AEROSPIKE_PORT", port);
        let authority = match self {
            // As printed: app.run(host="0.0.0.0", debug=True) on Flask's port 5000.
            Self::Flask => {
                command.arg("app.py");
                "127.0.0.1:5000".to_owned()
            }
            Self::Gunicorn => {
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                let authority = format!("127.0.0.1:{}", free_port());
                command.args([
                    "-m",
                    "gunicorn",
                    "--workers",
                    &workers.to_string(),
                    "--bind",
                    &authority,
                    "app:app",
                ]);
                authority
            }
        };
        let process = Process::spawn(
            &format!("tutorial-{}", self.name().replace([' ', ','], "-")),
            command,
            log_dir,
        );
        // Wait for the port only: a GET / would count a hit.
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&authority).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok((process, authority));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "{} did not listen on {authority} within 30 s:\n{}",
            self.name(),
            process.log_text()
        )
    }
}
