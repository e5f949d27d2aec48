//! Adaptive timeouts, TCP-RTO style: smoothed duration plus four times its mean deviation, clamped.
//! Pure: observations and the resulting timeout are plain `Duration`s; [`crate::health`] decides
//! what to observe.

use std::time::Duration;

/// Tracks how long an operation usually takes and derives a generous deadline from it.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveTimeout {
    srtt: Option<f64>,
    rttvar: f64,
    initial: f64,
    min: f64,
    max: f64,
    /// Multiplier on the classic RTO, so one slow sample (GC pause, page faults) does not trip it.
    slack: f64,
}

impl AdaptiveTimeout {
    /// `initial` is used until the first observation; the result always lies in `[min, max]`.
    pub fn new(initial: Duration, min: Duration, max: Duration) -> AdaptiveTimeout {
        AdaptiveTimeout {
            srtt: None,
            rttvar: 0.0,
            initial: initial.as_secs_f64(),
            min: min.as_secs_f64(),
            max: max.as_secs_f64().max(min.as_secs_f64()),
            slack: 2.0,
        }
    }

    /// Record one observed duration.
    pub fn observe(&mut self, d: Duration) {
        let x = d.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(x);
                self.rttvar = x / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - x).abs();
                self.srtt = Some(0.875 * s + 0.125 * x);
            }
        }
    }

    /// Smoothed duration, if any was observed.
    pub fn typical(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_secs_f64)
    }

    /// The current deadline.
    pub fn timeout(&self) -> Duration {
        let t = match self.srtt {
            None => self.initial,
            Some(s) => self.slack * (s + 4.0 * self.rttvar),
        };
        Duration::from_secs_f64(t.clamp(self.min, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_to_observations_within_bounds() {
        let mut t = AdaptiveTimeout::new(
            Duration::from_secs(30),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        assert_eq!(t.timeout(), Duration::from_secs(30));
        for _ in 0..50 {
            t.observe(Duration::from_millis(100));
        }
        let d = t.timeout();
        assert!(
            d >= Duration::from_millis(200) && d < Duration::from_secs(1),
            "{d:?}"
        );
        for _ in 0..50 {
            t.observe(Duration::from_secs(10));
        }
        assert!(t.timeout() > Duration::from_secs(20) && t.timeout() <= Duration::from_secs(60));
    }

    #[test]
    fn stays_within_bounds_whatever_it_observes() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let mut t = AdaptiveTimeout::new(Duration::from_secs(10), min, max);
        assert_eq!(t.timeout(), max, "even the initial value is clamped");
        t.observe(Duration::ZERO);
        assert_eq!(t.timeout(), min);
        t.observe(Duration::from_secs(3600));
        assert_eq!(t.timeout(), max);
        assert!(
            t.typical() > Some(max),
            "the estimate itself is not clamped"
        );
    }

    #[test]
    fn a_maximum_below_the_minimum_is_raised_to_it() {
        let t = AdaptiveTimeout::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(2),
        );
        assert_eq!(t.timeout(), Duration::from_secs(5));
    }
}
