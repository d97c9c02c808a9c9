//! The Sluice lab (design §9): network namespaces built with `ip`, with servers in an
//! "internet" namespace and the real `sluice` binary in the node namespace.
//!
//! ```text
//! client ns                 node ns                              upstream ns
//! 10.10.0.2/24 ──veth── <p>ni (sluice)  <p>ne ──veth── 203.0.113.1/24
//! gw 10.10.0.1              no addresses on data ports           198.51.100.{10,11,20,53}/32 on lo
//!                           <p>mn 192.168.M.2/24 ──veth── root ns <p>mh 192.168.M.1/24 (management)
//! ```
//!
//! Every name starts with the lab's prefix; [`Lab`] removes what it built when dropped (also
//! after a panic), and [`down`] removes whatever is left under a prefix.

mod launch;
pub mod probe;
pub mod servers;
pub mod veth;

pub use launch::Launch;

use std::fmt;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The prefix of the lab `cargo xtask lab` and `cargo xtask demo` build.
pub const FIXED_PREFIX: &str = "sl-";

/// Addresses the upstream namespace holds (on lo), and what listens there.
pub const WEB: &str = "198.51.100.10";
pub const WEB2: &str = "198.51.100.11";
pub const BLOCKED: &str = "198.51.100.20";
pub const DNS: &str = "198.51.100.53";
pub const UPSTREAM_ADDRS: [&str; 4] = [WEB, WEB2, BLOCKED, DNS];
/// TCP ports the upstream servers listen on (80: HTTP, 7 and 22: echo); UDP echo is on 7.
pub const HTTP_PORT: u16 = 80;
pub const ECHO_PORT: u16 = 7;
pub const SSH_PORT: u16 = 22;
/// The names the upstream DNS server answers.
pub const DNS_NAMES: [(&str, &str); 3] = [("allowed.test", WEB), ("web2.test", WEB2), ("blocked.test", BLOCKED)];

pub const CLIENT_ADDR: &str = "10.10.0.2";
pub const NODE_INTERNAL: &str = "10.10.0.1/24";
/// The node's internal address: the clients' gateway and DNS resolver.
pub const RESOLVER: &str = "10.10.0.1";
pub const NODE_EXTERNAL: &str = "203.0.113.2/24";
pub const GATEWAY: &str = "203.0.113.1";

#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// Run a command, failing with its output if it fails.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("could not run `{}`: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command inside namespace `ns`.
pub fn sh_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all)
}

/// True when running as (effective) root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Move the calling thread into network namespace `ns`.
pub fn enter(ns: &str) -> Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}")).map_err(|e| err(format!("namespace {ns}: {e}")))?;
    // SAFETY: `f` is an open namespace descriptor; setns affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(format!("setns {ns}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Run `f` on a new thread inside `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || enter(&ns).map(|()| f()))
        .join()
        .map_err(|_| err("a thread in a lab namespace panicked"))?
}

/// The namespaces whose names start with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Remove everything under `prefix`: processes running in its namespaces (the servers,
/// dnsmasq and nodes it started), the namespaces (with their veths) and root-namespace links.
/// Returns what was removed, for the log.
pub fn down(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let pids_in = |ns: &str| -> Vec<libc::pid_t> {
        let list = sh(&["ip", "netns", "pids", ns]).unwrap_or_default();
        list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    };
    let spaces = namespaces(prefix);
    // SIGTERM first, so that a node removes what it created; SIGKILL what is left after 3 s.
    for ns in &spaces {
        for pid in pids_in(ns) {
            // SAFETY: plain system call; the process runs in one of this lab's namespaces.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            removed.push(format!("process {pid} in {ns}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && spaces.iter().any(|ns| !pids_in(ns).is_empty()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for ns in spaces {
        for pid in pids_in(&ns) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if sh(&["ip", "netns", "del", &ns]).is_ok() {
            removed.push(format!("namespace {ns}"));
        }
    }
    let links = sh(&["ip", "-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("")) else {
            continue;
        };
        if !name.is_empty() && name.starts_with(prefix) && sh(&["ip", "link", "del", name]).is_ok() {
            removed.push(format!("link {name}"));
        }
    }
    let state = state_dir(prefix);
    if state.exists() && fs::remove_dir_all(&state).is_ok() {
        removed.push(format!("directory {}", state.display()));
    }
    removed
}

/// Where a lab keeps its files (pid files, logs, node data directories).
pub fn state_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-lab-{}", prefix.trim_end_matches('-')))
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A built lab. Dropping it stops its processes and removes its namespaces and files.
pub struct Lab {
    pub prefix: String,
    pub client: String,
    pub node: String,
    pub upstream: String,
    /// The node's data-port interfaces (internal towards the client, external upstream).
    pub node_in: String,
    pub node_out: String,
    /// Management network: root-namespace end and node end, and their addresses.
    pub mgmt_host: String,
    pub mgmt_node: String,
    pub mgmt_host_addr: String,
    pub mgmt_node_addr: String,
    pub dir: PathBuf,
    children: Vec<Child>,
    /// When false, Drop leaves everything running (`cargo xtask lab up`).
    pub keep: bool,
}

impl Lab {
    /// A lab with names unique to this process (`sl<pid>x<n>-...`), for tests.
    pub fn unique() -> Result<Lab> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The trailing `-` keeps `down("sl1x1-")` away from the names of lab `sl1x10-`.
        let prefix = format!("sl{}x{n}-", std::process::id());
        // A management subnet per lab, so labs of parallel tests do not collide in the root ns.
        let octet = 100 + (std::process::id() as usize * 7 + n) % 150;
        Lab::build(&prefix, octet as u8)
    }

    /// The lab with the fixed names (`sl-client`, `sl-node`, `sl-upstream`); whatever a previous
    /// run left behind is removed first.
    pub fn fixed() -> Result<Lab> {
        down(FIXED_PREFIX);
        Lab::build(FIXED_PREFIX, 77)
    }

    /// A lab under `prefix` (e.g. the veth benchmark's `sv-`), management subnet
    /// 192.168.`mgmt_octet`.0/24; whatever a previous run left under the prefix is removed first.
    pub fn named(prefix: &str, mgmt_octet: u8) -> Result<Lab> {
        down(prefix);
        Lab::build(prefix, mgmt_octet)
    }

    /// The client's end of the client-node veth.
    pub fn client_if(&self) -> String {
        format!("{}ci", self.prefix)
    }

    /// The upstream's end of the node-upstream veth.
    pub fn upstream_if(&self) -> String {
        format!("{}ue", self.prefix)
    }

    fn build(prefix: &str, mgmt_octet: u8) -> Result<Lab> {
        if !is_root() {
            return Err(err("the lab builds network namespaces: run it as root"));
        }
        let dir = state_dir(prefix);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            client: format!("{prefix}client"),
            node: format!("{prefix}node"),
            upstream: format!("{prefix}upstream"),
            node_in: format!("{prefix}ni"),
            node_out: format!("{prefix}ne"),
            mgmt_host: format!("{prefix}mh"),
            mgmt_node: format!("{prefix}mn"),
            mgmt_host_addr: format!("192.168.{mgmt_octet}.1"),
            mgmt_node_addr: format!("192.168.{mgmt_octet}.2"),
            dir,
            children: Vec::new(),
            keep: false,
        };
        // On error `lab` is dropped here, which removes what was built so far.
        lab.wire()?;
        Ok(lab)
    }

    fn wire(&mut self) -> Result<()> {
        let (c, n, u) = (&self.client, &self.node, &self.upstream);
        for ns in [c, n, u] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let client_if = self.client_if();
        let up_if = self.upstream_if();
        sh(&["ip", "link", "add", &client_if, "netns", c, "type", "veth", "peer", "name", &self.node_in, "netns", n])?;
        sh(&["ip", "link", "add", &up_if, "netns", u, "type", "veth", "peer", "name", &self.node_out, "netns", n])?;
        // Packet sockets on the node see frames before any offload would finish them: the
        // client and upstream stacks must send complete frames with full checksums.
        for (ns, dev) in [(c, &client_if), (u, &up_if)] {
            sh_in(ns, &["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        sh(&["ip", "-n", c, "addr", "add", "10.10.0.2/24", "dev", &client_if])?;
        sh(&["ip", "-n", c, "route", "add", "default", "via", "10.10.0.1"])?;
        sh(&["ip", "-n", u, "addr", "add", "203.0.113.1/24", "dev", &up_if])?;
        for addr in UPSTREAM_ADDRS {
            sh(&["ip", "-n", u, "addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
        }
        // The node's kernel stays quiet on the data ports: Sluice owns them.
        let _ =
            sh_in(n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
        for dev in [&self.node_in, &self.node_out] {
            sh(&["ip", "-n", n, "link", "set", dev, "up"])?;
        }
        sh(&["ip", "link", "add", &self.mgmt_host, "type", "veth", "peer", "name", &self.mgmt_node, "netns", n])?;
        sh(&["ip", "addr", "add", &format!("{}/24", self.mgmt_host_addr), "dev", &self.mgmt_host])?;
        sh(&["ip", "link", "set", &self.mgmt_host, "up"])?;
        sh(&["ip", "-n", n, "addr", "add", &format!("{}/24", self.mgmt_node_addr), "dev", &self.mgmt_node])?;
        sh(&["ip", "-n", n, "link", "set", &self.mgmt_node, "up"])?;
        Ok(())
    }

    /// Start the upstream services: the HTTP, TCP echo and UDP echo servers (this binary's
    /// `serve` command, run inside the upstream namespace) and dnsmasq as the authoritative
    /// server for the test names on 198.51.100.53. Waits until they answer.
    pub fn start_services(&mut self, lab_binary: &Path) -> Result<()> {
        let log = self.dir.join("servers.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.upstream]).arg(lab_binary).arg("serve");
        let child = self.spawn(cmd, &log)?;
        self.children.push(child);

        let dns_log = self.dir.join("dnsmasq.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.upstream, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts"])
            .args(["--conf-file=/dev/null", "--port=53", "--bind-interfaces", "--user=root", "--log-facility=-"])
            .arg(format!("--listen-address={DNS}"))
            .arg(format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()));
        for (name, addr) in DNS_NAMES {
            cmd.arg(format!("--address=/{name}/{addr}"));
        }
        let child = self.spawn(cmd, &dns_log).map_err(|e| {
            err(format!("{e}\n(dnsmasq comes from the Debian package dnsmasq-base: `cargo xtask install`)"))
        })?;
        self.children.push(child);

        // Wait for every service to answer inside the upstream namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = in_netns(&self.upstream, || {
                let tcp = [HTTP_PORT, ECHO_PORT, SSH_PORT].iter().all(|&port| {
                    std::net::TcpStream::connect_timeout(
                        &format!("{WEB}:{port}").parse().unwrap(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                });
                let dns = probe::dns_query(DNS, "allowed.test", Duration::from_millis(300)).is_ok();
                tcp && dns
            })?;
            if ready {
                return Ok(());
            }
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = if i == 0 { &log } else { &dns_log };
                    return Err(err(format!(
                        "an upstream service exited ({status}):\n{}",
                        fs::read_to_string(log).unwrap_or_default()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "the upstream services did not answer within 10 s\nservers: {}\ndnsmasq: {}",
                    fs::read_to_string(&log).unwrap_or_default(),
                    fs::read_to_string(&dns_log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Spawn `cmd` in its own process group (so a terminal's Ctrl-C reaches only the lab
    /// tool, which then tears down in order), output to `log`.
    fn spawn(&self, mut cmd: Command, log: &Path) -> Result<Child> {
        let out = File::create(log).map_err(|e| err(format!("create {}: {e}", log.display())))?;
        let out2 = out.try_clone().map_err(|e| err(e.to_string()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(out2).process_group(0);
        cmd.spawn().map_err(|e| err(format!("could not start {:?}: {e}", cmd.get_args().collect::<Vec<_>>())))
    }

    /// Start a Sluice node in the node namespace with `policy` (see [`Node::start`]).
    /// Starts the lab's node; `software_io` is passed as `--software-io` when given.
    pub fn start_node(&self, sluice: &Path, policy: &Path, software_io: Option<&str>) -> Result<Node> {
        let mut launch = Launch::software(self);
        if let Some(kind) = software_io {
            launch.extra.extend(["--software-io".to_string(), kind.to_string()]);
        }
        Node::start_with(self, sluice, policy, &self.dir.join("node"), &launch)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        down(&self.prefix);
    }
}

/// A running `sluice run` in a lab's node namespace.
pub struct Node {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub policy: PathBuf,
}

impl Node {
    /// Spawn `sluice run` in the node namespace with the lab's addresses and wait (10 s at
    /// most) until it writes `<data_dir>/stats.json`. On failure the error holds the node's
    /// exit status and its log.
    pub fn start(lab: &Lab, sluice: &Path, policy: &Path, data_dir: &Path) -> Result<Node> {
        Node::start_with(lab, sluice, policy, data_dir, &Launch::software(lab))
    }

    /// [`Node::start`] with the ports, flags and launcher of `launch`.
    pub fn start_with(lab: &Lab, sluice: &Path, policy: &Path, data_dir: &Path, launch: &Launch) -> Result<Node> {
        fs::create_dir_all(data_dir).map_err(|e| err(format!("create {}: {e}", data_dir.display())))?;
        let _ = fs::remove_file(data_dir.join("stats.json"));
        let log = data_dir.join("sluice.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.node])
            .args(&launch.launcher)
            .arg(sluice)
            .arg("run")
            .args(["--internal-port", &launch.internal_port, "--external-port", &launch.external_port])
            .args(["--internal-address", NODE_INTERNAL, "--external-address", NODE_EXTERNAL])
            .args(["--gateway", GATEWAY, "--log-format", "json"])
            // The node resolves for its clients, through the upstream namespace's dnsmasq.
            .args(["--dns-upstream", DNS])
            .arg("--policy")
            .arg(policy)
            .arg("--data-dir")
            .arg(data_dir)
            .args(&launch.extra);
        for (var, _) in std::env::vars() {
            if var.starts_with("SLUICE_") {
                cmd.env_remove(var);
            }
        }
        let child = lab.spawn(cmd, &log)?;
        let mut node = Node { child: Some(child), data_dir: data_dir.to_path_buf(), log, policy: policy.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.data_dir.join("stats.json").exists() {
            if let Some(status) = node.try_wait() {
                return Err(err(format!(
                    "the Sluice node did not start: `sluice run` exited ({}) before writing {}.\nIts output ({}):\n{}",
                    describe(status),
                    node.data_dir.join("stats.json").display(),
                    node.log.display(),
                    indent(&node.log_text())
                )));
            }
            if Instant::now() > deadline {
                let text = node.log_text();
                return Err(err(format!(
                    "the Sluice node did not start: no {} after 10 s.\nIts output ({}):\n{}",
                    node.data_dir.join("stats.json").display(),
                    node.log.display(),
                    indent(&text)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(node)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The parsed `stats.json`.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let path = self.data_dir.join("stats.json");
        let text = fs::read_to_string(&path).map_err(|e| err(format!("read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| err(format!("{} is not JSON ({e}): {text}", path.display())))
    }

    /// The counters from `stats.json` after it has been rewritten at least once more, so they
    /// include everything that happened before the call.
    pub fn fresh_counters(&self) -> Result<Vec<(String, u64)>> {
        let path = self.data_dir.join("stats.json");
        let before = fs::metadata(&path).and_then(|m| m.modified()).ok();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && fs::metadata(&path).and_then(|m| m.modified()).ok() == before {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The writer replaces the file; a reader may still catch it between two states.
        std::thread::sleep(Duration::from_millis(50));
        Ok(counters(&self.stats()?))
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = self.pid().ok_or_else(|| err("the node is not running"))?;
        // SAFETY: plain system call on our own child's pid.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(err(format!("kill {pid}: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Ask the node to re-read its policy file.
    pub fn reload(&self) -> Result<()> {
        self.signal(libc::SIGHUP)
    }

    /// SIGTERM, then wait (5 s at most, then SIGKILL) and return the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                let mut child = self.child.take().expect("running");
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("the node did not exit within 5 s of SIGTERM; killed.\n{}", self.log_text())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leave the node running when this handle is dropped (`cargo xtask lab up`).
    pub fn detach(mut self) {
        self.child = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Every numeric counter in a stats document, by name (the `counters` object, or the top
/// level if there is none), sorted by name.
pub fn counters(stats: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    collect(stats.get("counters").unwrap_or(stats), "", &mut out);
    out.sort();
    out
}

fn collect(v: &serde_json::Value, path: &str, out: &mut Vec<(String, u64)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let name = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                collect(v, &name, out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.push((path.to_string(), n));
            }
        }
        _ => {}
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(23) => "exit code 23: DPDK could not start (EAL arguments, lcores or memory)".into(),
        Some(30) => "exit code 30: the dataplane worker failed".into(),
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (no output)".into();
    }
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
