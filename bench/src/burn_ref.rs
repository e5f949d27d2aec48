//! The baseline of the matmul benchmarks: burn's own wgpu matmul (CubeCL kernels, no fusion, no
//! autotune in this build), timed the way our kernels are timed — launches plus a device
//! synchronisation before the clock stops.
//!
//! burn can run on the very `wgpu::Device` an [`a2cid_engine::GpuContext`] opened (see
//! [`burn_device_on`]), so both sides of a comparison use the same adapter, the same device and
//! the same queue.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use a2cid_engine::GpuContext;
use burn::tensor::wgpu::WgpuSetup;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};

/// Where a burn device runs relative to an engine context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BurnPlacement {
    /// burn's runtime was registered on the engine's own `wgpu::Device` and `wgpu::Queue`.
    SharedDevice,
    /// burn got its own device on the engine's adapter, because the engine's device lacks
    /// `missing`, features cubecl would use on this adapter (its kernels would fail validation).
    SameAdapter { missing: wgpu::Features },
    /// burn picked its default wgpu device itself.
    BurnDefault,
}

/// A burn device (without autodiff) and where it runs.
#[derive(Clone, Debug)]
pub struct BurnDevice {
    pub device: Device,
    pub placement: BurnPlacement,
}

/// wgpu features cubecl reads from the *adapter* (not from the device it is handed) to decide what
/// its kernels may use: 64-bit integers (its fast index division), f16/f64, float atomics, and
/// subgroup operations on hardware adapters. A shared device that has not enabled one of these
/// would get kernels it rejects, so sharing is only done when none is missing.
fn features_cubecl_may_use(info: &wgpu::AdapterInfo) -> wgpu::Features {
    let mut features = wgpu::Features::SHADER_INT64
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SHADER_F64
        | wgpu::Features::SHADER_FLOAT32_ATOMIC;
    if info.device_type != wgpu::DeviceType::Cpu {
        features |= wgpu::Features::SUBGROUP;
    }
    features
}

/// A burn device on the adapter of `ctx`: its very device and queue when that is safe (see
/// [`BurnPlacement`]), otherwise a second device on the same adapter. Registered once per engine
/// device and process (cubecl registers a runtime per call), later calls return the same one.
pub fn burn_device_on(ctx: &GpuContext) -> BurnDevice {
    static REGISTERED: Mutex<Vec<(wgpu::Device, BurnDevice)>> = Mutex::new(Vec::new());
    let mut registered = REGISTERED.lock().expect("burn device registry poisoned");
    if let Some((_, found)) = registered.iter().find(|(d, _)| *d == ctx.device) {
        return found.clone();
    }
    // cubecl wants the adapter too (it reads its info, limits and features). GpuContext keeps only
    // the device, so find the adapter whose info (PCI bus id included) is the device's, on that
    // backend alone.
    let info = ctx.device.adapter_info();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = info.backend.into();
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.enumerate_adapters(info.backend.into()))
        .into_iter()
        .find(|a| a.get_info() == info)
        .unwrap_or_else(|| panic!("the engine's adapter {info:?} is not found again"));
    let wanted = adapter
        .features()
        .intersection(features_cubecl_may_use(&info));
    let missing = wanted.difference(ctx.device.features());
    let (device, queue, placement) = if missing.is_empty() {
        (
            ctx.device.clone(),
            ctx.queue.clone(),
            BurnPlacement::SharedDevice,
        )
    } else {
        let desc = wgpu::DeviceDescriptor {
            label: Some("burn baseline"),
            required_features: wanted,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .expect("a second device on the engine's adapter for burn");
        (device, queue, BurnPlacement::SameAdapter { missing })
    };
    let setup = WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend: info.backend,
    };
    let device = Device::wgpu_options()
        .setup(setup)
        .init()
        .expect("registering the wgpu device with burn");
    let found = BurnDevice { device, placement };
    registered.push((ctx.device.clone(), found.clone()));
    found
}

/// Deterministic operands of an `[m, k] × [k, n]` product, uniform in [-1, 1) (SplitMix64, so the
/// benchmark crate needs no RNG dependency): returns (lhs row-major `[m, k]`, rhs `[k, n]`).
pub fn matmul_operands(m: usize, k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 24 random bits → [0, 1) exactly representable in f32, then [-1, 1).
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let lhs = (0..m * k).map(|_| next()).collect();
    let rhs = (0..k * n).map(|_| next()).collect();
    (lhs, rhs)
}

/// burn's matmul of two fixed random f32 operands, resident on burn's wgpu device.
pub struct BurnMatmul {
    device: BurnDevice,
    lhs: Tensor<2>,
    rhs: Tensor<2>,
    shape: (usize, usize, usize),
}

impl BurnMatmul {
    /// Operands `[m, k]` and `[k, n]` from `seed` on burn's default wgpu device.
    pub fn new(m: usize, k: usize, n: usize, seed: u64) -> Self {
        let device = BurnDevice {
            device: Device::wgpu(DeviceKind::DefaultDevice),
            placement: BurnPlacement::BurnDefault,
        };
        Self::with_device(device, m, k, n, seed)
    }

    /// Operands `[m, k]` and `[k, n]` from `seed` on the adapter (and, where safe, the very device
    /// and queue) of `ctx`: see [`burn_device_on`].
    pub fn new_on(ctx: &GpuContext, m: usize, k: usize, n: usize, seed: u64) -> Self {
        Self::with_device(burn_device_on(ctx), m, k, n, seed)
    }

    fn with_device(device: BurnDevice, m: usize, k: usize, n: usize, seed: u64) -> Self {
        let (lhs, rhs) = matmul_operands(m, k, n, seed);
        let lhs = Tensor::<2>::from_data(TensorData::new(lhs, [m, k]), &device.device);
        let rhs = Tensor::<2>::from_data(TensorData::new(rhs, [k, n]), &device.device);
        // The uploads finish here, not inside the first timed run.
        device
            .device
            .sync()
            .expect("burn device sync after the operand upload");
        BurnMatmul {
            device,
            lhs,
            rhs,
            shape: (m, k, n),
        }
    }

    /// `(m, k, n)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        self.shape
    }

    /// Floating-point operations of one product, `2·m·k·n`.
    pub fn flops(&self) -> u64 {
        let (m, k, n) = self.shape;
        2 * (m * k * n) as u64
    }

    /// Where burn runs relative to the engine.
    pub fn placement(&self) -> &BurnPlacement {
        &self.device.placement
    }

    /// Runs `iters` products and returns the wall time from the first launch until the device has
    /// finished all of them (`Device::sync` waits for the queue's submitted work to complete).
    pub fn run(&mut self, iters: u64) -> Duration {
        self.device
            .device
            .sync()
            .expect("burn device sync before timing");
        let start = Instant::now();
        let mut last = None;
        for _ in 0..iters {
            // The backend is eager (no fusion in this build): every product is launched; dropping
            // the previous one returns its buffer to burn's pool.
            last = Some(self.lhs.clone().matmul(self.rhs.clone()));
        }
        self.device
            .device
            .sync()
            .expect("burn device sync after the timed products");
        let elapsed = start.elapsed();
        drop(last);
        elapsed
    }

    /// The product, read back row-major `[m, n]`.
    pub fn product(&self) -> Vec<f32> {
        self.lhs
            .clone()
            .matmul(self.rhs.clone())
            .into_data()
            .try_into_vec::<f32>()
            .expect("burn's matmul output is f32")
    }
}

/// Which product of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvProduct {
    Forward,
    /// The gradient with respect to the input (burn's transposed convolution).
    InputGrad,
    /// The gradient with respect to the weight (burn's `conv2d_weight_backward`).
    WeightGrad,
}

/// burn's 2-D convolution products on fixed random operands: input `[n, c_in, h, w]`, weight
/// `[c_out, c_in, k, k]`, output gradient `[n, c_out, oh, ow]`, resident on burn's wgpu device.
pub struct BurnConv {
    device: BurnDevice,
    x: Tensor<4>,
    w: Tensor<4>,
    dy: Tensor<4>,
    stride: usize,
    pad: usize,
}

impl BurnConv {
    /// `(n, c_in, h, w)`, `c_out`, square `k`, stride and padding, on the adapter of `ctx`.
    pub fn new_on(
        ctx: &GpuContext,
        (n, c_in, h, w): (usize, usize, usize, usize),
        c_out: usize,
        k: usize,
        (stride, pad): (usize, usize),
    ) -> Self {
        let device = burn_device_on(ctx);
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let (x, wt) = matmul_operands(n * c_in * h * w, 1, c_out * c_in * k * k, 5);
        let (dy, _) = matmul_operands(n * c_out * oh * ow, 1, 1, 6);
        let d = &device.device;
        let x = Tensor::<4>::from_data(TensorData::new(x, [n, c_in, h, w]), d);
        let w = Tensor::<4>::from_data(TensorData::new(wt, [c_out, c_in, k, k]), d);
        let dy = Tensor::<4>::from_data(TensorData::new(dy, [n, c_out, oh, ow]), d);
        d.sync().expect("burn device sync after the operand upload");
        BurnConv {
            device,
            x,
            w,
            dy,
            stride,
            pad,
        }
    }

    fn product(&self, which: ConvProduct) -> Tensor<4> {
        use burn::tensor::module::{conv2d, conv2d_weight_backward, conv_transpose2d};
        use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
        let (s, p) = (self.stride, self.pad);
        let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        match which {
            ConvProduct::Forward => conv2d(self.x.clone(), self.w.clone(), None, opts),
            ConvProduct::InputGrad => {
                // The transposed convolution's output size rounds as the forward's input.
                let [_, _, h, _] = self.x.dims();
                let [_, _, oh, _] = self.dy.dims();
                let k = self.w.dims()[2];
                let extra = h - ((oh - 1) * s + k - 2 * p);
                let t = ConvTransposeOptions::new([s, s], [p, p], [extra, extra], [1, 1], 1);
                conv_transpose2d(self.dy.clone(), self.w.clone(), None, t)
            }
            ConvProduct::WeightGrad => {
                conv2d_weight_backward(self.x.clone(), self.w.clone(), self.dy.clone(), opts)
            }
        }
    }

    /// Runs `iters` of one product; the wall time until the device has finished them.
    pub fn run(&mut self, which: ConvProduct, iters: u64) -> Duration {
        let d = &self.device.device;
        d.sync().expect("burn device sync before timing");
        let start = Instant::now();
        let mut last = None;
        for _ in 0..iters {
            last = Some(self.product(which));
        }
        d.sync().expect("burn device sync after the timed products");
        let elapsed = start.elapsed();
        drop(last);
        elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a2cid_engine::AdapterChoice;

    fn cpu_matmul(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
        num.sqrt() / den.sqrt().max(1e-30)
    }

    /// The baseline computes the right product, on burn's default device and on the engine's,
    /// for a shape that is not a multiple of any tile size. Needs a GPU adapter: fails without.
    #[test]
    fn burn_matmul_equals_cpu_product() {
        let ctx = GpuContext::new(&AdapterChoice::Auto).expect("this test needs a GPU adapter");
        let shape = (37, 53, 29);
        let (a, b) = matmul_operands(shape.0, shape.1, shape.2, 7);
        let want = cpu_matmul(&a, &b, shape);
        let mut on_engine = BurnMatmul::new_on(&ctx, shape.0, shape.1, shape.2, 7);
        let on_default = BurnMatmul::new(shape.0, shape.1, shape.2, 7);
        for (what, mm) in [
            ("engine's adapter", &on_engine),
            ("burn's default", &on_default),
        ] {
            let err = rel_err(&mm.product(), &want);
            println!(
                "BurnMatmul on {what} ({:?}): relative error {err:.2e}",
                mm.placement()
            );
            // f32 products of 53 terms in [-1, 1): rounding gives ~1e-7 relative; 1e-5 leaves room
            // for any summation order and still catches a wrong index (error ~1).
            assert!(err <= 1e-5, "{what}: relative error {err:.3e}");
        }
        assert_eq!(on_engine.flops(), 2 * 37 * 53 * 29);
        assert!(on_engine.run(3) > Duration::ZERO);
        // A second context-bound baseline reuses the registration.
        let again = BurnMatmul::new_on(&ctx, 4, 4, 4, 1);
        assert_eq!(again.placement(), on_engine.placement());
    }

    #[test]
    fn operands_are_deterministic_and_in_range() {
        let (a, b) = matmul_operands(3, 4, 5, 9);
        assert_eq!((a.len(), b.len()), (12, 20));
        assert_eq!(matmul_operands(3, 4, 5, 9), (a.clone(), b));
        assert_ne!(matmul_operands(3, 4, 5, 10).0, a);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
