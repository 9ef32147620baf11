//! The `carafe` command line: `serve`, `migrate`, `keys`, `token`, `config` and `check`.
//! Commands other than `serve` work directly on the configured database and data dir, so an
//! operator can manage keys and mint tokens with no server running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use carafe_core::keys::{KeyId, KeyName, Scopes};
use carafe_core::page::{MAX_LIMIT, PageRequest};
use clap::{Parser, Subcommand};

use crate::access::keys::Keys;
use crate::access::tokens::Tokens;
use crate::api::keys::KeyView;
use crate::app::{App, open_store};
use crate::config::{Config, EXAMPLE_TOML, Overrides};
use crate::context::Actor;

#[derive(Debug, Parser)]
#[command(
    name = "carafe",
    version,
    about = "Files, mail, notifications and jobs for any web app"
)]
pub struct Cli {
    /// A carafe.toml to read (default: ./carafe.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (migrates the database first).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Run the job engine (in-process handlers and maintenance) without the HTTP API.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Create, list and revoke server API keys.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Mint an end-user token and print it.
    Token {
        /// The application's id for the user.
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 15m or 1h (default: auth.token_default_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Scopes for the user (files, mail, notify, jobs), comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
    },
    /// Print the effective configuration (secrets masked), or `config example`.
    Config {
        #[command(subcommand)]
        action: Option<ConfigCommand>,
    },
    /// Check that Carafe can run here: database reachable and migrated, data dir writable.
    Check,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// admin, files, mail, notify, jobs — comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List keys.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: KeyId },
    /// Rewrap every encrypted file's data key under the current `master_key` (after moving
    /// the old key to `master_keys_previous`); objects are not rewritten.
    RotateMaster,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented carafe.toml with every setting and its default.
    Example,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A .env file in the working directory fills in variables that are not already set.
    let dotenv = dotenvy::dotenv();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let overrides = Overrides {
        listen: match &cli.command {
            Command::Serve { listen } => *listen,
            _ => None,
        },
        data_dir: cli.data_dir.clone(),
    };
    let loaded = match Config::load(cli.config.as_deref(), &env, &overrides) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("carafe: {e}");
            return ExitCode::from(2);
        }
    };
    let config = loaded.config;
    match cli.command {
        Command::Config { action: None } => {
            print!("{}", config.to_masked_toml());
            return ExitCode::SUCCESS;
        }
        Command::Config {
            action: Some(ConfigCommand::Example),
        } => {
            print!("{EXAMPLE_TOML}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let _guard = match crate::telemetry::init(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("carafe: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Ok(path) = dotenv {
        tracing::info!(path = %path.display(), "loaded environment from .env");
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("carafe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { .. } => serve(config).await?,
        Command::Worker => {
            crate::app::run_worker(
                config,
                crate::jobs::runner::Handlers::new(),
                shutdown_signal(),
            )
            .await?
        }
        Command::Migrate => {
            let store = open_store(&config).await?;
            store.migrate().await.context("migration failed")?;
            store.close().await;
            eprintln!("database migrated ({})", store.backend());
        }
        Command::Keys { action } => keys(action, &config).await?,
        Command::Token { user, ttl, scope } => {
            let scopes = Scopes::parse_list(&scope.join(","))?;
            let tokens = Tokens::new(&config.secrets()?, &config.auth);
            let minted = tokens.mint(&user, ttl, scopes)?;
            println!("{}", minted.token);
            eprintln!("expires at {}", rfc3339(minted.expires_at));
        }
        Command::Check => return Ok(crate::cli::check(&config).await),
        Command::Config { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    match app.admin_key_file() {
        Some(path) => tracing::info!(
            path = %path.display(),
            "no API key existed: a bootstrap admin key was written to {}", path.display()
        ),
        None => tracing::info!("API keys exist; manage them with `carafe keys`"),
    }
    app.run_until(shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn keys(action: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    let keys = Keys::new(store.clone(), Duration::ZERO);
    match action {
        KeysCommand::Create { name, scopes } => {
            let name = KeyName::parse(&name).map_err(|m| anyhow::anyhow!("--name {m}"))?;
            let scopes = Scopes::parse_list(&scopes.join(","))?;
            anyhow::ensure!(!scopes.is_empty(), "give at least one scope");
            let issued = keys.create(name, scopes, &Actor::cli()).await?;
            eprintln!(
                "created key {} ({}); it is shown only once:",
                issued.key.id, issued.key.scopes
            );
            println!("{}", issued.secret);
        }
        KeysCommand::List { json } => {
            let mut page = PageRequest::first(MAX_LIMIT);
            let mut all = Vec::new();
            loop {
                let got = keys.list(&page).await?;
                all.extend(got.items.into_iter().map(KeyView::from));
                match got.next_after {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all);
            }
        }
        KeysCommand::Revoke { id } => match keys.revoke(id, &Actor::cli()).await? {
            Some(_) => eprintln!("revoked key {id}"),
            None => anyhow::bail!("no key with id {id}"),
        },
        KeysCommand::RotateMaster => {
            let masters = config.master_keys()?;
            let n = crate::files::store::rotate::rotate_master(store.as_ref(), &masters).await?;
            println!("rewrapped {n} data keys (files and uploads)");
        }
    }
    store.close().await;
    Ok(())
}

fn print_table(keys: &[KeyView]) {
    println!(
        "{:<36}  {:<11}  {:<24}  {:<20}  {:<20}  NAME",
        "ID", "PREFIX", "SCOPES", "CREATED", "REVOKED"
    );
    for k in keys {
        let scopes: Vec<_> = k.scopes.iter().map(|s| s.as_str()).collect();
        println!(
            "{:<36}  {:<11}  {:<24}  {:<20}  {:<20}  {}",
            k.id,
            k.prefix,
            scopes.join(","),
            rfc3339(k.created_at),
            k.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            k.name
        );
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The doctor: prints one line per check and returns a failing exit code if any failed.
async fn check(config: &Config) -> ExitCode {
    let mut failed = false;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!("{}  {what:<10} {detail}", if ok { "ok  " } else { "FAIL" });
        failed |= !ok;
    };
    match crate::secrets::ensure_data_dir(&config.data_dir).and_then(|()| {
        let probe = config.data_dir.join(".carafe-check");
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)?;
        Ok(())
    }) {
        Ok(()) => report(
            true,
            "data dir",
            format!("{} is writable", config.data_dir.display()),
        ),
        Err(e) => report(
            false,
            "data dir",
            format!("{}: {e:#}", config.data_dir.display()),
        ),
    }
    if config.database_url.is_none() && !config.sqlite_path().exists() {
        report(
            false,
            "database",
            "not created yet: run `carafe migrate` or `carafe serve`".into(),
        );
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match open_store(config).await {
        Err(e) => report(false, "database", format!("unreachable: {e:#}")),
        Ok(store) => {
            match store.ping().await {
                Ok(()) => report(true, "database", format!("{} reachable", store.backend())),
                Err(e) => report(false, "database", format!("unreachable: {e}")),
            }
            match store.pending_migrations().await {
                Ok(p) if p.is_empty() => report(true, "migrations", "all applied".into()),
                Ok(p) => report(
                    false,
                    "migrations",
                    format!("pending: {} (run `carafe migrate`)", p.join(", ")),
                ),
                Err(e) => report(false, "migrations", format!("cannot read: {e}")),
            }
            if config.clamd_url.is_none() {
                match store.list_buckets().await {
                    Ok(stored) => {
                        let required =
                            crate::files::buckets::requiring_scanner(&stored, &config.files);
                        if required.is_empty() {
                            report(
                                true,
                                "scanning",
                                "no clamd_url: files are served marked unscanned".into(),
                            );
                        } else {
                            report(
                                false,
                                "scanning",
                                format!(
                                    "no clamd_url: uploads to buckets that require scanning \
                                     are refused: {}",
                                    required.join(", ")
                                ),
                            );
                        }
                    }
                    Err(e) => report(false, "scanning", format!("cannot read buckets: {e}")),
                }
            }
            store.close().await;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
