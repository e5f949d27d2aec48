//! Workers' relative gradient speeds (`--worker-speeds` for real runs, `--speeds` for the
//! simulator; one grammar): how many gradients per unit of time each worker computes, relative to
//! the others. The simulator draws its gradient events at these rates; a real run on one machine
//! *emulates* them (the workers share the same hardware): after each step, a worker of speed
//! `s < 1` sleeps `(1/s − 1)` times the step's own duration, for every method alike.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// How fast each worker computes gradients, relative to the unit of time.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SpeedSpec {
    /// Every worker at speed 1 (the default).
    #[default]
    Homogeneous,
    /// One straggler, the last rank, `factor` times slower than the others.
    Straggler { factor: f64 },
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
        "bad speeds `{spec}`: {problem} (expected homogeneous, straggler:FACTOR, \
         slow:FRACTION:SPEED, lognormal:SIGMA or list:S0,S1,...)"
    )]
    Parse { spec: String, problem: String },
    #[error("the speeds list {given} speeds but there are {workers} workers")]
    WrongLength { given: usize, workers: usize },
}

impl fmt::Display for SpeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpeedSpec::Homogeneous => write!(f, "homogeneous"),
            SpeedSpec::Straggler { factor } => write!(f, "straggler:{factor}"),
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
            ("straggler", Some(factor)) => {
                let factor = positive(factor, "the slow-down factor")?;
                if factor < 1.0 {
                    return Err(bad("the straggler's slow-down factor must be >= 1"));
                }
                Ok(SpeedSpec::Straggler { factor })
            }
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
            SpeedSpec::Straggler { factor } => {
                let mut speeds = vec![1.0; workers];
                if let Some(last) = speeds.last_mut() {
                    *last = 1.0 / factor;
                }
                speeds
            }
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

impl TryFrom<String> for SpeedSpec {
    type Error = SpeedError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpeedSpec> for String {
    fn from(s: SpeedSpec) -> String {
        s.to_string()
    }
}

impl SpeedSpec {
    /// Whether every worker runs at the same speed.
    pub fn is_homogeneous(&self) -> bool {
        *self == SpeedSpec::Homogeneous
    }
}

/// A worker's emulated slow-down: how long to wait after a step of `seconds` so that the worker
/// runs at `speed` relative to its hardware (pure: the caller sleeps).
///
/// With a step time (`--step-time P`), every step is also padded to at least `P / speed`
/// seconds: each worker then computes at a fixed pace of its own, as if it had a device to
/// itself, instead of sharing this machine's cores with the others (a worker that sleeps frees
/// the cores for the rest, so on a shared machine a straggler's sleep alone slows the others'
/// competitors down less than a slower device would). P must exceed the step's own work for
/// the pace to hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slowdown {
    /// Seconds of wall time per second of real work: `max(1/speed, 1)` (a worker cannot be made
    /// faster than its hardware).
    stretch: f64,
    /// The least wall time of a step: `P / speed` (0 without a step time).
    floor: f64,
}

impl Slowdown {
    /// The slow-down of a worker of relative `speed`, its steps paced to at least
    /// `step_time / speed` seconds when a step time is given.
    pub fn new(speed: f64, step_time: Option<f64>) -> Slowdown {
        Slowdown {
            stretch: (1.0 / speed).max(1.0),
            floor: step_time.map_or(0.0, |p| (p / speed).max(0.0)),
        }
    }

    pub fn is_none(&self) -> bool {
        self.stretch == 1.0 && self.floor == 0.0
    }

    /// Whether a step whose own work took `seconds` overran its paced time (the pace did not
    /// hold: the workers together need more than this machine gives them in a step time).
    pub fn overran(&self, seconds: f64) -> bool {
        self.floor > 0.0 && seconds * self.stretch > self.floor
    }

    /// The paced least wall time of a step (0 without `--step-time`).
    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// The wait after a step whose own work took `seconds`.
    pub fn delay(&self, seconds: f64) -> std::time::Duration {
        let work = seconds.max(0.0);
        let wall = (work * self.stretch).max(self.floor);
        std::time::Duration::from_secs_f64((wall - work).clamp(0.0, 3600.0))
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

    #[test]
    fn a_straggler_is_the_last_rank_and_the_spec_round_trips_through_toml_strings() {
        let s: SpeedSpec = "straggler:2".parse().unwrap();
        assert_eq!(s.speeds(4, 9).unwrap(), vec![1.0, 1.0, 1.0, 0.5]);
        assert!("straggler:0.5".parse::<SpeedSpec>().is_err());
        for spec in ["homogeneous", "straggler:2", "slow:0.25:0.5", "list:1,0.5"] {
            let s: SpeedSpec = spec.parse().unwrap();
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{spec}\""));
            assert_eq!(serde_json::from_str::<SpeedSpec>(&json).unwrap(), s);
        }
    }

    #[test]
    fn a_slowdown_waits_in_proportion_to_the_work() {
        let half = Slowdown::new(0.5, None);
        assert!((half.delay(0.2).as_secs_f64() - 0.2).abs() < 1e-9);
        assert!((Slowdown::new(0.25, None).delay(0.1).as_secs_f64() - 0.3).abs() < 1e-9);
        assert!(Slowdown::new(1.0, None).is_none() && Slowdown::new(2.0, None).is_none());
    }

    #[test]
    fn a_step_time_paces_every_step_to_its_share_of_the_period() {
        // Speed 1, period 0.1 s: a 0.03 s step waits 0.07 s, a 0.25 s step (over the period)
        // does not wait.
        let paced = Slowdown::new(1.0, Some(0.1));
        assert!(!paced.is_none());
        assert!((paced.delay(0.03).as_secs_f64() - 0.07).abs() < 1e-9);
        assert_eq!(paced.delay(0.25).as_secs_f64(), 0.0);
        assert!(paced.overran(0.25) && !paced.overran(0.09));
        assert!(!Slowdown::new(0.5, None).overran(10.0));
        // A straggler 2x slower takes 0.2 s per step while its work fits in the period, and
        // twice its work beyond it.
        let slow = Slowdown::new(0.5, Some(0.1));
        assert!((slow.delay(0.03).as_secs_f64() - 0.17).abs() < 1e-9);
        assert!((slow.delay(0.15).as_secs_f64() - 0.15).abs() < 1e-9);
        // The ratio of the two paces is the ratio of the speeds, whatever the work.
        for work in [0.0, 0.01, 0.05, 0.09] {
            let fast = work + paced.delay(work).as_secs_f64();
            let slower = work + slow.delay(work).as_secs_f64();
            assert!(
                (slower / fast - 2.0).abs() < 1e-9,
                "{work}: {fast} {slower}"
            );
        }
    }
}
