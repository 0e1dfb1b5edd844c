//! The benchmark's table, its ratios, and its JSON.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Outcome, Target};

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
}

impl Row {
    pub fn new(target: &Target, clients: usize, outcome: &Outcome, peak_rss: Option<u64>) -> Row {
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
}

impl Table {
    /// A table with the comparisons the README quotes; [`Table::compare`] adds more.
    pub fn new(duration: Duration) -> Table {
        let mut table = Table {
            duration,
            rows: Vec::new(),
            notes: Vec::new(),
            comparisons: Vec::new(),
        };
        // The floors are the goals set for the web tier on wasmtime and against the
        // tutorial (README, "Performance").
        table.compare("full path, embedded", "static page (ceiling)", Some(0.35));
        table.compare(
            "full path, Aerospike",
            "tutorial app, Flask debug",
            Some(10.0),
        );
        table.compare("full path, Aerospike", "tutorial app, gunicorn", Some(3.0));
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
            "| target | clients | hits/s | p50 ms | p99 ms | p99.9 ms | errors | gateway peak RSS MiB |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let rss = r
                .gateway_peak_rss_mib
                .map_or("-".to_owned(), |m| format!("{m:.1}"));
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                r.target, r.clients, r.hits_per_sec, r.p50_ms, r.p99_ms, r.p999_ms, r.errors, rss
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
            "notes": self.notes,
        })
    }
}
