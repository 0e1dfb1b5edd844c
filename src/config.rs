//! Runtime configuration of the component, from its environment.
//!
//! Environment variables rather than Spin variables: a component that imports
//! `spin:variables` cannot be instantiated by `wasmtime serve`, while `spin up --env`,
//! `wasmtime serve --env` and a container's environment all reach `std::env`. So the
//! same `.wasm` runs unchanged under both runtimes.

use std::time::Duration;

use counter_api::{InvalidField, ServerId};

use crate::visitor::TrustedProxies;

/// Where the gateway listens when `GATEWAY_URL` is not set: the gateway's own default.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8081";
/// Long enough for a group commit under load, and for the gateway to ride out an
/// Aerospike node leaving (its `STORE_TIMEOUT_MS`, 2.5 s, plus the trip); short
/// enough that a person still waits.
pub const DEFAULT_GATEWAY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayUrl,
    /// This replica's name in the per-server totals.
    pub server_id: ServerId,
    /// The whole gateway call, connect to last byte, must fit in this.
    pub gateway_timeout: Duration,
    /// Which peers' `X-Forwarded-For` names the client, for unique visitors.
    pub trusted_proxies: TrustedProxies,
    /// Who may import a counter's starting count (`STATS_CREDENTIALS`); `None`
    /// turns imports off.
    pub stats_credentials: Option<Credentials>,
}

/// A user and password, as HTTP Basic authentication sends them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    /// `user:password`, neither part empty; the password may hold `:`.
    pub fn parse(text: &str) -> Option<Self> {
        let (user, password) = text.split_once(':')?;
        (!user.is_empty() && !password.is_empty()).then(|| Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Whether an `Authorization` header value carries these credentials.
    ///
    /// Compared without stopping at the first difference, so that the time an
    /// answer takes does not tell how much of a guess was right.
    pub fn admit(&self, authorization: &str) -> bool {
        use base64::Engine;
        let Some((scheme, encoded)) = authorization.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// Credentials are secrets: keep them out of logs and panics.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("GATEWAY_URL={0:?} is not an http:// or https:// URL with a host")]
    GatewayUrl(String),
    #[error("{var}={value:?} is not a valid server id: {reason}")]
    ServerId {
        var: &'static str,
        value: String,
        reason: InvalidField,
    },
    #[error("GATEWAY_TIMEOUT_MS={0:?} is not a whole number of milliseconds between 1 and 600000")]
    Timeout(String),
    #[error(
        "TRUSTED_PROXIES={0:?} is not \"*\" or a comma-separated list of IP addresses and CIDR ranges (e.g. 10.0.0.0/8,fd00::/8)"
    )]
    TrustedProxies(String),
    #[error("STATS_CREDENTIALS is not user:password, with neither part empty")]
    StatsCredentials,
}

impl Config {
    /// `GATEWAY_URL`, `SERVER_ID` (else `HOSTNAME`, which Docker sets to the
    /// container's name, else `localhost`), `GATEWAY_TIMEOUT_MS` and
    /// `TRUSTED_PROXIES`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let gateway = match var("GATEWAY_URL") {
            Some(url) => GatewayUrl::parse(&url).ok_or(ConfigError::GatewayUrl(url))?,
            None => GatewayUrl::parse(DEFAULT_GATEWAY_URL).expect("the default URL parses"),
        };
        let (server_var, server_value) = match (var("SERVER_ID"), var("HOSTNAME")) {
            (Some(id), _) => ("SERVER_ID", id),
            (None, Some(host)) => ("HOSTNAME", host),
            (None, None) => ("SERVER_ID", "localhost".to_owned()),
        };
        let server_id = server_value
            .parse()
            .map_err(|reason| ConfigError::ServerId {
                var: server_var,
                value: server_value.clone(),
                reason,
            })?;
        let gateway_timeout = match var("GATEWAY_TIMEOUT_MS") {
            Some(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=600_000).contains(ms))
                .map(Duration::from_millis)
                .ok_or(ConfigError::Timeout(ms))?,
            None => DEFAULT_GATEWAY_TIMEOUT,
        };
        let trusted_proxies = match var("TRUSTED_PROXIES") {
            Some(list) => list
                .parse()
                .map_err(|()| ConfigError::TrustedProxies(list))?,
            None => TrustedProxies::default(),
        };
        let stats_credentials = match var("STATS_CREDENTIALS") {
            Some(text) => Some(Credentials::parse(&text).ok_or(ConfigError::StatsCredentials)?),
            None => None,
        };
        Ok(Self {
            gateway,
            server_id,
            gateway_timeout,
            trusted_proxies,
            stats_credentials,
        })
    }
}

/// The gateway's base URL, split the way a wasi:http request wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    pub https: bool,
    pub authority: String,
    /// Empty, or a prefix such as `/gateway` with no trailing slash.
    pub base_path: String,
}

impl GatewayUrl {
    pub fn parse(url: &str) -> Option<Self> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            (true, url.strip_prefix("https://")?)
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority_ok = !authority.is_empty()
            && !authority.starts_with(':')
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
        if !authority_ok || path.contains(['?', '#']) {
            return None;
        }
        Some(Self {
            https,
            authority: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.gateway,
            GatewayUrl::parse("http://127.0.0.1:8081").unwrap()
        );
        assert_eq!(config.server_id.as_str(), "localhost");
        assert_eq!(config.gateway_timeout, DEFAULT_GATEWAY_TIMEOUT);
    }

    #[test]
    fn server_id_prefers_server_id_then_hostname() {
        let both = config(&[("SERVER_ID", "web-1"), ("HOSTNAME", "abc123")]).unwrap();
        assert_eq!(both.server_id.as_str(), "web-1");
        let host = config(&[("HOSTNAME", "abc123")]).unwrap();
        assert_eq!(host.server_id.as_str(), "abc123");
        let bad = config(&[("HOSTNAME", "total_hits")]).unwrap_err();
        assert!(
            bad.to_string().starts_with("HOSTNAME=\"total_hits\""),
            "{bad}"
        );
    }

    #[test]
    fn gateway_urls() {
        let url = GatewayUrl::parse("http://gateway:8081/base/").unwrap();
        assert_eq!(url.authority, "gateway:8081");
        assert_eq!(url.base_path, "/base");
        assert!(!url.https);
        assert!(GatewayUrl::parse("https://[::1]:8443").unwrap().https);
        for bad in [
            "gateway:8081",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
            "http://x/?q",
        ] {
            assert!(GatewayUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_parsed() {
        assert!(config(&[("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.1")]).is_ok());
        assert!(config(&[("TRUSTED_PROXIES", "*")]).is_ok());
        let bad = config(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err();
        assert!(bad.to_string().contains("CIDR"), "{bad}");
    }

    #[test]
    fn stats_credentials_are_checked_in_full() {
        assert!(config(&[]).unwrap().stats_credentials.is_none());
        let credentials = config(&[("STATS_CREDENTIALS", "admin:s3cr:et")])
            .unwrap()
            .stats_credentials
            .unwrap();
        // base64("admin:s3cr:et")
        assert!(credentials.admit("Basic YWRtaW46czNjcjpldA=="));
        assert!(credentials.admit("basic  YWRtaW46czNjcjpldA== "));
        for refused in [
            "",
            "Basic",
            "Bearer YWRtaW46czNjcjpldA==",
            "Basic YWRtaW46czNjcjplVA==",
            "Basic YWRtaW46czNjcjpl",
            "Basic !!!",
        ] {
            assert!(!credentials.admit(refused), "{refused:?}");
        }
        assert_eq!(format!("{credentials:?}"), "Credentials(<redacted>)");
        for bad in ["admin", ":pw", "admin:"] {
            assert!(config(&[("STATS_CREDENTIALS", bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeout_must_be_sane() {
        assert!(config(&[("GATEWAY_TIMEOUT_MS", "0")]).is_err());
        assert!(config(&[("GATEWAY_TIMEOUT_MS", "soon")]).is_err());
        let ok = config(&[("GATEWAY_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(ok.gateway_timeout, Duration::from_millis(250));
    }
}
