//! Docker for the container tests: images built from the binaries of this build
//! (nothing can be pulled here), the Compose and Swarm CLIs, cleanup that runs
//! even when a test fails, a throwaway certificate for the load balancer, and a
//! way into a container's network namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Artifacts, WASMTIME_SERVE_FLAGS};

/// Runs a command; answers its stdout, or an error that quotes its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with(Command::new(program).args(args))
}

pub fn run_with(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ))
    }
}

pub fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args)
}

/// `docker compose` (v2) where it exists, else `docker-compose` (v1): the files
/// must work with both.
pub fn compose_command() -> Command {
    static V2: OnceLock<bool> = OnceLock::new();
    let v2 = *V2.get_or_init(|| docker(&["compose", "version"]).is_ok());
    if v2 {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    }
}

/// Docker commands run when this is dropped, last added first. When a test fails,
/// its diagnostics (logs of the containers about to be removed) are printed first.
#[derive(Default)]
pub struct Cleanup {
    commands: Vec<Command>,
    diagnostics: Vec<Command>,
}

impl Cleanup {
    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    pub fn docker(&mut self, args: &[&str]) {
        self.push(docker_command(args));
    }

    /// A command whose output explains a failure, e.g. a service's logs.
    pub fn show_on_failure(&mut self, command: Command) {
        self.diagnostics.push(command);
    }

    pub fn show_docker_on_failure(&mut self, args: &[&str]) {
        self.show_on_failure(docker_command(args));
    }
}

fn docker_command(args: &[&str]) -> Command {
    let mut command = Command::new("docker");
    command.args(args);
    command
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for command in &mut self.diagnostics {
                let shown = command.stdin(Stdio::null()).output();
                eprintln!("--- {command:?}");
                match shown {
                    Ok(output) => eprintln!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    ),
                    Err(error) => eprintln!("{error}"),
                }
            }
        }
        for mut command in self.commands.drain(..).rev() {
            if let Err(error) = run_with(&mut command) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

/// The three images of the counter, built `FROM scratch` from this build's
/// binaries and their shared libraries: the web component on wasmtime, the
/// gateway, and Debian's HAProxy with the load balancer's config.
pub struct TestImages {
    pub web: String,
    pub gateway: String,
    pub lb: String,
}

impl TestImages {
    pub fn build(prefix: &str, tag: &str) -> Result<TestImages, String> {
        let artifacts = Artifacts::get();
        let haproxy = which("haproxy").ok_or(
            "HAProxy is not installed: scripts/test installs Debian's haproxy for the load balancer image",
        )?;
        let wasmtime =
            which(artifacts.wasmtime.to_str().unwrap_or("wasmtime")).ok_or("wasmtime not found")?;
        let images = TestImages {
            web: format!("{prefix}/web:{tag}"),
            gateway: format!("{prefix}/gateway:{tag}"),
            lb: format!("{prefix}/haproxy:{tag}"),
        };
        let mut serve: Vec<String> = vec!["/usr/local/bin/wasmtime".into(), "serve".into()];
        serve.extend(WASMTIME_SERVE_FLAGS.iter().map(|f| f.to_string()));
        // The component reads GATEWAY_URL, HOSTNAME (Docker sets it to the
        // container's name) and TRUSTED_PROXIES (the stack sets it); `--env NAME`
        // passes the container's value through.
        serve.extend(
            [
                "--addr=0.0.0.0:5000",
                "--env=GATEWAY_URL",
                "--env=HOSTNAME",
                "--env=TRUSTED_PROXIES",
                "/app/awesome_counter.wasm",
            ]
            .map(String::from),
        );
        scratch_image(
            &images.web,
            &[
                (&wasmtime, "/usr/local/bin/wasmtime"),
                (&artifacts.component, "/app/awesome_counter.wasm"),
            ],
            &format!(
                "ENV GATEWAY_URL=http://gateway:8081\nENV TRUSTED_PROXIES=\nEXPOSE 5000\nENTRYPOINT {}",
                json_list(&serve)
            ),
        )?;
        scratch_image(
            &images.gateway,
            &[(&artifacts.gateway_bin, "/usr/local/bin/aerospike-gateway")],
            "ENV GATEWAY_LISTEN=0.0.0.0:8081 DATA_DIR=/data\nEXPOSE 8081\nENTRYPOINT [\"/usr/local/bin/aerospike-gateway\"]",
        )?;
        let config = repo_root().join("deploy/haproxy/haproxy.cfg");
        scratch_image(
            &images.lb,
            &[
                (&haproxy, "/usr/local/sbin/haproxy"),
                (&config, "/usr/local/etc/haproxy/haproxy.cfg"),
            ],
            // As in the official image: `haproxy` on PATH, the config at this path.
            "ENV PATH=/usr/local/sbin\nEXPOSE 80 443\nCMD [\"haproxy\", \"-f\", \"/usr/local/etc/haproxy/haproxy.cfg\"]",
        )?;
        for image in [&images.web, &images.gateway, &images.lb] {
            let size = docker(&["image", "inspect", "--format", "{{.Size}}", image])?;
            let megabytes = size.trim().parse::<f64>().unwrap_or(f64::NAN) / 1e6;
            eprintln!("image {image}: {megabytes:.1} MB");
        }
        Ok(images)
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        // Swarm removes a stack's containers a little after `docker stack rm`
        // returns; an image still in use would only be untagged.
        let images = [&self.web, &self.gateway, &self.lb];
        let in_use = || {
            images.iter().any(|image| {
                docker(&[
                    "ps",
                    "--all",
                    "--quiet",
                    "--filter",
                    &format!("ancestor={image}"),
                ])
                .is_ok_and(|ids| !ids.trim().is_empty())
            })
        };
        for _ in 0..120 {
            if !in_use() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        for image in images {
            if let Err(error) = docker(&["image", "rm", "--force", image]) {
                eprintln!("cleanup: {error}");
            }
        }
        let label = format!("label={TEST_LABEL}=1");
        if let Err(error) = docker(&["image", "prune", "--force", "--filter", &label]) {
            eprintln!("cleanup: {error}");
        }
    }
}

/// Marks every image the tests build, so that what they leave untagged can be pruned.
const TEST_LABEL: &str = "org.awesome-counter.test-image";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_owned()
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialise")
}

fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.exists())
}

/// Builds `tag` from `files` (host path, path in the image) plus the shared
/// libraries the executables among them load, and the Dockerfile lines in `tail`.
fn scratch_image(tag: &str, files: &[(&Path, &str)], tail: &str) -> Result<(), String> {
    let context = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rootfs = context.path().join("rootfs");
    let copy = |from: &Path, to: &str| -> Result<(), String> {
        let target = rootfs.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a file path"))
            .map_err(|e| e.to_string())?;
        std::fs::copy(from, &target).map_err(|e| format!("copying {}: {e}", from.display()))?;
        Ok(())
    };
    for (from, to) in files {
        copy(from, to)?;
        for library in shared_libraries(from) {
            copy(&library, library.to_str().expect("a UTF-8 library path"))?;
        }
    }
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL {TEST_LABEL}=1\nCOPY rootfs/ /\n{tail}\n"),
    )
    .map_err(|e| e.to_string())?;
    let context_dir = context.path().to_str().expect("a UTF-8 temp path");
    docker(&["build", "--quiet", "--tag", tag, context_dir]).map(|_| ())
}

/// What `ldd` lists for an executable; nothing for a file that is not one.
fn shared_libraries(path: &Path) -> Vec<PathBuf> {
    let Ok(listing) = run("ldd", &[path.to_str().unwrap_or_default()]) else {
        return Vec::new();
    };
    listing
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// A throwaway certificate authority and a certificate it signed for `localhost`
/// and 127.0.0.1, made with the `openssl` CLI, valid for a day. `bundle` is what
/// HAProxy loads (certificate, then key, as a user's Docker secret holds them).
pub struct TestCertificate {
    pub ca_pem: Vec<u8>,
    pub bundle: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCertificate {
    pub fn new() -> Result<TestCertificate, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = |name: &str| {
            dir.path()
                .join(name)
                .to_str()
                .expect("a UTF-8 temp path")
                .to_owned()
        };
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run_with(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(new_key)
                .args([
                    "-keyout",
                    &path("ca.key"),
                    "-out",
                    &path("ca.pem"),
                    "-days",
                    "1",
                    "-subj",
                    "/CN=awesome-counter test CA",
                ]),
        )?;
        run_with(Command::new("openssl").args(["req"]).args(new_key).args([
            "-keyout",
            &path("key.pem"),
            "-out",
            &path("leaf.csr"),
            "-subj",
            "/CN=localhost",
        ]))?;
        // A server certificate, not a CA: TLS clients refuse a CA certificate as a
        // server's own.
        std::fs::write(
            path("leaf.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .map_err(|e| e.to_string())?;
        run_with(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &path("leaf.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &path("leaf.ext"),
            "-out",
            &path("cert.pem"),
        ]))?;
        let read = |name: &str| std::fs::read(path(name)).map_err(|e| format!("{name}: {e}"));
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, [read("cert.pem")?, read("key.pem")?].concat())
            .map_err(|e| e.to_string())?;
        Ok(TestCertificate {
            ca_pem: read("ca.pem")?,
            bundle,
            _dir: dir,
        })
    }
}

/// The container of `service`'s one running task.
pub fn running_container(service: &str) -> Result<String, String> {
    let tasks = docker(&[
        "service",
        "ps",
        "--quiet",
        "--filter",
        "desired-state=running",
        service,
    ])?;
    let task = match tasks.split_whitespace().collect::<Vec<_>>()[..] {
        [task] => task.to_owned(),
        ref tasks => {
            return Err(format!(
                "{service} has {} tasks meant to run, not one",
                tasks.len()
            ));
        }
    };
    let container = docker(&[
        "inspect",
        "--format",
        "{{.Status.ContainerStatus.ContainerID}}",
        &task,
    ])?;
    Ok(container.trim().to_owned())
}

/// Runs `work` on a thread of its own inside `container`'s network namespace, so
/// that it can reach the container from addresses that exist only there (its
/// whole loopback range). Needs root, as `nsenter` does.
pub fn in_network_of<T: Send + 'static>(
    container: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container])?;
    let path = format!("/proc/{}/ns/net", pid.trim());
    let namespace = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let worker = std::thread::spawn(move || {
        // Only this thread moves, and threads it starts follow it.
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {path} (this needs root): {e}"))?;
        Ok(work())
    });
    worker
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
