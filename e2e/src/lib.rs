//! Starts the real parts of awesome-counter for end-to-end tests, the way
//! "Zero to Production" spawns the real app: the gateway binary on a real store
//! (a redb file in a temp dir, or the Aerospike cluster named by `AEROSPIKE_HOSTS`)
//! and the web component served by a real Wasm runtime (`wasmtime serve`), each a
//! child process on its own loopback port.
//!
//! The binaries are found next to the test executable (`target/<profile>/`) and the
//! component under `target/wasm32-wasip2/release/`; `scripts/test` builds them all.
//! `GATEWAY_BIN`, `COMPONENT_WASM` and `WASMTIME` override the paths.

mod artifacts;
mod backend;
mod cluster;
mod counter;
pub mod docker;
mod pages;
mod process;
mod proxy;
mod records;
mod wire;

pub use artifacts::Artifacts;
pub use backend::Backend;
pub use cluster::{Cluster, freeze, info};
pub use counter::{
    Counter, Gateway, Runtime, SPIN_ENV, Setup, WASMTIME_SERVE_FLAGS, Web, free_port, get_json,
    get_text,
};
pub use pages::{PageAnswer, badge_count, post_page_hit_until_acknowledged};
pub use process::Process;
pub use proxy::TcpProxy;
pub use records::{NAMESPACE, aerospike_client, missing_records};
pub use wire::{WireAnswer, WireClient};

/// One HTTP client for a test: no connection reuse surprises, bounded waits.
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("building the HTTP client")
}

/// A client whose HTTPS trusts only the CA certificate `ca_pem` (a test's own),
/// connecting from `local_address` when one is given. It does not follow
/// redirects: the tests look at them.
pub fn https_client(ca_pem: &[u8], local_address: Option<std::net::IpAddr>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("a PEM CA certificate");
    client_builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local_address)
        .build()
        .expect("building the HTTPS client")
}

fn client_builder() -> reqwest::ClientBuilder {
    // reqwest's TLS (needed by the HTTPS tests) wants a process-wide crypto
    // provider; a second call finds it installed. ring is deprecated for lacking
    // post-quantum key exchange, which a test client does not need; it builds in
    // a fraction of aws-lc-rs's time.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .no_proxy()
}

/// The test functions of one run of a suite: each calls the suite's `$test($arg)`
/// (the suite being the module `$($suite)*`), and shows as ignored, with
/// `$reason`, when the cfg `$missing` holds.
#[doc(hidden)]
#[macro_export]
macro_rules! __e2e_runs {
    ([$($suite:tt)*] $arg:expr, $missing:meta, $reason:literal; $($test:ident),*) => {
        use $($suite)* as __suite;
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr($missing, ignore = $reason)]
            async fn $test() {
                __suite::$test($arg).await
            }
        )*
    };
}

/// Runs each listed `async fn(Backend)` twice: on the embedded store, and on the
/// Aerospike cluster named by `AEROSPIKE_HOSTS`. Without that variable the
/// Aerospike runs show as ignored, with the reason, in the test output.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $crate::__e2e_runs!([super] $crate::Backend::Embedded, any(), "";
                $($test),*);
        }
        mod aerospike {
            $crate::__e2e_runs!([super] $crate::Backend::Aerospike, not(aerospike),
                "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against";
                $($test),*);
        }
    };
}

/// Like [`on_every_backend!`], on both Wasm runtimes: each listed
/// `async fn(Setup)` runs on wasmtime and on Spin, each on both stores. Without a
/// Spin CLI in `SPIN` (or Aerospike), those runs show as ignored, with the reason.
#[macro_export]
macro_rules! on_every_runtime_and_backend {
    ($($test:ident),* $(,)?) => {
        mod wasmtime {
            mod embedded {
                $crate::__e2e_runs!([super::super]
                    $crate::Setup { backend: $crate::Backend::Embedded, runtime: $crate::Runtime::Wasmtime },
                    any(), ""; $($test),*);
            }
            mod aerospike {
                $crate::__e2e_runs!([super::super]
                    $crate::Setup { backend: $crate::Backend::Aerospike, runtime: $crate::Runtime::Wasmtime },
                    not(aerospike),
                    "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against";
                    $($test),*);
            }
        }
        mod spin {
            mod embedded {
                $crate::__e2e_runs!([super::super]
                    $crate::Setup { backend: $crate::Backend::Embedded, runtime: $crate::Runtime::Spin },
                    not(spin), "SPIN does not name a Spin CLI, so there is no Spin to run on";
                    $($test),*);
            }
            mod aerospike {
                $crate::__e2e_runs!([super::super]
                    $crate::Setup { backend: $crate::Backend::Aerospike, runtime: $crate::Runtime::Spin },
                    any(not(spin), not(aerospike)),
                    "needs both a Spin CLI in SPIN and an Aerospike cluster in AEROSPIKE_HOSTS";
                    $($test),*);
            }
        }
    };
}

/// The N of `Hello World! I have been seen by N.`, or a panic that shows the page.
pub fn seen_by(body: &str) -> u64 {
    body.strip_prefix("Hello World! I have been seen by ")
        .and_then(|rest| rest.strip_suffix('.'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a counter page: {body:?}"))
}
