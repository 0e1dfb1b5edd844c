//! Every setting of the gateway, from flags or the environment; nothing else reads either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use counter_store::Retention;

#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if a gateway answers 200 on its health URL: a container health check
    /// for images that ship no curl.
    CheckHealth {
        /// Default: /healthz on 127.0.0.1 at the port of GATEWAY_LISTEN.
        #[arg(long)]
        url: Option<String>,
    },
    /// Compare the `summary` counters with the hit records they count and, with
    /// --apply, correct the counters. Run it while no hits flow.
    Reconcile {
        #[arg(long)]
        apply: bool,
    },
}

/// How the gateway serves, and which store it uses.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to serve the HTTP API on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Directory of the embedded store, used when no Aerospike host is set.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Aerospike seed nodes, `host[:port]` (port 3000 if omitted) separated by commas.
    /// Selects the Aerospike store; the client discovers the rest of the cluster.
    #[arg(long, env = "AEROSPIKE_HOSTS", value_delimiter = ',')]
    pub aerospike_hosts: Vec<String>,

    /// One Aerospike seed node, as in the tutorial; used when AEROSPIKE_HOSTS is unset.
    #[arg(long, env = "AEROSPIKE_HOST")]
    pub aerospike_host: Option<String>,

    /// Aerospike namespace holding the `hits` and `summary` sets.
    #[arg(long, env = "AEROSPIKE_NAMESPACE", default_value = "test")]
    pub aerospike_namespace: String,

    /// Longest a store operation may take, retries included, before the request fails
    /// with 503. Longer than an Aerospike node's departure takes to be noticed and
    /// routed around (about 1.5 s with the shipped heartbeat), so hits wait
    /// through it instead of failing.
    #[arg(long, env = "STORE_TIMEOUT_MS", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_timeout_ms: u64,

    /// Most hits written together in one group commit.
    #[arg(long, env = "MAX_BATCH", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,

    /// How long a page hit's record (set `page_hits`) is kept: its idempotency
    /// window. A retry of the hit (the same id) inside it is not counted again;
    /// after it the record expires (on Aerospike by a record TTL, which needs
    /// `nsup-period` in the namespace; on the embedded store by a sweep), while
    /// totals, days and visitors stay. `<n>d`, `<n>h`, `<n>m` or `<n>s`; `0`
    /// keeps them forever.
    #[arg(long, env = "PAGE_HIT_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub page_hit_retention: Retention,

    /// How long a counter's unique visitors of a day (`page_visitors`) are
    /// kept after the last one was added: the day's visitor figure reads 0
    /// after it. A record TTL on Aerospike (needs `nsup-period`, as above), a
    /// sweep of whole days on the embedded store; totals and days of hits
    /// stay. The default is the longest chart's 400 days; `0` keeps them
    /// forever.
    #[arg(long, env = "VISITOR_RETENTION", default_value = "400d", value_parser = parse_retention)]
    pub visitor_retention: Retention,

    /// The same for the tutorial's hit records (set `hits`), which the tutorial
    /// keeps forever, as does the default (`0`). Once they expire, the audit
    /// can only check that each counter holds at least its hit records, and
    /// the gateway no longer repairs counters from them.
    #[arg(long, env = "HIT_RETENTION", default_value = "0", value_parser = parse_retention)]
    pub hit_retention: Retention,

    /// Threads serving requests and store calls. One is the default: a hit's work
    /// hops between the connection, the group commit and the store client, and
    /// on one thread those hops are not cross-thread wake-ups, which cost more
    /// CPU per hit than a second thread brings (README, "Performance"). Raise it
    /// on a gateway with cores to spare, or run more gateways.
    #[arg(long, env = "GATEWAY_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

    #[command(flatten)]
    pub tracing: TracingConfig,
}

/// Where the gateway's spans go, from the standard OpenTelemetry variables. With
/// no endpoint set no span is recorded at all. The exporter reads the rest of the
/// standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
/// `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Debug, Clone, Args)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP receiver, e.g. an OpenTelemetry Collector at
    /// http://otel-collector:4318; spans go to its /v1/traces. Unset: no tracing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = otlp_url)]
    pub otlp_endpoint: Option<String>,

    /// The full URL spans are posted to, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = otlp_url)]
    pub otlp_traces_endpoint: Option<String>,

    /// The gateway speaks only `http/protobuf` (a collector's port 4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = otlp_protocol)]
    pub otlp_protocol: Option<String>,

    /// Wins over OTEL_EXPORTER_OTLP_PROTOCOL; again only `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value_parser = otlp_protocol)]
    pub otlp_traces_protocol: Option<String>,

    /// `otlp` (the default) or `none`, which turns tracing off whatever the endpoint.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_parser = traces_exporter)]
    pub traces_exporter: Option<String>,

    /// `true` turns tracing off whatever the endpoint.
    #[arg(long, env = "OTEL_SDK_DISABLED", value_parser = sdk_disabled)]
    pub otel_sdk_disabled: Option<bool>,

    /// The `service.name` the spans carry.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "aerospike-gateway")]
    pub service_name: String,
}

/// Where spans go, once the settings turned tracing on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The URL spans are posted to (`.../v1/traces`).
    pub traces_url: String,
    pub service_name: String,
}

impl TracingConfig {
    /// `None` when tracing is off: no endpoint, or turned off explicitly.
    pub fn export(&self) -> Option<TraceExport> {
        if self.otel_sdk_disabled == Some(true) || self.traces_exporter.as_deref() == Some("none") {
            return None;
        }
        // As the OTLP specification says: the signal's own URL is used as is, the
        // base URL gets the signal's path appended.
        // An empty variable is an unset one (as compose files pass them on).
        let set = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let traces_url = match (set(&self.otlp_traces_endpoint), set(&self.otlp_endpoint)) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return None,
        };
        Some(TraceExport {
            traces_url,
            service_name: self.service_name.clone(),
        })
    }
}

/// An `http://` URL with a host. No TLS client is built in: in a deployment the
/// collector is a service on the same private network.
fn otlp_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    let host = value
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() && value.parse::<axum::http::Uri>().is_ok() => {
            Ok(value.to_owned())
        }
        _ if value.starts_with("https://") => Err(format!(
            "{value:?}: the gateway exports spans over plain http:// only; \
             send them to a collector on the same network (e.g. http://otel-collector:4318)"
        )),
        _ => Err(format!(
            "{value:?} is not an http:// URL with a host, e.g. http://otel-collector:4318"
        )),
    }
}

fn otlp_protocol(value: &str) -> Result<String, String> {
    if value.is_empty() || value == "http/protobuf" {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "the gateway exports OTLP as http/protobuf only, not {value:?}; \
             point it at the collector's OTLP/HTTP port (4318)"
        ))
    }
}

fn traces_exporter(value: &str) -> Result<String, String> {
    match value {
        "" | "otlp" | "none" => Ok(value.to_owned()),
        _ => Err(format!(
            "{value:?}: the gateway exports spans over OTLP (`otlp`) or not at all (`none`)"
        )),
    }
}

fn sdk_disabled(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "" | "false" => Ok(false),
        "true" => Ok(true),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// `<n>d`, `<n>h`, `<n>m`, `<n>s`, or `0` for forever.
fn parse_retention(text: &str) -> Result<Retention, String> {
    const HINT: &str = "a retention is <n>d, <n>h, <n>m or <n>s (e.g. 7d), or 0 to keep forever";
    let text = text.trim();
    if text == "0" {
        return Ok(Retention::FOREVER);
    }
    let unit = match text.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3_600,
        Some('m') => 60,
        Some('s') => 1,
        _ => return Err(HINT.into()),
    };
    let n: u64 = text[..text.len() - 1]
        .parse()
        .map_err(|_| HINT.to_owned())?;
    // Aerospike's TTLs are 32-bit seconds; ten years is plenty.
    match n.checked_mul(unit) {
        Some(0) => Ok(Retention::FOREVER),
        Some(secs) if secs <= 10 * 366 * 86_400 => Ok(Retention(Some(Duration::from_secs(secs)))),
        _ => Err(format!("{text} is longer than ten years; {HINT}")),
    }
}

/// Which store the settings select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Embedded {
        data_dir: PathBuf,
    },
    Aerospike {
        seeds: Vec<String>,
        namespace: String,
    },
}

impl Config {
    pub fn store(&self) -> StoreChoice {
        let mut seeds: Vec<String> = self
            .aerospike_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if seeds.is_empty()
            && let Some(host) = self.aerospike_host.as_deref().map(str::trim)
            && !host.is_empty()
        {
            seeds.push(host.to_owned());
        }
        if seeds.is_empty() {
            StoreChoice::Embedded {
                data_dir: self.data_dir.clone(),
            }
        } else {
            StoreChoice::Aerospike {
                seeds,
                namespace: self.aerospike_namespace.clone(),
            }
        }
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_parse_with_their_unit() {
        let secs = |text: &str| parse_retention(text).map(|r| r.0.map(|d| d.as_secs()));
        assert_eq!(secs("7d"), Ok(Some(604_800)));
        assert_eq!(secs("12h"), Ok(Some(43_200)));
        assert_eq!(secs("3s"), Ok(Some(3)));
        assert_eq!(secs("0"), Ok(None));
        assert_eq!(secs("0d"), Ok(None));
        for bad in ["7", "d", "-1d", "7w", "99999d"] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&[]).page_hit_retention,
            Retention(Some(Duration::from_secs(7 * 86_400))),
            "a week by default"
        );
        assert_eq!(
            parse(&[]).hit_retention,
            Retention::FOREVER,
            "as the tutorial"
        );
        assert_eq!(
            parse(&[]).visitor_retention,
            Retention(Some(Duration::from_secs(400 * 86_400))),
            "the longest chart"
        );
        assert_eq!(
            parse(&["--visitor-retention", "0"]).visitor_retention,
            Retention::FOREVER
        );
    }

    /// Parses flags only: the environment of whoever runs the tests (say,
    /// AEROSPIKE_HOSTS for the Aerospike suites) must not leak in.
    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(
            std::iter::once("aerospike-gateway").chain(args.iter().copied()),
        )?;
        Cli::from_arg_matches(&matches)
    }

    fn parse(args: &[&str]) -> Config {
        try_parse(args).unwrap().serve
    }

    #[test]
    fn embedded_by_default() {
        let config = parse(&["--data-dir", "/tmp/x"]);
        assert_eq!(
            config.store(),
            StoreChoice::Embedded {
                data_dir: "/tmp/x".into()
            }
        );
    }

    #[test]
    fn aerospike_hosts_win_over_the_tutorials_single_host() {
        let config = parse(&[
            "--aerospike-hosts",
            "a:3000, b ,c:3010",
            "--aerospike-host",
            "ignored",
        ]);
        assert_eq!(
            config.store(),
            StoreChoice::Aerospike {
                seeds: vec!["a:3000".into(), "b".into(), "c:3010".into()],
                namespace: "test".into()
            }
        );
        let single = parse(&["--aerospike-host", "prod_aerospike_1"]);
        assert_eq!(
            single.store(),
            StoreChoice::Aerospike {
                seeds: vec!["prod_aerospike_1".into()],
                namespace: "test".into()
            }
        );
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_set() {
        assert_eq!(parse(&[]).tracing.export(), None);
        let on = parse(&["--otlp-endpoint", "http://collector:4318/"]);
        assert_eq!(
            on.tracing.export(),
            Some(TraceExport {
                traces_url: "http://collector:4318/v1/traces".into(),
                service_name: "aerospike-gateway".into()
            })
        );
        let own = parse(&[
            "--otlp-endpoint",
            "http://ignored:4318",
            "--otlp-traces-endpoint",
            "http://collector:4318/custom",
        ]);
        assert_eq!(
            own.tracing.export().unwrap().traces_url,
            "http://collector:4318/custom"
        );
        let empty = parse(&[
            "--otlp-endpoint",
            "",
            "--otlp-protocol",
            "",
            "--otel-sdk-disabled",
            "",
        ]);
        assert_eq!(
            empty.tracing.export(),
            None,
            "an empty variable is an unset one"
        );
        for off in [
            ["--traces-exporter", "none"],
            ["--otel-sdk-disabled", "true"],
        ] {
            let args = [&["--otlp-endpoint", "http://collector:4318"][..], &off].concat();
            assert_eq!(parse(&args).tracing.export(), None, "{off:?}");
        }
    }

    #[test]
    fn tracing_settings_are_checked() {
        for bad in [
            ["--otlp-endpoint", "https://collector:4318"],
            ["--otlp-endpoint", "collector:4318"],
            ["--otlp-endpoint", "http://"],
            ["--otlp-traces-endpoint", "ftp://collector"],
            ["--otlp-protocol", "grpc"],
            ["--otlp-traces-protocol", "http/json"],
            ["--traces-exporter", "jaeger"],
        ] {
            let error = try_parse(&bad).expect_err(bad[1]).to_string();
            assert!(error.contains(bad[1]), "{error}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(try_parse(&["--store-timeout-ms", "0"]).is_err());
        assert!(try_parse(&["--max-batch", "0"]).is_err());
    }
}
