//! Marks whether the machine that builds the tests has an Aerospike cluster to
//! run them against: `cfg(aerospike)` when `AEROSPIKE_HOSTS` names one. The
//! contract tests show as ignored, with the reason, without it, rather than
//! passing without having run (as the e2e crate's do).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aerospike)");
    println!("cargo::rerun-if-env-changed=AEROSPIKE_HOSTS");
    let hosts = std::env::var("AEROSPIKE_HOSTS").unwrap_or_default();
    if hosts.split(',').any(|h| !h.trim().is_empty()) {
        println!("cargo::rustc-cfg=aerospike");
    }
}
