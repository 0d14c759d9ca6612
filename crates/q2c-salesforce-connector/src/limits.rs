//! The org's daily API budget, as every REST response reports it in
//! `Sforce-Limit-Info: api-usage=<used>/<max>`.
//!
//! Above the reserve, writes go at full speed. Inside it, the calls left are
//! spread evenly over the window the budget is counted in (Salesforce counts
//! a rolling day), so the budget is never run to zero by q2c and no write is
//! dropped: each one only waits longer.

use std::time::Duration;

/// One day, over which Salesforce counts API calls.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The org's API usage, as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Calls made in the rolling day.
    pub used: u64,
    /// Calls allowed.
    pub max: u64,
}

/// Why a `Sforce-Limit-Info` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Sforce-Limit-Info `{0}` has no readable `api-usage=<used>/<max>`")]
pub struct Unreadable(pub String);

impl Usage {
    /// Reads the header's value, e.g. `api-usage=25/15000` (other entries,
    /// such as `per-app-api-usage=...`, are skipped).
    pub fn parse(header: &str) -> Result<Usage, Unreadable> {
        header
            .split([';', ','])
            .map(str::trim)
            .find_map(|entry| entry.strip_prefix("api-usage="))
            .and_then(|usage| {
                let (used, max) = usage.split_once('/')?;
                let used = used.trim().parse().ok()?;
                let max = max
                    .trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                Some(Usage { used, max })
            })
            .ok_or_else(|| Unreadable(header.to_owned()))
    }

    /// Calls left in the rolling day.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// How much of the budget q2c leaves to others before it slows down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reserve {
    /// Share of the daily maximum, 0 to 1 (e.g. 0.2: slow down once fewer
    /// than 20% of the day's calls are left).
    pub share: f64,
    /// The window the calls left are spread over: [`DAY`] for Salesforce.
    pub window: Duration,
}

impl Reserve {
    /// The wait before the next call, given the last reported usage: none
    /// above the reserve; inside it, the window divided by the calls left;
    /// with none left, the whole window, so the budget is probed rarely until
    /// the rolling window frees calls.
    pub fn pace(&self, usage: Usage) -> Duration {
        let share = if self.share.is_nan() {
            0.0
        } else {
            self.share.clamp(0.0, 1.0)
        };
        let reserve = (usage.max as f64 * share).ceil() as u64;
        let remaining = usage.remaining();
        if remaining > reserve {
            return Duration::ZERO;
        }
        self.window / u32::try_from(remaining.max(1)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_header_is_read_whatever_else_it_carries() {
        assert_eq!(
            Usage::parse("api-usage=25/15000"),
            Ok(Usage {
                used: 25,
                max: 15000
            })
        );
        assert_eq!(
            Usage::parse("per-app-api-usage=2/250(appName=q2c); api-usage=14990/15000"),
            Ok(Usage {
                used: 14990,
                max: 15000
            })
        );
        assert!(Usage::parse("api-usage=lots").is_err());
        assert!(Usage::parse("").is_err());
    }

    #[test]
    fn writes_slow_down_only_inside_the_reserve() {
        let reserve = Reserve {
            share: 0.1,
            window: DAY,
        };
        assert_eq!(
            reserve.pace(Usage {
                used: 100,
                max: 1000
            }),
            Duration::ZERO
        );
        assert_eq!(
            reserve.pace(Usage {
                used: 899,
                max: 1000
            }),
            Duration::ZERO
        );
        assert_eq!(
            reserve.pace(Usage {
                used: 900,
                max: 1000
            }),
            DAY / 100,
            "100 calls left: one every 14.4 minutes"
        );
        assert_eq!(
            reserve.pace(Usage {
                used: 1000,
                max: 1000
            }),
            DAY
        );
        assert_eq!(
            reserve.pace(Usage {
                used: 1200,
                max: 1000
            }),
            DAY
        );
    }

    proptest! {
        /// Fewer calls left never means faster writes.
        #[test]
        fn the_pace_never_quickens_as_the_budget_shrinks(
            max in 1_u64..1_000_000,
            used in 0_u64..1_000_000,
            more in 0_u64..1000,
            share in 0.0_f64..1.0,
        ) {
            let reserve = Reserve { share, window: DAY };
            let before = reserve.pace(Usage { used, max });
            let after = reserve.pace(Usage { used: used + more, max });
            prop_assert!(after >= before, "{:?} then {:?}", before, after);
        }
    }
}
