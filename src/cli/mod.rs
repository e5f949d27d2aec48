//! The `a2cid` command line: one module per subcommand (arguments and handler). Everything else
//! lives in the crates below; this is only the command line over them.
pub mod devices;
pub mod report;
pub mod run;
pub mod topology;

/// Logs go to stderr; `RUST_LOG` overrides the default (info for a2cid, warnings for the rest).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,a2cid=info,a2cid_engine=info,a2cid_net=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
