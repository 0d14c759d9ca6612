//! The Salesforce subscriber's settings, from the environment. Setting
//! `Q2C_SALESFORCE_PUBSUB_URL` turns the subscriber on; everything else it
//! needs is then checked at start, naming the setting that is wrong.

use std::time::Duration;

use q2c_salesforce::recovery::Backoff;
use q2c_salesforce_auth::{Credentials, Secret};
use q2c_store::positions::Position;
use q2c_subscriber::{EventKind, ReplayIdPolicy, Settings, Topic};

use crate::settings::{self, Error};

/// The subscriber's settings, or `None` when it is not configured.
pub fn subscriber_settings() -> Result<Option<Settings>, Error> {
    let Some(pubsub_url) = settings::optional("Q2C_SALESFORCE_PUBSUB_URL") else {
        return Ok(None);
    };
    let login_url = settings::required(
        "Q2C_SALESFORCE_LOGIN_URL",
        "set it to the org's login URL, e.g. https://login.salesforce.com or the My Domain URL",
    )?;
    let credentials = credentials()?;
    let first_start = match settings::optional("Q2C_SALESFORCE_FIRST_START").as_deref() {
        None | Some("LATEST") => Position::Latest,
        Some("EARLIEST") => Position::Earliest,
        Some(other) => {
            return Err(settings::invalid(
                "Q2C_SALESFORCE_FIRST_START",
                format!("`{other}` is not EARLIEST or LATEST"),
            ));
        }
    };
    let on_unusable_replay_id = match settings::optional("Q2C_SALESFORCE_ON_EXPIRED_REPLAY_ID") {
        Some(text) => ReplayIdPolicy::parse(&text)
            .map_err(|problem| settings::invalid("Q2C_SALESFORCE_ON_EXPIRED_REPLAY_ID", problem))?,
        None => ReplayIdPolicy::Earliest,
    };
    let outstanding = match settings::optional("Q2C_SALESFORCE_OUTSTANDING") {
        Some(text) => text.parse().map_err(|_| {
            settings::invalid(
                "Q2C_SALESFORCE_OUTSTANDING",
                format!("`{text}` is not a number from 1 to 100"),
            )
        })?,
        None => 100,
    };
    let defaults = Backoff::default();
    Ok(Some(Settings {
        pubsub_url,
        login_url,
        credentials,
        topics: vec![
            Topic {
                name: settings::optional("Q2C_SALESFORCE_ACCEPTED_TOPIC")
                    .unwrap_or_else(|| q2c_salesforce::QUOTE_ACCEPTED_CHANNEL.into()),
                kind: EventKind::QuoteAccepted,
            },
            Topic {
                name: settings::optional("Q2C_SALESFORCE_CANCELLED_TOPIC")
                    .unwrap_or_else(|| q2c_salesforce::QUOTE_CANCELLED_CHANNEL.into()),
                kind: EventKind::QuoteCancelled,
            },
        ],
        first_start,
        on_unusable_replay_id,
        stall_after: duration("Q2C_SALESFORCE_STALL_AFTER", Duration::from_secs(300))?,
        outstanding,
        backoff: Backoff {
            initial: duration("Q2C_SALESFORCE_RECONNECT_MIN", defaults.initial)?,
            max: duration("Q2C_SALESFORCE_RECONNECT_MAX", defaults.max)?,
            allocation_exhausted: duration(
                "Q2C_SALESFORCE_LIMIT_BACKOFF",
                defaults.allocation_exhausted,
            )?,
        },
    }))
}

/// How q2c logs in to Salesforce: the JWT bearer flow when a key file is
/// set, the client-credentials flow otherwise.
fn credentials() -> Result<Credentials, Error> {
    let client_id = settings::required(
        "Q2C_SALESFORCE_CLIENT_ID",
        "set it to the connected app's consumer key",
    )?;
    Ok(
        match settings::optional_path("Q2C_SALESFORCE_JWT_KEY_FILE") {
            Some(path) => Credentials::JwtBearer {
                client_id,
                username: settings::required(
                    "Q2C_SALESFORCE_USERNAME",
                    "the JWT bearer flow needs the Salesforce username to act as",
                )?,
                private_key: Secret::from_file(&path).map_err(|error| {
                    settings::invalid(
                        "Q2C_SALESFORCE_JWT_KEY_FILE",
                        format!("cannot read {}: {error}", path.display()),
                    )
                })?,
                audience: settings::optional("Q2C_SALESFORCE_JWT_AUDIENCE")
                    .unwrap_or_else(|| "https://login.salesforce.com".into()),
            },
            None => Credentials::ClientCredentials {
                client_id,
                client_secret: client_secret()?,
            },
        },
    )
}

fn client_secret() -> Result<Secret, Error> {
    if let Some(secret) = settings::optional("Q2C_SALESFORCE_CLIENT_SECRET") {
        return Ok(Secret::new(secret));
    }
    let path = settings::optional_path("Q2C_SALESFORCE_CLIENT_SECRET_FILE").ok_or_else(|| {
        settings::invalid(
            "Q2C_SALESFORCE_CLIENT_SECRET",
            "is not set; set it or Q2C_SALESFORCE_CLIENT_SECRET_FILE for the client-credentials \
             flow, or Q2C_SALESFORCE_JWT_KEY_FILE and Q2C_SALESFORCE_USERNAME for the JWT bearer flow",
        )
    })?;
    Secret::from_file(&path).map_err(|error| {
        settings::invalid(
            "Q2C_SALESFORCE_CLIENT_SECRET_FILE",
            format!("cannot read {}: {error}", path.display()),
        )
    })
}

fn duration(name: &'static str, default: Duration) -> Result<Duration, Error> {
    match settings::optional(name) {
        Some(text) => humantime::parse_duration(&text)
            .map_err(|error| settings::invalid(name, format!("`{text}`: {error}"))),
        None => Ok(default),
    }
}

/// The Salesforce connector's settings (`q2c connect salesforce`).
pub fn connector_settings(
    amqp_url: String,
    topology: q2c_contract::Topology,
) -> Result<q2c_salesforce_connector::connector::Settings, Error> {
    use q2c_salesforce_connector::limits::Reserve;
    use q2c_salesforce_connector::mapping::{Fields, Target};

    let login_url = settings::required(
        "Q2C_SALESFORCE_LOGIN_URL",
        "set it to the org's login URL, e.g. https://login.salesforce.com or the My Domain URL",
    )?;
    let targets = settings::optional("Q2C_SALESFORCE_STATUS_TARGETS")
        .unwrap_or_else(|| "opportunity".into())
        .split(',')
        .map(str::trim)
        .filter(|target| !target.is_empty())
        .map(|target| match target.split_once(':') {
            None if target == "opportunity" => Ok(Target::Opportunity),
            Some(("event", event)) if event.ends_with("__e") => Ok(Target::PlatformEvent {
                event: event.to_owned(),
            }),
            Some(("upsert", spec)) => match spec.split_once('.') {
                Some((object, field)) if !object.is_empty() && !field.is_empty() => {
                    Ok(Target::Upsert {
                        object: object.to_owned(),
                        external_id_field: field.to_owned(),
                    })
                }
                _ => Err(target),
            },
            _ => Err(target),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|target| {
            settings::invalid(
                "Q2C_SALESFORCE_STATUS_TARGETS",
                format!(
                    "`{target}` is not `opportunity`, `upsert:<Object>.<ExternalIdField>` or `event:<Name>__e`"
                ),
            )
        })?;
    let share = match settings::optional("Q2C_SALESFORCE_API_RESERVE") {
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|share| (0.0..=1.0).contains(share))
            .ok_or_else(|| {
                settings::invalid(
                    "Q2C_SALESFORCE_API_RESERVE",
                    format!("`{text}` is not a share from 0 to 1"),
                )
            })?,
        None => 0.2,
    };
    Ok(q2c_salesforce_connector::connector::Settings {
        amqp_url,
        topology,
        login_url,
        credentials: credentials()?,
        api_version: settings::optional("Q2C_SALESFORCE_API_VERSION")
            .unwrap_or_else(|| "v62.0".into()),
        targets,
        record_fields: record_fields()?,
        event_fields: Fields::event_defaults(),
        reserve: Reserve {
            share,
            window: duration(
                "Q2C_SALESFORCE_API_WINDOW",
                q2c_salesforce_connector::limits::DAY,
            )?,
        },
        write_within: duration("Q2C_SALESFORCE_WRITE_WITHIN", Duration::from_secs(45))?,
    })
}

/// The record fields statuses are written to: q2c's custom fields, each
/// renamable with `Q2C_SALESFORCE_STATUS_FIELDS=status=My_Status__c,...`.
fn record_fields() -> Result<q2c_salesforce_connector::mapping::Fields, Error> {
    let mut fields = q2c_salesforce_connector::mapping::Fields::record_defaults();
    let Some(text) = settings::optional("Q2C_SALESFORCE_STATUS_FIELDS") else {
        return Ok(fields);
    };
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let invalid = |problem: String| settings::invalid("Q2C_SALESFORCE_STATUS_FIELDS", problem);
        let (part, field) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("`{pair}` is not <part>=<Field__c>")))?;
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!("`{field}` is not a Salesforce field name")));
        }
        let slot = match part {
            "status" => &mut fields.status,
            "order_number" => &mut fields.order_number,
            "invoice_number" => &mut fields.invoice_number,
            "payment_reference" => &mut fields.payment_reference,
            "failure_reason" => &mut fields.failure_reason,
            "updated_at" => &mut fields.updated_at,
            "sequence" => &mut fields.sequence,
            "workflow_id" => &mut fields.workflow_id,
            other => {
                return Err(invalid(format!(
                    "`{other}` is not one of status, order_number, invoice_number, payment_reference, failure_reason, updated_at, sequence, workflow_id"
                )));
            }
        };
        *slot = field.to_owned();
    }
    Ok(fields)
}
