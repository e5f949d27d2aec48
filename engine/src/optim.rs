//! The optimizer: SGD with momentum, optional Nesterov and weight decay, PyTorch semantics, and
//! the learning-rate schedules. [`sgd_update`] is THE definition of one element's update: the CPU
//! A²CiD² step (`crate::acid`) uses it and the fused kernel `mix_and_step` (`shaders/acid.wgsl`,
//! which without x̃ is the plain SGD step) is tested against it.

/// Hyper-parameters of one SGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// One element of SGD: updates the momentum `m` in place and returns the step `u` to subtract from
/// the parameter `x` (and, in A²CiD², from x̃ too):
/// `m <- momentum·m + (g + wd·x)`, `u = lr·m`, or with Nesterov `u = lr·(g + wd·x + momentum·m)`.
#[inline]
pub fn sgd_update(cfg: &SgdConfig, x: f32, g: f32, m: &mut f32) -> f32 {
    let d = g + cfg.weight_decay * x;
    *m = cfg.momentum * *m + d;
    if cfg.nesterov {
        cfg.lr * (d + cfg.momentum * *m)
    } else {
        cfg.lr * *m
    }
}

/// Learning-rate schedule over a known number of steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    /// Linear warm-up, then cosine decay to zero at the last step.
    #[default]
    Cosine,
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            _ => Err(format!(
                "unknown schedule `{s}`: expected constant or cosine"
            )),
        }
    }
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based) of `total`, after `warmup` warm-up steps.
    pub fn lr(self, base: f32, step: usize, total: usize, warmup: usize) -> f32 {
        if warmup > 0 && step < warmup {
            return base * (step + 1) as f32 / warmup as f32;
        }
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let t = ((step - warmup.min(step)) as f64 / span).min(1.0);
                (f64::from(base) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant.lr(0.1, 50, 100, 0), 0.1);
        assert_eq!(LrSchedule::Cosine.lr(0.1, 0, 100, 0), 0.1);
        assert!((LrSchedule::Cosine.lr(0.1, 50, 100, 0) - 0.05).abs() < 1e-6);
        assert!(LrSchedule::Cosine.lr(0.1, 100, 100, 0).abs() < 1e-9);
        assert!((LrSchedule::Cosine.lr(0.1, 4, 100, 10) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn sgd_update_matches_pytorch_formulas() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
        };
        let mut m = 2.0;
        let u = sgd_update(&cfg, 1.0, 0.5, &mut m);
        assert!((m - (0.9 * 2.0 + 0.5 + 0.01)).abs() < 1e-6 && (u - 0.1 * m).abs() < 1e-7);
        let nes = SgdConfig {
            nesterov: true,
            ..cfg
        };
        let mut m = 2.0;
        let u = sgd_update(&nes, 1.0, 0.5, &mut m);
        assert!((u - 0.1 * (0.51 + 0.9 * m)).abs() < 1e-7);
    }
}
