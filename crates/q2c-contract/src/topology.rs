//! The broker topology: exchanges, queues and bindings, by name.
//!
//! Every process that touches the broker declares the whole topology at
//! start, with identical arguments, so a `mandatory` publish never fails
//! because the process that consumes it has not started yet. Declarations
//! are idempotent; declaring with different arguments would be refused by
//! the broker, which is why they all come from here.
//!
//! ```text
//! {p}q2c.commands (topic) ── erp.#        ─▶ {p}q2c.erp.commands
//!                         ── billing.#    ─▶ {p}q2c.billing.commands
//!                         ── payment.#    ─▶ {p}q2c.payment.commands
//!                         ── salesforce.# ─▶ {p}q2c.salesforce.commands
//! {p}q2c.replies  (topic) ── #            ─▶ {p}q2c.orchestrator.replies
//! {p}q2c.dead-letter (fanout)             ─▶ {p}q2c.dead-letters
//! ```
//!
//! `{p}` is the deployment's prefix (`Q2C_AMQP_PREFIX`, empty by default),
//! which lets several deployments or test runs share one broker. Queues are
//! durable quorum queues that dead-letter to `{p}q2c.dead-letter`; the
//! broker also dead-letters a message redelivered more than
//! [`BROKER_DELIVERY_LIMIT`] times, a safety net behind the consumers' own
//! cap.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// The connector domains; a command type's first segment names its domain
/// (`erp.create_order` goes to the `erp` connector).
pub const DOMAINS: &[&str] = &["erp", "billing", "payment", "salesforce"];

/// Deliveries after which the broker itself dead-letters a message.
pub const BROKER_DELIVERY_LIMIT: i64 = 50;

/// Names and declarations for one deployment prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

/// Why a topology cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The prefix would make invalid or ambiguous names.
    #[error("AMQP prefix `{0}` may only contain letters, digits, `.`, `-` and `_` (at most 64)")]
    InvalidPrefix(String),
    /// The broker refused a declaration.
    #[error("declaring {what} on the broker failed: {source}")]
    Broker {
        /// The exchange, queue or binding.
        what: String,
        /// The broker's answer.
        source: lapin::Error,
    },
}

impl Topology {
    /// The topology for `prefix` (may be empty).
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let valid = prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if valid {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(Error::InvalidPrefix(prefix.to_owned()))
        }
    }

    /// The deployment prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where commands are published, with their type as routing key.
    pub fn commands_exchange(&self) -> String {
        format!("{}q2c.commands", self.prefix)
    }

    /// Where replies are published, with their type as routing key.
    pub fn replies_exchange(&self) -> String {
        format!("{}q2c.replies", self.prefix)
    }

    /// Where queues send what they reject or give up on.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}q2c.dead-letter", self.prefix)
    }

    /// The queue a domain's connector consumes.
    pub fn command_queue(&self, domain: &str) -> String {
        format!("{}q2c.{domain}.commands", self.prefix)
    }

    /// The queue the orchestrator consumes replies from.
    pub fn replies_queue(&self) -> String {
        format!("{}q2c.orchestrator.replies", self.prefix)
    }

    /// The broker-level dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}q2c.dead-letters", self.prefix)
    }

    /// The domain whose queue receives a command type, if it routes anywhere.
    pub fn domain_of(command_type: &str) -> Option<&'static str> {
        let first = command_type.split('.').next()?;
        DOMAINS.iter().copied().find(|domain| *domain == first)
    }

    /// Declares every exchange, queue and binding; safe to repeat.
    pub async fn declare(&self, channel: &Channel) -> Result<(), Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (self.commands_exchange(), ExchangeKind::Topic),
            (self.replies_exchange(), ExchangeKind::Topic),
            (self.dead_letter_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|source| broker(format!("exchange {name}"), source))?;
        }

        let dead_letters = self.dead_letter_queue();
        self.declare_queue(channel, &dead_letters, false).await?;
        self.bind(channel, &dead_letters, &self.dead_letter_exchange(), "")
            .await?;

        let replies = self.replies_queue();
        self.declare_queue(channel, &replies, true).await?;
        self.bind(channel, &replies, &self.replies_exchange(), "#")
            .await?;

        for domain in DOMAINS {
            let queue = self.command_queue(domain);
            self.declare_queue(channel, &queue, true).await?;
            self.bind(
                channel,
                &queue,
                &self.commands_exchange(),
                &format!("{domain}.#"),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of this prefix: for tests and for
    /// tearing down a deployment.
    pub async fn delete(&self, channel: &Channel) -> Result<(), Error> {
        let mut queues = vec![self.replies_queue(), self.dead_letter_queue()];
        queues.extend(DOMAINS.iter().map(|domain| self.command_queue(domain)));
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|source| broker(format!("deleting queue {queue}"), source))?;
        }
        for exchange in [
            self.commands_exchange(),
            self.replies_exchange(),
            self.dead_letter_exchange(),
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|source| broker(format!("deleting exchange {exchange}"), source))?;
        }
        Ok(())
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        dead_letter: bool,
    ) -> Result<(), Error> {
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        if dead_letter {
            arguments.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from(self.dead_letter_exchange())),
            );
            arguments.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
            );
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.into(), options, arguments)
            .await
            .map(|_| ())
            .map_err(|source| broker(format!("queue {name}"), source))
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), Error> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| {
                broker(
                    format!("binding {queue} to {exchange} ({routing_key})"),
                    source,
                )
            })
    }
}

fn broker(what: String, source: lapin::Error) -> Error {
    Error::Broker { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let topology = Topology::new("t42.").unwrap();
        assert_eq!(topology.commands_exchange(), "t42.q2c.commands");
        assert_eq!(topology.command_queue("erp"), "t42.q2c.erp.commands");
        assert_eq!(topology.replies_queue(), "t42.q2c.orchestrator.replies");
    }

    #[test]
    fn commands_route_by_their_first_segment() {
        assert_eq!(Topology::domain_of("erp.create_order"), Some("erp"));
        assert_eq!(
            Topology::domain_of("salesforce.report_status"),
            Some("salesforce")
        );
        assert_eq!(Topology::domain_of("shipping.dispatch"), None);
    }

    #[test]
    fn odd_prefixes_are_refused() {
        assert!(Topology::new("with space").is_err());
        assert!(Topology::new("#").is_err());
        assert!(Topology::new("").is_ok());
    }
}
