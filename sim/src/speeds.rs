//! Workers' gradient speeds for the simulator (`--speeds`): how many gradients per unit of time
//! each worker computes on average.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// How fast each worker computes gradients, relative to the unit of time.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeedSpec {
    /// Every worker at speed 1 (the default).
    Homogeneous,
    /// A fraction of the workers (chosen with the seed) run at `speed`, the others at 1.
    Slow { fraction: f64, speed: f64 },
    /// Speeds drawn from a log-normal with median 1 and log-standard deviation `sigma`.
    LogNormal { sigma: f64 },
    /// One speed per worker, in rank order.
    List(Vec<f64>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpeedError {
    #[error(
        "bad --speeds `{spec}`: {problem} (expected homogeneous, slow:FRACTION:SPEED, \
         lognormal:SIGMA or list:S0,S1,...)"
    )]
    Parse { spec: String, problem: String },
    #[error("--speeds lists {given} speeds but there are {workers} workers")]
    WrongLength { given: usize, workers: usize },
}

impl fmt::Display for SpeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpeedSpec::Homogeneous => write!(f, "homogeneous"),
            SpeedSpec::Slow { fraction, speed } => write!(f, "slow:{fraction}:{speed}"),
            SpeedSpec::LogNormal { sigma } => write!(f, "lognormal:{sigma}"),
            SpeedSpec::List(speeds) => {
                let items: Vec<String> = speeds.iter().map(f64::to_string).collect();
                write!(f, "list:{}", items.join(","))
            }
        }
    }
}

impl FromStr for SpeedSpec {
    type Err = SpeedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: &str| SpeedError::Parse {
            spec: s.to_string(),
            problem: problem.into(),
        };
        let positive = |v: &str, what: &str| -> Result<f64, SpeedError> {
            match v.trim().parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(bad(&format!("{what} must be a positive number, got `{v}`"))),
            }
        };
        let parts: Vec<&str> = s.trim().splitn(2, ':').collect();
        match (parts[0].to_ascii_lowercase().as_str(), parts.get(1)) {
            ("homogeneous" | "uniform", None) => Ok(SpeedSpec::Homogeneous),
            ("slow", Some(rest)) => {
                let (fraction, speed) = rest
                    .split_once(':')
                    .ok_or_else(|| bad("give slow:FRACTION:SPEED"))?;
                let fraction = positive(fraction, "the fraction")?;
                if fraction > 1.0 {
                    return Err(bad("the fraction of slow workers must be in (0, 1]"));
                }
                Ok(SpeedSpec::Slow {
                    fraction,
                    speed: positive(speed, "the speed")?,
                })
            }
            ("lognormal", Some(sigma)) => Ok(SpeedSpec::LogNormal {
                sigma: positive(sigma, "sigma")?,
            }),
            ("list", Some(rest)) => {
                let speeds = rest
                    .split(',')
                    .map(|v| positive(v, "each speed"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(SpeedSpec::List(speeds))
            }
            _ => Err(bad("unknown form")),
        }
    }
}

impl SpeedSpec {
    /// The speed of each of `workers` workers; the random forms draw from `seed`.
    pub fn speeds(&self, workers: usize, seed: u64) -> Result<Vec<f64>, SpeedError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(3);
        Ok(match self {
            SpeedSpec::Homogeneous => vec![1.0; workers],
            SpeedSpec::Slow { fraction, speed } => {
                let slow = ((workers as f64) * fraction).round() as usize;
                let mut ranks: Vec<usize> = (0..workers).collect();
                ranks.shuffle(&mut rng);
                let mut speeds = vec![1.0; workers];
                for &rank in &ranks[..slow] {
                    speeds[rank] = *speed;
                }
                speeds
            }
            SpeedSpec::LogNormal { sigma } => {
                let dist = LogNormal::new(0.0, *sigma).map_err(|err| SpeedError::Parse {
                    spec: self.to_string(),
                    problem: err.to_string(),
                })?;
                (0..workers).map(|_| dist.sample(&mut rng)).collect()
            }
            SpeedSpec::List(speeds) => {
                if speeds.len() != workers {
                    return Err(SpeedError::WrongLength {
                        given: speeds.len(),
                        workers,
                    });
                }
                speeds.clone()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form_and_rejects_nonsense() {
        assert_eq!(
            "homogeneous".parse::<SpeedSpec>().unwrap(),
            SpeedSpec::Homogeneous
        );
        assert_eq!(
            "slow:0.25:0.5".parse::<SpeedSpec>().unwrap(),
            SpeedSpec::Slow {
                fraction: 0.25,
                speed: 0.5
            }
        );
        assert_eq!(
            "list:1,0.5".parse::<SpeedSpec>().unwrap(),
            SpeedSpec::List(vec![1.0, 0.5])
        );
        for bad in [
            "fast",
            "slow:0.5",
            "slow:2:1",
            "lognormal:-1",
            "list:1,x",
            "list:0",
        ] {
            assert!(bad.parse::<SpeedSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slow_marks_the_requested_fraction() {
        let speeds = SpeedSpec::Slow {
            fraction: 0.25,
            speed: 0.5,
        }
        .speeds(16, 1)
        .unwrap();
        assert_eq!(speeds.iter().filter(|&&s| s == 0.5).count(), 4);
        assert_eq!(speeds.iter().filter(|&&s| s == 1.0).count(), 12);
        assert!(SpeedSpec::List(vec![1.0]).speeds(2, 0).is_err());
    }
}
