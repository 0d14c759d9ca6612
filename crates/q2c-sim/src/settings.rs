//! What the simulator runs and how it misbehaves, checked before it starts.

use std::path::PathBuf;
use std::time::Duration;

use q2c_contract::{DOMAINS, Topology};

/// How to run the simulated connectors.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// The broker, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: String,
    /// The deployment's exchanges and queues; declared in full at start so
    /// the simulator may start before q2c.
    pub topology: Topology,
    /// The domains to simulate (`erp`, `billing`, `payment`, `salesforce`);
    /// a domain left out keeps its queue for a real connector.
    pub connectors: Vec<String>,
    /// Waited before every reply, to look like a remote system.
    pub latency: Duration,
    /// Probability (0 to 1) that an action or notification answers a
    /// retryable failure instead of being performed, to exercise retries.
    /// Compensations and replies served from the cache never fail this way.
    pub failure_rate: f64,
    /// Attempt 1 of every command is acked without a reply, as if it were
    /// lost, to exercise timeouts: only attempt 2 onwards is answered.
    pub ignore_first_attempt: bool,
    /// Seeds the random failures so a run can be repeated; each connector
    /// draws from its own generator.
    pub seed: Option<u64>,
    /// Where to append the ledger as JSON Lines, for tests in other
    /// processes; it is always kept in memory too.
    pub ledger: Option<PathBuf>,
    /// Unacked commands each connector holds at once, and so how many it
    /// processes concurrently.
    pub prefetch: u16,
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A probability outside 0..=1 (or NaN).
    #[error("failure_rate must be between 0 and 1, got {0}")]
    FailureRate(f64),
    /// A connector name the contract does not know.
    #[error("connectors: unknown connector `{0}` (known: erp, billing, payment, salesforce)")]
    UnknownConnector(String),
    /// The same connector listed twice.
    #[error("connectors: `{0}` is listed twice")]
    DuplicateConnector(String),
    /// Nothing to run.
    #[error("connectors: none selected")]
    NoConnectors,
    /// A prefetch of 0 means "unlimited" to the broker.
    #[error("prefetch must be at least 1")]
    Prefetch,
}

impl SimSettings {
    /// Every connector, no latency, no failures, a prefetch of 16.
    pub fn new(amqp_url: impl Into<String>, topology: Topology) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            topology,
            connectors: DOMAINS.iter().map(|domain| (*domain).to_owned()).collect(),
            latency: Duration::ZERO,
            failure_rate: 0.0,
            ignore_first_attempt: false,
            seed: None,
            ledger: None,
            prefetch: 16,
        }
    }

    /// Leaves `domains` to real connectors (`q2c sim --without salesforce`).
    pub fn without<S: AsRef<str>>(mut self, domains: &[S]) -> Result<Self, SettingsError> {
        for domain in domains {
            let domain = known(domain.as_ref())?;
            self.connectors.retain(|connector| connector != domain);
        }
        Ok(self)
    }

    /// Checks every setting, naming the first one that cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(SettingsError::FailureRate(self.failure_rate));
        }
        if self.prefetch == 0 {
            return Err(SettingsError::Prefetch);
        }
        self.domains().map(|_| ())
    }

    /// The connectors to run, as the contract spells their domains.
    pub(crate) fn domains(&self) -> Result<Vec<&'static str>, SettingsError> {
        let mut domains: Vec<&'static str> = Vec::with_capacity(self.connectors.len());
        for name in &self.connectors {
            let domain = known(name)?;
            if domains.contains(&domain) {
                return Err(SettingsError::DuplicateConnector(name.clone()));
            }
            domains.push(domain);
        }
        if domains.is_empty() {
            return Err(SettingsError::NoConnectors);
        }
        Ok(domains)
    }
}

fn known(name: &str) -> Result<&'static str, SettingsError> {
    DOMAINS
        .iter()
        .copied()
        .find(|domain| *domain == name)
        .ok_or_else(|| SettingsError::UnknownConnector(name.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn settings() -> SimSettings {
        SimSettings::new("amqp://localhost", Topology::new("t.").unwrap())
    }

    #[test]
    fn defaults_are_valid_and_run_every_connector() {
        let settings = settings();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.domains().unwrap(), DOMAINS);
    }

    #[test]
    fn failure_rate_must_be_a_probability() {
        for rate in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            let settings = SimSettings {
                failure_rate: rate,
                ..settings()
            };
            let error = settings.validate().unwrap_err();
            assert!(error.to_string().starts_with("failure_rate"), "{error}");
        }
        for rate in [0.0, 0.5, 1.0] {
            let settings = SimSettings {
                failure_rate: rate,
                ..settings()
            };
            assert_eq!(settings.validate(), Ok(()));
        }
    }

    #[test]
    fn connectors_must_be_known_distinct_and_some() {
        let unknown = SimSettings {
            connectors: vec!["erp".into(), "crm".into()],
            ..settings()
        };
        assert_eq!(
            unknown.validate(),
            Err(SettingsError::UnknownConnector("crm".into()))
        );
        assert!(
            unknown
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("connectors")
        );
        let twice = SimSettings {
            connectors: vec!["erp".into(), "erp".into()],
            ..settings()
        };
        assert_eq!(
            twice.validate(),
            Err(SettingsError::DuplicateConnector("erp".into()))
        );
        let none = SimSettings {
            connectors: vec![],
            ..settings()
        };
        assert_eq!(none.validate(), Err(SettingsError::NoConnectors));
    }

    #[test]
    fn without_leaves_domains_to_real_connectors() {
        let settings = settings().without(&["salesforce"]).unwrap();
        assert_eq!(settings.domains().unwrap(), ["erp", "billing", "payment"]);
        assert_eq!(
            self::settings().without(&["sales"]),
            Err(SettingsError::UnknownConnector("sales".into()))
        );
    }

    #[test]
    fn prefetch_zero_is_refused() {
        let settings = SimSettings {
            prefetch: 0,
            ..settings()
        };
        assert_eq!(settings.validate(), Err(SettingsError::Prefetch));
    }
}
