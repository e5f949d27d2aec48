//! The `a2cid` command line: devices, run, worker, report, topology, simulate.
use clap::{Parser, Subcommand};

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
    Devices(a2cid::cli::DevicesArgs),
    /// Train: N local worker processes (default 4, ring, acid, digits); `--workers 1` in-process.
    Run(Box<a2cid::cli::RunArgs>),
    /// Run one worker of a multi-worker run (for SLURM's srun or other cluster launchers).
    Worker(Box<a2cid::runtime::WorkerArgs>),
    /// Plots and an HTML page of one or several run directories (overlaid).
    Report(a2cid::report::ReportArgs),
    /// Print a graph's size, degrees and A²CiD² constants (chi_1, chi_2, eta, alpha_tilde).
    Topology(a2cid::topology::TopologyArgs),
    /// Simulate n workers with the exact continuized dynamics (acid, gossip, allreduce).
    Simulate(Box<a2cid::sim::SimulateArgs>),
}

fn main() -> std::process::ExitCode {
    a2cid::cli::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => a2cid::cli::devices(&args),
        Command::Run(args) => a2cid::cli::run(&args),
        Command::Worker(args) => a2cid::runtime::run_worker(&args),
        Command::Report(args) => a2cid::report::run_report(&args),
        Command::Topology(args) => a2cid::topology::run_topology(&args),
        Command::Simulate(args) => a2cid::sim::run_simulate(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
