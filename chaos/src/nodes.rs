//! Real `roost` node processes on loopback for the chaos harness, every
//! cluster link routed through a [`FaultProxy`].
//!
//! [`Cluster::start`] picks the ports, writes one config file per node in a
//! fresh run directory (data directories and logs there too), starts the
//! proxy and the nodes, and waits until each serves MQTT. Node `i` is named
//! `n{i+1}@localhost`; it dials node `j` only through the proxy address
//! `(i -> j)` (its `cluster.seeds` and `cluster.peer_addresses`).
//!
//! Every wait is bounded. Dropping the [`Cluster`] (also on a panic) kills
//! every node process and removes the run directory unless `keep` is set;
//! on Linux a node also dies if the harness process dies.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::proxy::FaultProxy;

/// The cluster cookie of every harness node.
const COOKIE: &str = "roost-chaos-cookie";
/// Bound on one management API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest management API answer read.
const HTTP_MAX: usize = 4 << 20;

/// Ports handed out in this process: never twice (a port bound, released
/// and picked again could be another node's).
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Records `port` as in use, so [`free_ports`] never returns it; false if
/// it was already recorded.
fn note_port_used(port: u16) -> bool {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    given.get_or_insert_with(HashSet::new).insert(port)
}

/// `k` distinct free loopback ports, all bound at once while they are
/// chosen, none handed out before in this process.
pub fn free_ports(k: usize) -> Result<Vec<u16>> {
    hold_free_ports(k).map(|(ports, _held)| ports)
}

/// [`free_ports`], still bound by the listeners returned (drop them just
/// before the ports are used, so nothing else binds them meanwhile).
fn hold_free_ports(k: usize) -> Result<(Vec<u16>, Vec<TcpListener>)> {
    let mut held = Vec::with_capacity(k);
    let mut ports = Vec::with_capacity(k);
    let mut attempts = 0;
    while ports.len() < k {
        attempts += 1;
        if attempts > 100 * (k + 1) {
            bail!("no free loopback port left");
        }
        let l = TcpListener::bind(("127.0.0.1", 0)).context("bind a loopback port")?;
        let port = l.local_addr()?.port();
        if note_port_used(port) {
            ports.push(port);
        }
        held.push(l);
    }
    Ok((ports, held))
}

/// How [`Cluster::start`] sets the nodes up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the run directory is created (default: the system temp dir).
    pub base_dir: Option<PathBuf>,
    /// Keep the run directory (configs, data, logs) after the run.
    pub keep: bool,
    /// The nodes' `log.level`.
    pub log_level: String,
    /// Bound on a node starting to serve MQTT.
    pub start_timeout: Duration,
    /// Extra `ROOST_*` environment of every node (overrides the config).
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            base_dir: None,
            keep: false,
            log_level: "info,roost_cluster=debug".into(),
            start_timeout: Duration::from_secs(20),
            env: Vec::new(),
        }
    }
}

/// What a node process is doing, as far as the harness made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOPped.
    Stopped,
    /// Killed, exited, or not started.
    Down,
}

/// One node: identity, ports, files, and its process when running.
#[derive(Debug)]
pub struct Node {
    /// `n1@localhost`, ...
    pub name: String,
    pub mqtt: SocketAddr,
    pub mgmt: SocketAddr,
    /// The real cluster port (peers reach it through the proxy).
    pub cluster_port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    stopped: bool,
    /// Exits the harness did not cause: `(exit status, end of the log)`.
    exits: Vec<(String, String)>,
}

/// A cluster of `roost` processes behind a fault proxy. See the module doc.
pub struct Cluster {
    bin: PathBuf,
    run_dir: PathBuf,
    keep: bool,
    env: Vec<(String, String)>,
    start_timeout: Duration,
    token: String,
    nodes: Vec<Node>,
    proxy: FaultProxy,
}

impl Cluster {
    /// Starts `n` nodes of `roost_bin` (1 to 26) and waits until each
    /// serves MQTT. Not converged yet: see [`Cluster::converged`].
    pub async fn start(n: usize, roost_bin: &Path, opts: &ClusterOptions) -> Result<Cluster> {
        if !(1..=26).contains(&n) {
            bail!("a cluster of {n} nodes: 1 to 26 are supported");
        }
        if !roost_bin.is_file() {
            bail!("no roost binary at {}", roost_bin.display());
        }
        let run_dir = new_run_dir(opts.base_dir.as_deref())?;
        // Held while the proxy binds its own ports (port 0), so it cannot
        // get one of them.
        let (ports, held) = hold_free_ports(3 * n)?;
        let cluster_ports: Vec<u16> = (0..n).map(|i| ports[3 * i + 2]).collect();
        let proxy = FaultProxy::start(cluster_ports).await;
        drop(held);
        let proxy = match proxy {
            Ok(p) => p,
            Err(e) => {
                if !opts.keep {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
                return Err(e).context("start the fault proxy");
            }
        };
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("n{}@localhost", i + 1),
                mqtt: at(ports[3 * i]),
                mgmt: at(ports[3 * i + 1]),
                cluster_port: ports[3 * i + 2],
                data_dir: run_dir.join(format!("n{}", i + 1)),
                config: run_dir.join(format!("n{}.toml", i + 1)),
                log: run_dir.join(format!("n{}.log", i + 1)),
                child: None,
                stopped: false,
                exits: Vec::new(),
            })
            .collect();
        // From here on, dropping `cluster` cleans up whatever was started.
        let mut cluster = Cluster {
            bin: roost_bin.to_owned(),
            run_dir,
            keep: opts.keep,
            env: opts.env.clone(),
            start_timeout: opts.start_timeout,
            token: format!("roost-chaos-token-{}", std::process::id()),
            nodes,
            proxy,
        };
        for i in 0..n {
            let text = cluster.config_text(i, &opts.log_level);
            let node = &cluster.nodes[i];
            std::fs::create_dir_all(&node.data_dir)
                .with_context(|| format!("create {}", node.data_dir.display()))?;
            std::fs::write(&node.config, text)
                .with_context(|| format!("write {}", node.config.display()))?;
        }
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_serving(i).await?;
        }
        Ok(cluster)
    }

    /// Node `i`'s config file: its ports, short cluster timers, and every
    /// peer reached through the proxy.
    fn config_text(&self, i: usize, log_level: &str) -> String {
        let node = &self.nodes[i];
        let toml_str = |s: &str| serde_json::Value::from(s).to_string();
        let peers: Vec<(usize, SocketAddr)> = (0..self.nodes.len())
            .filter_map(|j| self.proxy.addr(i, j).map(|a| (j, a)))
            .collect();
        let seeds: Vec<String> = peers
            .iter()
            .map(|(_, a)| toml_str(&a.to_string()))
            .collect();
        let mut t = String::new();
        let _ = writeln!(t, "# Written by roost-chaos for one run.");
        let _ = writeln!(t, "[node]\nname = {}", toml_str(&node.name));
        let _ = writeln!(
            t,
            "data_dir = {}",
            toml_str(&node.data_dir.to_string_lossy())
        );
        let _ = writeln!(t, "\n[log]\nlevel = {}", toml_str(log_level));
        let _ = writeln!(
            t,
            "\n[mgmt]\nlisten = \"{}\"\ntoken = {}",
            node.mgmt,
            toml_str(&self.token)
        );
        let _ = writeln!(t, "\n[sys_topics]\ninterval = \"0s\"");
        // The harness checks that acknowledged messages survive faults; a
        // subscriber away for seconds under its load would pass the default
        // 1000-message session queue, where drops are by design (counted,
        // not a fault's doing).
        let _ = writeln!(
            t,
            "\n[mqtt]\nlisten = \"{}\"\nmax_mqueue_len = 1000000",
            node.mqtt
        );
        let _ = writeln!(
            t,
            "\n[cluster]\nlisten = \"127.0.0.1:{}\"\ncookie = {}",
            node.cluster_port,
            toml_str(COOKIE)
        );
        let _ = writeln!(t, "discovery = \"static\"\nseeds = [{}]", seeds.join(", "));
        let _ = writeln!(
            t,
            "heartbeat_interval = \"500ms\"\nheartbeat_timeout = \"2s\"\n\
             connect_timeout = \"2s\"\nreconnect_max = \"1s\""
        );
        let _ = writeln!(t, "\n[cluster.peer_addresses]");
        for (j, a) in &peers {
            let _ = writeln!(t, "{} = \"{a}\"", toml_str(&self.nodes[*j].name));
        }
        t
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        // The config file says it all: no ROOST_* of the harness's own
        // environment overrides it (roost also refuses unknown ones).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROOST_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("start")
            .arg("--config")
            .arg(&node.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            // Plain log files (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.stopped = false;
        Ok(())
    }

    /// Waits until node `i` accepts MQTT connections.
    async fn wait_serving(&mut self, i: usize) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let addr = self.nodes[i].mqtt;
            if let Ok(Ok(_)) = timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                return Ok(t0.elapsed());
            }
            if self.state(i) == NodeState::Down {
                let why = match self.nodes[i].exits.last() {
                    Some((status, tail)) => {
                        format!("exited ({status}); its log ends with:\n{tail}")
                    }
                    None => "is not running".to_owned(),
                };
                bail!("{} did not start serving: {why}", self.nodes[i].name);
            }
            if t0.elapsed() > self.start_timeout {
                bail!(
                    "{} does not serve MQTT on {addr} after {:?}; its log ends with:\n{}",
                    self.nodes[i].name,
                    self.start_timeout,
                    self.log_tail(i, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (panics if out of range, like indexing).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`'s MQTT address.
    pub fn mqtt_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].mqtt
    }

    /// Every node's MQTT address, by index.
    pub fn mqtt_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.mqtt).collect()
    }

    /// The fault proxy every cluster link goes through.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// The run directory (configs, data directories, logs).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// What node `i`'s process is doing. An exit the harness did not
    /// cause is noticed here and kept (see [`Cluster::unexpected_exits`]).
    pub fn state(&mut self, i: usize) -> NodeState {
        let node = &mut self.nodes[i];
        let status = match node.child.as_mut().map(Child::try_wait) {
            None => return NodeState::Down,
            Some(Ok(None)) if node.stopped => return NodeState::Stopped,
            Some(Ok(None)) => return NodeState::Running,
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("cannot wait for it: {e}"),
        };
        node.child = None;
        node.stopped = false;
        let tail = self.log_tail(i, 20);
        self.nodes[i].exits.push((status, tail));
        NodeState::Down
    }

    /// Every exit of a node the harness did not cause (a crash, a node
    /// refusing to start), checked now: `"n2@localhost exited (signal:
    /// 6); its log ends with: ..."`.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        for i in 0..self.len() {
            self.state(i);
        }
        self.nodes
            .iter()
            .flat_map(|n| {
                n.exits.iter().map(|(status, tail)| {
                    format!("{} exited ({status}); its log ends with:\n{tail}", n.name)
                })
            })
            .collect()
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// SIGKILLs node `i` (stopped or not) and reaps it.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.stopped = false;
    }

    /// SIGSTOPs node `i`.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGSTOP)?;
        self.nodes[i].stopped = true;
        Ok(())
    }

    /// SIGCONTs node `i`.
    pub fn cont(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGCONT)?;
        self.nodes[i].stopped = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: libc::c_int) -> Result<()> {
        let node = &self.nodes[i];
        let child = node
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", node.name))?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!(
                "signal {sig} to {}: {}",
                node.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Starts node `i` again (same name, ports, config and data directory)
    /// and waits until it serves MQTT; how long that took.
    pub async fn start_node(&mut self, i: usize) -> Result<Duration> {
        if self.state(i) != NodeState::Down {
            bail!("{} is already running", self.nodes[i].name);
        }
        self.spawn(i)?;
        self.wait_serving(i).await
    }

    /// Starts the nodes `which` (each down) all at once, then waits until
    /// each serves MQTT.
    pub async fn start_nodes(&mut self, which: &[usize]) -> Result<()> {
        for &i in which {
            if self.state(i) != NodeState::Down {
                bail!("{} is already running", self.nodes[i].name);
            }
            self.spawn(i)?;
        }
        for &i in which {
            self.wait_serving(i).await?;
        }
        Ok(())
    }

    /// SIGKILLs node `i` if it runs, then [`Cluster::start_node`].
    pub async fn restart(&mut self, i: usize) -> Result<Duration> {
        self.kill9(i);
        self.start_node(i).await
    }

    /// Node `i`'s view of the cluster: member name -> `up`, `down`, ...
    /// (from `GET /api/v1/cluster`).
    pub async fn status(&self, i: usize) -> Result<BTreeMap<String, String>> {
        let node = &self.nodes[i];
        let (code, body) = http_get(node.mgmt, "/api/v1/cluster", Some(&self.token)).await?;
        if code != 200 {
            bail!("{}: GET /api/v1/cluster: HTTP {code}: {body}", node.name);
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{}: cluster status is not JSON", node.name))?;
        let members = v["members"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no members in the cluster status", node.name))?;
        Ok(members
            .iter()
            .filter_map(|m| {
                Some((
                    m["node"].as_str()?.to_owned(),
                    m["status"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// Why the cluster is not converged now, or `Ok` if it is: every
    /// running node sees every other running node `up`, no node that is
    /// not running `up`, and all list the same members.
    pub async fn check_converged(&mut self) -> Result<()> {
        let running: Vec<usize> = (0..self.len())
            .filter(|&i| self.state(i) == NodeState::Running)
            .collect();
        if let Some(n) = self.nodes.iter().find(|n| !n.exits.is_empty()) {
            bail!("{} exited on its own", n.name);
        }
        let mut sets: Vec<(usize, BTreeSet<String>)> = Vec::new();
        for &i in &running {
            let view = self.status(i).await?;
            for (j, node) in self.nodes.iter().enumerate() {
                if j == i {
                    continue;
                }
                let seen = view.get(&node.name).map_or("absent", String::as_str);
                let want_up = running.contains(&j);
                if want_up != (seen == "up") {
                    bail!("{} sees {} {seen}", self.nodes[i].name, node.name);
                }
            }
            sets.push((i, view.into_keys().collect()));
        }
        if let Some((first, set)) = sets.first() {
            if let Some((other, other_set)) = sets.iter().find(|(_, s)| s != set) {
                bail!(
                    "member lists differ: {} has {set:?}, {} has {other_set:?}",
                    self.nodes[*first].name,
                    self.nodes[*other].name
                );
            }
        }
        Ok(())
    }

    /// Waits (polling) until [`Cluster::check_converged`] holds; how long
    /// that took, or why not after `limit` (at once if a node exited on
    /// its own).
    pub async fn converged(&mut self, limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let why = match self.check_converged().await {
                Ok(()) => return Ok(t0.elapsed()),
                Err(e) => e,
            };
            if self.nodes.iter().any(|n| !n.exits.is_empty()) {
                return Err(why);
            }
            if t0.elapsed() >= limit {
                return Err(why.context(format!("not converged after {limit:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A sample of node `i`'s `/metrics`: `name` exactly as in the
    /// exposition (`name` or `name{label="v"}`); a bare name that only has
    /// labelled samples is their sum. `None` if absent or unreachable.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let (code, text) = http_get(self.nodes[i].mgmt, "/metrics", None).await.ok()?;
        (code == 200).then_some(())?;
        parse_metric(&text, name)
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: our own unreaped child. A stopped process
                    // dies of SIGKILL too; CONT is belt and braces.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.keep {
            eprintln!(
                "roost-chaos: run directory kept: {}",
                self.run_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// On Linux the node gets SIGKILL when the thread that started it ends
/// (the harness killed, a test thread gone): no node outlives its harness.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn new_run_dir(base: Option<&Path>) -> Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let dir = base.join(format!(
        "roost-chaos-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// `GET path` over HTTP/1.0 (the server closes after one answer, never
/// chunked): the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        if let Some(t) = token {
            let _ = write!(req, "Authorization: Bearer {t}\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.take(HTTP_MAX as u64).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path}: no answer within {HTTP_TIMEOUT:?}"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: malformed answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: no status code"))?;
    Ok((code, body.to_owned()))
}

/// See [`Cluster::metric`].
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // `series value [timestamp]`; label values may hold spaces.
        let series_end = line.rfind('}').map_or_else(
            || line.find(char::is_whitespace).unwrap_or(line.len()),
            |b| b + 1,
        );
        let (series, rest) = line.split_at(series_end);
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if series == name {
            return Some(value);
        }
        if !name.contains('{')
            && series
                .strip_prefix(name)
                .is_some_and(|r| r.starts_with('{'))
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let a = free_ports(20).unwrap();
        let b = free_ports(20).unwrap();
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 40);
        assert!(!note_port_used(a[0]));
    }

    #[test]
    fn metrics_are_read_by_series_or_summed_by_name() {
        let text = "# HELP x a counter\n# TYPE x counter\n\
                    roost_cluster_heals_total 2\n\
                    roost_cluster_members{status=\"up\"} 2\n\
                    roost_cluster_members{status=\"down\"} 1\n\
                    roost_cluster_heals 9\n\
                    weird{a=\"b c\"} 4 1700000000\n";
        assert_eq!(parse_metric(text, "roost_cluster_heals_total"), Some(2.0));
        assert_eq!(
            parse_metric(text, "roost_cluster_members{status=\"down\"}"),
            Some(1.0)
        );
        assert_eq!(parse_metric(text, "roost_cluster_members"), Some(3.0));
        assert_eq!(parse_metric(text, "weird{a=\"b c\"}"), Some(4.0));
        assert_eq!(
            parse_metric(text, "roost_cluster_partitions_detected_total"),
            None
        );
        assert_eq!(parse_metric("garbage line\n{}\n", "garbage"), None);
    }
}
