//! Command line of the `roost` binary (clap derive).
//!
//! ```text
//! roost start [--config FILE] [--node-name NAME] [--mqtt ADDR] [--mgmt ADDR] [--data-dir DIR]
//!             [--cluster-listen ADDR] [--seeds HOST:PORT,...] [--cookie SECRET]
//! roost print-default-config
//! roost check-config FILE
//! roost ctl [--node URL] [--token T | --data-dir DIR] [--json] COMMAND   (see `crate::ctl`)
//! ```
//!
//! Config precedence, lowest first: file (or embedded default), `ROOST_*` environment,
//! flags. Commands that need no running node are plain functions returning
//! `(exit code, output)` so they are testable without a process. Bad flags or arguments
//! are clap usage errors (exit code 2, via `Cli::parse`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigErrors};
use crate::ctl::CtlArgs;

/// Exit code of `check-config` when the file has problems.
pub const EXIT_CONFIG_PROBLEMS: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "roost",
    version,
    about = "A clustered MQTT broker on supervised actors"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output: -v for debug, -vv for trace (RUST_LOG still wins).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a broker node.
    Start(StartArgs),
    /// Print the commented default configuration.
    PrintDefaultConfig,
    /// Check a configuration file; print every problem and exit 1 if there is any.
    CheckConfig(CheckConfigArgs),
    /// Operate a running node through its management API.
    Ctl(CtlArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct StartArgs {
    /// Configuration file (TOML). Without it, the built-in defaults are used.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name, `name@host` (overrides node.name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// MQTT listen address, e.g. 0.0.0.0:1883 (overrides mqtt.listen).
    #[arg(long, value_name = "ADDR")]
    pub mqtt: Option<SocketAddr>,
    /// Management API listen address, e.g. 127.0.0.1:18083 (overrides mgmt.listen).
    #[arg(long, value_name = "ADDR")]
    pub mgmt: Option<SocketAddr>,
    /// Data directory (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster transport listen address, e.g. 0.0.0.0:4370 (overrides cluster.listen).
    #[arg(long, value_name = "ADDR")]
    pub cluster_listen: Option<SocketAddr>,
    /// Other nodes to join, `host:port,...` (static discovery: sets cluster.seeds
    /// and cluster.discovery = "static").
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Shared secret of the cluster (overrides cluster.cookie; also
    /// ROOST_CLUSTER__COOKIE). Never logged.
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub cookie: Option<String>,
}

impl StartArgs {
    /// Applies the flags that were given on top of `cfg` (flags override env and file).
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(name) = &self.node_name {
            cfg.node.name.clone_from(name);
        }
        if let Some(addr) = self.mqtt {
            cfg.mqtt.listen = addr;
        }
        if let Some(addr) = self.mgmt {
            cfg.mgmt.listen = addr;
        }
        if let Some(dir) = &self.data_dir {
            cfg.node.data_dir.clone_from(dir);
        }
        if let Some(addr) = self.cluster_listen {
            cfg.cluster.listen = addr;
        }
        if let Some(seeds) = &self.seeds {
            cfg.cluster.seeds.clone_from(seeds);
            cfg.cluster.discovery = "static".to_owned();
        }
        if let Some(cookie) = &self.cookie {
            cfg.cluster.cookie.clone_from(cookie);
        }
    }

    /// The effective configuration: `--config` file (or defaults), then the `ROOST_*`
    /// overrides in `env`, then these flags; validated again after the flags.
    pub fn load_config(&self, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        let mut cfg = config::load(self.config.as_deref(), env)?;
        self.apply(&mut cfg);
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `roost check-config FILE`: `(0, "FILE: ok\n")`, or exit code 1 and every problem,
/// one per line. Checks the file alone: `ROOST_*` variables are not applied, so the
/// verdict is about the file and does not depend on the shell it runs in.
pub fn check_config_command(path: &Path) -> (u8, String) {
    match config::load(Some(path), &[]) {
        Ok(_) => (0, format!("{}: ok\n", path.display())),
        Err(errors) => (EXIT_CONFIG_PROBLEMS, format!("{errors}\n")),
    }
}

/// `roost print-default-config`.
pub fn print_default_config_command() -> (u8, String) {
    (0, config::DEFAULT_CONFIG.to_owned())
}

/// The tracing filter directive to use: `RUST_LOG` if set and non-empty, else `debug` or
/// `trace` for `-v` / `-vv`, else the configured `log.level`.
pub fn log_filter(configured: &str, verbose: u8, rust_log: Option<&str>) -> String {
    match (rust_log.filter(|s| !s.trim().is_empty()), verbose) {
        (Some(env), _) => env.to_owned(),
        (None, 0) => configured.to_owned(),
        (None, 1) => "debug".to_owned(),
        (None, _) => "trace".to_owned(),
    }
}

/// The directive the filter is built from: `directive` plus `ractor=warn` unless it sets
/// a level for ractor itself. ractor opens an INFO span ("Actor") per actor that lives
/// as long as the actor: about 500 B per actor with the fmt subscriber, two actors per
/// connection, for spans none of our events need (docs/BENCHMARKS.md, idle connection
/// memory). Shown directives (`roost ctl log level`) stay as given.
pub fn quiet_ractor(directive: &str) -> String {
    if directive
        .split(',')
        .any(|d| d.trim_start().starts_with("ractor"))
    {
        directive.to_owned()
    } else {
        format!("{directive},ractor=warn")
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;
    use crate::config::tests::write_temp;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("roost").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn start_parses_every_flag_and_global_verbose() {
        let cli = parse(&[
            "start",
            "-c",
            "r.toml",
            "--node-name",
            "a@b",
            "--mqtt",
            "127.0.0.1:1884",
            "--mgmt",
            "127.0.0.1:18084",
            "--data-dir",
            "/d",
            "-vv",
        ])
        .expect("valid args");
        let Command::Start(args) = cli.command else {
            panic!("expected start, got {:?}", cli.command);
        };
        assert_eq!(cli.verbose, 2);
        assert_eq!(args.config, Some(PathBuf::from("r.toml")));
        assert_eq!(args.node_name.as_deref(), Some("a@b"));
        assert_eq!(args.mqtt, Some("127.0.0.1:1884".parse().expect("addr")));
        assert_eq!(args.mgmt, Some("127.0.0.1:18084".parse().expect("addr")));
        assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn other_subcommands_parse() {
        assert!(matches!(
            parse(&["print-default-config"]).map(|c| c.command),
            Ok(Command::PrintDefaultConfig)
        ));
        let cli = parse(&["-v", "check-config", "x.toml"]).expect("valid args");
        assert_eq!(cli.verbose, 1);
        assert!(matches!(cli.command, Command::CheckConfig(a) if a.file == Path::new("x.toml")));
    }

    #[test]
    fn bad_arguments_are_usage_errors_with_exit_code_2() {
        for args in [
            &["start", "--bogus"][..],
            &["start", "--mqtt", "not-an-address"],
            &["check-config"],
            &["frobnicate"],
            &[],
        ] {
            let err = parse(args).expect_err("should be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = parse(&["start", "--bogus"]).expect_err("unknown flag");
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
    }

    #[test]
    fn ctl_parses_commands_and_options() {
        use crate::ctl::{ClientsCmd, CtlCommand};
        let cli = parse(&[
            "ctl",
            "--node",
            "http://h:1/",
            "--token",
            "t0",
            "clients",
            "list",
            "--match",
            "x",
            "--json",
        ])
        .expect("valid ctl");
        let Command::Ctl(args) = cli.command else {
            panic!("expected ctl");
        };
        assert_eq!(args.node, "http://h:1");
        assert_eq!(args.token.as_deref(), Some("t0"));
        assert!(args.json);
        assert!(matches!(
            args.command,
            CtlCommand::Clients(ClientsCmd::List { pattern: Some(ref p), node: None }) if p == "x"
        ));
        for bad in [
            &["ctl"][..],
            &["ctl", "clients"],
            &["ctl", "clients", "show"],
            &["ctl", "restart"],
            &["ctl", "--node", "https://h:1", "status"],
            &["ctl", "frobnicate"],
        ] {
            let err = parse(bad).expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn flags_override_env_which_overrides_file() {
        let path = write_temp(
            "flags_override_env",
            "[node]\nname = \"file@host\"\ndata_dir = \"/file\"\n[mqtt]\nmax_inflight = 5\n",
        );
        let env = vec![
            ("ROOST_NODE__NAME".to_owned(), "env@host".to_owned()),
            ("ROOST_MQTT__LISTEN".to_owned(), "127.0.0.1:2000".to_owned()),
        ];
        let args = StartArgs {
            config: Some(path.clone()),
            node_name: Some("flag@host".to_owned()),
            mqtt: None,
            mgmt: None,
            data_dir: Some(PathBuf::from("/flag")),
            ..StartArgs::default()
        };
        let cfg = args.load_config(&env);
        let _ = std::fs::remove_file(&path);
        let cfg = cfg.expect("valid config");
        assert_eq!(cfg.node.name, "flag@host");
        assert_eq!(cfg.node.data_dir, PathBuf::from("/flag"));
        assert_eq!(cfg.mqtt.listen.port(), 2000);
        assert_eq!(cfg.mqtt.max_inflight, 5);
    }

    #[test]
    fn cluster_flags_set_listen_seeds_static_discovery_and_cookie() {
        let args = StartArgs {
            cluster_listen: Some("127.0.0.1:5000".parse().unwrap()),
            seeds: Some(vec!["n1.example:4370".into(), "n2.example:4370".into()]),
            cookie: Some("from-the-flag".into()),
            ..StartArgs::default()
        };
        let env = vec![(
            "ROOST_CLUSTER__COOKIE".to_owned(),
            "from-env-var".to_owned(),
        )];
        let cfg = args.load_config(&env).expect("valid config");
        assert_eq!(cfg.cluster.listen.port(), 5000);
        assert_eq!(cfg.cluster.discovery, "static");
        assert_eq!(cfg.cluster.seeds.len(), 2);
        assert_eq!(cfg.cluster.cookie, "from-the-flag");
        let env_only = StartArgs::default().load_config(&env).unwrap();
        assert_eq!(env_only.cluster.cookie, "from-env-var");

        let bad = StartArgs {
            seeds: Some(vec!["no-port".into()]),
            ..StartArgs::default()
        };
        let errors = bad.load_config(&[]).expect_err("a seed without a port");
        assert!(errors.find("cluster.seeds").is_some(), "{errors}");
    }

    #[test]
    fn invalid_flag_value_is_reported_by_load_config() {
        let args = StartArgs {
            node_name: Some("no-at".to_owned()),
            ..StartArgs::default()
        };
        let errors = args.load_config(&[]).expect_err("invalid node name");
        assert!(errors.find("node.name").is_some(), "{errors}");
    }

    #[test]
    fn check_config_accepts_a_good_file() {
        let path = write_temp("check_config_good", config::DEFAULT_CONFIG);
        let (code, out) = check_config_command(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!((code, out), (0, format!("{}: ok\n", path.display())));
    }

    #[test]
    fn check_config_lists_every_problem_of_a_bad_file() {
        let path = write_temp(
            "check_config_bad",
            "[mqtt]\nmax_inflght = 1\nmax_qos = 9\nlisten = 1883\n",
        );
        let (code, out) = check_config_command(&path);
        let _ = std::fs::remove_file(&path);
        let file = path.display();
        assert_eq!(code, 1);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with(&format!("{file}:2: mqtt.max_inflght: unknown key")),
            "{out}"
        );
        assert_eq!(
            lines[1],
            format!("{file}:3: mqtt.max_qos: must be 0, 1 or 2, got 9")
        );
        assert!(
            lines[2].starts_with(&format!(
                "{file}:4: mqtt.listen: invalid type: integer `1883`"
            )),
            "{out}"
        );
    }

    #[test]
    fn check_config_reports_a_missing_file() {
        let (code, out) = check_config_command(Path::new("/nonexistent/roost.toml"));
        assert_eq!(code, 1);
        assert!(
            out.starts_with("/nonexistent/roost.toml: cannot read config file"),
            "{out}"
        );
    }

    #[test]
    fn print_default_config_prints_the_embedded_file() {
        assert_eq!(
            print_default_config_command(),
            (0, config::DEFAULT_CONFIG.to_owned())
        );
    }

    #[test]
    fn log_filter_precedence_is_rust_log_then_verbose_then_config() {
        assert_eq!(log_filter("warn", 2, Some("roost=trace")), "roost=trace");
        assert_eq!(log_filter("warn", 0, Some(" ")), "warn");
        assert_eq!(log_filter("warn", 1, None), "debug");
        assert_eq!(log_filter("warn", 3, None), "trace");
        assert_eq!(log_filter("warn", 0, None), "warn");
    }

    #[test]
    fn quiet_ractor_unless_a_level_is_set_for_it() {
        assert_eq!(quiet_ractor("info"), "info,ractor=warn");
        assert_eq!(quiet_ractor("roost=trace"), "roost=trace,ractor=warn");
        assert_eq!(quiet_ractor("ractor=debug"), "ractor=debug");
        assert_eq!(quiet_ractor("info, ractor=trace"), "info, ractor=trace");
    }
}
