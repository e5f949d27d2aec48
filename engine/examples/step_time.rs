//! Times one training step of a model on the default adapter (forward, loss, backward), for
//! finding where a step's time goes: `cargo run --release -p a2cid-engine --example step_time --
//! cnn 28 64`.
use std::time::Instant;

use a2cid_engine::{AdapterChoice, GpuContext, InputShape, ModelKind, ModelSpec};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kind: ModelKind = args
        .get(1)
        .map_or("cnn", |s| s)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let side: usize = args.get(2).map_or(Ok(28), |s| s.parse())?;
    let rows: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let ctx = GpuContext::new(&AdapterChoice::default())?;
    if args.get(4).map(String::as_str) == Some("plain") {
        use a2cid_engine::kernels::{self, MatRef};
        for (m, k, n) in [
            (128, 784, 256),
            (512, 512, 512),
            (32, 400, 12544),
            (12544, 400, 32),
            (128, 400, 12544),
            (12544, 400, 128),
        ] {
            let a = ctx.storage_buffer("a", m * k)?;
            let b = ctx.storage_buffer("b", k * n)?;
            let c = ctx.storage_buffer("c", m * n)?;
            let d = kernels::matmul(
                &ctx,
                MatRef::new(&a, 0),
                MatRef::new(&b, 0),
                &c,
                0,
                (m, k, n),
                false,
            )?;
            ctx.run(&[&d]);
            ctx.sync()?;
            let t = Instant::now();
            for _ in 0..5 {
                ctx.run(&[&d]);
            }
            ctx.sync()?;
            let s = t.elapsed().as_secs_f64() / 5.0;
            println!(
                "plain {m}x{k}x{n}: {:.1} ms, {:.2} GFLOP/s",
                s * 1e3,
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
        return Ok(());
    }
    if kind == ModelKind::Cnn {
        use a2cid_engine::kernels::ConvGeometry;
        conv_parts(
            &ctx,
            &ConvGeometry::new(rows, (1, side, side), 16, (5, 5), 1, 2)?,
        )?;
        conv_parts(
            &ctx,
            &ConvGeometry::new(rows, (16, side / 2, side / 2), 32, (5, 5), 1, 2)?,
        )?;
    }
    let spec = ModelSpec::new(kind, &[256, 128], 16, InputShape([1, side, side]), 10)?;
    let mut model = spec.build(ctx.clone(), rows)?;
    model.set_params(&model.init(0))?;
    let x = vec![0.5f32; rows * side * side];
    let y: Vec<u32> = (0..rows as u32).map(|i| i % 10).collect();
    model.forward_backward(&x, &y)?;
    ctx.sync()?;
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        model.forward_backward(&x, &y)?;
    }
    ctx.sync()?;
    println!(
        "{kind} {} batch {rows}: {:.1} ms per step",
        model.describe(),
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}

/// Times each convolution product of `g` alone.
#[allow(dead_code)]
pub fn conv_parts(ctx: &GpuContext, g: &a2cid_engine::kernels::ConvGeometry) -> anyhow::Result<()> {
    use a2cid_engine::kernels;
    let x = ctx.storage_buffer("x", g.batch * g.input_len())?;
    let w = ctx.storage_buffer("w", g.weights())?;
    let y = ctx.storage_buffer("y", g.batch * g.output_len())?;
    let dw = ctx.storage_buffer("dw", g.weights())?;
    let scratch = ctx.storage_buffer("s", g.weight_grad_splits() * g.weights())?;
    let flops = 2.0 * (g.batch * g.output_len() * g.taps()) as f64;
    let time = |name: &str, ds: Vec<kernels::Dispatch>| -> anyhow::Result<()> {
        let refs: Vec<&kernels::Dispatch> = ds.iter().collect();
        ctx.run(&refs);
        ctx.sync()?;
        let t = Instant::now();
        for _ in 0..3 {
            ctx.run(&refs);
        }
        ctx.sync()?;
        let s = t.elapsed().as_secs_f64() / 3.0;
        println!(
            "  {name:<12} {:8.1} ms  {:6.2} GFLOP/s",
            s * 1e3,
            flops / s / 1e9
        );
        Ok(())
    };
    println!("{g:?}");
    time(
        "forward",
        vec![kernels::conv_forward(ctx, g, (&x, 0), (&w, 0), (&y, 0))?],
    )?;
    time(
        "input grad",
        vec![kernels::conv_input_grad(
            ctx,
            g,
            (&w, 0),
            (&y, 0),
            (&x, 0),
            false,
        )?],
    )?;
    time(
        "weight grad",
        kernels::conv_weight_grad(ctx, g, (&y, 0), (&x, 0), (&dw, 0), &scratch)?,
    )?;
    Ok(())
}
