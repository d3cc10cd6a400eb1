//! The `roost-chaos` binary.
//!
//! `roost-chaos bench <scenario> [options]` runs one load scenario against
//! an MQTT broker and prints a summary (`--json`: one JSON line on stdout,
//! the summary on stderr). `roost-chaos bench-table FILE...` renders JSON
//! reports of several brokers as markdown tables with ratios against a
//! baseline. See `chaos/bench-compare.sh`.
//!
//! The chaos scenarios (docs/CHAOS.md): `roost-chaos kill-restart |
//! partition-heal | two-node-split | three-way-split | stale-peer-restart |
//! flapping-link | slow-node | all [--long] [--nodes N] [--roost PATH]
//! [--json FILE] [--keep]`. Exit code 0: every scenario passed; 1: one
//! failed; 2: a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use roost_chaos::bench::backlog::{self, BacklogConfig};
use roost_chaos::bench::{self, BenchConfig, Scenario};
use roost_chaos::scenario::{self as chaos, Kind};
use roost_protocol::packet::{ProtocolVersion, QoS};

#[derive(Parser)]
#[command(
    name = "roost-chaos",
    about = "Roost's load generator and chaos harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a load scenario against an MQTT broker.
    Bench {
        #[command(subcommand)]
        scenario: ScenarioCmd,
    },
    /// Render `bench --json` reports (one per line) as markdown tables.
    BenchTable {
        /// The `--label` the ratios are computed against.
        #[arg(long, default_value = "mosquitto")]
        baseline: String,
        /// Files of JSON lines.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Chaos: SIGKILL a node under load, restart it a few seconds later.
    KillRestart(ChaosArgs),
    /// Chaos: partition a majority from a minority, then heal.
    PartitionHeal(ChaosArgs),
    /// Chaos: split a 2-node cluster, then heal.
    TwoNodeSplit(ChaosArgs),
    /// Chaos: split 3 nodes into {n1} | {n2} | {n3}, then heal.
    ThreeWaySplit(ChaosArgs),
    /// Chaos: kill every node at once, restart all but one together.
    StalePeerRestart(ChaosArgs),
    /// Chaos: reset and block the n1-n2 link again and again.
    FlappingLink(ChaosArgs),
    /// Chaos: SIGSTOP a node past the heartbeat timeout, then slow links.
    SlowNode(ChaosArgs),
    /// Chaos: every scenario above, in turn.
    All(ChaosArgs),
}

/// Options of every chaos scenario.
#[derive(Args, Debug)]
struct ChaosArgs {
    /// Long mode: more load and the fault repeated (minutes per scenario).
    #[arg(long)]
    long: bool,
    /// Nodes (default: 3; 2 for two-node-split).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    nodes: Option<u8>,
    /// The roost binary (default: the one next to roost-chaos, else `roost` on $PATH).
    #[arg(long)]
    roost: Option<PathBuf>,
    /// Append one JSON object per scenario (one line each) to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep each run directory (node configs, data, logs); its path is printed.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum ScenarioCmd {
    /// Many publishers, one subscriber on `bench/fanin/#`.
    FanIn {
        #[arg(long, default_value_t = 50)]
        publishers: usize,
        #[command(flatten)]
        common: Common,
    },
    /// One publisher, many subscribers of the same topic.
    FanOut {
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
        #[command(flatten)]
        common: Common,
    },
    /// N publisher -> subscriber pairs on distinct topics.
    Pairs {
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        #[command(flatten)]
        common: Common,
    },
    /// One publisher at a fixed rate, one subscriber: latency percentiles.
    Latency {
        /// Messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[command(flatten)]
        common: Common,
    },
    /// N idle connections: connect rate and broker memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[command(flatten)]
        common: Common,
    },
    /// An offline persistent session's backlog: publish it, measure broker
    /// RSS and data dir size, reconnect, drain and check every message.
    Backlog(BacklogArgs),
}

#[derive(Args)]
struct BacklogArgs {
    /// Backlog size in payload bytes: 100MB, 1GB (powers of 1000), 1GiB
    /// (powers of 1024), or a number of bytes.
    #[arg(long, value_parser = parse_size, required_unless_present = "messages", conflicts_with = "messages")]
    bytes: Option<u64>,
    /// Backlog size in messages (instead of --bytes).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Payload bytes of each message (at least 20: publisher id, sequence, timestamp).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1000))]
    publishers: u16,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=60_000))]
    window: u16,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    mqtt_version: u8,
    /// The subscriber's Session Expiry Interval, seconds (MQTT 5).
    #[arg(long, default_value_t = 3600)]
    session_expiry: u32,
    /// The broker's data dir: its size is reported.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Broker process id: adds its RSS (sampled every 100 ms) to the report.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Bound on each TCP connect, CONNACK and SUBACK wait.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Longest wait for a PUBACK, or for the next message of the drain.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ack_timeout: Duration,
    /// Bound on the whole run.
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    time_limit: Duration,
    /// Pause after publishing and after draining, before reading RSS.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Free text copied into the report, e.g. the broker's name.
    #[arg(long)]
    label: Option<String>,
    /// Print the report as one JSON line on stdout (summary on stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Common {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Subscribers connect to this port (another node of a cluster); default: --port.
    #[arg(long)]
    sub_port: Option<u16>,
    /// Wait this long after the subscriptions before publishing (a cluster
    /// replicates routes to other nodes asynchronously).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    settle: Duration,
    /// Broker process id: adds broker CPU per message and RSS to the report.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Measurement window (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measurement window starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload bytes (at least 20: publisher id, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    mqtt_version: u8,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    window: u16,
    /// Bound on each TCP connect, CONNACK and SUBACK wait.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Free text copied into the report, e.g. the broker's name.
    #[arg(long)]
    label: Option<String>,
    /// Print the report as one JSON line on stdout (summary on stderr).
    #[arg(long)]
    json: bool,
}

/// `100MB`, `1GB` (powers of 1000), `64KiB`, `1GiB` (powers of 1024), or a
/// bare number of bytes. Case does not matter; a trailing `B` is optional.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let units: [(&str, u64); 7] = [
        ("ki", 1 << 10),
        ("mi", 1 << 20),
        ("gi", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
        ("", 1),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|&(u, scale)| t.strip_suffix(u).map(|n| (n, scale)))
        .unwrap_or((t, 1));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    let bytes = value * scale as f64;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("not a size: {s:?}"));
    }
    Ok(bytes.round() as u64)
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("not a duration: {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (kinds, args) = match cli.command {
        Command::KillRestart(a) => (vec![Kind::KillRestart], a),
        Command::PartitionHeal(a) => (vec![Kind::PartitionHeal], a),
        Command::TwoNodeSplit(a) => (vec![Kind::TwoNodeSplit], a),
        Command::ThreeWaySplit(a) => (vec![Kind::ThreeWaySplit], a),
        Command::StalePeerRestart(a) => (vec![Kind::StalePeerRestart], a),
        Command::FlappingLink(a) => (vec![Kind::FlappingLink], a),
        Command::SlowNode(a) => (vec![Kind::SlowNode], a),
        Command::All(a) => (Kind::ALL.to_vec(), a),
        Command::Bench { scenario } => return exit(run_bench(scenario)),
        Command::BenchTable { baseline, files } => return exit(bench_table(&baseline, &files)),
    };
    run_chaos(&kinds, args)
}

fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code of a usage error (clap's too).
const USAGE: u8 = 2;

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("roost-chaos: {message}");
    ExitCode::from(USAGE)
}

/// Runs chaos scenarios one after the other: each report on stdout as it
/// completes (and appended to `--json`), a summary after several.
fn run_chaos(kinds: &[Kind], args: ChaosArgs) -> ExitCode {
    let roost = match find_roost(args.roost) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    let opts = chaos::Options {
        long: args.long,
        nodes: args.nodes.map(usize::from),
        roost,
        keep: args.keep,
        base_dir: None,
    };
    for &k in kinds {
        if let Err(e) = opts.nodes_for(k) {
            return usage_error(format!("{e:#}"));
        }
    }
    let json = match &args.json {
        None => None,
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => return usage_error(format!("--json {}: {e}", path.display())),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roost-chaos: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reports = Vec::new();
    for &kind in kinds {
        eprintln!("roost-chaos: running {} ...", kind.name());
        // Ctrl-C drops the scenario, and with it every node process.
        let report = runtime.block_on(async {
            tokio::select! {
                r = chaos::run(kind, &opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(report) = report else {
            eprintln!("roost-chaos: interrupted");
            return ExitCode::FAILURE;
        };
        print!("{}", report.human());
        if !report.passed {
            for (node, lines) in &report.node_logs {
                eprintln!("--- {node}: last warnings and errors\n{lines}");
            }
        }
        if let Some(mut f) = json.as_ref() {
            use std::io::Write as _;
            let line = serde_json::to_string(&report).unwrap_or_else(|e| {
                serde_json::json!({ "scenario": report.scenario, "error": e.to_string() })
                    .to_string()
            });
            if let Err(e) = writeln!(f, "{line}") {
                eprintln!("roost-chaos: cannot write the JSON report: {e}");
            }
        }
        reports.push(report);
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    if reports.len() > 1 {
        print!("\n{}", chaos::summary(&reports));
    }
    if reports.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--roost`, else `roost` next to this binary, else the first on `$PATH`.
fn find_roost(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("--roost {}: no such file", p.display()))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("roost")));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("roost"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no roost binary next to roost-chaos or on $PATH: give --roost PATH".to_owned()
        })
}

fn run_bench(cmd: ScenarioCmd) -> Result<()> {
    let (scenario, common) = match cmd {
        ScenarioCmd::Backlog(args) => return run_backlog(args),
        ScenarioCmd::FanIn { publishers, common } => (Scenario::FanIn { publishers }, common),
        ScenarioCmd::FanOut {
            subscribers,
            common,
        } => (Scenario::FanOut { subscribers }, common),
        ScenarioCmd::Pairs { pairs, common } => (Scenario::Pairs { pairs }, common),
        ScenarioCmd::Latency { rate, common } => (Scenario::Latency { rate }, common),
        ScenarioCmd::Idle {
            connections,
            common,
        } => (Scenario::Idle { connections }, common),
    };
    validate(&scenario)?;
    let json = common.json;
    let cfg = config(common);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = runtime.block_on(bench::run(&cfg, &scenario))?;
    // Do not wait for stray tasks (a client stuck past its deadline).
    runtime.shutdown_timeout(Duration::from_secs(1));
    if json {
        eprint!("{}", report.human());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn backlog_config(a: BacklogArgs) -> BacklogConfig {
    let messages = match (a.messages, a.bytes) {
        (Some(n), _) => n,
        (None, Some(bytes)) => backlog::messages_for_bytes(bytes, a.payload),
        (None, None) => 1,
    };
    BacklogConfig {
        host: a.host,
        port: a.port,
        broker_pid: a.broker_pid,
        data_dir: a.data_dir,
        messages,
        payload: a.payload,
        publishers: usize::from(a.publishers),
        window: usize::from(a.window),
        version: if a.mqtt_version == 5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        session_expiry: a.session_expiry,
        connect_timeout: a.connect_timeout,
        ack_timeout: a.ack_timeout,
        time_limit: a.time_limit,
        settle: a.settle,
        sample_every: Duration::from_millis(100),
        progress: true,
        label: a.label,
    }
}

/// Runs `bench backlog`: prints the report, fails on any failure in it.
fn run_backlog(args: BacklogArgs) -> Result<()> {
    let json = args.json;
    let cfg = backlog_config(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = runtime.block_on(backlog::run(&cfg));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = report?;
    if json {
        eprint!("{}", report.human());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    match report.failures.first() {
        None => Ok(()),
        Some(first) => bail!(
            "backlog: FAILED ({} problems; first: {first})",
            report.failures.len()
        ),
    }
}

fn validate(scenario: &Scenario) -> Result<()> {
    let count = match scenario {
        Scenario::FanIn { publishers: n }
        | Scenario::FanOut { subscribers: n }
        | Scenario::Pairs { pairs: n }
        | Scenario::Idle { connections: n } => *n,
        Scenario::Latency { rate } if !(rate.is_finite() && *rate > 0.0) => {
            bail!("--rate must be a positive number")
        }
        Scenario::Latency { .. } => 1,
    };
    if count == 0 {
        bail!("{}: the client count must be at least 1", scenario.name());
    }
    Ok(())
}

fn config(c: Common) -> BenchConfig {
    BenchConfig {
        host: c.host,
        port: c.port,
        sub_port: c.sub_port,
        settle: c.settle,
        broker_pid: c.broker_pid,
        duration: c.duration,
        warmup: c.warmup,
        qos: if c.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        payload: c.payload,
        version: if c.mqtt_version == 5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        window: usize::from(c.window),
        connect_timeout: c.connect_timeout,
        label: c.label,
    }
}

fn bench_table(baseline: &str, files: &[PathBuf]) -> Result<()> {
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        reports.extend(bench::table::parse_lines(&text).with_context(|| f.display().to_string())?);
    }
    print!("{}", bench::table::render(&reports, baseline));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100mb"), Ok(100_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1.5k"), Ok(1_500));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1GB").is_err());
    }

    #[test]
    fn backlog_takes_bytes_or_messages() {
        let parse = |args: &[&str]| {
            let mut all = vec!["roost-chaos", "bench", "backlog"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let Ok(Cli {
            command:
                Command::Bench {
                    scenario: ScenarioCmd::Backlog(a),
                },
        }) = parse(&["--bytes", "1GiB", "--payload", "1024", "--port", "19300"])
        else {
            panic!("backlog should parse");
        };
        let cfg = backlog_config(a);
        assert_eq!(
            (cfg.messages, cfg.port, cfg.publishers),
            (1 << 20, 19300, 2)
        );
        assert!(parse(&["--messages", "10", "--bytes", "1GB"]).is_err());
        assert!(parse(&["--payload", "1024"]).is_err(), "a size is required");
        assert!(parse(&["--messages", "10"]).is_ok());
    }

    #[test]
    fn chaos_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "roost-chaos",
            "partition-heal",
            "--long",
            "--nodes",
            "5",
            "--json",
            "out.json",
            "--keep",
            "--roost",
            "/x/roost",
        ])
        .expect("parse");
        let Command::PartitionHeal(a) = cli.command else {
            panic!("wrong command");
        };
        assert!(a.long && a.keep);
        assert_eq!(a.nodes, Some(5));
        assert_eq!(a.json.as_deref(), Some(std::path::Path::new("out.json")));
        assert!(Cli::try_parse_from(["roost-chaos", "all"]).is_ok());
        assert!(Cli::try_parse_from(["roost-chaos", "slow-node", "--nodes", "0"]).is_err());
        assert!(Cli::try_parse_from(["roost-chaos", "nope"]).is_err());
        assert!(find_roost(Some(PathBuf::from("/nonexistent/roost"))).is_err());
    }

    #[test]
    fn cli_parses_the_documented_form() {
        let cli = Cli::try_parse_from([
            "roost-chaos",
            "bench",
            "fan-in",
            "--publishers",
            "5",
            "--host",
            "127.0.0.1",
            "--port",
            "1884",
            "--duration",
            "2s",
            "--qos",
            "1",
            "--payload",
            "32",
            "--mqtt-version",
            "5",
        ])
        .expect("parse");
        let Command::Bench {
            scenario: ScenarioCmd::FanIn { publishers, common },
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!(publishers, 5);
        let cfg = config(common);
        assert_eq!(
            (cfg.port, cfg.qos, cfg.version),
            (1884, QoS::AtLeastOnce, ProtocolVersion::V5)
        );
        assert!(Cli::try_parse_from(["roost-chaos", "bench", "fan-in", "--qos", "2"]).is_err());
    }
}
