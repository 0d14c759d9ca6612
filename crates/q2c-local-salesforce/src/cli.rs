//! The command line: `serve` runs a local Salesforce, `publish` sends one
//! event to a running one. The `q2c` binary mounts [`Command`] as
//! `q2c local-salesforce`.

use std::{
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    Config, Error, Secret,
    config::{
        DEFAULT_API_DAILY_LIMIT, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_GRPC_ADDR,
        DEFAULT_HTTP_ADDR, DEFAULT_ORG_ID, DEFAULT_USER_ID, DEFAULT_USERNAME,
    },
};

/// What `q2c local-salesforce` can do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a local Salesforce (Pub/Sub API, OAuth token endpoint, console)
    /// until Ctrl-C or SIGTERM.
    Serve(Box<Args>),
    /// Publish one platform event through a running local Salesforce.
    Publish(PublishArgs),
}

/// How `serve` runs: flags, each also read from a `Q2C_LOCAL_SF_*`
/// variable (the ready file from `Q2C_READY_FILE`, as for `q2c serve`), so a
/// person or a script can configure it either way.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the Pub/Sub API (gRPC, plain HTTP/2) listens.
    #[arg(long, env = "Q2C_LOCAL_SF_GRPC_ADDR", default_value_t = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// Where the token endpoint and the console (HTTP) listen; this is the
    /// login URL and the instance URL.
    #[arg(long, env = "Q2C_LOCAL_SF_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// The org id (what `tenantid` must be).
    #[arg(long, env = "Q2C_LOCAL_SF_ORG_ID", default_value = DEFAULT_ORG_ID)]
    pub org_id: String,

    /// The user tokens are issued to and events are created by.
    #[arg(long, env = "Q2C_LOCAL_SF_USER_ID", default_value = DEFAULT_USER_ID)]
    pub user_id: String,

    /// The username the JWT bearer flow expects as `sub`.
    #[arg(long, env = "Q2C_LOCAL_SF_USERNAME", default_value = DEFAULT_USERNAME)]
    pub username: String,

    /// The connected app's client id (consumer key).
    #[arg(long, env = "Q2C_LOCAL_SF_CLIENT_ID", default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,

    /// The connected app's client secret (a development value by default).
    #[arg(
        long,
        env = "Q2C_LOCAL_SF_CLIENT_SECRET",
        default_value = DEFAULT_CLIENT_SECRET,
        hide_env_values = true
    )]
    pub client_secret: String,

    /// An RSA public key (PEM file) that turns on the JWT bearer flow, e.g.
    /// deploy/local-salesforce/jwt-public.pem.
    #[arg(long, env = "Q2C_LOCAL_SF_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// How long an access token lives.
    #[arg(long, env = "Q2C_LOCAL_SF_TOKEN_TTL", default_value = "2h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// How often a stream waiting for events gets an empty keepalive.
    #[arg(long, env = "Q2C_LOCAL_SF_KEEPALIVE", default_value = "270s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,

    /// How long a stream with nothing requested may stay silent before the
    /// server closes it.
    #[arg(long, env = "Q2C_LOCAL_SF_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long events (and their replay ids) are retained.
    #[arg(long, env = "Q2C_LOCAL_SF_RETENTION", default_value = "72h", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// The org's daily API budget: REST calls allowed before they are
    /// refused with REQUEST_LIMIT_EXCEEDED.
    #[arg(long, env = "Q2C_LOCAL_SF_API_DAILY_LIMIT", default_value_t = DEFAULT_API_DAILY_LIMIT)]
    pub api_daily_limit: u64,

    /// Once listening, write `{"pid", "grpc", "http"}` (the URLs) here as
    /// JSON, whole: a script can start it on port 0 and read where it
    /// listens.
    #[arg(long, env = "Q2C_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

impl Args {
    /// The [`Config`] these flags describe, reading the JWT key file.
    pub fn config(&self) -> Result<Config, Error> {
        let jwt_public_key_pem = self
            .jwt_public_key
            .as_deref()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Ok(Config {
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            org_id: self.org_id.clone(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            client_id: self.client_id.clone(),
            client_secret: Secret::new(self.client_secret.clone()),
            jwt_public_key_pem,
            token_ttl: self.token_ttl,
            keepalive_interval: self.keepalive,
            idle_timeout: self.idle_timeout,
            retention: self.retention,
            api_daily_limit: self.api_daily_limit,
        })
    }
}

/// Which of the org's platform events to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventKind {
    /// `Q2C_Quote_Accepted__e`.
    Accepted,
    /// `Q2C_Quote_Cancelled__e`.
    Cancelled,
}

impl EventKind {
    /// The event's API name.
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Accepted => "Q2C_Quote_Accepted__e",
            Self::Cancelled => "Q2C_Quote_Cancelled__e",
        }
    }
}

/// What `publish` sends, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// The event to publish.
    #[arg(value_enum)]
    pub event: EventKind,

    /// A JSON object of the event's fields in Salesforce names
    /// (`Quote_Id__c`, `Net_Amount__c`, ...); `-` reads standard input.
    #[arg(long)]
    pub file: PathBuf,

    /// The local Salesforce's HTTP base URL.
    #[arg(
        long,
        env = "Q2C_LOCAL_SF_URL",
        default_value = "http://127.0.0.1:7080"
    )]
    pub url: String,

    /// The event id (a UUID); a fresh one by default.
    #[arg(long)]
    pub id: Option<String>,
}

/// Runs a command to its end: `serve` until Ctrl-C or SIGTERM (a second
/// signal stops at once), `publish` after printing what was published.
pub async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Publish(args) => {
            let fields = read_fields(&args.file)?;
            let published =
                crate::publish(&args.url, args.event.api_name(), fields, args.id.as_deref())
                    .await?;
            println!(
                "published {} to {} with replay id {}",
                published.id, published.topic, published.replay_id
            );
            Ok(())
        }
    }
}

async fn serve(args: Args) -> Result<(), Error> {
    let config = args.config()?;
    let jwt = match &args.jwt_public_key {
        Some(path) => format!("on (public key {})", path.display()),
        None => "off (no --jwt-public-key)".to_owned(),
    };
    let local = crate::start(config).await?;
    println!("local Salesforce running");
    println!("  Pub/Sub API (gRPC):  {}", local.grpc_url());
    println!("  login URL:           {}", local.login_url());
    println!("  instance URL:        {}", local.instance_url());
    println!("  org id (tenantid):   {}", local.org_id());
    println!("  client id:           {}", local.client_id());
    println!("  username (JWT sub):  {}", local.username());
    println!("  JWT bearer flow:     {jwt}");
    for event in crate::EVENT_NAMES {
        println!(
            "  topic /event/{event}  schema id {}",
            local.schema_id(event).unwrap_or_default()
        );
    }
    println!(
        "  REST API:            {}/services/data/v62.0/ (Bearer token)",
        local.instance_url()
    );
    println!(
        "  console:             {}/local/status, POST {}/local/events/<event>",
        local.http_url(),
        local.http_url()
    );
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &local)?;
    }

    tokio::select! {
        () = stop_signal() => tracing::info!("stopping the local Salesforce"),
        () = local.stopping() => {}
    }
    tokio::select! {
        result = local.shutdown() => result,
        () = stop_signal() => {
            tracing::warn!("second signal: stopping at once");
            Ok(())
        }
    }
}

/// Announces where `local` listens. The JSON is written to `<path>.partial`
/// and renamed, so a reader sees all of it or nothing.
fn write_ready_file(path: &Path, local: &crate::LocalSalesforce) -> Result<(), Error> {
    let content = serde_json::json!({
        "pid": std::process::id(),
        "grpc": local.grpc_url(),
        "http": local.http_url(),
    });
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, format!("{content}\n"))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|error| Error::Config {
            setting: "Q2C_READY_FILE",
            reason: format!("cannot write {}: {error}", path.display()),
        })
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reads the event's fields from a file, or standard input for `-`.
fn read_fields(path: &Path) -> Result<serde_json::Value, Error> {
    let read_error = |source| Error::ReadFile {
        path: path.to_owned(),
        source,
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    let fields: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::NotJson(format!("{}: {e}", path.display())))?;
    if fields.is_object() {
        Ok(fields)
    } else {
        Err(Error::NotJson(format!(
            "{}: expected a JSON object",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn serve_flags_make_a_config() {
        let cli = Cli::try_parse_from([
            "x",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--keepalive",
            "200ms",
            "--retention",
            "1h",
            "--api-daily-limit",
            "50",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let config = args.config().unwrap();
        assert_eq!(config.keepalive_interval, Duration::from_millis(200));
        assert_eq!(config.retention, Duration::from_secs(3600));
        assert_eq!(config.grpc_addr.port(), 0);
        assert_eq!(config.api_daily_limit, 50);
        config.validate().unwrap();
    }

    #[tokio::test]
    async fn the_ready_file_says_where_a_local_salesforce_on_port_0_listens() {
        let local = crate::start(Config::for_tests()).await.unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("local-salesforce.ready");

        write_ready_file(&path, &local).unwrap();

        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(ready["pid"], std::process::id());
        assert_eq!(
            ready["grpc"],
            format!("http://127.0.0.1:{}", local.grpc_addr().port())
        );
        assert_eq!(
            ready["http"],
            format!("http://127.0.0.1:{}", local.http_addr().port())
        );
        assert_ne!(local.grpc_addr().port(), 0);
        let status = reqwest::get(format!("{}/local/status", ready["http"].as_str().unwrap()))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "the console answers at the announced URL");
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["local-salesforce.ready"], "no partial file is left");

        let unwritable = directory.path().join("missing").join("x.ready");
        let error = write_ready_file(&unwritable, &local).unwrap_err();
        assert!(
            error.to_string().contains("Q2C_READY_FILE"),
            "the error names the setting: {error}"
        );
        local.shutdown().await.unwrap();
    }

    #[test]
    fn serve_takes_a_ready_file() {
        let cli = Cli::try_parse_from(["x", "serve", "--ready-file", "ls.ready"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.ready_file, Some(PathBuf::from("ls.ready")));
    }

    #[test]
    fn publish_takes_an_event_kind_and_a_file() {
        let cli = Cli::try_parse_from(["x", "publish", "cancelled", "--file", "q.json"]).unwrap();
        let Command::Publish(args) = cli.command else {
            panic!("not publish");
        };
        assert_eq!(args.event.api_name(), "Q2C_Quote_Cancelled__e");
        assert_eq!(args.file, PathBuf::from("q.json"));
    }
}
