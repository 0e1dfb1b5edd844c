//! Marks what the machine that builds the tests can run them against:
//! - `cfg(aerospike)`: `AEROSPIKE_HOSTS` names a cluster;
//! - `cfg(aerospike_single)`: it names one node, so a proxy in front of it carries
//!   all of the gateway's traffic (with several, the client reaches them directly);
//! - `cfg(docker)`: a Docker engine answers `docker info`;
//! - `cfg(spin)`: `SPIN` names a Spin CLI that runs;
//! - `cfg(aerospike_cluster)`: `AEROSPIKE_ASD` names an Aerospike server binary
//!   and the tests run as root with `ip` and `iptables`, so the fault suite can
//!   start its own cluster in network namespaces.
//!
//! Tests that need one of these show as ignored, with the reason, when it is
//! missing, rather than passing without having run.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aerospike)");
    println!("cargo::rustc-check-cfg=cfg(aerospike_single)");
    println!("cargo::rustc-check-cfg=cfg(docker)");
    println!("cargo::rustc-check-cfg=cfg(spin)");
    println!("cargo::rustc-check-cfg=cfg(aerospike_cluster)");
    println!("cargo::rerun-if-env-changed=AEROSPIKE_ASD");
    println!("cargo::rerun-if-env-changed=SPIN");
    println!("cargo::rerun-if-env-changed=AEROSPIKE_HOSTS");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    let hosts = std::env::var("AEROSPIKE_HOSTS").unwrap_or_default();
    let hosts: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if !hosts.is_empty() {
        println!("cargo::rustc-cfg=aerospike");
    }
    if hosts.len() == 1 {
        println!("cargo::rustc-cfg=aerospike_single");
    }
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if docker.is_ok_and(|status| status.success()) {
        println!("cargo::rustc-cfg=docker");
    }
    if let Some(spin) = std::env::var_os("SPIN").filter(|s| !s.is_empty()) {
        let runs = Command::new(spin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if runs.is_ok_and(|status| status.success()) {
            println!("cargo::rustc-cfg=spin");
        }
    }
    let asd = std::env::var_os("AEROSPIKE_ASD").filter(|s| !s.is_empty());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let tools = ["ip", "iptables"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if asd.is_some_and(|asd| std::path::Path::new(&asd).is_file()) && root && tools {
        println!("cargo::rustc-cfg=aerospike_cluster");
    }
}
