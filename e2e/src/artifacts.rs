use std::path::PathBuf;
use std::sync::OnceLock;

/// Paths of the three things under test.
#[derive(Debug)]
pub struct Artifacts {
    pub gateway_bin: PathBuf,
    pub component: PathBuf,
    pub wasmtime: PathBuf,
    /// A Spin CLI, from `SPIN`: the Spin runs of the suites need it.
    pub spin: Option<PathBuf>,
}

impl Artifacts {
    pub fn get() -> &'static Artifacts {
        static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
        ARTIFACTS.get_or_init(|| {
            // target/<profile>/deps/<test binary>, or target/<profile>/<binary>
            let exe = std::env::current_exe().expect("the running binary's path");
            let exe_dir = exe.parent().expect("the binary's directory");
            let profile_dir = if exe_dir.ends_with("deps") {
                exe_dir.parent().expect("target/<profile>")
            } else {
                exe_dir
            };
            let target_dir = profile_dir.parent().expect("target/");
            let artifacts = Artifacts {
                gateway_bin: from_env("GATEWAY_BIN")
                    .unwrap_or_else(|| profile_dir.join("aerospike-gateway")),
                component: from_env("COMPONENT_WASM").unwrap_or_else(|| {
                    target_dir.join("wasm32-wasip2/release/awesome_counter.wasm")
                }),
                wasmtime: from_env("WASMTIME").unwrap_or_else(|| "wasmtime".into()),
                spin: from_env("SPIN"),
            };
            for path in [&artifacts.gateway_bin, &artifacts.component] {
                assert!(
                    path.exists(),
                    "{} is missing: run scripts/test, which builds the gateway, the component and the runtime",
                    path.display()
                );
            }
            artifacts
        })
    }
}

fn from_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
