//! Retry delays. The default is exponential with jitter, capped, so a failing dependency is not
//! hammered and a crowd of failed jobs does not retry in lockstep.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// `base_ms · 2^(attempt-1)`, at most `max_ms`, then ±`jitter` (a fraction, 0–1).
    Exponential {
        base_ms: u64,
        max_ms: u64,
        #[serde(default = "default_jitter")]
        jitter: f64,
    },
    /// The same delay after every failure.
    Fixed { delay_ms: u64 },
}

fn default_jitter() -> f64 {
    0.2
}

/// Longest delay any policy may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackoffError(pub &'static str);

impl Default for Backoff {
    /// 1 s, 2 s, 4 s, … capped at one hour, ±20 %.
    fn default() -> Self {
        Backoff::Exponential {
            base_ms: 1000,
            max_ms: 3_600_000,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    pub fn validate(&self) -> Result<(), BackoffError> {
        let max = MAX_DELAY.as_millis() as u64;
        match *self {
            Backoff::Exponential {
                base_ms,
                max_ms,
                jitter,
            } => {
                if base_ms == 0 || base_ms > max || max_ms < base_ms || max_ms > max {
                    return Err(BackoffError(
                        "exponential backoff needs 0 < base_ms <= max_ms <= 7 days",
                    ));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(BackoffError("jitter must be between 0 and 1"));
                }
            }
            Backoff::Fixed { delay_ms } => {
                if delay_ms > max {
                    return Err(BackoffError(
                        "fixed backoff delay_ms must be at most 7 days",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The delay before the next try after failed attempt number `attempt` (1-based).
    /// `unit` is a uniform random number in [0, 1) used for the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        match *self {
            Backoff::Fixed { delay_ms } => Duration::from_millis(delay_ms),
            Backoff::Exponential {
                base_ms,
                max_ms,
                jitter,
            } => {
                let exp = attempt.saturating_sub(1).min(40);
                let raw = (base_ms as f64) * 2f64.powi(exp as i32);
                let capped = raw.min(max_ms as f64);
                let factor = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
                Duration::from_millis((capped * factor).max(0.0) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_grows_caps_and_jitters() {
        let b = Backoff::Exponential {
            base_ms: 1000,
            max_ms: 10_000,
            jitter: 0.0,
        };
        let d: Vec<_> = (1..=6).map(|a| b.delay(a, 0.5).as_millis()).collect();
        assert_eq!(d, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        let j = Backoff::default();
        assert_eq!(j.delay(1, 0.0).as_millis(), 800);
        assert_eq!(j.delay(1, 0.999_999).as_millis(), 1199);
        assert_eq!(j.delay(1000, 0.5), Duration::from_secs(3600), "no overflow");
    }

    #[test]
    fn policies_are_validated() {
        assert!(Backoff::default().validate().is_ok());
        assert!(Backoff::Fixed { delay_ms: 5 }.validate().is_ok());
        let bad = [
            Backoff::Exponential {
                base_ms: 0,
                max_ms: 1,
                jitter: 0.1,
            },
            Backoff::Exponential {
                base_ms: 10,
                max_ms: 5,
                jitter: 0.1,
            },
            Backoff::Exponential {
                base_ms: 10,
                max_ms: 50,
                jitter: 1.5,
            },
            Backoff::Fixed {
                delay_ms: 8 * 24 * 3600 * 1000,
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }
}
