//! `sluice-lab`: the lab and the live demo, driven by `cargo xtask lab` and `cargo xtask demo`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_lab::{probe, Lab, Node, BLOCKED, DNS, ECHO_PORT, FIXED_PREFIX, HTTP_PORT, RESOLVER, SSH_PORT, WEB, WEB2};

const USAGE: &str = "\
sluice-lab: the Sluice network-namespace lab and live demo (run as root)

Usage:
  sluice-lab up --sluice <BIN> --policy <FILE> [--software-io af-packet|af-xdp]
                                                  build the lab (sl-client, sl-node, sl-upstream),
                                                  start the servers and a node, leave it running
  sluice-lab down                                 remove the lab and everything in it
  sluice-lab status                               what is up, and the node's counters
  sluice-lab demo --sluice <BIN> --policy <FILE> [--check] [--software-io af-packet|af-xdp]
                                                  the live demo; --check: exit 0 only if every
                                                  probe saw what it expected
  sluice-lab serve                                the upstream servers (run inside a namespace)
  sluice-lab dig <SERVER> <NAME>                  one DNS query for an A record";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sluice-lab: error: {e}");
            ExitCode::from(1)
        }
    }
}

struct Opts {
    sluice: Option<PathBuf>,
    policy: Option<PathBuf>,
    check: bool,
    /// `--software-io` for the node (`af-packet` or `af-xdp`); the node's default if unset.
    software_io: Option<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { sluice: None, policy: None, check: false, software_io: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sluice" => o.sluice = Some(it.next().ok_or("--sluice needs a path")?.into()),
            "--policy" => o.policy = Some(it.next().ok_or("--policy needs a path")?.into()),
            "--check" => o.check = true,
            "--software-io" => {
                let kind = it.next().ok_or("--software-io needs af-packet or af-xdp")?;
                if kind != "af-packet" && kind != "af-xdp" {
                    return Err(format!("--software-io: `{kind}` is neither af-packet nor af-xdp"));
                }
                o.software_io = Some(kind.clone());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Result<u8, String> {
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(2);
    };
    match cmd.as_str() {
        "serve" => {
            sluice_lab::servers::serve_forever().map_err(|e| format!("serve: {e}"))?;
            Ok(0)
        }
        "down" => {
            let removed = sluice_lab::down(FIXED_PREFIX);
            if removed.is_empty() {
                println!("nothing to remove: no lab with prefix `{FIXED_PREFIX}`");
            }
            for r in removed {
                println!("removed {r}");
            }
            Ok(0)
        }
        "status" => status(),
        "dig" => {
            let [server, name] = rest else { return Err("usage: sluice-lab dig <SERVER> <NAME>".into()) };
            let answer = probe::dns_query(server, name, Duration::from_secs(2))?;
            println!("{name} A {}", answer.join(", "));
            Ok(0)
        }
        "up" => up(&parse(rest)?),
        "demo" => demo(&parse(rest)?),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    }
}

fn paths(o: &Opts) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let sluice = o.sluice.clone().ok_or("--sluice <BIN> is required")?;
    let policy = o.policy.clone().ok_or("--policy <FILE> is required")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display()));
    Ok((abs(sluice)?, abs(policy)?, me))
}

fn build(me: &Path) -> Result<Lab, String> {
    println!("building the lab: namespaces {0}client, {0}node, {0}upstream", FIXED_PREFIX);
    let mut lab = Lab::fixed().map_err(|e| e.to_string())?;
    println!("starting upstream servers (HTTP :80, TCP echo :7 :22, UDP echo :7) and dnsmasq on {DNS}");
    lab.start_services(me).map_err(|e| e.to_string())?;
    Ok(lab)
}

fn up(o: &Opts) -> Result<u8, String> {
    let (sluice, policy, me) = paths(o)?;
    let mut lab = build(&me)?;
    println!("starting the Sluice node in {} with policy {}", lab.node, policy.display());
    let node_ok = match lab.start_node(&sluice, &policy, o.software_io.as_deref()) {
        Ok(node) => {
            println!("node running: pid {}, data dir {}", node.pid().unwrap_or(0), node.data_dir.display());
            node.detach();
            true
        }
        Err(e) => {
            eprintln!("warning: {e}\nThe lab stays up without a node.");
            false
        }
    };
    lab.keep = true;
    println!();
    print_explore(&lab);
    println!("  cargo xtask lab status    # what is running, node counters");
    println!("  cargo xtask lab down      # remove it all");
    Ok(if node_ok { 0 } else { 1 })
}

fn status() -> Result<u8, String> {
    let spaces = sluice_lab::namespaces(FIXED_PREFIX);
    if spaces.is_empty() {
        println!("no lab is up (prefix `{FIXED_PREFIX}`)");
        return Ok(1);
    }
    for ns in &spaces {
        let pids = sluice_lab::sh(&["ip", "netns", "pids", ns]).unwrap_or_default();
        let names: Vec<String> = pids
            .split_whitespace()
            .map(|p| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                format!("{} ({p})", comm.trim())
            })
            .collect();
        println!("namespace {ns}: {}", if names.is_empty() { "no processes".into() } else { names.join(", ") });
    }
    let stats = sluice_lab::state_dir(FIXED_PREFIX).join("node/stats.json");
    match std::fs::read_to_string(&stats).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        Some(v) => print_counters(&sluice_lab::counters(&v)),
        None => println!("no node statistics ({} missing)", stats.display()),
    }
    Ok(0)
}

fn print_explore(lab: &Lab) {
    let me = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sluice-lab".into());
    let (c, u, n) = (&lab.client, &lab.upstream, &lab.node);
    println!("The lab is up. Enter a namespace with:");
    println!("  ip netns exec {c} bash    # the protected client, 10.10.0.2 (gateway 10.10.0.1)");
    println!("  ip netns exec {u} bash    # the internet: 203.0.113.1, servers on 198.51.100.x");
    println!("  ip netns exec {n} bash    # the Sluice node (management {})", lab.mgmt_node_addr);
    println!("Things to try:");
    println!("  ip netns exec {c} curl -s http://{WEB}/                 # allowed");
    println!("  ip netns exec {c} curl -s -m 3 http://{BLOCKED}/        # dropped");
    println!("  ip netns exec {c} ping -c 3 {WEB}                       # allowed");
    println!("  ip netns exec {c} {me} dig {RESOLVER} allowed.test   # DNS through the node: answered");
    println!("  ip netns exec {c} {me} dig {RESOLVER} blocked.test   # a name no rule allows: NXDOMAIN");
    println!("  cat {}/node/stats.json    # the node's counters, rewritten every second", lab.dir.display());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Dropped,
    /// A DNS query answered NXDOMAIN by the node's policy.
    Refused,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Dropped => "dropped",
            Outcome::Refused => "NXDOMAIN",
        }
    }
}

struct Probe {
    what: &'static str,
    dest: String,
    expected: Outcome,
    /// Observed outcome and detail, or `Err` when the outcome itself is wrong in some other way.
    observed: Outcome,
    detail: String,
    ok: bool,
}

fn run_probes(lab: &Lab) -> Result<Vec<Probe>, String> {
    let allow_t = Duration::from_secs(3);
    let drop_t = Duration::from_secs(2);
    let mut probes = Vec::new();
    let mut add = |what, dest: String, expected, result: Result<String, String>, extra_ok: bool| {
        let observed = if result.is_ok() { Outcome::Allowed } else { Outcome::Dropped };
        let detail = match result {
            Ok(d) => d,
            Err(d) => d,
        };
        probes.push(Probe { what, dest, expected, observed, detail, ok: observed == expected && extra_ok });
    };
    let c = lab.client.clone();
    let in_client = |f: Box<dyn FnOnce() -> Result<String, String> + Send>| -> Result<String, String> {
        sluice_lab::in_netns(&c, f).map_err(|e| e.to_string())?
    };

    // Names first: the web rule allows port 80 only to addresses the node learned from
    // answers to allowed names.
    let r = in_client(Box::new(move || {
        probe::dns_query(RESOLVER, "allowed.test", allow_t).map(|a| format!("allowed.test A {}", a.join(", ")))
    }));
    let answered = r.as_ref().is_ok_and(|d| d.contains(WEB));
    add("DNS allowed.test", format!("{RESOLVER}:53"), Outcome::Allowed, r, answered);
    let r = in_client(Box::new(move || probe::dns_query(RESOLVER, "blocked.test", allow_t).map(|a| a.join(", "))));
    let refused = r.as_ref().is_err_and(|d| d == "NXDOMAIN");
    let observed_refusal = if refused { Outcome::Refused } else { Outcome::Allowed };
    let refusal = Probe {
        what: "DNS blocked.test",
        dest: format!("{RESOLVER}:53"),
        expected: Outcome::Refused,
        observed: observed_refusal,
        detail: r.unwrap_or_else(|e| e),
        ok: refused,
    };
    let web = in_client(Box::new(move || {
        probe::http_get(WEB, HTTP_PORT, allow_t).map(|(status, body)| format!("{status} | {body}"))
    }));
    let natted = web.as_ref().is_ok_and(|d| d.contains("203.0.113.2"));
    add("HTTP GET (resolved)", format!("{WEB}:{HTTP_PORT}"), Outcome::Allowed, web, natted);
    let r = in_client(Box::new(move || probe::tcp_echo(WEB, SSH_PORT, drop_t)));
    add("TCP (port not in rule)", format!("{WEB}:{SSH_PORT}"), Outcome::Dropped, r, true);
    let r = in_client(Box::new(move || probe::http_get(WEB2, HTTP_PORT, drop_t).map(|(s, _)| s)));
    add("HTTP GET (no lookup)", format!("{WEB2}:{HTTP_PORT}"), Outcome::Dropped, r, true);
    let r = in_client(Box::new(move || probe::http_get(BLOCKED, HTTP_PORT, drop_t).map(|(s, _)| s)));
    add("HTTP GET", format!("{BLOCKED}:{HTTP_PORT}"), Outcome::Dropped, r, true);
    let r = in_client(Box::new(move || probe::udp_echo(WEB, ECHO_PORT, allow_t)));
    add("UDP echo", format!("{WEB}:{ECHO_PORT}"), Outcome::Allowed, r, true);
    let r = ping(&lab.client, WEB);
    add("ping", WEB.to_string(), Outcome::Allowed, r, true);
    let r = ping(&lab.client, BLOCKED);
    add("ping", BLOCKED.to_string(), Outcome::Dropped, r, true);
    probes.insert(1, refusal);
    Ok(probes)
}

fn ping(ns: &str, addr: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-c", "2", "-i", "0.5", "-W", "2", addr])
        .output()
        .map_err(|e| format!("could not run ping: {e} (Debian package iputils-ping)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or("").trim().to_string();
    let rtt = text.lines().find(|l| l.contains("time=")).and_then(|l| l.split("time=").nth(1)).unwrap_or("");
    if out.status.success() {
        Ok(format!("reply, time={rtt}; {summary}"))
    } else if summary.is_empty() {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    } else {
        Err(format!("no reply; {summary}"))
    }
}

fn print_table(probes: &[Probe]) {
    let w_what = probes.iter().map(|p| p.what.len()).max().unwrap_or(0).max(5);
    let w_dest = probes.iter().map(|p| p.dest.len()).max().unwrap_or(0).max(11);
    println!(
        "{:<w_what$}  {:<w_dest$}  {:<8}  {:<8}  {:<4}  detail",
        "probe", "destination", "expected", "observed", ""
    );
    println!("{}", "-".repeat(w_what + w_dest + 40));
    for p in probes {
        println!(
            "{:<w_what$}  {:<w_dest$}  {:<8}  {:<8}  {:<4}  {}",
            p.what,
            p.dest,
            p.expected.name(),
            p.observed.name(),
            if p.ok { "ok" } else { "FAIL" },
            p.detail
        );
    }
}

/// The heading a counter is shown under.
fn group_of(n: &str) -> &'static str {
    if n.starts_with("allowed") {
        "allowed"
    } else if n.starts_with("denied") || n == "policy_denied" || n == "policy_revoked" {
        "denied"
    } else if n.starts_with("flows") || n.starts_with("nat_") || n.contains("originated") {
        "flows"
    } else if n.starts_with("policy") {
        "policy"
    } else if n.contains("_rx_") || n.contains("_tx_") || n.starts_with("arp") || n.starts_with("icmp_errors") {
        "packets"
    } else {
        "drops"
    }
}

fn print_counters(counters: &[(String, u64)]) {
    println!("Node counters (non-zero; all in stats.json):");
    let mut any = false;
    for title in ["allowed", "denied", "flows", "drops", "packets", "policy"] {
        let items: Vec<String> =
            counters.iter().filter(|(n, v)| *v > 0 && group_of(n) == title).map(|(n, v)| format!("{n}={v}")).collect();
        if !items.is_empty() {
            any = true;
            println!("  {title:<8} {}", items.join("  "));
        }
    }
    if !any {
        println!("  (all zero)");
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn demo(o: &Opts) -> Result<u8, String> {
    let (sluice, policy, me) = paths(o)?;
    if !o.check {
        // Ctrl-C ends the exploration and tears the lab down in order.
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
    }
    let lab = build(&me)?;
    println!("starting the Sluice node in {} with policy {}", lab.node, policy.display());
    let node: Node = match lab.start_node(&sluice, &policy, o.software_io.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            return Ok(1);
        }
    };
    println!("node running (pid {}); sending traffic from {} (10.10.0.2)\n", node.pid().unwrap_or(0), lab.client);
    let probes = run_probes(&lab)?;
    print_table(&probes);
    println!(
        "\nThe client resolves through the node ({RESOLVER}): allowed names are answered and their\n\
         addresses opened for the rule's ports only; other names get NXDOMAIN; an address nobody\n\
         looked up is dropped. The node asks {DNS} through its external port, source-NATed.\n"
    );
    match node.fresh_counters() {
        Ok(c) => print_counters(&c),
        Err(e) => println!("could not read the node's counters: {e}"),
    }
    let failed: Vec<&Probe> = probes.iter().filter(|p| !p.ok).collect();
    println!();
    if failed.is_empty() {
        println!("All {} probes saw what the policy says.", probes.len());
    } else {
        println!("{} of {} probes did not see what was expected:", failed.len(), probes.len());
        for p in &failed {
            println!(
                "  {} {}: expected {}, observed {} ({})",
                p.what,
                p.dest,
                p.expected.name(),
                p.observed.name(),
                p.detail
            );
        }
    }
    if o.check {
        return Ok(if failed.is_empty() { 0 } else { 1 });
    }
    println!();
    print_explore(&lab);
    println!("\nPress Ctrl-C to stop the node and remove the lab.");
    let mut node = node;
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping the node and removing the lab");
    match node.stop() {
        Ok(status) => println!("node exited: {status}"),
        Err(e) => eprintln!("{e}"),
    }
    drop(lab);
    Ok(if failed.is_empty() { 0 } else { 1 })
}
