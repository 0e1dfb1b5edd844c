//! Where a hit's cost goes: the CPU time of each tier's processes over a run,
//! read from `/proc`, divided by the hits it answered.
//!
//! A tier is a process and everything it started (`spin up` runs its trigger
//! as a child, gunicorn its workers), so each tier's figure is the whole tree's
//! user and system time, the kernel's work on its sockets included.

use serde::Serialize;

/// The processes behind one target, by tier.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// The web tier: wasmtime or Spin, or the tutorial's Python server.
    pub web: Option<i32>,
    pub gateway: Option<i32>,
    /// The Aerospike server processes on this machine that serve the cluster
    /// (a remote cluster's are not seen, and the column stays empty).
    pub store: Vec<i32>,
    /// A load balancer in front of the web tier, counted with it.
    pub door: Option<i32>,
    /// The gateway's base URL, whose `/metrics` say how many hits each call from
    /// the web tier carried.
    pub gateway_url: Option<String>,
}

/// CPU µs per answered hit, by tier.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CostPerHit {
    pub web_us: Option<f64>,
    pub gateway_us: Option<f64>,
    pub asd_us: Option<f64>,
}

impl CostPerHit {
    /// Every tier measured, added up.
    pub fn all_us(&self) -> Option<f64> {
        let tiers = [self.web_us, self.gateway_us, self.asd_us];
        tiers
            .iter()
            .any(Option::is_some)
            .then(|| tiers.iter().flatten().sum())
    }
}

/// The CPU seconds each tier had used when it was taken.
pub struct Reading {
    web: Option<f64>,
    gateway: Option<f64>,
    store: Option<f64>,
}

impl Tiers {
    /// The whole hit path: a web runtime calling a gateway.
    pub fn full_path(web: i32, gateway: i32) -> Self {
        Self {
            web: Some(web),
            gateway: Some(gateway),
            ..Self::default()
        }
    }

    /// Also counts `pid`'s CPU, a load balancer's, in the web tier.
    pub fn with_door(mut self, pid: i32) -> Self {
        self.door = Some(pid);
        self
    }

    /// Reads hits per call from the gateway at `url` too.
    pub fn with_calls_from(mut self, url: &str) -> Self {
        self.gateway_url = Some(url.to_owned());
        self
    }

    /// A web runtime alone: a static page, or the tutorial's app.
    pub fn web(pid: i32) -> Self {
        Self {
            web: Some(pid),
            ..Self::default()
        }
    }

    /// A gateway driven directly.
    pub fn gateway(pid: i32) -> Self {
        Self {
            gateway: Some(pid),
            ..Self::default()
        }
    }

    /// Adds the local Aerospike server listening on `seed`'s port, if any.
    pub fn with_local_asd(mut self, seed: &str) -> Self {
        self.store = seed
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .map(|port| listening_on(port, "asd"))
            .unwrap_or_default();
        self
    }

    pub fn read(&self) -> Reading {
        let sum = |pids: &[i32]| -> Option<f64> {
            (!pids.is_empty()).then(|| pids.iter().map(|&p| tree_cpu_seconds(p)).sum())
        };
        Reading {
            web: self
                .web
                .map(|web| tree_cpu_seconds(web) + self.door.map_or(0.0, tree_cpu_seconds)),
            gateway: self.gateway.map(tree_cpu_seconds),
            store: sum(&self.store),
        }
    }
}

impl Reading {
    /// The cost per hit of `hits` answered between `start` and `self`.
    pub fn since(&self, start: &Reading, hits: u64) -> CostPerHit {
        let per_hit = |now: Option<f64>, then: Option<f64>| match (now, then) {
            (Some(now), Some(then)) if hits > 0 => Some((now - then) * 1e6 / hits as f64),
            _ => None,
        };
        CostPerHit {
            web_us: per_hit(self.web, start.web),
            gateway_us: per_hit(self.gateway, start.gateway),
            asd_us: per_hit(self.store, start.store),
        }
    }
}

/// User and system CPU seconds of `root` and all its descendants alive now.
fn tree_cpu_seconds(root: i32) -> f64 {
    let ticks_per_second = clock_ticks_per_second();
    let mut seconds = 0.0;
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        seconds += own_cpu_ticks(pid) as f64 / ticks_per_second;
        pending.extend(children(pid));
    }
    seconds
}

/// utime + stime, fields 14 and 15 of `/proc/<pid>/stat`; 0 for a process gone.
fn own_cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; the fields after it do not.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The processes called `name` that listen on TCP `port`: the socket inodes
/// of `/proc/net/tcp{,6}` in state LISTEN, matched against the processes' fds.
fn listening_on(port: u16, name: &str) -> Vec<i32> {
    let port = format!("{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit_once(':')?.1;
                    let inode = fields.get(9)?;
                    (local_port == port && fields.get(3) == Some(&"0A"))
                        .then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
                })
            })
        })
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}
