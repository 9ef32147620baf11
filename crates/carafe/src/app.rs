//! The server as one value: `App::build` opens the store, migrates, makes sure an admin key
//! exists and binds the listener (port 0 in tests); `run_until` serves until the given future
//! completes, then drains in-flight requests for at most `shutdown_timeout`. Production and
//! tests go through exactly this path. `run_worker` is the same engine without HTTP.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use carafe_core::Store;
use carafe_store_postgres::PgStore;
use carafe_store_sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::access::keys::Keys;
use crate::access::tokens::Tokens;
use crate::api::state::{AppState, Inner};
use crate::api::{self, observe::Observer};
use crate::config::Config;
use crate::files::Files;
use crate::files::check::process::FileJobs;
use crate::jobs::push::Dispatcher;
use crate::jobs::runner::Handlers;
use crate::jobs::{Jobs, maintenance};
use crate::mail::campaigns::CampaignJobs;
use crate::mail::{MailJobs, Mailer};
use crate::realtime::bus::Bus;
use crate::secrets::{self, Secrets};

pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    handlers: Handlers,
    local_addr: SocketAddr,
    admin_key_file: Option<PathBuf>,
    /// The SMTP submission listener, when `mail.smtp_listen` is set.
    smtp: Option<(TcpListener, Arc<crate::smtp::Listener>)>,
}

/// Opens the configured database (SQLite in the data dir by default). Does not migrate.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let pool = config.database_max_connections;
    Ok(match config.database_url.as_ref().map(|u| u.expose()) {
        None => {
            secrets::ensure_data_dir(&config.data_dir)?;
            Arc::new(SqliteStore::open(&config.sqlite_path(), pool).await?)
        }
        Some(url) if url.starts_with("sqlite:") => {
            Arc::new(SqliteStore::open_url(url, pool).await?)
        }
        Some(url) => Arc::new(
            PgStore::connect(url, pool)
                .await
                .context("cannot connect to PostgreSQL")?,
        ),
    })
}

/// Opens and migrates the store, and connects cross-instance wake-ups to the bus.
async fn open_engine(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<Jobs>)> {
    let store = open_store(config).await?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    let bus = Bus::new();
    let sink = bus.clone();
    store
        .listen(Arc::new(move |topic: &str| sink.publish(topic)))
        .await
        .context("cannot listen for wake-ups")?;
    let jobs = Arc::new(Jobs::new(
        store.clone(),
        bus,
        config.jobs.clone(),
        &config.push,
    ));
    Ok((store, jobs))
}

/// The files service, with its buckets ensured, its leftovers swept, and its job handler
/// added to `handlers`.
async fn open_files(
    config: &Config,
    secrets: &Secrets,
    store: &Arc<dyn Store>,
    jobs: &Arc<Jobs>,
    handlers: Handlers,
) -> anyhow::Result<(Arc<Files>, Handlers)> {
    let setup = crate::files::Setup {
        settings: config.files.clone(),
        storage_url: config.storage_url.as_ref().map(|u| u.expose()),
        data_dir: &config.data_dir,
        clamd_url: config.clamd_url.as_deref(),
        keys: config.master_keys()?,
        secrets,
    };
    let files = Arc::new(Files::new(setup, store.clone(), jobs.clone())?);
    files
        .ensure_buckets()
        .await
        .context("cannot create the configured buckets")?;
    if config.clamd_url.is_none() {
        tracing::warn!(
            "clamd_url is not set: uploaded files are not virus-scanned (marked unscanned)"
        );
        let stored = store
            .list_buckets()
            .await
            .context("cannot read the buckets")?;
        let required = crate::files::buckets::requiring_scanner(&stored, &config.files);
        if !required.is_empty() {
            tracing::warn!(
                buckets = %required.join(", "),
                "clamd_url is not set: buckets whose scan policy is `required` refuse every \
                 upload (503 scanner_unavailable)"
            );
        }
    }
    let handlers = handlers.add(
        crate::files::QUEUE,
        FILE_JOBS_CONCURRENCY,
        FileJobs::new(files.clone()),
    );
    Ok((files, handlers))
}

/// The mail service, with its job handler added to `handlers`.
async fn open_mail(
    config: &Config,
    secrets: &Secrets,
    base: &Url,
    store: &Arc<dyn Store>,
    jobs: &Arc<Jobs>,
    files: &Arc<Files>,
    handlers: Handlers,
) -> anyhow::Result<(Arc<Mailer>, Handlers)> {
    // Unsubscribe links point at the public URL; every instance must agree on it.
    let links = crate::mail::unsubscribe::Links::new(secrets.unsubscribe_key(), base.as_str());
    let mailer = Mailer::new(
        store.clone(),
        jobs.clone(),
        Some(files.clone()),
        Some(links),
        config.mail.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    if config.mail.smtp_url.is_none() {
        tracing::info!(
            "mail.smtp_url is not set: mail is captured in the outbox (GET /api/v1/outbox)"
        );
    }
    let mailer = Arc::new(mailer);
    // Every instance writes the relays' rate groups as its configuration says (they should
    // all say the same) and serves each relay's queue.
    mailer.relays().install(jobs).await?;
    let mut handlers = handlers;
    for (_, relay) in mailer.relays().iter() {
        handlers = handlers.add(
            relay.queue.as_str(),
            MAIL_JOBS_CONCURRENCY,
            MailJobs::new(mailer.clone()),
        );
    }
    let handlers = handlers.add(
        crate::mail::CAMPAIGNS_QUEUE,
        CAMPAIGN_JOBS_CONCURRENCY,
        CampaignJobs::new(mailer.clone()),
    );
    Ok((mailer, handlers))
}

/// Send jobs one process runs at once from each relay's queue and each started campaign's.
/// The relay's `concurrency` caps the connections; the rest wait for one, and their starts
/// and ends share commits (measured: 8 gave a third of the rate 128 does into a local sink).
const MAIL_JOBS_CONCURRENCY: usize = 128;

/// Campaign imports and expansions one process runs at once.
const CAMPAIGN_JOBS_CONCURRENCY: usize = 2;

/// File jobs one process runs at once (scans and image work are CPU- and I/O-heavy).
const FILE_JOBS_CONCURRENCY: usize = 4;

/// A name for this process in leases and claims; never reused, so a restarted process is
/// never mistaken for its predecessor.
fn instance_id() -> String {
    format!("carafe-{}", uuid::Uuid::now_v7().simple())
}

/// Background work every process runs until `stop`: maintenance, push delivery (when
/// configured), and the in-process handlers.
fn spawn_engine(
    jobs: &Arc<Jobs>,
    files: &Arc<Files>,
    mail: &Arc<Mailer>,
    handlers: Handlers,
    config: &Config,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let instance = instance_id();
    let drain = config.shutdown_timeout.0;
    let mut tasks = JoinSet::new();
    tasks.spawn(files.clone().sweep(stop.clone()));
    tasks.spawn(files.clone().retain(instance.clone(), stop.clone()));
    tasks.spawn(maintenance::run(
        jobs.clone(),
        instance.clone(),
        stop.clone(),
    ));
    if let Some(secret) = &config.push.secret {
        let dispatcher = Dispatcher::new(
            jobs.clone(),
            secret.expose(),
            config.push.concurrency,
            instance.clone(),
        );
        tasks.spawn(dispatcher.run(stop.clone(), drain));
    }
    tasks.spawn(crate::mail::campaigns::serve(
        mail.clone(),
        jobs.clone(),
        instance.clone(),
        MAIL_JOBS_CONCURRENCY,
        stop.clone(),
        drain,
    ));
    if !handlers.is_empty() {
        tasks.spawn(handlers.run(jobs.clone(), instance, stop.clone(), drain));
    }
    tasks
}

impl App {
    /// The server with Carafe's own job handlers.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::build_with(config, Handlers::new()).await
    }

    /// The server with these in-process job handlers.
    pub async fn build_with(config: Config, handlers: Handlers) -> anyhow::Result<App> {
        config.validate()?;
        secrets::ensure_data_dir(&config.data_dir)?;
        let secrets = config.secrets()?;
        if config.database_url.is_some() && config.secret_key.is_none() {
            tracing::warn!(
                "secret_key is not set: it was generated into the data dir; give every \
                 instance that shares this database the same CARAFE_SECRET_KEY"
            );
        }
        let (store, jobs) = open_engine(&config).await?;
        let (files, handlers) = open_files(&config, &secrets, &store, &jobs, handlers).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| fallback_base(local_addr));
        let (mail, handlers) =
            open_mail(&config, &secrets, &base, &store, &jobs, &files, handlers).await?;
        let keys = Arc::new(Keys::new(store.clone(), config.auth.key_cache_ttl.0));
        let admin_key_file = keys.bootstrap(&config.data_dir).await?;
        let smtp = match config.mail.smtp_listen {
            None => None,
            Some(addr) => {
                let ctx = crate::smtp::Listener::new(mail.clone(), keys.clone(), addr)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("mail.smtp_listen: cannot listen on {addr}"))?;
                Some((listener, Arc::new(ctx)))
            }
        };
        let state = AppState::new(Inner {
            tokens: Tokens::new(&secrets, &config.auth),
            sealer: secrets.sealer(),
            observer: Observer::new(),
            fallback_base: fallback_base(local_addr),
            jobs,
            files,
            mail,
            shutdown: CancellationToken::new(),
            keys,
            audit: crate::audit::AuditLog::new(store.clone()),
            store,
            config,
        });
        let router = api::router(state.clone());
        Ok(App {
            listener,
            router,
            state,
            handlers,
            local_addr,
            admin_key_file,
            smtp,
        })
    }

    /// Where the SMTP listener listens, when there is one.
    pub fn smtp_addr(&self) -> Option<SocketAddr> {
        self.smtp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Where the bootstrap admin key was written, when this start created one.
    pub fn admin_key_file(&self) -> Option<&PathBuf> {
        self.admin_key_file.as_ref()
    }

    /// Serves until `shutdown` completes, then stops accepting connections, ends long polls
    /// and event streams, and lets in-flight requests and running jobs finish for at most
    /// `shutdown_timeout`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            router,
            state,
            handlers,
            local_addr,
            smtp,
            ..
        } = self;
        let stop = state.shutdown.clone();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let timeout = state.config.shutdown_timeout.0;
        let mut engine = spawn_engine(
            &state.jobs,
            &state.files,
            &state.mail,
            handlers,
            &state.config,
            &stop,
        );
        engine.spawn(state.observer.clone().keep_up(stop.clone()));
        if let Some((listener, ctx)) = smtp {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("SMTP submission listening on {addr}");
            }
            engine.spawn(crate::smtp::serve(listener, ctx, stop.clone()));
        }
        let url = state
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| fallback_base(local_addr));
        tracing::info!(%url, backend = state.store.backend(), "listening on {local_addr}");
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned());
        let result = tokio::select! {
            served = serve.into_future() => served.context("server failed"),
            () = async {
                stop.cancelled().await;
                tracing::info!(in_flight = state.observer.in_flight(), "shutting down: draining requests");
                tokio::time::sleep(timeout).await;
            } => {
                tracing::warn!(
                    in_flight = state.observer.in_flight(),
                    "requests still running after {}; stopping anyway",
                    humantime::format_duration(timeout)
                );
                Ok(())
            }
        };
        stop.cancel();
        while engine.join_next().await.is_some() {}
        state.files.audit.flush().await;
        state.store.close().await;
        tracing::info!("stopped");
        result
    }
}

/// Runs the job engine (maintenance and in-process handlers) without the HTTP API, until
/// `shutdown` completes; running jobs then get `shutdown_timeout` to finish.
pub async fn run_worker(
    config: Config,
    handlers: Handlers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let secrets = config.secrets()?;
    let (store, jobs) = open_engine(&config).await?;
    let (files, handlers) = open_files(&config, &secrets, &store, &jobs, handlers).await?;
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| fallback_base(config.listen));
    let (mail, handlers) =
        open_mail(&config, &secrets, &base, &store, &jobs, &files, handlers).await?;
    let stop = CancellationToken::new();
    let mut engine = spawn_engine(&jobs, &files, &mail, handlers, &config, &stop);
    tracing::info!(backend = store.backend(), "worker running");
    shutdown.await;
    tracing::info!("shutting down: letting running jobs finish");
    stop.cancel();
    while engine.join_next().await.is_some() {}
    files.audit.flush().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `http://<bound address>`, with `localhost` when bound to all interfaces.
fn fallback_base(addr: SocketAddr) -> Url {
    let host = if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    Url::parse(&format!("http://{host}:{}/", addr.port())).expect("a valid URL")
}
