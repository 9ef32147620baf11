//! The SMTP relay messages go out through (`mail.smtp_url`), on lettre over rustls. The URL
//! says how: `smtp://user:pass@host:587` (STARTTLS, required), `smtps://…:465` (TLS from the
//! first byte), `smtp://…?tls=none` (plain text, only to a loopback address). A semaphore
//! caps the sends in flight (lettre's pool size caps idle connections, not concurrent ones).
//!
//! Connections for `smtp://` (STARTTLS or plain) are opened and pooled here rather than by
//! lettre's transport, so that they carry TCP_NODELAY: lettre writes a message's end-of-data
//! mark separately from its body, and without it Nagle's algorithm and the relay's delayed
//! ACK hold every message about 40 ms (measured: 90 messages/s instead of thousands). lettre
//! still speaks SMTP on them. `smtps://` keeps lettre's own transport.
//! Every answer is classified: accepted, try again (4xx, timeouts, connection and TLS
//! errors), refused for good (5xx), or a configuration error (authentication refused:
//! nothing is lost, the message waits for the operator to fix the relay).

use std::path::Path;
use std::time::Duration;

use lettre::address::Envelope;
use std::time::Instant;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{Address, AsyncTransport, Tokio1Executor};
use tokio::sync::Semaphore;
use url::{Host, Url};

pub struct Relay {
    transport: Transport,
    permits: Semaphore,
}

enum Transport {
    /// `smtp://`: connections opened here (with TCP_NODELAY), kept for reuse.
    Pooled(Pool),
    /// `smtps://`: lettre's transport and pool.
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

/// A connection idle for longer than this is checked with `NOOP` before it is used again.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

struct Pool {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    max_idle: usize,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// A failure before any message was sent on a connection: try again later.
fn later(what: &str, e: impl std::fmt::Display) -> Answer {
    Answer::Later {
        reply: format!("{what}: {e}"),
        after: None,
        throttled: false,
    }
}

impl Pool {
    /// A connection ready to send: reused when one is idle (and answers `NOOP` if it has
    /// been idle a while), else opened, encrypted and logged in.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, Answer> {
        loop {
            let reused = self.idle.lock().expect("not poisoned").pop();
            let Some((mut conn, since)) = reused else {
                break;
            };
            if since.elapsed() < CHECK_IDLE_AFTER
                || tokio::time::timeout(self.timeout, conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Ok(conn);
            }
        }
        let tcp = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| later("connecting", "timed out"))?
        .map_err(|e| later("connecting", e))?;
        tcp.set_nodelay(true).map_err(|e| later("connecting", e))?;
        let handshake = async {
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
            if let Tls::Required(params) = &self.tls {
                conn.starttls(params.clone(), &self.hello).await?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(conn)
        };
        match tokio::time::timeout(self.timeout * 4, handshake).await {
            Err(_) => Err(later("connecting", "the greeting, TLS or login timed out")),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Answer {
        let mut conn = match self.checkout().await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        // MAIL, RCPT, DATA and the message: four commands.
        match tokio::time::timeout(self.timeout * 4, conn.send(envelope, raw)).await {
            Err(_) => later("sending", "timed out"),
            Ok(Err(e)) => classify(&e),
            Ok(Ok(response)) => {
                if !conn.has_broken() {
                    let mut idle = self.idle.lock().expect("not poisoned");
                    if idle.len() < self.max_idle {
                        idle.push((conn, Instant::now()));
                    }
                }
                accepted(&response)
            }
        }
    }
}

/// A `250` as an answer, with the relay's queue id when it named one.
fn accepted(response: &lettre::transport::smtp::response::Response) -> Answer {
    let reply = format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    );
    Answer::Accepted {
        relay_id: queue_id(&reply),
        reply,
    }
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The relay took the message (`250`): its reply, and its queue id when it named one.
    Accepted {
        reply: String,
        relay_id: Option<String>,
    },
    /// Try again later (a 4xx reply, a timeout, a lost connection), after `after` when the
    /// relay said how long; `throttled` when the reply says Carafe is sending too fast.
    Later {
        reply: String,
        after: Option<Duration>,
        throttled: bool,
    },
    /// The relay refused this message or recipient for good (a 5xx reply).
    Refused { reply: String },
    /// The relay refused Carafe itself (authentication): the operator must fix the
    /// configuration; the message waits.
    Misconfigured { reply: String },
}

/// What a relay URL says: where, how and as whom to connect.
struct Plan {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
}

/// Checks a relay URL and CA file without connecting (and without a runtime).
pub fn check(url: &str, ca_file: Option<&Path>) -> Result<(), String> {
    plan(url, ca_file).map(|_| ())
}

impl Relay {
    /// A relay for `url`, trusting `ca_file` (PEM) besides the bundled web roots, with at most
    /// `concurrency` sends in flight and `timeout` for each SMTP command. Needs a Tokio
    /// runtime (the connection pool runs a task).
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        concurrency: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let plan = plan(url, ca_file)?;
        let concurrency = concurrency.max(1);
        let transport = match plan.tls {
            Tls::Wrapper(_) => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(plan.host)
                        .port(plan.port)
                        .timeout(Some(timeout))
                        .tls(plan.tls)
                        .pool_config(PoolConfig::new().max_size(concurrency as u32));
                if let Some(credentials) = plan.credentials {
                    builder = builder.credentials(credentials);
                }
                Transport::Lettre(builder.build())
            }
            tls => Transport::Pooled(Pool {
                host: plan.host,
                port: plan.port,
                tls,
                credentials: plan.credentials,
                timeout,
                hello: ClientId::default(),
                max_idle: concurrency,
                idle: std::sync::Mutex::new(Vec::new()),
            }),
        };
        Ok(Relay {
            transport,
            permits: Semaphore::new(concurrency),
        })
    }

    /// Sends `raw` from `from` to one recipient.
    pub async fn send(&self, from: &str, to: &str, raw: &[u8]) -> Answer {
        let envelope = match envelope(from, to) {
            Ok(e) => e,
            Err(reply) => return Answer::Refused { reply },
        };
        let _permit = self.permits.acquire().await.expect("never closed");
        match &self.transport {
            Transport::Pooled(pool) => pool.send(&envelope, raw).await,
            Transport::Lettre(t) => match t.send_raw(&envelope, raw).await {
                Ok(response) => accepted(&response),
                Err(e) => classify(&e),
            },
        }
    }
}

fn plan(url: &str, ca_file: Option<&Path>) -> Result<Plan, String> {
    let url = Url::parse(url).map_err(|e| format!("mail.smtp_url is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or("mail.smtp_url has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let tls_mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (wrapper, default_port) = match url.scheme() {
        "smtp" => (false, 587),
        "smtps" => (true, 465),
        other => {
            return Err(format!(
                "mail.smtp_url: unknown scheme {other:?} (smtp or smtps)"
            ));
        }
    };
    let plain = match tls_mode.as_deref() {
        None | Some("required") => false,
        Some("none") if !wrapper => {
            if !is_loopback(url.host()) {
                return Err("mail.smtp_url: tls=none is allowed only to a loopback address".into());
            }
            true
        }
        Some(other) => {
            return Err(format!(
                "mail.smtp_url: tls={other} is not supported (required or none)"
            ));
        }
    };
    let tls = if plain {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("mail.smtp_ca_file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("mail.smtp_ca_file {}: {e}", path.display()))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("mail.smtp_url: TLS setup failed: {e}"))?;
        if wrapper {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        }
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = (!url.username().is_empty()).then(|| {
        Credentials::new(
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        )
    });
    Ok(Plan {
        port: url.port().unwrap_or(default_port),
        host,
        tls,
        credentials,
    })
}

fn envelope(from: &str, to: &str) -> Result<Envelope, String> {
    let from: Address = from.parse().map_err(|e| format!("sender {from:?}: {e}"))?;
    let to: Address = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
    Envelope::new(Some(from), vec![to]).map_err(|e| e.to_string())
}

fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        // `smtp:` is not a scheme the URL standard knows, so its IP hosts arrive as text.
        Some(Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> Answer {
    let reply = e.to_string();
    let code = e.status().map(|c| c.to_string());
    // 530/534/535/538: the relay refuses to let Carafe in, whatever the message.
    if code
        .as_deref()
        .is_some_and(|c| matches!(c, "530" | "534" | "535" | "538"))
    {
        return Answer::Misconfigured { reply };
    }
    if e.is_permanent() {
        return Answer::Refused { reply };
    }
    Answer::Later {
        after: retry_after(&reply),
        throttled: super::relays::is_throttling(code.as_deref(), &reply),
        reply,
    }
}

/// "Try again in N seconds / minutes", as some relays say (Postal parses the same).
fn retry_after(reply: &str) -> Option<Duration> {
    let lower = reply.to_ascii_lowercase();
    let rest = &lower[lower.find("again in ")? + "again in ".len()..];
    let mut words = rest.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = words.next()?;
    let secs = if unit.starts_with("sec") {
        n
    } else if unit.starts_with("min") {
        n * 60
    } else {
        return None;
    };
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

/// The relay's queue id from a `250` reply such as "Ok: queued as 4FD3A2".
fn queue_id(reply: &str) -> Option<String> {
    let id_char = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@');
    let lower = reply.to_ascii_lowercase();
    let Some(at) = lower.find("queued as ") else {
        // Amazon SES answers `250 Ok <message id>`; its webhooks name the message by that id.
        let rest = reply
            .get(..7)?
            .eq_ignore_ascii_case("250 ok ")
            .then(|| &reply[7..])?;
        let id = rest.trim();
        let long_token = id.len() >= 20 && id.chars().all(|c| id_char(&c));
        return long_token.then(|| id.to_owned());
    };
    let id: String = reply[at + "queued as ".len()..]
        .chars()
        .take_while(id_char)
        .collect();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_queue_ids_are_read_from_replies() {
        assert_eq!(
            retry_after("451 4.3.0 Try again in 30 seconds"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("421 try again in 5 minutes"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(retry_after("451 4.3.0 Try again later"), None);
        assert_eq!(
            queue_id("250 2.0.0 Ok: queued as 4FD3A2B").as_deref(),
            Some("4FD3A2B")
        );
        assert_eq!(queue_id("250 OK"), None);
        assert_eq!(queue_id("250 Ok thanks for the message"), None);
        let ses = "0100018c7e7c1a2b-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718-000000";
        assert_eq!(queue_id(&format!("250 Ok {ses}")).as_deref(), Some(ses));
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(check("smtp://u:p@127.0.0.1:2525?tls=none", None), Ok(()));
        assert_eq!(check("smtp://u:p@localhost:2525?tls=none", None), Ok(()));
        assert_eq!(check("smtp://u:p@[::1]:2525?tls=none", None), Ok(()));
        for remote in [
            "smtp://u:p@mail.example.com?tls=none",
            "smtp://u:p@10.0.0.1:2525?tls=none",
        ] {
            assert!(
                check(remote, None).unwrap_err().contains("loopback"),
                "{remote}"
            );
        }
        assert_eq!(check("smtps://mail.example.com", None), Ok(()));
        assert_eq!(check("smtp://mail.example.com:587", None), Ok(()));
        assert!(check("smtp://mail.example.com?tls=maybe", None).is_err());
        assert!(check("http://mail.example.com", None).is_err());
        assert!(check("smtps://mail.example.com?tls=none", None).is_err());
        assert!(
            check(
                "smtp://mail.example.com",
                Some(Path::new("/nonexistent.pem"))
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_relay_is_built_inside_a_runtime() {
        let relay = Relay::new(
            "smtp://u:p%40x@mail.example.com",
            None,
            2,
            Duration::from_secs(1),
        );
        assert!(relay.is_ok());
    }
}
