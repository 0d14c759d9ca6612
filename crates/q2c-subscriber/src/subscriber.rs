//! The subscriber as a whole: one stream per topic over one HTTP/2
//! connection, sharing one login.

use std::collections::HashSet;
use std::sync::Arc;

use q2c_core::definition::Definition;
use q2c_salesforce::flow::MAX_OUTSTANDING;
use q2c_store::Store;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::connection::{BadEndpoint, channel};
use crate::event::hex;
use crate::schemas::Schemas;
use crate::settings::Settings;
use crate::status::Subscriptions;
use crate::subscription::Subscription;
use q2c_salesforce_auth::{AuthError, Tokens};

/// Why the subscriber cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("Salesforce subscriber settings: {0}")]
    Settings(String),
    /// The Pub/Sub URL is unusable.
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    /// The login client could not be built.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Follows the configured Salesforce topics into the intake.
pub struct Subscriber {
    settings: Arc<Settings>,
    store: Store,
    definition: Arc<Definition>,
    subscriptions: Subscriptions,
    channel: Channel,
    tokens: Arc<Tokens>,
}

impl Subscriber {
    /// Checks the settings; connects only when run (so Salesforce being
    /// down never stops q2c from starting).
    pub fn new(
        settings: Settings,
        store: Store,
        definition: Arc<Definition>,
    ) -> Result<Self, Error> {
        if settings.topics.is_empty() {
            return Err(Error::Settings("no topic to follow".into()));
        }
        let mut names = HashSet::new();
        for topic in &settings.topics {
            if !topic.name.starts_with('/') {
                return Err(Error::Settings(format!(
                    "topic `{}` is not a topic name such as /event/Q2C_Quote_Accepted__e",
                    topic.name
                )));
            }
            if !names.insert(&topic.name) {
                return Err(Error::Settings(format!(
                    "topic `{}` is configured twice: one stream per topic",
                    topic.name
                )));
            }
        }
        if settings.outstanding == 0 || settings.outstanding > MAX_OUTSTANDING {
            return Err(Error::Settings(format!(
                "events outstanding must be 1 to {MAX_OUTSTANDING}, not {}",
                settings.outstanding
            )));
        }
        if settings.stall_after.is_zero() {
            return Err(Error::Settings("the stall time must be above zero".into()));
        }
        let channel = channel(&settings.pubsub_url)?;
        let tokens = Arc::new(Tokens::new(
            &settings.login_url,
            settings.credentials.clone(),
        )?);
        Ok(Self {
            settings: Arc::new(settings),
            store,
            definition,
            subscriptions: Subscriptions::default(),
            channel,
            tokens,
        })
    }

    /// The live status of every topic, for the HTTP API.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions.clone()
    }

    /// Follows every topic until `shutdown`. A topic that must stop (e.g.
    /// it does not exist) stops alone and shows as stopped; the others go on.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.store.positions().await {
            Ok(positions) => {
                for (topic, position, updated_at) in positions {
                    if self.settings.topics.iter().any(|each| each.name == topic) {
                        let shown = match &position {
                            q2c_store::positions::Position::After(id) => hex(id),
                            other => other.to_string(),
                        };
                        self.subscriptions
                            .position_stored(&topic, shown, updated_at);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not read the stored Salesforce positions");
            }
        }
        let mut streams = JoinSet::new();
        for topic in &self.settings.topics {
            // At zero from the start, so the first event of a series counts
            // in rate() and increase() like any other.
            for name in [
                "q2c_salesforce_events_received_total",
                "q2c_salesforce_dead_letters_total",
            ] {
                metrics::counter!(name, "topic" => topic.name.clone()).absolute(0);
            }
            let subscription = Subscription {
                topic: topic.clone(),
                settings: self.settings.clone(),
                store: self.store.clone(),
                definition: self.definition.clone(),
                tokens: self.tokens.clone(),
                channel: self.channel.clone(),
                subscriptions: self.subscriptions.clone(),
                schemas: Schemas::default(),
                origin: Instant::now(),
                session: None,
                started_from: None,
                lock: None,
            };
            streams.spawn(subscription.run(shutdown.clone()));
        }
        while let Some(ended) = streams.join_next().await {
            if let Err(error) = ended {
                tracing::error!(error = %error, "a Salesforce subscription task failed");
            }
        }
    }
}
