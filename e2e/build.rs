//! Marks what the machine that builds the tests can run them against:
//! - `cfg(aerospike)`: `AEROSPIKE_HOSTS` names a cluster;
//! - `cfg(docker)`: a Docker engine answers `docker info`.
//!
//! Tests that need one of these show as ignored, with the reason, when it is
//! missing, rather than passing without having run.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aerospike)");
    println!("cargo::rustc-check-cfg=cfg(docker)");
    println!("cargo::rerun-if-env-changed=AEROSPIKE_HOSTS");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    if std::env::var("AEROSPIKE_HOSTS").is_ok_and(|hosts| !hosts.trim().is_empty()) {
        println!("cargo::rustc-cfg=aerospike");
    }
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if docker.is_ok_and(|status| status.success()) {
        println!("cargo::rustc-cfg=docker");
    }
}
