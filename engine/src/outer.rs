//! LASGD's synchronisation and DiLoCo's outer optimizer (docs/algorithm.md §9.1), as pure
//! functions of the workers' models: no clocks, no I/O. The simulator and the runtime share them.
//!
//! Every H local steps the workers' models are replaced by their all-reduce average x̄. With an
//! outer optimizer, the average is not adopted as is: the change since the last synchronisation,
//! Δ = x_last_sync − x̄ (the "outer gradient"), drives a Nesterov momentum step from
//! x_last_sync. With `nesterov:1,0` that step lands exactly on x̄ (plain LASGD).

use std::fmt;
use std::str::FromStr;

/// `--outer nesterov:LR,MOMENTUM`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OuterSpec {
    pub lr: f64,
    pub momentum: f64,
}

impl fmt::Display for OuterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nesterov:{},{}", self.lr, self.momentum)
    }
}

impl serde::Serialize for OuterSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for OuterSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for OuterSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected nesterov:LR,MOMENTUM with LR > 0 and MOMENTUM in [0, 1), \
                        e.g. nesterov:0.7,0.9";
        let rest = s
            .strip_prefix("nesterov:")
            .ok_or_else(|| format!("--outer `{s}`: {expected}"))?;
        let (lr, momentum) = rest
            .split_once(',')
            .ok_or_else(|| format!("--outer `{s}`: {expected}"))?;
        let parse = |v: &str| v.trim().parse::<f64>().ok();
        match (parse(lr), parse(momentum)) {
            (Some(lr), Some(momentum))
                if lr > 0.0 && lr.is_finite() && (0.0..1.0).contains(&momentum) =>
            {
                Ok(OuterSpec { lr, momentum })
            }
            _ => Err(format!("--outer `{s}`: {expected}")),
        }
    }
}

/// The outer optimizer's state: the model at the last synchronisation and the momentum buffer.
#[derive(Debug, Clone)]
pub struct OuterOptimizer {
    spec: OuterSpec,
    anchor: Vec<f64>,
    velocity: Vec<f64>,
}

impl OuterOptimizer {
    /// Starts from the common initial model `x0`, with zero momentum.
    pub fn new(spec: OuterSpec, x0: &[f32]) -> OuterOptimizer {
        OuterOptimizer {
            spec,
            anchor: x0.iter().map(|&v| f64::from(v)).collect(),
            velocity: vec![0.0; x0.len()],
        }
    }

    /// One outer step from the workers' average `mean`: Δ = anchor − mean, v ← μ v + Δ,
    /// x ← anchor − lr (Δ + μ v) (PyTorch's Nesterov SGD on the outer gradient Δ). Returns the
    /// new common model, which becomes the anchor.
    pub fn step(&mut self, mean: &[f64]) -> Vec<f32> {
        let OuterSpec { lr, momentum } = self.spec;
        let mut next = Vec::with_capacity(mean.len());
        for ((anchor, v), &m) in self.anchor.iter_mut().zip(&mut self.velocity).zip(mean) {
            let delta = *anchor - m;
            *v = momentum * *v + delta;
            let x = (*anchor - lr * (delta + momentum * *v)) as f32;
            *anchor = f64::from(x);
            next.push(x);
        }
        next
    }
}

/// The model every worker adopts at a synchronisation: the average `mean` (plain LASGD), or the
/// outer optimizer's step from it (DiLoCo).
pub fn synchronised_model(mean: &[f64], outer: Option<&mut OuterOptimizer>) -> Vec<f32> {
    match outer {
        Some(outer) => outer.step(mean),
        None => mean.iter().map(|&m| m as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_specs_parse_and_bad_ones_say_what_is_expected() {
        let spec: OuterSpec = "nesterov:0.7,0.9".parse().unwrap();
        assert_eq!(
            spec,
            OuterSpec {
                lr: 0.7,
                momentum: 0.9
            }
        );
        assert_eq!(spec.to_string().parse::<OuterSpec>(), Ok(spec));
        for bad in [
            "adam:1,0",
            "nesterov:0.7",
            "nesterov:-1,0",
            "nesterov:1,1",
            "nesterov:x,0",
        ] {
            let e = bad.parse::<OuterSpec>().unwrap_err();
            assert!(e.contains("nesterov:LR,MOMENTUM") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn nesterov_1_0_adopts_the_average_and_momentum_extrapolates() {
        let mean = [0.25f64, -1.5, 3.0];
        let mut plain = OuterOptimizer::new(
            OuterSpec {
                lr: 1.0,
                momentum: 0.0,
            },
            &[1.0, 2.0, 3.0],
        );
        assert_eq!(plain.step(&mean), vec![0.25f32, -1.5, 3.0]);
        // lr 0.5, momentum 0.5 from anchor 0 towards mean 1: Δ = -1, v = -1, x = 0.5·1.5 = 0.75;
        // again towards 1: Δ = -0.25, v = -0.75, x = 0.75 + 0.5·(0.25 + 0.375) = 1.0625.
        let mut outer = OuterOptimizer::new(
            OuterSpec {
                lr: 0.5,
                momentum: 0.5,
            },
            &[0.0],
        );
        assert_eq!(outer.step(&[1.0]), vec![0.75]);
        assert_eq!(outer.step(&[1.0]), vec![1.0625]);
        assert_eq!(synchronised_model(&mean, None), vec![0.25f32, -1.5, 3.0]);
    }
}
