//! The service manager's readiness and watchdog protocol (`sd_notify`), spoken directly: a
//! datagram of `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET`. Without that
//! variable (not started by systemd, or `Type=` is not `notify`) every call does nothing.
//!
//! What the node says and when:
//! - `READY=1` once the dataplane forwards and the API listens (not when the cluster is
//!   ready: that is `/ready`'s business, and a node waiting for its peers is still started);
//! - `WATCHDOG=1` from the control loop, but only while the dataplane worker shows signs of
//!   life (its heartbeat moved within the watchdog period): a wedged worker or a wedged
//!   control loop stops the pings and the service manager restarts the node;
//! - during start (store, join, ports), before the control loop runs, a [`StartupPinger`]
//!   keeps the watchdog fed for a bounded time, because a node that restarts into another
//!   release by `exec` is already "running" and its watchdog is armed;
//! - `STOPPING=1` when it begins to stop.
//!
//! `WATCHDOG_PID`, when set, must name this process (after `exec` the PID is the same).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the service manager listens, and how often it wants to hear from us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    socket: NotifySocket,
    /// The period after which the service manager gives up on us (`WATCHDOG_USEC`), when it
    /// watches this process.
    watchdog: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NotifySocket {
    Path(std::path::PathBuf),
    /// `@name`: Linux's abstract socket namespace.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::parse(socket.as_encoded_bytes(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// The pure part of [`Notifier::from_env`]: `None` for an empty or relative socket name.
    pub fn parse(
        socket: &[u8],
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Option<Notifier> {
        let socket = match socket {
            [b'@', name @ ..] if !name.is_empty() => NotifySocket::Abstract(name.to_vec()),
            [b'/', ..] => NotifySocket::Path(Path::new(std::str::from_utf8(socket).ok()?).to_path_buf()),
            _ => return None,
        };
        let ours = watchdog_pid.is_none_or(|pid| pid.trim().parse::<u32>().ok() == Some(own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Some(Notifier { socket, watchdog })
    }

    /// The watchdog period, when the service manager watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to ping: well within the period, so one late turn of the loop is harmless.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 3).max(Duration::from_millis(100)))
    }

    /// Sends one message (`KEY=VALUE` lines).
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        let address = match &self.socket {
            NotifySocket::Path(path) => SocketAddr::from_pathname(path)?,
            NotifySocket::Abstract(name) => SocketAddr::from_abstract_name(name)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message.as_bytes(), &address)?;
        Ok(())
    }
}

/// Sends `message` if the node runs under a service manager; failures are logged, never
/// fatal (the node works without one).
pub fn send(notifier: Option<&Notifier>, message: &str) {
    if let Some(n) = notifier {
        if let Err(e) = n.send(message) {
            tracing::warn!("cannot notify the service manager ({message:?}): {e}");
        }
    }
}

/// Decides, from the dataplane's heartbeat, whether the node is alive enough to ping.
#[derive(Debug)]
pub struct Liveness {
    last_beat: u64,
    last_change: Instant,
    /// A heartbeat older than this means the worker is stuck.
    limit: Duration,
    next_ping: Instant,
    interval: Duration,
    withheld: bool,
}

/// What the control loop should do this turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not time yet.
    Wait,
    Ping,
    /// The worker has not turned for this long: no ping (once per stall, to log it).
    Withhold(Duration),
    /// Still stalled, already logged.
    StillWithheld,
}

impl Liveness {
    pub fn new(now: Instant, beat: u64, interval: Duration, limit: Duration) -> Liveness {
        Liveness { last_beat: beat, last_change: now, limit, next_ping: now, interval, withheld: false }
    }

    /// Called every turn of the control loop with the worker's current heartbeat.
    pub fn check(&mut self, now: Instant, beat: u64) -> Verdict {
        if beat != self.last_beat {
            self.last_beat = beat;
            self.last_change = now;
            self.withheld = false;
        }
        if now < self.next_ping {
            return Verdict::Wait;
        }
        let stalled = now.saturating_duration_since(self.last_change);
        if stalled >= self.limit {
            if self.withheld {
                return Verdict::StillWithheld;
            }
            self.withheld = true;
            return Verdict::Withhold(stalled);
        }
        self.next_ping = now + self.interval;
        Verdict::Ping
    }
}

/// Feeds the watchdog from a thread of its own while the node starts, for at most `limit`;
/// stops when dropped (the control loop takes over).
pub struct StartupPinger {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StartupPinger {
    pub fn spawn(notifier: Option<&Notifier>, limit: Duration) -> StartupPinger {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = notifier.and_then(|n| n.ping_interval().map(|i| (n.clone(), i))).and_then(|(n, interval)| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("watchdog-start".into())
                .spawn(move || {
                    let deadline = Instant::now() + limit;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let _ = n.send("WATCHDOG=1");
                        std::thread::park_timeout(interval);
                    }
                })
                .ok()
        });
        StartupPinger { stop, thread }
    }
}

impl Drop for StartupPinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_environment() {
        let n = Notifier::parse(b"/run/systemd/notify", Some("30000000"), None, 7).unwrap();
        assert_eq!(n.socket, NotifySocket::Path("/run/systemd/notify".into()));
        assert_eq!(n.watchdog(), Some(Duration::from_secs(30)));
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(10)));
        let n = Notifier::parse(b"@sd-notify", None, None, 7).unwrap();
        assert_eq!(n.socket, NotifySocket::Abstract(b"sd-notify".to_vec()));
        assert_eq!(n.watchdog(), None);
        // The watchdog is another process's.
        assert_eq!(Notifier::parse(b"/n", Some("1000000"), Some("8"), 7).unwrap().watchdog(), None);
        assert!(Notifier::parse(b"/n", Some("1000000"), Some("7"), 7).unwrap().watchdog().is_some());
        assert_eq!(Notifier::parse(b"/n", Some("0"), None, 7).unwrap().watchdog(), None);
        assert_eq!(Notifier::parse(b"/n", Some("soon"), None, 7).unwrap().watchdog(), None);
        assert!(Notifier::parse(b"", None, None, 7).is_none());
        assert!(Notifier::parse(b"@", None, None, 7).is_none());
        assert!(Notifier::parse(b"relative/path", None, None, 7).is_none());
    }

    #[test]
    fn sends_datagrams_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::parse(path.to_str().unwrap().as_bytes(), None, None, 1).unwrap();
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");

        let name = format!("sluice-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::parse(format!("@{name}").as_bytes(), None, None, 1).unwrap();
        n.send("WATCHDOG=1").unwrap();
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pings_only_while_the_worker_turns() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Liveness::new(t0, 0, 10 * s, 30 * s);
        assert_eq!(l.check(t0, 0), Verdict::Ping);
        assert_eq!(l.check(t0 + 5 * s, 1), Verdict::Wait);
        assert_eq!(l.check(t0 + 10 * s, 2), Verdict::Ping);
        // The heartbeat stops at 2 (t0 + 10 s); pings go on until the limit.
        assert_eq!(l.check(t0 + 20 * s, 2), Verdict::Ping);
        assert_eq!(l.check(t0 + 39 * s, 2), Verdict::Ping);
        assert_eq!(l.check(t0 + 49 * s, 2), Verdict::Withhold(39 * s));
        assert_eq!(l.check(t0 + 50 * s, 2), Verdict::StillWithheld);
        // It turns again: pings resume at once.
        assert_eq!(l.check(t0 + 51 * s, 3), Verdict::Ping);
    }

    #[test]
    fn the_startup_pinger_feeds_the_watchdog_until_dropped() {
        let name = format!("sluice-notify-start-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::parse(format!("@{name}").as_bytes(), Some("300000"), None, 1).unwrap();
        let pinger = StartupPinger::spawn(Some(&n), Duration::from_secs(60));
        let mut buf = [0u8; 32];
        for _ in 0..3 {
            let len = listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len], b"WATCHDOG=1");
        }
        drop(pinger);
        // Drain what was in flight, then nothing more comes.
        listener.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        while listener.recv(&mut buf).is_ok() {}
        assert!(listener.recv(&mut buf).is_err());
        // Without a watchdog, no thread at all.
        let quiet = Notifier::parse(b"/nowhere", None, None, 1).unwrap();
        assert!(StartupPinger::spawn(Some(&quiet), Duration::from_secs(1)).thread.is_none());
    }
}
