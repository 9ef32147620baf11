//! One SMTP submission session (RFC 5321, 6409): EHLO with SIZE, PIPELINING, 8BITMIME and
//! ENHANCEDSTATUSCODES; STARTTLS with the configured certificate; AUTH PLAIN and LOGIN with an
//! API key holding `mail` as the password (any user name), offered only over TLS or on a
//! loopback listener; MAIL, RCPT (at most 50), DATA (the size limit enforced while reading);
//! RSET, NOOP, VRFY, QUIT. A message is answered `250` only once it is stored with its send
//! jobs. Commands are parsed by `smtp-proto`; this file is the state machine around it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use carafe_core::keys::Scope;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Request};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::message::to_request;
use super::{Listener, NAME};
use crate::context::Principal;
use crate::mail::address::parse_mailbox;
use crate::mail::build::MAX_RECIPIENTS;

/// A connection, plain or TLS.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The longest command line, and how long a client may stay silent.
const MAX_LINE: usize = 4096;
const IDLE: Duration = Duration::from_secs(120);
/// Failed logins before the connection is closed.
const MAX_AUTH_FAILURES: u32 = 3;

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    rcpts: Vec<String>,
}

struct Session {
    ctx: Arc<Listener>,
    tls: bool,
    principal: Option<Principal>,
    failures: u32,
    tx: Transaction,
}

/// The buffered bytes, reading more if there are none (empty at the end of the stream); a
/// client silent for `IDLE` is an error.
async fn fill(r: &mut BufReader<Box<dyn Conn>>) -> io::Result<&[u8]> {
    tokio::time::timeout(IDLE, r.fill_buf())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))?
}

/// Reads one line (up to `MAX_LINE`); `None` at the end of the stream.
async fn read_line(r: &mut BufReader<Box<dyn Conn>>) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = fill(r).await?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..=i]);
            r.consume(i + 1);
            return Ok(Some(line));
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        r.consume(n);
        if line.len() > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

async fn reply(r: &mut BufReader<Box<dyn Conn>>, text: &str) -> io::Result<()> {
    let w = r.get_mut();
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// Reads a message after `354` up to the lone dot; `None` when it exceeded `max` bytes (the
/// rest was read and dropped).
async fn read_data(r: &mut BufReader<Box<dyn Conn>>, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut data = DataReceiver::new();
    let mut skip: Option<DummyDataReceiver> = None;
    let mut body = Vec::new();
    loop {
        let buf = fill(r).await?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut it = buf.iter();
        let done = match &mut skip {
            Some(s) => s.ingest(&mut it),
            None => data.ingest(&mut it, &mut body),
        };
        let used = buf.len() - it.as_slice().len();
        r.consume(used);
        if skip.is_none() && body.len() > max {
            skip = Some(DummyDataReceiver::new_data(&data));
            body = Vec::new();
        }
        if done {
            return Ok(skip.is_none().then_some(body));
        }
    }
}

fn decode(b64: &[u8]) -> Option<Vec<u8>> {
    let text: Vec<u8> = b64
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Runs a session on `conn` until the client quits or the connection ends.
pub async fn run(ctx: Arc<Listener>, conn: Box<dyn Conn>) -> io::Result<()> {
    let mut r = BufReader::new(conn);
    let mut s = Session {
        ctx,
        tls: false,
        principal: None,
        failures: 0,
        tx: Transaction::default(),
    };
    reply(&mut r, &format!("220 {} ESMTP Carafe", NAME)).await?;
    while let Some(line) = read_line(&mut r).await? {
        let request = Request::parse(&mut line.iter()).map(Request::into_owned);
        let request = match request {
            Ok(req) => req,
            Err(_) => {
                reply(&mut r, "500 5.5.2 Syntax error").await?;
                continue;
            }
        };
        match request {
            Request::Ehlo { .. } => {
                s.tx = Transaction::default();
                let mut lines = vec![
                    NAME.into(),
                    "PIPELINING".into(),
                    format!("SIZE {}", s.ctx.max_bytes),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                if s.ctx.tls.is_some() && !s.tls {
                    lines.push("STARTTLS".into());
                }
                if s.tls || s.ctx.loopback {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                reply(&mut r, &text.join("\r\n")).await?;
            }
            Request::Helo { .. } => {
                s.tx = Transaction::default();
                reply(&mut r, &format!("250 {}", NAME)).await?;
            }
            Request::StartTls => {
                let Some(acceptor) = s.ctx.tls.clone().filter(|_| !s.tls) else {
                    reply(&mut r, "503 5.5.1 TLS is not available here").await?;
                    continue;
                };
                reply(&mut r, "220 2.0.0 Ready to start TLS").await?;
                // Whatever the client sent before the handshake is dropped (RFC 3207 §4.2).
                let plain = r.into_inner();
                let secured = acceptor.accept(plain).await?;
                r = BufReader::new(Box::new(secured));
                s.tls = true;
                s.principal = None;
                s.tx = Transaction::default();
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                if !(s.tls || s.ctx.loopback) {
                    reply(&mut r, "538 5.7.11 Encryption required: STARTTLS first").await?;
                } else if s.principal.is_some() {
                    reply(&mut r, "503 5.5.1 Already authenticated").await?;
                } else if mechanism != AUTH_PLAIN && mechanism != AUTH_LOGIN {
                    reply(&mut r, "504 5.5.4 Use AUTH PLAIN or AUTH LOGIN").await?;
                } else {
                    let password = s.password(&mut r, mechanism, &initial_response).await?;
                    let principal = match password {
                        Some(p) => s.ctx.keys.authenticate(&p).await.ok().flatten(),
                        None => None,
                    }
                    .map(Principal::Key)
                    .filter(|p| p.require_key(Scope::Mail).is_ok());
                    if principal.is_some() {
                        s.principal = principal;
                        reply(&mut r, "235 2.7.0 Authentication successful").await?;
                    } else {
                        s.failures += 1;
                        reply(&mut r, "535 5.7.8 Authentication credentials invalid (the password is an API key with the mail scope)").await?;
                        if s.failures >= MAX_AUTH_FAILURES {
                            reply(&mut r, "421 4.7.0 Too many failed logins").await?;
                            return Ok(());
                        }
                    }
                }
            }
            Request::Mail { from } => {
                if s.principal.is_none() {
                    reply(&mut r, "530 5.7.0 Authentication required").await?;
                } else if s.tx.from.is_some() {
                    reply(&mut r, "503 5.5.1 MAIL already given").await?;
                } else if from.size > s.ctx.max_bytes {
                    reply(&mut r, "552 5.3.4 Message too big for this server").await?;
                } else if parse_mailbox(&from.address).is_err() {
                    reply(&mut r, "553 5.1.7 The sender address is not valid").await?;
                } else {
                    s.tx.from = Some(from.address);
                    reply(&mut r, "250 2.1.0 OK").await?;
                }
            }
            Request::Rcpt { to } => {
                if s.tx.from.is_none() {
                    reply(&mut r, "503 5.5.1 MAIL first").await?;
                } else if s.tx.rcpts.len() >= MAX_RECIPIENTS {
                    reply(&mut r, "452 4.5.3 Too many recipients").await?;
                } else if parse_mailbox(&to.address).is_err() {
                    reply(&mut r, "553 5.1.3 The recipient address is not valid").await?;
                } else {
                    s.tx.rcpts.push(to.address);
                    reply(&mut r, "250 2.1.5 OK").await?;
                }
            }
            Request::Data => {
                if s.tx.rcpts.is_empty() {
                    reply(&mut r, "503 5.5.1 RCPT first").await?;
                    continue;
                }
                reply(&mut r, "354 End data with <CR><LF>.<CR><LF>").await?;
                let data = read_data(&mut r, s.ctx.max_bytes).await?;
                let tx = std::mem::take(&mut s.tx);
                let answer = match data {
                    None => "552 5.3.4 Message too big for this server".to_owned(),
                    Some(raw) => s.accept(&raw, &tx).await,
                };
                reply(&mut r, &answer).await?;
            }
            Request::Rset => {
                s.tx = Transaction::default();
                reply(&mut r, "250 2.0.0 OK").await?;
            }
            Request::Noop { .. } => reply(&mut r, "250 2.0.0 OK").await?,
            Request::Vrfy { .. } => reply(&mut r, "252 2.1.5 Cannot verify, but will try").await?,
            Request::Quit => {
                reply(&mut r, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(&mut r, "502 5.5.1 Command not implemented").await?,
        }
    }
    Ok(())
}

impl Session {
    /// Reads the password of an AUTH exchange (asking for what the client did not send).
    async fn password(
        &self,
        r: &mut BufReader<Box<dyn Conn>>,
        mechanism: u64,
        initial: &str,
    ) -> io::Result<Option<String>> {
        let ask = async |r: &mut BufReader<Box<dyn Conn>>, prompt: &str| {
            reply(r, prompt).await?;
            Ok::<_, io::Error>(read_line(r).await?.unwrap_or_default())
        };
        let text = |b: Vec<u8>| String::from_utf8(b).ok();
        if mechanism == AUTH_PLAIN {
            let response = if initial.is_empty() {
                ask(r, "334 ").await?
            } else {
                initial.as_bytes().to_vec()
            };
            // authzid NUL authcid NUL password
            let decoded = decode(&response).unwrap_or_default();
            return Ok(decoded
                .split(|&b| b == 0)
                .nth(2)
                .map(<[u8]>::to_vec)
                .and_then(text));
        }
        if initial.is_empty() {
            ask(r, "334 VXNlcm5hbWU6").await?;
        }
        let password = ask(r, "334 UGFzc3dvcmQ6").await?;
        Ok(decode(&password).and_then(text))
    }

    /// Stores a received message; the reply to its DATA.
    async fn accept(&self, raw: &[u8], tx: &Transaction) -> String {
        let (Some(principal), Some(from)) = (&self.principal, &tx.from) else {
            return "503 5.5.1 Bad sequence of commands".into();
        };
        let Some(req) = to_request(raw, from, &tx.rcpts) else {
            return "554 5.6.0 The message could not be parsed".into();
        };
        let actor = principal.actor(None);
        match self.ctx.mailer.send(req, &actor, principal).await {
            Ok(sent) => format!("250 2.0.0 Ok: queued as {}", sent.mail.id),
            Err(crate::mail::Error::Invalid(fields) | crate::mail::Error::Template(fields)) => {
                let why: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                let why = why.join("; ").replace(['\r', '\n'], " ");
                format!(
                    "554 5.6.0 Refused: {}",
                    why.chars().take(400).collect::<String>()
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "a message received over SMTP could not be stored");
                "451 4.3.0 Temporary failure, try again".into()
            }
        }
    }
}
