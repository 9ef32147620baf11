//! The SMTP way in: `carafe serve` can listen for SMTP submission (`mail.smtp_listen`), so
//! apps that already send mail over SMTP (Flask-Mail, Django, Rails) point their mail server
//! setting at Carafe unchanged and gain its queue, retries, send log, DKIM and outbox. Like
//! `api`, this is a way in: it translates a protocol into calls of the mail capability.

mod message;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::access::keys::Keys;
use crate::mail::{Mailer, Settings};

/// Sessions served at once; more connections wait for a free one.
const MAX_SESSIONS: usize = 256;

/// What every session shares.
pub struct Listener {
    mailer: Arc<Mailer>,
    /// The API's keys (and their cache): a key revoked is refused here as there.
    keys: Arc<Keys>,
    tls: Option<TlsAcceptor>,
    /// Whether the listener is on a loopback address (AUTH is then offered without TLS).
    loopback: bool,
    max_bytes: usize,
}

/// The name the listener greets with.
const NAME: &str = "carafe";

/// The TLS acceptor of the configured certificate and key (PEM).
fn acceptor(settings: &Settings) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (
        &settings.smtp_listen_cert_file,
        &settings.smtp_listen_key_file,
    ) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("mail.smtp_listen_cert_file: cannot read {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("mail.smtp_listen_key_file: cannot read {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("mail.smtp_listen_cert_file and _key_file do not make a TLS identity")?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

impl Listener {
    pub fn new(mailer: Arc<Mailer>, keys: Arc<Keys>, addr: SocketAddr) -> anyhow::Result<Self> {
        let settings = mailer.settings();
        let tls = acceptor(settings)?;
        // (`Settings::validate` refuses a listener off loopback without a certificate.)
        let loopback = addr.ip().is_loopback();
        Ok(Listener {
            max_bytes: settings.smtp_listen_max_bytes,
            mailer,
            keys,
            tls,
            loopback,
        })
    }
}

/// Serves SMTP sessions on `listener` until `stop`.
pub async fn serve(listener: TcpListener, ctx: Arc<Listener>, stop: CancellationToken) {
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = sessions.clone().acquire_owned().await else {
            return;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = session::run(ctx, Box::new(stream)).await {
                tracing::debug!(%peer, error = %e, "SMTP session ended");
            }
            drop(permit);
        });
    }
}
