//! The lab topology for tests with real packets, built from network namespaces and veths
//! with `ip`, and removed again when dropped (also when a test panics):
//!
//! ```text
//! client ns                      node ns                          upstream ns
//! 10.10.0.2/24 ──veth── <in> (engine, AF_PACKET) <out> ──veth── 203.0.113.1/24
//! default via 10.10.0.1          no addresses                     198.51.100.10/32 on lo
//! ```
//!
//! Names are `sl<pid>x<n>` plus a suffix, unique per process and lab.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// These tests build namespaces, veths and TAPs: they need root, as `cargo xtask test` does.
/// Without it they fail and say so rather than pass without having run.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "network namespace tests need root: run them as root (cargo xtask test runs as root)");
}

/// Run a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command inside a namespace; returns its output whether or not it succeeded.
pub fn exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

/// Move the calling thread into a network namespace.
pub fn enter(ns: &str) {
    let f = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
    // SAFETY: `f` is an open namespace descriptor; setns affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a new thread inside `ns` and return its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().expect("thread in namespace panicked")
}

/// Start `f` on a new thread inside `ns`.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
}

pub struct Lab {
    pub client: String,
    pub node: String,
    pub upstream: String,
    /// The node's interface towards the client (engine internal port).
    pub node_in: String,
    /// The node's interface towards the upstream (engine external port).
    pub node_out: String,
    pub prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::build(None).expect("lab")
    }

    /// A lab whose client sits on 802.1Q VLAN `vlan` on its link to the node; `None` if
    /// the kernel has no VLAN devices.
    pub fn with_client_vlan(vlan: u16) -> Option<Lab> {
        Lab::build(Some(vlan))
    }

    fn build(client_vlan: Option<u16>) -> Option<Lab> {
        let prefix = format!("sl{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut lab = Lab {
            client: format!("{prefix}c"),
            node: format!("{prefix}n"),
            upstream: format!("{prefix}u"),
            node_in: format!("{prefix}ni"),
            node_out: format!("{prefix}ne"),
            prefix: prefix.clone(),
            namespaces: Vec::new(),
        };
        for ns in [lab.client.clone(), lab.node.clone(), lab.upstream.clone()] {
            run(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (c, n, u) = (&lab.client, &lab.node, &lab.upstream);
        let client_if = format!("{prefix}ci");
        let up_if = format!("{prefix}ue");
        run(&["ip", "link", "add", &client_if, "netns", c, "type", "veth", "peer", "name", &lab.node_in, "netns", n]);
        run(&["ip", "link", "add", &up_if, "netns", u, "type", "veth", "peer", "name", &lab.node_out, "netns", n]);
        // The client and upstream stacks must put complete frames with full checksums on
        // the wire: the node reads them from a packet socket, which sees them before any
        // offload would have finished them.
        for (ns, dev) in [(c, &client_if), (u, &up_if)] {
            let out = exec(ns, &["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"]);
            assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let client_addr_if = match client_vlan {
            None => client_if.clone(),
            Some(id) => {
                let vif = format!("{prefix}cv");
                let id = id.to_string();
                let add = ["-n", c, "link", "add", "link", &client_if, "name", &vif, "type", "vlan", "id", &id];
                let made = Command::new("ip").args(add).output().is_ok_and(|o| o.status.success());
                assert!(
                    made,
                    "this kernel cannot create 802.1Q VLAN devices (8021q); the test is #[ignore]d where it is absent"
                );
                run(&["ip", "-n", c, "link", "set", &vif, "up"]);
                vif
            }
        };
        run(&["ip", "-n", c, "addr", "add", "10.10.0.2/24", "dev", &client_addr_if]);
        run(&["ip", "-n", c, "route", "add", "default", "via", "10.10.0.1"]);
        run(&["ip", "-n", u, "addr", "add", "203.0.113.1/24", "dev", &up_if]);
        run(&["ip", "-n", u, "addr", "add", "198.51.100.10/32", "dev", "lo"]);
        // The node's kernel must stay quiet on the data ports (the engine owns them).
        let _ = exec(n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
        for dev in [&lab.node_in, &lab.node_out] {
            run(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        Some(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veths in it (and so their peers).
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

use std::time::Duration;

use sluice_dataplane::allowlist::{allowlist_channel, AllowlistConfig, AllowlistWriter};
use sluice_dataplane::config::{EngineConfig, HostLaneConfig, PortConfig};
use sluice_dataplane::counters::{Counters, DropReason};
use sluice_dataplane::engine::Engine;
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_io::{AfPacketPort, IoStats, Port, Tap, Worker, WorkerConfig, XdpPort};

pub const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80], "dst_cidrs": ["198.51.100.0/24"] } },
        { "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } },
        { "id": "ping", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8], "dst_cidrs": ["198.51.100.0/24"] } }
      ],
      "default_action": "deny" }
  ]
}"#;

pub const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// Which software port a test node opens on its veths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Packet,
    Xdp,
}

impl PortKind {
    /// Opens `name` (in the calling thread's namespace); the port and its MAC.
    pub fn open(self, name: &str) -> (Box<dyn Port>, [u8; 6]) {
        match self {
            PortKind::Packet => {
                let p = AfPacketPort::open(name, 32).expect("open AF_PACKET port");
                let mac = p.mac();
                (Box::new(p), mac)
            }
            PortKind::Xdp => {
                let p = XdpPort::open(name).unwrap_or_else(|e| panic!("open AF_XDP port: {e}"));
                let mac = p.mac();
                (Box::new(p), mac)
            }
        }
    }
}

/// A running node: the engine on a worker thread, owning both veth ends in the node
/// namespace, optionally with a service lane TAP named after the lab.
pub struct Node {
    pub worker: Option<Worker>,
    pub policy: PolicyHandle,
    pub allow: AllowlistWriter,
    pub tap_name: Option<String>,
}

impl Node {
    pub fn start(lab: &Lab, with_tap: bool) -> Node {
        Node::start_with(lab, with_tap, None)
    }

    /// As [`Node::start`], with the internal port on 802.1Q VLAN `internal_vlan`.
    pub fn start_with(lab: &Lab, with_tap: bool, internal_vlan: Option<u16>) -> Node {
        Node::start_on(lab, with_tap, internal_vlan, PortKind::Packet)
    }

    /// As [`Node::start_with`], on ports of the given kind.
    pub fn start_on(lab: &Lab, with_tap: bool, internal_vlan: Option<u16>, kind: PortKind) -> Node {
        let (nin, nout, tap_prefix) = (lab.node_in.clone(), lab.node_out.clone(), format!("{}t", lab.prefix));
        let ((internal, internal_mac), (external, external_mac), tap) = in_netns(&lab.node, move || {
            let i = kind.open(&nin);
            let e = kind.open(&nout);
            let t = with_tap.then(|| Tap::create(&tap_prefix).expect("create TAP"));
            (i, e, t)
        });
        let mut cfg = EngineConfig::new(
            PortConfig { mac: internal_mac, ip: ip(10, 10, 0, 1), prefix_len: 24, vlan: internal_vlan },
            PortConfig { mac: external_mac, ip: ip(203, 0, 113, 2), prefix_len: 24, vlan: None },
            ip(203, 0, 113, 1),
        );
        cfg.snat = true;
        cfg.flow_capacity = 4096;
        let tap_name = tap.as_ref().map(|t| t.name().to_string());
        if let Some(t) = &tap {
            // Any locally administered MAC other than the TAP's own will do for the engine.
            let mut engine_mac = t.mac();
            engine_mac[0] = 0x02;
            engine_mac[5] ^= 0x55;
            cfg.host_lane = Some(HostLaneConfig { engine_mac, host_mac: t.mac() });
        }
        let policy = PolicyHandle::new(sluice_policy::compile_json(POLICY).expect("test policy"));
        let (allow, mut readers) = allowlist_channel(1, &AllowlistConfig { capacity: 1024, channel_capacity: 64 });
        let engine = Engine::new(cfg, policy.reader(), readers.pop()).expect("engine");
        let worker = Worker::spawn(WorkerConfig {
            engine,
            internal,
            external,
            host: tap,
            burst: 32,
            idle_timeout: Duration::from_millis(1),
            core: None,
        })
        .expect("spawn worker");
        Node { worker: Some(worker), policy, allow, tap_name }
    }

    /// The engine's published counters (waits out the publication interval first).
    pub fn counters(&self) -> Counters {
        std::thread::sleep(Duration::from_millis(5));
        self.worker.as_ref().expect("running").counters().snapshot()
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.counters().dropped(r)
    }

    pub fn io(&self) -> std::sync::Arc<IoStats> {
        self.worker.as_ref().expect("running").io_stats()
    }

    pub fn stop(&mut self) -> Engine {
        self.worker.take().expect("running").stop()
    }
}

/// Waits up to 5 s for `done`: counters and stats are published by the worker thread, which
/// a loaded machine may schedule late.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `ping` is installed (the lab image has it; a bare build machine may not).
pub fn have_ping() -> bool {
    Command::new("ping").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// One ICMP echo to `dst` from a raw socket in the calling thread's namespace, for machines
/// without `ping`: true if the matching reply arrives within `timeout`.
pub fn icmp_echo(dst: [u8; 4], timeout: Duration) -> bool {
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned and is owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let id = (std::process::id() as u16).to_be_bytes();
    let mut req = [8u8, 0, 0, 0, id[0], id[1], 0, 1, b's', b'l', b'u', b'i', b'c', b'e', 0, 0];
    let sum = sluice_dataplane::checksum::checksum(&req);
    req[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst) },
        sin_zero: [0; 8],
    };
    // SAFETY: `req` and `addr` are valid for the sizes passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(sent, req.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 28 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let icmp = &buf[ihl..n as usize];
        if buf[12..16] == dst && icmp[0] == 0 && icmp[4..6] == id && icmp[8..] == req[8..] {
            return true;
        }
    }
    false
}

/// A frame for `dst_mac` carrying an 802.1Q tag (VLAN 100, priority 1) in the frame itself.
pub fn tagged_frame(dst_mac: [u8; 6]) -> Vec<u8> {
    let mut frame = dst_mac.to_vec();
    frame.extend_from_slice(&[0x02, 0, 0, 0, 9, 9, 0x81, 0x00, 0x20, 0x64, 0x08, 0x00]);
    frame.extend((0..60u8).map(|i| i.wrapping_mul(3)));
    frame
}

/// Sends `frame` once from a packet socket on the client's end of the lab's internal link.
pub fn send_from_client(lab: &Lab, frame: &[u8]) {
    let client_if = format!("{}ci", lab.prefix);
    let sent = frame.to_vec();
    in_netns(&lab.client, move || {
        let mut p = AfPacketPort::open(&client_if, 8).expect("open client side");
        p.queue(&sent);
        p.flush();
        assert_eq!(p.stats().tx_packets, 1);
    });
}

/// Receives on `port` until `frame` arrives byte for byte (2 s at most).
pub fn wait_for_frame(port: &mut dyn Port, frame: &[u8], what: &str) {
    let mut frames: Vec<sluice_io::IoFrame> =
        (0..8).map(|_| sluice_io::IoFrame::with_capacity(port.frame_capacity())).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let n = port.recv_burst(&mut frames).expect("recv");
        if frames[..n].iter().any(|f| sluice_dataplane::packet::Packet::data(f) == frame) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
