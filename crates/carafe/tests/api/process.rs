//! Running the real `carafe` binary as a child process: for the CLI and for crash tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// `carafe` in `cwd` with a clean environment (only PATH), killed if the test drops it.
pub fn carafe(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carafe"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.kill_on_drop(true);
    cmd
}

/// A running `carafe serve` and its log.
pub struct Served {
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// The JSON log lines read so far (up to and including "listening on").
    pub log: Vec<Value>,
    pub lines: Lines<BufReader<ChildStderr>>,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next JSON log line.
    pub async fn next_log(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a log line within 20 s")
            .unwrap()
            .expect("serve keeps running");
        serde_json::from_str(&line).expect("logs are JSON when not a terminal")
    }
}

/// Starts `carafe serve --listen 127.0.0.1:0` in `cwd` and waits until it listens.
pub async fn serve(cwd: &Path, env: &[(&str, &str)]) -> Served {
    let mut child = carafe(cwd)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut served = Served {
        child,
        addr: String::new(),
        log: Vec::new(),
        lines,
    };
    loop {
        let entry = served.next_log().await;
        served.log.push(entry.clone());
        if let Some(addr) = entry["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("listening on "))
        {
            served.addr = addr.to_owned();
            return served;
        }
    }
}
