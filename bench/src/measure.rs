//! What a consumer child records: completions, end-to-end latency, CPU time, peak RSS.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME: comparable across processes).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The send timestamp the publisher wrote into the first 8 bytes of the payload.
pub(crate) fn sent_ns(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Counts completed messages (ack decided / issued) and, in live mode, their latency.
pub(crate) struct Recorder {
    n: u64,
    count: AtomicU64,
    /// Latency (ns) of the i-th completion; empty in drain mode.
    latencies: Box<[AtomicU64]>,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: Notify,
}

impl Recorder {
    pub(crate) fn new(n: u64, live: bool) -> Self {
        let len = if live { n as usize } else { 0 };
        Self {
            n,
            count: AtomicU64::new(0),
            latencies: (0..len).map(|_| AtomicU64::new(0)).collect(),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// One message is done; `sent` is its publish timestamp (ns), used in live mode.
    #[inline]
    pub(crate) fn record(&self, sent: u64) {
        let i = self.count.fetch_add(1, Ordering::Relaxed);
        if i == 0 {
            let _ = self.first.set(Instant::now());
        }
        if let Some(slot) = self.latencies.get(i as usize) {
            slot.store(now_ns().saturating_sub(sent), Ordering::Relaxed);
        }
        if i + 1 == self.n {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
        }
    }

    pub(crate) async fn wait(&self) {
        self.done.notified().await;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn first(&self) -> Option<Instant> {
        self.first.get().copied()
    }

    pub(crate) fn last(&self) -> Option<Instant> {
        self.last.get().copied()
    }

    /// (p50, p99) latency in ns over the recorded completions; 0 when none.
    pub(crate) fn percentiles(&self) -> (u64, u64) {
        let k = (self.count() as usize).min(self.latencies.len());
        let mut v: Vec<u64> = self.latencies[..k]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        if v.is_empty() {
            return (0, 0);
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.50), at(0.99))
    }
}

/// CPU time (ns) of every live thread of this process, from /proc/self/task/*/schedstat.
pub(crate) fn cpu_ns() -> u64 {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `VmHWM` (peak RSS, KiB) of a process (`"self"` or a pid).
pub(crate) fn peak_rss_kib(pid: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Voluntary context switches of every live thread of a process (`"self"` or a pid):
/// how often it blocked, waiting for work.
pub(crate) fn voluntary_switches(pid: &str) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// CPU time (ns) of waited-for children, from /proc/self/stat `cutime` + `cstime`
/// (clock ticks, assumed 100 Hz: 10 ms resolution).
pub(crate) fn children_cpu_ns() -> u64 {
    stat_ticks("self", 13, 2) * 10_000_000
}

/// Kernel-mode CPU time (ns) of a process, from `/proc/<pid>/stat` `stime` (10 ms resolution).
pub(crate) fn proc_sys_ns(pid: &str) -> u64 {
    stat_ticks(pid, 12, 1) * 10_000_000
}

/// CPU time (ns) of a process, from `/proc/<pid>/stat` `utime` + `stime` (10 ms resolution).
pub(crate) fn proc_cpu_ns(pid: &str) -> u64 {
    stat_ticks(pid, 11, 2) * 10_000_000
}

/// Sum of `count` adjacent `/proc/<pid>/stat` fields, `at` counted from the state field.
fn stat_ticks(pid: &str, at: usize, count: usize) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state), so field k is at index k - 3: utime (14) is at 11,
    // cutime (16) at 13.
    f.iter().skip(at).take(count).sum()
}

/// What the broker's sockets to the consumer sent so far, from `ss -ti` (`tcp_info`):
/// summed over the `connections` sockets on local port `port` that sent the most.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SentSegments {
    /// Payload bytes sent.
    pub(crate) bytes: u64,
    /// Segments with data sent.
    pub(crate) segments: u64,
    /// Time (ms) the sender was limited by the consumer's receive window.
    pub(crate) rwnd_limited_ms: u64,
    /// Time (ms) the sender had data in flight.
    pub(crate) busy_ms: u64,
}

impl SentSegments {
    /// The broker's sockets on `port` now (`None` if `ss` fails or shows none).
    pub(crate) fn sample(port: u16, connections: usize) -> Option<Self> {
        let out = std::process::Command::new("ss")
            .args(["-tinH", "state", "established"])
            .arg(format!("( sport = :{port} )"))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |line: &str, key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(|v| {
                    v.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        };
        // `ss -i` prints each socket's info on the line after its address line.
        let mut socks: Vec<Self> = text
            .lines()
            .filter(|l| l.contains("bytes_sent:") || l.contains("data_segs_out:"))
            .map(|l| Self {
                bytes: field(l, "bytes_sent:"),
                segments: field(l, "data_segs_out:"),
                rwnd_limited_ms: field(l, "rwnd_limited:"),
                busy_ms: field(l, "busy:"),
            })
            .collect();
        socks.sort_by_key(|s| std::cmp::Reverse(s.bytes));
        socks.truncate(connections);
        if socks.is_empty() {
            return None;
        }
        Some(socks.iter().fold(Self::default(), |a, s| Self {
            bytes: a.bytes + s.bytes,
            segments: a.segments + s.segments,
            rwnd_limited_ms: a.rwnd_limited_ms + s.rwnd_limited_ms,
            busy_ms: a.busy_ms + s.busy_ms,
        }))
    }
}
