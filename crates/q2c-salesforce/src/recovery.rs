//! What a Pub/Sub subscriber does when its stream goes wrong: which errors
//! are retried and how patiently, which need a new token, which must stop
//! the subscriber, and when a silent stream counts as stalled.
//!
//! Pure: the error code and the time come in, a decision comes out.

use std::time::Duration;

/// Salesforce's error codes, from the `error-code` trailer, without the
/// `sfdc.platform.eventbus.grpc.` prefix.
const PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// What to do after a stream ended with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Subscribe again from the stored position after this wait.
    Resubscribe(Duration),
    /// Get a new access token, then subscribe again from the stored position.
    Reauthenticate,
    /// The stored replay id is expired or invalid: apply the configured
    /// policy (EARLIEST, or stop), loudly; never fall back to LATEST.
    ReplayIdUnusable,
    /// Nothing will get better by retrying: stop with this message.
    Stop(String),
}

/// Retry pacing: exponential backoff with jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest ordinary wait.
    pub max: Duration,
    /// The wait after the daily delivery allocation ran out.
    pub allocation_exhausted: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            allocation_exhausted: Duration::from_secs(15 * 60),
        }
    }
}

impl Backoff {
    /// The wait before reconnect number `attempt` (from 1); `unit` in
    /// `[0, 1)` takes off up to half of it, so subscribers that failed
    /// together do not reconnect together.
    pub fn wait(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        base.saturating_sub(base.mul_f64(unit * 0.5))
    }

    /// The decision for a stream that ended with `error_code` (the trailer
    /// value, or empty when the transport failed without one).
    pub fn recover(&self, error_code: &str, attempt: u32, unit: f64) -> Recovery {
        match error_code.strip_prefix(PREFIX).unwrap_or(error_code) {
            "service.auth.error" => Recovery::Reauthenticate,
            "subscription.fetch.replayid.corrupted" => Recovery::ReplayIdUnusable,
            "subscription.limit.exceeded" => Recovery::Resubscribe(self.allocation_exhausted),
            "topic.not.found" => Recovery::Stop(
                "the topic does not exist in this org: check the topic name and the platform event's deployment".into(),
            ),
            "subscription.fetch.replayid.validation.failed" => Recovery::Stop(format!(
                "Salesforce refused the subscription ({error_code}): this is a bug in q2c's subscriber"
            )),
            // A new stream starts its count afresh: retry, patiently.
            "fetch.requested.events.invalid" => {
                Recovery::Resubscribe(self.wait(attempt.max(3), unit))
            }
            _ => Recovery::Resubscribe(self.wait(attempt, unit)),
        }
    }
}

/// Notices a stream that has gone quiet while events are requested: no
/// event and no keepalive for longer than `stall_after` (Salesforce sends a
/// keepalive within 270 s, so 300 s by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    stall_after: Duration,
    /// Time of the last event or keepalive, since an arbitrary origin.
    last_heard: Duration,
    /// Whether events are requested (a stream with nothing requested is
    /// quiet by design).
    requesting: bool,
}

impl Watchdog {
    /// A watchdog started at `now`.
    pub fn new(stall_after: Duration, now: Duration) -> Self {
        Self {
            stall_after,
            last_heard: now,
            requesting: false,
        }
    }

    /// The server sent something (events or a keepalive).
    pub fn heard(&mut self, now: Duration) {
        self.last_heard = now;
    }

    /// Whether events are requested; quiet time counts only while they are.
    pub fn requesting(&mut self, requesting: bool, now: Duration) {
        if requesting && !self.requesting {
            self.last_heard = now;
        }
        self.requesting = requesting;
    }

    /// Whether the stream is stalled and must be replaced.
    pub fn stalled(&self, now: Duration) -> bool {
        self.requesting && now.saturating_sub(self.last_heard) > self.stall_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn errors_lead_to_the_documented_recoveries() {
        let backoff = Backoff::default();
        let code = |suffix: &str| format!("{PREFIX}{suffix}");
        assert_eq!(
            backoff.recover(&code("service.auth.error"), 1, 0.0),
            Recovery::Reauthenticate
        );
        assert_eq!(
            backoff.recover(&code("subscription.fetch.replayid.corrupted"), 1, 0.0),
            Recovery::ReplayIdUnusable
        );
        assert_eq!(
            backoff.recover(&code("subscription.limit.exceeded"), 1, 0.0),
            Recovery::Resubscribe(S(900))
        );
        assert!(matches!(
            backoff.recover(&code("topic.not.found"), 1, 0.0),
            Recovery::Stop(_)
        ));
        assert_eq!(
            backoff.recover(&code("service.unavailable"), 3, 0.0),
            Recovery::Resubscribe(S(4))
        );
        assert_eq!(backoff.recover("", 1, 0.0), Recovery::Resubscribe(S(1)));
        assert_eq!(
            backoff.recover(&code("fetch.requested.events.invalid"), 1, 0.0),
            Recovery::Resubscribe(S(4)),
            "a miscount is retried on a fresh stream, never given up on"
        );
        assert!(matches!(
            backoff.recover(
                &code("subscription.fetch.replayid.validation.failed"),
                1,
                0.0
            ),
            Recovery::Stop(_)
        ));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_down_by_at_most_half() {
        let backoff = Backoff::default();
        assert_eq!(backoff.wait(1, 0.0), S(1));
        assert_eq!(backoff.wait(4, 0.0), S(8));
        assert_eq!(backoff.wait(30, 0.0), S(60));
        assert_eq!(
            backoff.wait(30, 0.999_999),
            Duration::from_secs_f64(60.0 - 60.0 * 0.999_999 * 0.5)
        );
        assert_eq!(backoff.wait(2, f64::NAN), S(2));
    }

    #[test]
    fn a_stream_is_stalled_only_when_quiet_while_requesting() {
        let mut watchdog = Watchdog::new(S(300), S(0));
        assert!(
            !watchdog.stalled(S(1_000)),
            "nothing requested: quiet by design"
        );
        watchdog.requesting(true, S(1_000));
        assert!(!watchdog.stalled(S(1_300)));
        assert!(watchdog.stalled(S(1_301)));
        watchdog.heard(S(1_301));
        assert!(!watchdog.stalled(S(1_500)));
        watchdog.requesting(false, S(1_500));
        assert!(!watchdog.stalled(S(9_000)));
    }
}
