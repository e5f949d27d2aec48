//! `a2cid devices`: the adapters wgpu sees and which one would be used.
use a2cid_engine::device::list_adapters;
use a2cid_engine::AdapterChoice;

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Adapter to select: an index from this list or part of a name (default: the best one).
    #[arg(long, env = "A2CID_ADAPTER", default_value = "auto")]
    pub adapter: String,
}

pub fn devices(args: &DevicesArgs) -> anyhow::Result<()> {
    let choice: AdapterChoice = args.adapter.parse().expect("infallible");
    let (list, chosen) = list_adapters(&choice);
    if list.is_empty() {
        return Err(a2cid_engine::EngineError::NoAdapter.into());
    }
    println!(
        "{:<4} {:<40} {:<8} {:<14} driver",
        "idx", "name", "backend", "type"
    );
    for a in &list {
        let mark = if chosen.as_ref().ok() == Some(&a.index) {
            "  <- would be used"
        } else {
            ""
        };
        println!(
            "{:<4} {:<40} {:<8} {:<14} {}{mark}",
            format!("[{}]", a.index),
            a.name,
            a.backend,
            a.device_type,
            a.driver
        );
    }
    match chosen {
        Ok(i) if list[i].is_cpu => println!(
            "\nNo hardware GPU adapter: the CPU adapter [{i}] would be used (slow). Install your GPU's Vulkan driver to use it."
        ),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
