//! The `roost` binary: `start`, `print-default-config`, `check-config`, `ctl`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use roost::cli::{self, Cli, Command, StartArgs};
use roost::ctl::{self, CtlArgs};
use roost::mgmt::LogControl;
use roost::node::{Node, NodeOptions};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PrintDefaultConfig => print(cli::print_default_config_command()),
        Command::CheckConfig(args) => print(cli::check_config_command(&args.file)),
        Command::Start(args) => start(args, cli.verbose),
        Command::Ctl(args) => ctl_command(&args),
    }
}

/// `roost ctl`: 0 ok, 1 the operation failed (usage errors exit 2 in clap).
fn ctl_command(args: &CtlArgs) -> ExitCode {
    match ctl::run(args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost ctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn print((code, text): (u8, String)) -> ExitCode {
    if code == 0 {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
    ExitCode::from(code)
}

fn start(args: StartArgs, verbose: u8) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match args.load_config(&env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("roost: invalid configuration:\n{errors}");
            return ExitCode::from(1);
        }
    };
    let filter = cli::log_filter(
        &config.log.level,
        verbose,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    // Reloadable, for `roost ctl log level` (PUT /api/v1/log/level).
    let logging = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(cli::quiet_ractor(&filter)))
        .with_filter_reloading();
    let log = Arc::new(LogControl::new(logging.reload_handle(), filter));
    logging.init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roost: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Before the node starts: its listeners accept clients at once, and
        // a SIGINT or SIGTERM from then on must be a clean shutdown, not
        // the default action (exit by signal, nothing flushed).
        let shutdown = match ShutdownSignal::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("roost: cannot install the signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let options = NodeOptions { log: Some(log) };
        let mut node = match Node::start_with(config, options).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("roost: {e:#}");
                return ExitCode::from(1);
            }
        };
        tokio::select! {
            _ = shutdown.wait() => {
                tracing::info!("shutdown_requested");
                node.shutdown().await;
                ExitCode::SUCCESS
            }
            _ = node.wait() => {
                tracing::error!("root_supervisor_stopped");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGINT or SIGTERM, registered when installed.
struct ShutdownSignal {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> std::io::Result<ShutdownSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignal {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
