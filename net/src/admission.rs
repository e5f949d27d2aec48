//! Admission of unauthenticated connections (pure; time passed in): at most
//! [`PER_SOURCE`] handshakes in progress per source address, so a flood of silent connections from
//! one host cannot hold every handshake slot and keep the real workers out; and warnings about
//! refused connections limited to a few per window, the rest counted and reported in one line.
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshakes in progress allowed per source address.
pub const PER_SOURCE: usize = 8;
/// Warnings logged per window before the rest are only counted.
pub const WARNINGS_PER_WINDOW: u32 = 5;
pub const WARNING_WINDOW: Duration = Duration::from_secs(10);

/// Handshakes in progress, by source address.
#[derive(Debug, Default)]
pub struct Admission {
    pending: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Whether a new connection from `ip` may start its handshake (then counted as pending).
    pub fn admit(&mut self, ip: IpAddr) -> bool {
        let n = self.pending.entry(ip).or_default();
        if *n >= PER_SOURCE {
            return false;
        }
        *n += 1;
        true
    }

    /// A handshake from `ip` ended (either way).
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.pending.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&ip);
            }
        }
    }
}

/// Decides which warnings to log.
#[derive(Debug, Default)]
pub struct WarnLimiter {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one more warning.
#[derive(Debug, PartialEq, Eq)]
pub enum Warn {
    /// Log it; `suppressed` warnings of the previous window were not logged (say so first).
    Log { suppressed: u64 },
    /// Count it only.
    Quiet,
}

impl WarnLimiter {
    pub fn on_warning(&mut self, now: Instant) -> Warn {
        let fresh = self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= WARNING_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < WARNINGS_PER_WINDOW {
            self.logged += 1;
            Warn::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Warn::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_cannot_take_more_than_its_share_of_handshakes() {
        let mut a = Admission::default();
        let flood: IpAddr = "10.0.0.66".parse().unwrap();
        let worker: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..PER_SOURCE {
            assert!(a.admit(flood));
        }
        assert!(!a.admit(flood), "the flood's extra connection is refused");
        assert!(a.admit(worker), "another host still gets in");
        a.release(flood);
        assert!(a.admit(flood), "a slot freed is a slot again");
    }

    #[test]
    fn warnings_are_limited_per_window_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut w = WarnLimiter::default();
        for _ in 0..WARNINGS_PER_WINDOW {
            assert_eq!(w.on_warning(t0), Warn::Log { suppressed: 0 });
        }
        for _ in 0..195 {
            assert_eq!(w.on_warning(t0 + Duration::from_secs(1)), Warn::Quiet);
        }
        assert_eq!(
            w.on_warning(t0 + WARNING_WINDOW),
            Warn::Log { suppressed: 195 }
        );
    }
}
