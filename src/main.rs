//! The `a2cid` binary: the command line over the crates of the workspace (see
//! docs/architecture.md).
use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser, Debug)]
#[command(
    name = "a2cid",
    version,
    about = "Asynchronous decentralized training with A²CiD² on any GPU (wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the GPU adapters wgpu sees and which one would be used.
    Devices(cli::devices::DevicesArgs),
    /// Train: N local worker processes (default 4, ring, acid, digits); `--workers 1` in-process.
    Run(Box<cli::run::RunArgs>),
    /// Run one worker of a multi-worker run (for SLURM's srun or other cluster launchers).
    Worker(Box<cli::run::WorkerArgs>),
    /// Plots and an HTML page of one or several run directories (overlaid).
    Report(cli::report::ReportArgs),
    /// Print a graph's size, degrees and A²CiD² constants (chi_1, chi_2, eta, alpha_tilde).
    Topology(cli::topology::TopologyArgs),
    /// Simulate n workers with the exact continuized dynamics (acid, gossip, allreduce).
    Simulate(Box<a2cid_sim::SimulateArgs>),
}

fn main() -> std::process::ExitCode {
    cli::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => cli::devices::devices(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Worker(args) => cli::run::worker(&args),
        Command::Report(args) => cli::report::report(&args),
        Command::Topology(args) => cli::topology::topology(&args),
        Command::Simulate(args) => a2cid_sim::run_simulate(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
