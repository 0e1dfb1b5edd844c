//! The benchmark's table, its ratios, and its JSON.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::CostPerHit;
use crate::load::{Outcome, Target};

const SPIN_AEROSPIKE: &str = "full path on Spin, Aerospike";
/// The same behind the stack's HAProxy on loopback: how users reach it.
pub const SPIN_HAPROXY_AEROSPIKE: &str = "full path on Spin behind HAProxy, Aerospike";
const WASMTIME_AEROSPIKE: &str = "full path, Aerospike";
const GUNICORN: &str = "tutorial app, gunicorn";

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub target: String,
    pub clients: usize,
    pub hits_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Peak resident set of the gateway during this run.
    pub gateway_peak_rss_mib: Option<f64>,
    /// CPU µs each tier spent per answered hit.
    pub cpu_us_per_hit: CostPerHit,
    /// Hits per batch call the gateway received from the web tier during this
    /// run (`gateway_hits_per_call`), where the row's hits go through the web tier.
    pub hits_per_call: Option<f64>,
}

impl Row {
    pub fn new(
        target: &Target,
        clients: usize,
        outcome: &Outcome,
        peak_rss: Option<u64>,
        cpu_us_per_hit: CostPerHit,
        hits_per_call: Option<f64>,
    ) -> Row {
        let ms = |q: f64| outcome.latency.value_at_quantile(q) as f64 / 1000.0;
        Row {
            target: target.name.clone(),
            clients,
            hits_per_sec: outcome.ok as f64 / outcome.elapsed.as_secs_f64(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            ok: outcome.ok,
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            gateway_peak_rss_mib: peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
            cpu_us_per_hit,
            hits_per_call,
        }
    }
}

/// Two rows whose hits/s the report divides, at every level both ran.
struct Comparison {
    ours: String,
    theirs: String,
    /// The least ratio aimed for, where there is a target.
    floor: Option<f64>,
}

/// A limit on one row's figure (a latency, a CPU cost) or on one row's CPU cost
/// against another's: the goals the README's "Performance" section sets.
enum Limit {
    /// The quantile `quantile` of `target`'s latency stays under `ms`.
    Latency {
        target: String,
        quantile: Quantile,
        ms: f64,
    },
    /// `tier`'s CPU per hit on `target` stays at or under `us`.
    TierCpu { target: String, tier: Tier, us: f64 },
    /// `target`'s calls to the gateway carry at least `hits` hits on average.
    HitsPerCall { target: String, hits: f64 },
    /// All tiers' CPU per hit on `ours` is at most `share` of `theirs`'.
    CpuShare {
        ours: String,
        theirs: String,
        share: f64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Quantile {
    P99,
    P999,
}

#[derive(Debug, Clone, Copy)]
enum Tier {
    Gateway,
    Asd,
}

struct Goal {
    clients: usize,
    limit: Limit,
}

/// How one goal came out.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub goal: String,
    pub clients: usize,
    pub measured: f64,
    pub limit: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub pair: String,
    pub clients: usize,
    pub ratio: f64,
    pub floor: Option<f64>,
}

pub struct Table {
    duration: Duration,
    rows: Vec<Row>,
    notes: Vec<String>,
    comparisons: Vec<Comparison>,
    goals: Vec<Goal>,
}

impl Table {
    /// A table with the comparisons the README quotes; [`Table::compare`] adds more.
    pub fn new(duration: Duration) -> Table {
        let mut table = Table {
            duration,
            rows: Vec::new(),
            notes: Vec::new(),
            comparisons: Vec::new(),
            goals: Vec::new(),
        };
        // The goals against the tutorial on one Aerospike node (README,
        // "Performance"); the ceilings are for reading, not goals.
        table.compare("full path, embedded", "static page (ceiling)", None);
        table.compare(SPIN_AEROSPIKE, GUNICORN, Some(2.0));
        table.compare(SPIN_HAPROXY_AEROSPIKE, GUNICORN, None);
        table.compare(SPIN_HAPROXY_AEROSPIKE, SPIN_AEROSPIKE, None);
        table.compare(WASMTIME_AEROSPIKE, GUNICORN, Some(2.0));
        table.compare(WASMTIME_AEROSPIKE, "tutorial app, Flask debug", None);
        // Issue 24: Spin at no more than half the tutorial's CPU per hit.
        for (ours, share) in [(SPIN_AEROSPIKE, 0.5), (WASMTIME_AEROSPIKE, 0.6)] {
            table.limit(
                64,
                Limit::CpuShare {
                    ours: ours.into(),
                    theirs: GUNICORN.into(),
                    share,
                },
            );
            for tier in [Tier::Gateway, Tier::Asd] {
                table.limit(
                    64,
                    Limit::TierCpu {
                        target: ours.into(),
                        tier,
                        us: 60.0,
                    },
                );
            }
        }
        for (target, clients, quantile, ms) in [
            (SPIN_AEROSPIKE, 1, Quantile::P999, 5.0),
            (SPIN_AEROSPIKE, 16, Quantile::P99, 10.0),
            (SPIN_HAPROXY_AEROSPIKE, 16, Quantile::P99, 10.0),
            (SPIN_AEROSPIKE, 64, Quantile::P99, 25.0),
        ] {
            table.limit(
                clients,
                Limit::Latency {
                    target: target.into(),
                    quantile,
                    ms,
                },
            );
        }
        table.limit(
            64,
            Limit::HitsPerCall {
                target: SPIN_AEROSPIKE.into(),
                hits: 8.0,
            },
        );
        table
    }

    /// Reports `ours` hits/s over `theirs` at each level, against `floor` if given.
    pub fn compare(&mut self, ours: &str, theirs: &str, floor: Option<f64>) {
        self.comparisons.push(Comparison {
            ours: ours.to_owned(),
            theirs: theirs.to_owned(),
            floor,
        });
    }

    fn limit(&mut self, clients: usize, limit: Limit) {
        self.goals.push(Goal { clients, limit });
    }

    /// Each goal whose rows ran.
    fn verdicts(&self) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for goal in &self.goals {
            let row = |name: &str| self.find(name, goal.clients);
            let (name, measured, limit, met) = match &goal.limit {
                Limit::Latency {
                    target,
                    quantile,
                    ms,
                } => {
                    let Some(r) = row(target) else { continue };
                    let (label, measured) = match quantile {
                        Quantile::P99 => ("p99", r.p99_ms),
                        Quantile::P999 => ("p99.9", r.p999_ms),
                    };
                    (
                        format!("{target}: {label} ms"),
                        measured,
                        format!("< {ms}"),
                        measured < *ms,
                    )
                }
                Limit::TierCpu { target, tier, us } => {
                    let Some(r) = row(target) else { continue };
                    let (label, measured) = match tier {
                        Tier::Gateway => ("gateway", r.cpu_us_per_hit.gateway_us),
                        Tier::Asd => ("asd", r.cpu_us_per_hit.asd_us),
                    };
                    let Some(measured) = measured else { continue };
                    (
                        format!("{target}: {label} CPU µs per hit"),
                        measured,
                        format!("≤ {us}"),
                        measured <= *us,
                    )
                }
                Limit::HitsPerCall { target, hits } => {
                    let Some(measured) = row(target).and_then(|r| r.hits_per_call) else {
                        continue;
                    };
                    (
                        format!("{target}: hits per gateway call"),
                        measured,
                        format!("≥ {hits}"),
                        measured >= *hits,
                    )
                }
                Limit::CpuShare {
                    ours,
                    theirs,
                    share,
                } => {
                    let (Some(a), Some(b)) = (row(ours), row(theirs)) else {
                        continue;
                    };
                    let (Some(a), Some(b)) = (a.cpu_us_per_hit.all_us(), b.cpu_us_per_hit.all_us())
                    else {
                        continue;
                    };
                    let measured = a / b;
                    (
                        format!("{ours} / {theirs}: CPU per hit, all tiers"),
                        measured,
                        format!("≤ {share}"),
                        measured <= *share,
                    )
                }
            };
            verdicts.push(Verdict {
                goal: name,
                clients: goal.clients,
                measured,
                limit,
                met,
            });
        }
        verdicts
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn find(&self, target: &str, clients: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.target == target && r.clients == clients)
    }

    /// Each comparison, at every level both sides ran.
    fn ratios(&self) -> Vec<Ratio> {
        let mut ratios = Vec::new();
        for c in &self.comparisons {
            for row in self.rows.iter().filter(|r| r.target == c.ours) {
                if let Some(other) = self.find(&c.theirs, row.clients)
                    && other.hits_per_sec > 0.0
                {
                    ratios.push(Ratio {
                        pair: format!("{} / {}", c.ours, c.theirs),
                        clients: row.clients,
                        ratio: row.hits_per_sec / other.hits_per_sec,
                        floor: c.floor,
                    });
                }
            }
        }
        ratios
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} s per run on {} cores\n",
            self.duration.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let _ = writeln!(
            out,
            "| target | clients | hits/s | p50 ms | p99 ms | p99.9 ms | errors | gateway peak RSS MiB \
             | CPU µs/hit: web | gateway | asd | all | hits/call |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let figure = |value: Option<f64>, digits: usize| {
            value.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
        };
        for r in &self.rows {
            let cpu = &r.cpu_us_per_hit;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                r.target,
                r.clients,
                r.hits_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.errors,
                figure(r.gateway_peak_rss_mib, 1),
                figure(cpu.web_us, 0),
                figure(cpu.gateway_us, 0),
                figure(cpu.asd_us, 0),
                figure(cpu.all_us(), 0),
                figure(r.hits_per_call, 1),
            );
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(
                out,
                "\n| hits/s ratio | clients | ratio | target |\n|---|---:|---:|---|"
            );
            for r in ratios {
                let target = r.floor.map_or("-".to_owned(), |floor| {
                    let verdict = if r.ratio >= floor { "met" } else { "MISSED" };
                    format!("≥ {floor:.2}: {verdict}")
                });
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {target} |",
                    r.pair, r.clients, r.ratio
                );
            }
        }
        let verdicts = self.verdicts();
        if !verdicts.is_empty() {
            let _ = writeln!(
                out,
                "\n| goal | clients | measured | target | |\n|---|---:|---:|---|---|"
            );
            for v in verdicts {
                let verdict = if v.met { "met" } else { "MISSED" };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {} | {verdict} |",
                    v.goal, v.clients, v.measured, v.limit
                );
            }
        }
        for row in self.rows.iter().filter(|r| r.errors > 0) {
            let _ = writeln!(
                out,
                "\n{} at {} clients, first error: {}",
                row.target,
                row.clients,
                row.first_error.as_deref().unwrap_or("?")
            );
        }
        let _ = writeln!(out);
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds_per_run": self.duration.as_secs(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rows": self.rows,
            "ratios": self.ratios(),
            "goals": self.verdicts(),
            "notes": self.notes,
        })
    }
}
