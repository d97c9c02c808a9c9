//! `sluice run` in software mode with real packets: the real binary runs in the node
//! namespace of a client / node / upstream lab (see the io crate's netns harness, shared
//! here) and is driven by signals, as an operator or the lab tooling would.
//!
//! These tests need root (namespaces, veths, TAPs); without it they fail and say so.

#[path = "../../io/tests/netns_harness/mod.rs"]
mod netns_harness;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns_harness::{icmp_echo, in_netns, require_root, Lab, POLICY};
use serde_json::Value;

const SERVER: &str = "198.51.100.10";

/// The test policy without the `web` rule (TCP 80).
fn policy_without_web() -> String {
    let web = r#"{ "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80], "dst_cidrs": ["198.51.100.0/24"] } },"#;
    assert!(POLICY.contains(web), "the harness policy has the web rule");
    POLICY.replace(web, "")
}

/// A policy with an error at a known field path.
const BROKEN_POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [ { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [70000] } } ] }
  ]
}"#;

/// The `sluice` binary running in the node namespace, with its log in a file.
struct Sluice {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Sluice {
    /// Starts `sluice run` for `lab` and waits until it forwards (or panics with its log).
    fn start(lab: &Lab, data_dir: &Path, policy: Option<&Path>, run: usize) -> Sluice {
        let log = data_dir.join(format!("sluice-{run}.log"));
        let _ = std::fs::remove_file(data_dir.join("stats.json"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice"), "run"])
            .args(["--internal-port", &lab.node_in, "--external-port", &lab.node_out])
            .args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"])
            .args(["--gateway", "203.0.113.1", "--flow-capacity", "4096", "--log-format", "json"])
            .args(policy.map(|p| ["--policy".as_ref(), p.as_os_str()]).into_iter().flatten())
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (var, _) in std::env::vars() {
            if var.starts_with("SLUICE_") {
                cmd.env_remove(var);
            }
        }
        let child = cmd.spawn().expect("start sluice");
        let mut s = Sluice { child, data_dir: data_dir.to_path_buf(), log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(s.log_text().contains("node running") && s.data_dir.join("stats.json").exists()) {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("sluice exited at start ({status}):\n{}", s.log_text());
            }
            assert!(Instant::now() < deadline, "sluice did not start within 10 s:\n{}", s.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill with a valid signal number on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    fn stats(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir.join("stats.json")).expect("stats.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats.json is not JSON ({e}):\n{text}"))
    }

    /// A counter from stats.json, after the file has been rewritten at least once more.
    fn counter(&self, name: &str) -> u64 {
        std::thread::sleep(Duration::from_millis(1200));
        self.stats()["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Waits until the stats file shows policy generation `generation`.
    fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.stats()["policy_generation"].as_u64() != Some(generation) {
            assert!(Instant::now() < deadline, "stats.json never showed generation {generation}: {:#}", self.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `text`.
    fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log_text();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "no `{text}` in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits up to `within` for the exit; returns the status and the time taken.
    fn stop(&mut self, sig: libc::c_int, within: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.signal(sig);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            assert!(t0.elapsed() < within, "sluice still running {within:?} after the signal:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A server thread in a namespace that runs until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP echo server on `SERVER:port` in `ns`.
fn udp_echo(ns: &str, port: u16) -> Server {
    let sock = in_netns(ns, move || UdpSocket::bind((SERVER, port)).expect("bind UDP echo"));
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    Server { stop, thread: Some(thread) }
}

/// A TCP server on `SERVER:port` in `ns`: answers each line with `echo <line>` and each
/// HTTP-like request (`GET ...` up to the blank line) with a response naming the peer.
fn tcp_server(ns: &str, port: u16) -> Server {
    let listener = in_netns(ns, move || TcpListener::bind((SERVER, port)).expect("bind TCP"));
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            let Ok((conn, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let flag = Arc::clone(&flag);
            std::thread::spawn(move || serve(conn, peer, &flag));
        }
    });
    Server { stop, thread: Some(thread) }
}

fn serve(mut conn: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        if pending.starts_with(b"GET ") {
            if pending.windows(4).any(|w| w == b"\r\n\r\n") {
                let body = format!("hello {}\n", peer.ip());
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(format!("{head}{body}").as_bytes());
                return;
            }
            continue;
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let _ = conn.write_all(&[b"echo ", &line[..]].concat());
        }
    }
}

/// An HTTP-like exchange from the client; returns the response.
fn http_get(lab: &Lab, port: u16) -> std::io::Result<String> {
    in_netns(&lab.client, move || {
        let to: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: upstream\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Sends `msg` from the client to `SERVER:port` until an answer arrives; `None` if none
/// does in `tries` attempts (the first may wait for ARP).
fn udp_ask(lab: &Lab, port: u16, msg: &'static [u8], tries: usize) -> Option<Vec<u8>> {
    in_netns(&lab.client, move || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..tries {
            s.send_to(msg, (SERVER, port)).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    })
}

/// ICMP echo from the client to `dst`, a few tries.
fn ping(lab: &Lab, dst: [u8; 4]) -> bool {
    in_netns(&lab.client, move || (0..4).any(|_| icmp_echo(dst, Duration::from_millis(700))))
}

/// A UDP datagram with TTL 1 from the client to the server; returns the source of the ICMP
/// time-exceeded message that comes back, if any.
fn ttl_one_probe(lab: &Lab) -> Option<[u8; 4]> {
    in_netns(&lab.client, || {
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned and is owned by nobody else.
        let raw = unsafe { OwnedFd::from_raw_fd(fd) };
        let udp = UdpSocket::bind("10.10.0.2:0").unwrap();
        udp.set_ttl(1).unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..5 {
            udp.send_to(b"ttl probe", (SERVER, 7)).unwrap();
            let deadline = Instant::now() + Duration::from_millis(600);
            while Instant::now() < deadline {
                let mut pfd = libc::pollfd { fd: raw.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                    continue;
                }
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::recv(raw.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 28 {
                    continue;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if buf[ihl] == 11 && buf[ihl + 1] == 0 {
                    return Some([buf[12], buf[13], buf[14], buf[15]]);
                }
            }
        }
        None
    })
}

fn links(lab: &Lab) -> String {
    let out = netns_harness::run(&["ip", "-n", &lab.node, "-br", "addr", "show"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn software_node_forwards_what_the_policy_allows_and_stops_cleanly() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let mut node = Sluice::start(&lab, dir.path(), Some(&policy), 1);
    let lane = links(&lab);
    assert!(
        lane.lines().any(|l| l.starts_with("sl-lane0") && l.contains("10.10.0.1/24")),
        "the service lane carries the internal address:\n{lane}"
    );

    let (_web, _blocked, _echo, _discard) = (
        tcp_server(&lab.upstream, 80),
        tcp_server(&lab.upstream, 81),
        udp_echo(&lab.upstream, 7),
        udp_echo(&lab.upstream, 9),
    );
    let response = http_get(&lab, 80).expect("allowed HTTP exchange");
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    assert!(response.ends_with("hello 203.0.113.2\n"), "the server sees the node's external address: {response}");
    assert_eq!(udp_ask(&lab, 7, b"echo me", 10).as_deref(), Some(&b"echo me"[..]), "allowed UDP echo");
    assert!(ping(&lab, [198, 51, 100, 10]), "allowed ping");
    assert!(ping(&lab, [10, 10, 0, 1]), "the node's own stack answers on the service lane");

    assert!(http_get(&lab, 81).is_err(), "TCP to a port the policy does not allow");
    assert_eq!(udp_ask(&lab, 9, b"nope", 3), None, "UDP to a port the policy does not allow");
    assert_eq!(ttl_one_probe(&lab), Some([10, 10, 0, 1]), "time exceeded from the node's inside address");

    let stats = node.stats();
    assert_eq!(stats["running"], true);
    assert_eq!(stats["service_lane"], "sl-lane0");
    assert_eq!(stats["policy_generation"], 1);
    assert!(node.counter("flows_opened") >= 3, "{:#}", node.stats());
    let stats = node.stats();
    let c = &stats["counters"];
    assert!(c["policy_denied"].as_u64().unwrap() >= 2, "{c:#}");
    assert!(c["icmp_errors_sent"].as_u64().unwrap() >= 1, "{c:#}");
    assert!(c["internal_rx_packets"].as_u64().unwrap() > 0 && c["external_tx_packets"].as_u64().unwrap() > 0);
    assert!(stats["ports"]["host"]["tx_packets"].as_u64().unwrap() > 0, "{:#}", stats["ports"]);

    let (status, took) = node.stop(libc::SIGTERM, Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let log = node.log_text();
    assert!(log.contains("final counters") && log.contains("service lane removed"), "{log}");
    assert!(!links(&lab).contains("sl-lane"), "the TAP is gone:\n{}", links(&lab));
    assert_eq!(node.stats()["running"], false, "the last stats file says it stopped");

    // The port locks are released: another node starts on the same ports and stops on SIGINT.
    let mut again = Sluice::start(&lab, dir.path(), Some(&policy), 2);
    assert!(ping(&lab, [198, 51, 100, 10]), "the second node forwards");
    let (status, _) = again.stop(libc::SIGINT, Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "{}", again.log_text());
}

#[test]
fn sighup_applies_a_new_policy_to_existing_flows_and_refuses_a_broken_one() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let mut node = Sluice::start(&lab, dir.path(), Some(&policy), 1);
    let (_web, _echo) = (tcp_server(&lab.upstream, 80), udp_echo(&lab.upstream, 7));

    // An allowed, established TCP flow.
    let conn = in_netns(&lab.client, || {
        let to: SocketAddr = format!("{SERVER}:80").parse().unwrap();
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect before the reload")
    });
    conn.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let exchange = |mut c: &TcpStream, line: &str| -> Option<String> {
        c.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(exchange(&conn, "before").as_deref(), Some("echo before\n"));

    // Reload without the web rule: the existing flow stops and new ones are refused.
    std::fs::write(&policy, policy_without_web()).unwrap();
    node.signal(libc::SIGHUP);
    node.wait_log("policy reloaded and published");
    node.wait_generation(2);
    assert_eq!(exchange(&conn, "after"), None, "the existing flow is cut by the new policy");
    assert!(http_get(&lab, 80).is_err(), "new TCP flows are refused");
    assert_eq!(udp_ask(&lab, 7, b"still", 10).as_deref(), Some(&b"still"[..]), "what stays allowed passes");
    assert!(node.counter("policy_revoked") >= 1, "{:#}", node.stats()["counters"]);

    // A broken file is refused with its field path, and generation 2 stays in force.
    std::fs::write(&policy, BROKEN_POLICY).unwrap();
    node.signal(libc::SIGHUP);
    let log = node.wait_log("policy reload refused");
    assert!(log.contains("source_groups[0].rules[0].match.dst_ports[0]"), "{log}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(node.stats()["policy_generation"], 2, "the broken file was not published");
    assert_eq!(udp_ask(&lab, 7, b"kept", 10).as_deref(), Some(&b"kept"[..]));
    assert!(http_get(&lab, 80).is_err(), "the web rule is still gone");

    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
}

#[test]
fn without_a_policy_nothing_leaves_but_the_node_itself_answers() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Sluice::start(&lab, dir.path(), None, 1);
    assert!(node.log_text().contains("applying a deny-all policy"), "{}", node.log_text());
    let _echo = udp_echo(&lab.upstream, 7);
    assert_eq!(udp_ask(&lab, 7, b"out?", 3), None, "nothing leaves without a policy");
    assert!(!ping(&lab, [198, 51, 100, 10]), "not even ping");
    assert!(ping(&lab, [10, 10, 0, 1]), "the node's own address answers through the service lane");
    node.signal(libc::SIGHUP);
    node.wait_log("nothing to reload");
    assert!(node.counter("policy_denied") >= 2, "{:#}", node.stats()["counters"]);
    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
}
