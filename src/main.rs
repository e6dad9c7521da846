//! `asterisk-operator`: the command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use asterisk_operator::agent::cli::{self as agent_cli, AgentArgs, PushArgs};
use asterisk_operator::{ami, crd, offline};

/// Kubernetes-style reconciling controller for fleets of Asterisk PBX servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions generated from the Rust types (or write one file per kind).
    Crds {
        /// Write `<dir>/<kind>.yaml` files instead of printing one multi-document YAML.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Render manifests (what you would `kubectl apply`) into one folder of config files per node.
    Render {
        /// Manifest file or folder of `.yaml` files; repeatable. None: the embedded example fleet.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Output folder: `<out>/<node>/…`, plus `secrets.yaml` with generated secrets.
        #[arg(short, long, default_value = "out")]
        out: PathBuf,
        /// Write nothing when any resource is invalid.
        #[arg(long)]
        strict: bool,
    },
    /// Talk to an Asterisk server's AMI: send one action, or tail its events as JSON.
    Ami(ami::cli::AmiArgs),
    /// Reconcile the fleet: push changed bundles to the agents and write every resource's status.
    Controller(asterisk_operator::controller::cli::ControllerArgs),
    /// Run beside one Asterisk: apply bundles over gRPC, serve /healthz, /readyz and /metrics.
    Agent(Box<AgentArgs>),
    /// Write a managed node's base Asterisk configuration (the init container of its pod).
    Bootstrap(asterisk_operator::bootstrap::BootstrapArgs),
    /// Send one rendered node folder to an agent and print what it did (exit 1 on failure).
    Push(PushArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The agent runs on one thread: its work is small and I/O-bound, and every hand-off of a
    // mesh update (AMI reader → mesh → gRPC, and back to an AMI Setvar) then stays on that
    // thread instead of waking another worker. Measured (docs/benchmarks.md): a third less CPU
    // per relayed change and a lower relay latency than two workers.
    let runtime = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crds { dir } => {
            let crds = crd::all();
            match dir {
                None => {
                    for (_, crd) in crds {
                        print!("---\n{}", serde_saphyr::to_string(&crd)?);
                    }
                }
                Some(dir) => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                    for (name, crd) in crds {
                        let path = dir.join(format!("{name}.yaml"));
                        std::fs::write(&path, crd::to_yaml(&crd)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                        println!("wrote {}", path.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            asterisk_operator::daemon::init_logging(&args.log_format);
            Ok(agent_cli::run_agent(*args).await?)
        }
        Command::Bootstrap(args) => {
            let report = asterisk_operator::bootstrap::write(&args)?;
            println!("{}", report.summary(&args.config_dir));
            Ok(ExitCode::SUCCESS)
        }
        Command::Push(args) => Ok(agent_cli::run_push(args).await?),
        Command::Render { files, out, strict } => {
            let report = offline::render_manifests(&files, &out, strict)?;
            print!("{}", report.summary());
            let errors = report.problems();
            if errors.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "{} invalid resources or documents{}:",
                errors.len(),
                if strict { " (--strict: nothing written)" } else { " (left out; the rest was written)" }
            );
            for e in errors {
                eprintln!("  {e}");
            }
            Ok(ExitCode::from(1))
        }
        Command::Controller(args) => {
            asterisk_operator::daemon::init_logging(&args.log_format);
            Ok(asterisk_operator::controller::cli::run(args).await?)
        }
        Command::Ami(args) => {
            ami::cli::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
