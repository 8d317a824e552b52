//! The daemon under test: started as a child (and always stopped again), or
//! one already running that the bench is pointed at.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Daemon {
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub pid: u32,
    child: Option<Child>,
    pub log: Option<PathBuf>,
}

/// How the child is started.
pub struct SpawnOptions<'a> {
    pub bin: &'a Path,
    pub rtp_ports: &'a str,
    pub log: &'a Path,
    /// RUST_LOG for the child.
    pub log_filter: &'a str,
    /// CPUs the child may run on (empty: any). It sizes its runtime to them.
    pub cpus: &'a [usize],
    /// Where the child records calls (None: it does not).
    pub record: Option<&'a Path>,
}

/// A free loopback port for `kind` (the socket is closed again at once).
fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

impl Daemon {
    pub fn spawn(o: &SpawnOptions<'_>) -> anyhow::Result<Daemon> {
        let sip = SocketAddr::from(([127, 0, 0, 1], free_port(true)?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port(false)?));
        let log = std::fs::File::create(o.log)
            .with_context(|| format!("cannot create {}", o.log.display()))?;
        let mut cmd = Command::new(o.bin);
        cmd.arg("--sip-listen")
            .arg(sip.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--rtp-ports")
            .arg(o.rtp_ports)
            .arg("--log-format")
            .arg("json")
            // The bench's clients talk at once; a greeting would only be cut off.
            .arg("--greeting")
            .arg("none")
            .env("RUST_LOG", o.log_filter)
            .env_remove("SIPRELAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl and sched_setaffinity are async-signal-safe system
        // calls on memory prepared before the fork. The first asks the kernel
        // to kill the child if this (spawning) thread dies, so a crashed or
        // killed bench never leaves a daemon behind.
        match o.record {
            Some(dir) => cmd.arg("--recordings-dir").arg(dir),
            None => cmd.arg("--no-record"),
        };
        let cpus = o.cpus.to_vec();

        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if !cpus.is_empty() {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &c in &cpus {
                        libc::CPU_SET(c, &mut set);
                    }
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", o.bin.display()))?;
        Ok(Daemon {
            sip,
            http,
            pid: child.id(),
            child: Some(child),
            log: Some(o.log.to_path_buf()),
        })
    }

    pub fn attach(sip: SocketAddr, http: SocketAddr, pid: u32) -> Daemon {
        Daemon {
            sip,
            http,
            pid,
            child: None,
            log: None,
        }
    }

    /// Waits until `GET /healthz` answers 200.
    pub async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "daemon exited at start ({status}); log: {}",
                        self.log_tail()
                    );
                }
            }
            if healthz(self.http).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "daemon not healthy within {within:?}; log: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return "(not ours)".into();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Stops a daemon we started: SIGTERM (it hangs up and closes cleanly),
    /// SIGKILL after `grace`. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Option<String> {
        let mut child = self.child.take()?;
        // SAFETY: kill with a pid we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child.wait().ok()?;
        Some(format!("{status} (killed after {grace:?})"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

async fn healthz(http: SocketAddr) -> anyhow::Result<bool> {
    let mut s = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(http)).await??;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await??;
    Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// What the daemon's JSON log says: warnings and errors by message, and the
/// audio frames it dropped for clients that lagged (logged per client at
/// disconnect, with `siprelay::http::ws=info`).
#[derive(Debug, Default, Serialize)]
pub struct LogSummary {
    pub lines: u64,
    pub warnings: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub clients_disconnected: u64,
    pub ws_frames_dropped: u64,
}

pub fn summarize_log(path: &Path) -> LogSummary {
    let mut s = LogSummary::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return s;
    };
    for line in text.lines() {
        s.lines += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            *s.errors
                .entry(format!("(not JSON) {}", truncate(line)))
                .or_default() += 1;
            continue;
        };
        let fields = &v["fields"];
        let message = fields["message"].as_str().unwrap_or("").to_string();
        match v["level"].as_str() {
            Some("WARN") => *s.warnings.entry(message.clone()).or_default() += 1,
            Some("ERROR") => *s.errors.entry(message.clone()).or_default() += 1,
            _ => {}
        }
        if message == "client disconnected" {
            s.clients_disconnected += 1;
            s.ws_frames_dropped += fields["frames_dropped"].as_u64().unwrap_or(0);
        }
    }
    s
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}
