//! Virus scanning of uploaded files through clamd's INSTREAM protocol.
//!
//! The client is written directly on tokio instead of using the `clamav-client` crate: that
//! crate's `clean()` returns `Ok(false)` both for `… FOUND` and for
//! `INSTREAM size limit exceeded. ERROR`, and callers must tell "infected" from "too large to
//! scan" from "scanner down". Replies are parsed here by [`parse_reply`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use ScanError::{Failed, SizeLimit, Unavailable};

/// Payload bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// Longest reply accepted from clamd; real replies are a signature name plus a few words.
const MAX_REPLY: usize = 4096;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `host:port`, as accepted by `TcpStream::connect`.
    Tcp(String),
    /// Absolute path of clamd's `LocalSocket`.
    Unix(PathBuf),
}

impl fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddr::Tcp(hostport) => write!(f, "tcp://{hostport}"),
            ClamdAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Parses `tcp://host:port` or `unix:///absolute/path`. The unix path is taken literally
/// (no percent-decoding).
pub fn parse_url(s: &str) -> Result<ClamdAddr, String> {
    let err = |why: &str| format!("clamd URL {s:?}: {why}");
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(err(
                "the socket path must be absolute, as in unix:///run/clamd.sock",
            ));
        }
        return Ok(ClamdAddr::Unix(PathBuf::from(path)));
    }
    let url = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
    if url.scheme() != "tcp" {
        return Err(err("the scheme must be tcp:// or unix://"));
    }
    let host = url.host_str().filter(|h| !h.is_empty());
    let (Some(host), Some(port)) = (host, url.port()) else {
        return Err(err("needs a host and a port, as in tcp://127.0.0.1:3310"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("user info is not supported"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(err("must not have a path, query or fragment"));
    }
    Ok(ClamdAddr::Tcp(format!("{host}:{port}")))
}

/// Outcome of a completed scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Infected { signature: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// clamd could not be reached, the connection broke, the exchange timed out, or the input
    /// could not be read. Worth retrying later.
    #[error("virus scanner unavailable: {0}")]
    Unavailable(String),
    /// The stream was longer than clamd's `StreamMaxLength`.
    #[error("file exceeds the virus scanner's size limit (clamd StreamMaxLength)")]
    SizeLimit,
    /// clamd answered with an error, or with something that is not a verdict.
    #[error("virus scan failed: {0}")]
    Failed(String),
}

impl ScanError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Unavailable(_))
    }
}

/// Interprets one clamd reply (without its terminating NUL) to an INSTREAM command.
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let reply = reply.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if reply == "ERROR" || reply.ends_with(" ERROR") {
        if reply.contains("size limit exceeded") {
            return Err(SizeLimit);
        }
        return Err(Failed(format!("clamd replied {reply:?}")));
    }
    let body = reply.strip_prefix("stream: ");
    if body == Some("OK") {
        return Ok(Verdict::Clean);
    }
    match body.and_then(|b| b.strip_suffix(" FOUND")).map(str::trim) {
        Some(sig) if !sig.is_empty() => Ok(Verdict::Infected {
            signature: sig.into(),
        }),
        _ => Err(Failed(format!("unexpected clamd reply {reply:?}"))),
    }
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A clamd endpoint. Each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
}

impl Clamd {
    /// `timeout` bounds each whole call: connecting, sending (including reading the input
    /// given to [`Clamd::scan`]) and waiting for the reply.
    pub fn new(addr: ClamdAddr, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    pub fn addr(&self) -> &ClamdAddr {
        &self.addr
    }

    /// Sends `zPING` and expects `PONG`.
    pub async fn ping(&self) -> Result<(), ScanError> {
        self.bounded(async {
            let mut conn = self.connect().await?;
            let sent = conn.write_all(b"zPING\0").await;
            sent.map_err(|e| self.io_error("sending PING", &e))?;
            match read_reply(&mut conn).await?.as_str() {
                "PONG" => Ok(()),
                other => Err(Failed(format!("PING answered with {other:?}"))),
            }
        })
        .await
    }

    /// Streams `reader` to clamd with INSTREAM and returns its verdict.
    pub async fn scan<R: AsyncRead + Unpin>(&self, reader: R) -> Result<Verdict, ScanError> {
        self.bounded(self.instream(reader)).await
    }

    async fn instream<R: AsyncRead + Unpin>(&self, mut reader: R) -> Result<Verdict, ScanError> {
        let mut conn = self.connect().await?;
        let write_error = match send_stream(&mut conn, &mut reader).await {
            Ok(()) => return parse_reply(&read_reply(&mut conn).await?),
            Err(SendError::Input(e)) => {
                return Err(Unavailable(format!("reading the input: {e}")));
            }
            Err(SendError::Clamd(e)) => e,
        };
        // clamd writes its reply and closes the connection once StreamMaxLength is exceeded;
        // that reply is still readable after the failed write. A clean verdict is not trusted
        // here, since clamd did not get the whole stream.
        match read_reply(&mut conn).await.and_then(|r| parse_reply(&r)) {
            Ok(Verdict::Clean) | Err(Unavailable(_)) => {
                Err(self.io_error("streaming", &write_error))
            }
            other => other,
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, ScanError>>,
    ) -> Result<T, ScanError> {
        let (addr, timeout) = (&self.addr, self.timeout);
        let timed_out = || Err(Unavailable(format!("no answer from {addr} in {timeout:?}")));
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| timed_out())
    }

    async fn connect(&self) -> Result<Box<dyn Conn>, ScanError> {
        let failed = |e| self.io_error("connecting", &e);
        Ok(match &self.addr {
            ClamdAddr::Tcp(hostport) => {
                Box::new(TcpStream::connect(hostport).await.map_err(failed)?)
            }
            ClamdAddr::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(failed)?),
        })
    }

    fn io_error(&self, what: &str, e: &std::io::Error) -> ScanError {
        Unavailable(format!("{what} (clamd at {}): {e}", self.addr))
    }
}

enum SendError {
    Input(std::io::Error),
    Clamd(std::io::Error),
}

/// Writes the INSTREAM command, the input as length-prefixed chunks, and the zero-length
/// terminator.
async fn send_stream<R>(conn: &mut Box<dyn Conn>, reader: &mut R) -> Result<(), SendError>
where
    R: AsyncRead + Unpin,
{
    let clamd = SendError::Clamd;
    conn.write_all(b"zINSTREAM\0").await.map_err(clamd)?;
    let mut buf = vec![0u8; 4 + CHUNK];
    loop {
        let n = reader.read(&mut buf[4..]).await.map_err(SendError::Input)?;
        // n <= CHUNK, so it fits in a u32.
        buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        conn.write_all(&buf[..4 + n]).await.map_err(clamd)?;
        if n == 0 {
            return conn.flush().await.map_err(clamd);
        }
    }
}

/// Reads one NUL-terminated reply (or everything up to EOF), at most [`MAX_REPLY`] bytes.
async fn read_reply(conn: &mut Box<dyn Conn>) -> Result<String, ScanError> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(n) => n,
            // A reset after part of a reply arrived ends the reply.
            Err(_) if !reply.is_empty() => break,
            Err(e) => {
                return Err(Unavailable(format!("reading clamd's reply: {e}")));
            }
        };
        let end = buf[..n].iter().position(|&b| b == 0);
        reply.extend_from_slice(&buf[..end.unwrap_or(n)]);
        if reply.len() > MAX_REPLY {
            return Err(Failed(format!("clamd reply longer than {MAX_REPLY} bytes")));
        }
        if n == 0 || end.is_some() {
            break;
        }
    }
    if reply.is_empty() {
        let msg = "clamd closed the connection without replying";
        return Err(Unavailable(msg.into()));
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The EICAR test string in two halves, so no file holds it whole.
    const EICAR_A: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-";
    const EICAR_B: &str = "STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    fn eicar() -> Vec<u8> {
        let e = [EICAR_A, EICAR_B].concat().into_bytes();
        assert_eq!(e.len(), 68);
        e
    }

    fn clamd_from_env(var: &str) -> Clamd {
        let url = std::env::var(var)
            .unwrap_or_else(|_| panic!("{var} is not set; run `export $(scripts/services/clamd)`"));
        Clamd::new(parse_url(&url).unwrap(), Duration::from_secs(30))
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// Appends little-endian fields given as (value, width in bytes).
    fn le(z: &mut Vec<u8>, fields: &[(u32, usize)]) {
        for &(v, width) in fields {
            z.extend_from_slice(&v.to_le_bytes()[..width]);
        }
    }

    /// A zip archive holding `data` as one stored (uncompressed) member.
    fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
        let (crc, len, name_len) = (crc32(data), data.len() as u32, name.len() as u32);
        // version needed, flags, method, time, date; crc and sizes; name and extra lengths
        let common = [(10, 2), (0, 2), (0, 2), (0, 2), (0x21, 2)];
        let sizes = [(crc, 4), (len, 4), (len, 4)];
        let lengths = [(name_len, 2), (0, 2)];
        let mut z = Vec::new();
        le(&mut z, &[(0x0403_4b50, 4)]);
        le(&mut z, &common);
        le(&mut z, &sizes);
        le(&mut z, &lengths);
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(data);
        let cd_offset = z.len() as u32;
        le(&mut z, &[(0x0201_4b50, 4), (20, 2)]);
        le(&mut z, &common);
        le(&mut z, &sizes);
        le(&mut z, &lengths);
        // comment length, disk, internal and external attributes, local header offset
        le(&mut z, &[(0, 2), (0, 2), (0, 2), (0, 4), (0, 4)]);
        z.extend_from_slice(name.as_bytes());
        let cd_size = z.len() as u32 - cd_offset;
        // end of central directory: disks, entry counts, size, offset, comment length
        le(&mut z, &[(0x0605_4b50, 4), (0, 2), (0, 2), (1, 2), (1, 2)]);
        le(&mut z, &[(cd_size, 4), (cd_offset, 4), (0, 2)]);
        z
    }

    fn assert_eicar(verdict: Result<Verdict, ScanError>) {
        match verdict {
            Ok(Verdict::Infected { signature }) if signature.starts_with("Carafe.Test.EICAR") => {}
            other => panic!("EICAR not detected: {other:?}"),
        }
    }

    fn tcp(addr: impl ToString, timeout_ms: u64) -> Clamd {
        Clamd::new(
            ClamdAddr::Tcp(addr.to_string()),
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn parses_replies() {
        let found = |sig: &str| {
            Ok(Verdict::Infected {
                signature: sig.into(),
            })
        };
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(parse_reply("stream: OK\n"), Ok(Verdict::Clean));
        let eicar = "Carafe.Test.EICAR.UNOFFICIAL";
        assert_eq!(parse_reply(&format!("stream: {eicar} FOUND")), found(eicar));
        assert_eq!(parse_reply("stream: A B.C FOUND"), found("A B.C"));
        let limit = parse_reply("INSTREAM size limit exceeded. ERROR");
        assert_eq!(limit, Err(ScanError::SizeLimit));
        let bad = "Can't allocate memory ERROR|ERROR|stream: FOUND|stream:  FOUND|PONG|OK|\
                   stream: x FOUND ERROR|stream: ok|stream: x FOUND extra||\u{fffd}";
        for reply in bad.split('|') {
            let got = parse_reply(reply);
            assert!(
                matches!(got, Err(ScanError::Failed(_))),
                "{reply:?}: {got:?}"
            );
        }
    }

    #[test]
    fn parses_urls() {
        let tcp = |s: &str| Ok(ClamdAddr::Tcp(s.into()));
        assert_eq!(parse_url("tcp://127.0.0.1:3310"), tcp("127.0.0.1:3310"));
        assert_eq!(parse_url("tcp://[::1]:3310/"), tcp("[::1]:3310"));
        assert_eq!(parse_url("tcp://clamd:3310"), tcp("clamd:3310"));
        let unix = parse_url("unix:///run/clamd.sock");
        assert_eq!(unix, Ok(ClamdAddr::Unix("/run/clamd.sock".into())));
        let bad = "tcp://host|tcp://:3310|unix://run/c.sock|http://h:1|h:1|tcp://h:1/x|tcp://u@h:1";
        for url in bad.split('|') {
            assert!(parse_url(url).is_err(), "{url}");
        }
        assert!(ScanError::Unavailable(String::new()).is_retryable());
        assert!(!ScanError::SizeLimit.is_retryable());
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[tokio::test]
    async fn nothing_listening_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let clamd = tcp(listener.local_addr().unwrap(), 5000);
        drop(listener);
        let err = clamd.ping().await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let err = clamd.scan(&b"hello"[..]).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let missing = ClamdAddr::Unix("/nonexistent/clamd.sock".into());
        let err = Clamd::new(missing, Duration::from_secs(5))
            .scan(&b"hi"[..])
            .await;
        assert!(matches!(err, Err(ScanError::Unavailable(_))), "{err:?}");
    }

    /// A fake clamd that reads a little, writes `reply` and closes (or, for an empty reply,
    /// stays silent).
    async fn fake_server(reply: &'static [u8]) -> Clamd {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clamd = tcp(listener.local_addr().unwrap(), 500);
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.read(&mut [0u8; 64]).await;
            if reply.is_empty() {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let _ = s.write_all(reply).await;
        });
        clamd
    }

    #[tokio::test]
    async fn early_close_and_hostile_replies() {
        let big = || tokio::io::repeat(b'a').take(8 << 20);
        let clamd = fake_server(b"INSTREAM size limit exceeded. ERROR\0").await;
        assert_eq!(clamd.scan(big()).await, Err(ScanError::SizeLimit));
        // A clean verdict for a stream clamd stopped reading is not trusted.
        let err = fake_server(b"stream: OK\0").await.scan(big()).await;
        assert!(matches!(err, Err(ScanError::Unavailable(_))), "{err:?}");
        static JUNK: [u8; 10_000] = [b'x'; 10_000];
        let err = fake_server(&JUNK).await.scan(&b"hi"[..]).await;
        assert!(matches!(err, Err(ScanError::Failed(_))), "{err:?}");
        let err = fake_server(b"").await.scan(&b"hi"[..]).await.unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("no answer"),
            "{err}"
        );
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn clamd_ping() {
        clamd_from_env("CARAFE_TEST_CLAMD_URL")
            .ping()
            .await
            .unwrap();
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn clamd_detects_eicar() {
        let clamd = clamd_from_env("CARAFE_TEST_CLAMD_URL");
        assert_eicar(clamd.scan(&eicar()[..]).await);
        let padded = [eicar(), b"\r\n".to_vec()].concat();
        assert_eicar(clamd.scan(&padded[..]).await);
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn clamd_detects_zipped_eicar() {
        let clamd = clamd_from_env("CARAFE_TEST_CLAMD_URL");
        assert_eicar(clamd.scan(&stored_zip("eicar.com", &eicar())[..]).await);
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn clamd_passes_clean_data() {
        let clamd = clamd_from_env("CARAFE_TEST_CLAMD_URL");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(clamd.scan(&data[..]).await, Ok(Verdict::Clean));
        let zip = stored_zip("a.txt", b"hello");
        assert_eq!(clamd.scan(&zip[..]).await, Ok(Verdict::Clean));
        assert_eq!(clamd.scan(tokio::io::empty()).await, Ok(Verdict::Clean));
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn clamd_size_limit() {
        let clamd = clamd_from_env("CARAFE_TEST_CLAMD_URL");
        let big = tokio::io::repeat(b'a').take(3 << 20);
        assert_eq!(clamd.scan(big).await, Err(ScanError::SizeLimit));
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_SOCKET"]
    async fn clamd_over_unix_socket() {
        let clamd = clamd_from_env("CARAFE_TEST_CLAMD_SOCKET");
        assert!(matches!(clamd.addr(), ClamdAddr::Unix(_)));
        clamd.ping().await.unwrap();
        assert_eicar(clamd.scan(&eicar()[..]).await);
        assert_eq!(clamd.scan(&b"hello"[..]).await, Ok(Verdict::Clean));
        let big = tokio::io::repeat(b'a').take(3 << 20);
        assert_eq!(clamd.scan(big).await, Err(ScanError::SizeLimit));
    }
}
