//! `a2cid report`: plots and an HTML page of one or several run directories.
use std::path::PathBuf;

use a2cid_schema::{RunConfig, RunDir};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run directories (of `a2cid run` or `a2cid worker`); several are overlaid.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output folder [default: RUN_DIR/report for one run, else report-<unix time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Builds the summary of a worker-only run directory that has none (e.g. after
/// `srun a2cid worker ...`), then renders the report.
pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    for dir in &args.runs {
        let run = RunDir::new(dir);
        if !run.summary().exists() && run.workers().is_dir() {
            let path = run.config();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg: RunConfig = toml::from_str(&text)
                .with_context(|| format!("{} is not valid", path.display()))?;
            a2cid_runtime::gather(&run, &cfg, None)?;
            println!("wrote {}", run.summary().display());
        }
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None if args.runs.len() == 1 => RunDir::new(&args.runs[0]).report(),
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("report-{t}"))
        }
    };
    let index = a2cid_report::render(&args.runs, &out)?;
    println!("report: {}", index.display());
    Ok(())
}
