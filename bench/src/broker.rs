//! A private mosquitto for one benchmark scenario: free 127.0.0.1 port, generated config
//! in a temp dir, killed on drop. Never the system broker on 1883.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running mosquitto child process.
pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    child: Child,
    _dir: TempDir,
}

impl Mosquitto {
    /// Start a broker and wait until it accepts TCP connections.
    pub(crate) fn start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tower-mqtt-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        for _attempt in 0..5 {
            let port = free_port()?;
            let conf = dir.path().join("mosquitto.conf");
            let log = dir.path().join("mosquitto.log");
            // max_queued_messages 0: unlimited (the default, 1000, silently drops the
            // backlog); queue_qos0_messages: so a QoS 0 backlog can be drained too;
            // set_tcp_nodelay: no Nagle delay on deliveries (latency in live mode).
            let text = format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 user root\n\
                 max_queued_messages 0\n\
                 queue_qos0_messages true\n\
                 set_tcp_nodelay true\n\
                 log_dest file {}\n\
                 log_type error\n\
                 log_type warning\n",
                log.display()
            );
            fs::write(&conf, text).map_err(|e| format!("write config: {e}"))?;
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn {MOSQUITTO}: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken between probe and bind: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Self {
                        port,
                        child,
                        _dir: dir,
                    });
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err("mosquitto did not start listening".into())
    }
}

impl Mosquitto {
    /// CPU time (ns) the broker has used so far (utime + stime; 10 ms resolution).
    pub(crate) fn cpu_ns(&self) -> u64 {
        crate::measure::proc_cpu_ns(&self.child.id().to_string())
    }

    /// Kernel-mode part of [`cpu_ns`](Self::cpu_ns).
    pub(crate) fn sys_ns(&self) -> u64 {
        crate::measure::proc_sys_ns(&self.child.id().to_string())
    }

    /// Voluntary context switches of the broker so far: how often it waited in
    /// `epoll_wait` with nothing to do.
    pub(crate) fn sleeps(&self) -> u64 {
        crate::measure::voluntary_switches(&self.child.id().to_string())
    }

    /// read(2) + write(2) calls the broker has made so far (`syscr + syscw`); mosquitto
    /// uses plain read/write on its sockets, so this counts its socket I/O calls.
    pub(crate) fn syscalls(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .ok()
            .map(|s| {
                s.lines()
                    .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `mosquitto -h` first line, e.g. "mosquitto version 2.0.11".
pub(crate) fn version() -> String {
    Command::new(MOSQUITTO)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".into())
}
