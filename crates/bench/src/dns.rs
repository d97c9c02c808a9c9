//! `sluice-bench dns`: the DNS proxy against dnsmasq configured as a plain forwarder, both on
//! the node of one lab (design §9), both forwarding to the same upstream (dnsmasq as the
//! authoritative server in the upstream namespace) through the same path (service lane,
//! engine, SNAT, external port), both queried by `dnsperf` from the client namespace.
//!
//! - `dns_sluice_qps`, `dns_dnsmasq_qps`: completed queries per second, dnsperf unthrottled
//!   with the same clients and outstanding queries; the loss of each run is printed too.
//! - `dns_vs_dnsmasq_ratio`: the first over the second.
//! - `dns_p99_added_ms`: p99 of sequential queries through the proxy minus p99 of the same
//!   queries sent straight to the upstream (allowed by an IP rule, through the engine).
//! - `dns_direct_qps`: dnsperf straight to the upstream through the engine (one pass, no
//!   forwarder): the ceiling any forwarder on this node can reach in this lab, since client,
//!   engine and upstream share the machine's CPUs with it.
//! - `dns_sluice_cpu_us_per_query`, `dns_dnsmasq_cpu_us_per_query`: CPU time of the proxy
//!   thread (`sluice-dns`) and of the forwarder process per answered query during their
//!   dnsperf runs; `dns_cpu_per_query_ratio` is dnsmasq's over the proxy's (above 1: the proxy
//!   spends less CPU per query). Unlike the rates, these do not depend on how the other
//!   programs of the lab share the CPUs.
//!
//! Every query is for an allowed name, so each one the proxy answers went upstream and put
//! its address into the allowlist before the answer left. Needs root, `dnsperf` and
//! `dnsmasq`, and the `sluice` binary next to this one (`cargo xtask bench dns` builds it).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_lab::{in_netns, Lab, Node, DNS, WEB};

/// Where the forwarder listens (the lane address, another port than the proxy's 53).
const FORWARDER_PORT: u16 = 5353;
const RESOLVER: &str = "10.10.0.1";

const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "hostnames": ["allowed.test"], "proto": "tcp", "dst_ports": [80] } },
        { "id": "direct-dns", "action": "allow", "match": { "proto": "udp", "dst_ports": [53], "dst_cidrs": ["198.51.100.53/32"] } }
      ] }
  ]
}"#;

pub struct Results {
    pub figures: Vec<(&'static str, f64)>,
    /// Loss (percent) of the sluice and dnsmasq dnsperf runs.
    pub loss: (f64, f64),
}

/// A process group killed on drop (dnsmasq forks per TCP connection).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: plain system call on our own child's process group.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, args: &[String], log: &Path) -> Result<Group, String> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map(Group)
        .map_err(|e| format!("cannot start {}: {e}", args[0]))
}

fn dnsmasq(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--bind-interfaces", "--user=root", "--pid-file=", "--log-facility=-"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// An A query for allowed.test with id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07allowed\x04test\x00\x00\x01\x00\x01");
    q
}

/// Sends `n` queries one after the other to `server:port` from the client namespace and
/// returns the round-trip times in milliseconds (each answered, or an error).
fn sequential_rtts(lab: &Lab, server: &'static str, port: u16, n: usize) -> Result<Vec<f64>, String> {
    in_netns(&lab.client, move || {
        let s = UdpSocket::bind("10.10.0.2:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut rtts = Vec::with_capacity(n);
        let mut buf = [0u8; 512];
        for i in 0..n {
            let q = query(i as u16);
            let t0 = Instant::now();
            s.send_to(&q, (server, port)).map_err(|e| e.to_string())?;
            loop {
                let len = s.recv(&mut buf).map_err(|e| format!("query {i} to {server}:{port}: {e}"))?;
                if len >= 4 && buf[..2] == q[..2] {
                    if buf[3] & 0x0F != 0 {
                        return Err(format!("{server}:{port} answered rcode {}", buf[3] & 0x0F));
                    }
                    break;
                }
            }
            rtts.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(rtts)
    })
    .map_err(|e| e.to_string())?
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// CPU seconds used so far by process `pid`, or by its threads named `thread` only.
fn cpu_seconds(pid: u32, thread: Option<&str>) -> Result<f64, String> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |stat: &str| -> Option<u64> {
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
    let total = match thread {
        None => ticks(&read(PathBuf::from(format!("/proc/{pid}/stat")))?).ok_or("unreadable stat")?,
        Some(name) => {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
            let mut sum = 0;
            for task in tasks.flatten() {
                if read(task.path().join("comm")).map(|c| c.trim() == name).unwrap_or(false) {
                    sum += read(task.path().join("stat")).ok().as_deref().and_then(ticks).unwrap_or(0);
                }
            }
            sum
        }
    };
    Ok(total as f64 / hz)
}

/// One dnsperf run's figures.
struct Run {
    qps: f64,
    loss: f64,
    /// CPU microseconds the measured program spent per completed query.
    cpu_us_per_query: f64,
}

/// dnsperf against `server:port` while measuring the CPU time of `pid` (or of its threads
/// named `thread`).
fn measured_dnsperf(
    lab: &Lab,
    data: &Path,
    (server, port): (&str, u16),
    seconds: u32,
    (pid, thread): (u32, Option<&str>),
) -> Result<Run, String> {
    let before = cpu_seconds(pid, thread)?;
    let (qps, loss) = dnsperf(lab, data, server, port, seconds)?;
    let used = cpu_seconds(pid, thread)? - before;
    let queries = (qps * f64::from(seconds)).max(1.0);
    Ok(Run { qps, loss, cpu_us_per_query: used / queries * 1e6 })
}

/// dnsperf from the client namespace; (completed queries per second, loss percent).
fn dnsperf(lab: &Lab, data: &Path, server: &str, port: u16, seconds: u32) -> Result<(f64, f64), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.client, "dnsperf", "-s", server, "-p", &port.to_string()])
        .arg("-d")
        .arg(data)
        .args(["-l", &seconds.to_string(), "-c", "8", "-q", "256", "-t", "2"])
        .output()
        .map_err(|e| format!("cannot run dnsperf (Debian package dnsperf): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number_after = |label: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
    };
    let qps = number_after("Queries per second").ok_or_else(|| format!("no qps in dnsperf output:\n{text}"))?;
    let loss = text
        .lines()
        .find(|l| l.trim_start().starts_with("Queries lost"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|p| p.trim_end_matches([')', '%']).trim_end_matches('%').parse().ok())
        .unwrap_or(100.0);
    Ok((qps, loss))
}

pub(crate) fn sluice_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.parent().map(|d| d.join("sluice")).ok_or("no directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("no sluice binary at {} (cargo xtask bench builds it; or set SLUICE_BIN)", path.display()))
    }
}

pub fn run(quick: bool) -> Result<Results, String> {
    let sluice = sluice_binary()?;
    let mut lab = Lab::unique().map_err(|e| e.to_string())?;
    // The authoritative upstream.
    let upstream = spawn_in(
        &lab.upstream,
        &dnsmasq(&[
            &format!("--listen-address={DNS}"),
            "--port=53",
            "--dns-forward-max=4096",
            &format!("--address=/allowed.test/{WEB}"),
        ]),
        &lab.dir.join("upstream-dnsmasq.log"),
    )?;
    let policy = lab.dir.join("bench-dns-policy.json");
    std::fs::write(&policy, POLICY).map_err(|e| e.to_string())?;
    let node = Node::start(&lab, &sluice, &policy, &lab.dir.join("node")).map_err(|e| e.to_string())?;
    // The forwarder beside the proxy: no cache (every query goes upstream, as with the
    // proxy), upstream reached through the same host route out of the service lane.
    let forwarder = spawn_in(
        &lab.node,
        &dnsmasq(&[
            &format!("--listen-address={RESOLVER}"),
            &format!("--port={FORWARDER_PORT}"),
            &format!("--server={DNS}"),
            "--cache-size=0",
            "--dns-forward-max=4096",
        ]),
        &lab.dir.join("forwarder-dnsmasq.log"),
    )?;
    std::thread::sleep(Duration::from_millis(500));

    // Warm up every path (ARP, flows), and prove each answers.
    for (server, port) in [(DNS, 53), (RESOLVER, 53), (RESOLVER, FORWARDER_PORT)] {
        sequential_rtts(&lab, server, port, 20).map_err(|e| format!("{e}\nnode log:\n{}", node.log_text()))?;
    }
    let n = if quick { 300 } else { 3000 };
    let direct = p99(sequential_rtts(&lab, DNS, 53, n)?);
    let proxied = p99(sequential_rtts(&lab, RESOLVER, 53, n)?);

    let data = lab.dir.join("queries.txt");
    std::fs::write(&data, "allowed.test A\n".repeat(100)).map_err(|e| e.to_string())?;
    let seconds = if quick { 3 } else { 15 };
    let node_pid = node.pid().ok_or("the node has no pid")?;
    let sluice = measured_dnsperf(&lab, &data, (RESOLVER, 53), seconds, (node_pid, Some("sluice-dns")))?;
    let dnsmasq = measured_dnsperf(&lab, &data, (RESOLVER, FORWARDER_PORT), seconds, (forwarder.0.id(), None))?;
    let (direct_qps, direct_loss) = dnsperf(&lab, &data, DNS, 53, seconds)?;
    println!(
        "dnsperf: sluice {:.0} q/s ({}% lost, proxy thread {:.1} us CPU/query), dnsmasq forwarder {:.0} q/s \
         ({}% lost, {:.1} us CPU/query), straight to the upstream {direct_qps:.0} q/s ({direct_loss}% lost); \
         p99 sequential: direct {direct:.3} ms, through the proxy {proxied:.3} ms",
        sluice.qps, sluice.loss, sluice.cpu_us_per_query, dnsmasq.qps, dnsmasq.loss, dnsmasq.cpu_us_per_query
    );
    let (sluice_qps, sluice_loss, dnsmasq_qps, dnsmasq_loss) = (sluice.qps, sluice.loss, dnsmasq.qps, dnsmasq.loss);
    drop(forwarder);
    drop(node);
    drop(upstream);
    lab.keep = false;
    Ok(Results {
        figures: vec![
            ("dns_sluice_qps", sluice_qps),
            ("dns_dnsmasq_qps", dnsmasq_qps),
            ("dns_vs_dnsmasq_ratio", sluice_qps / dnsmasq_qps.max(1.0)),
            ("dns_p99_added_ms", proxied - direct),
            ("dns_direct_qps", direct_qps),
            ("dns_sluice_cpu_us_per_query", sluice.cpu_us_per_query),
            ("dns_dnsmasq_cpu_us_per_query", dnsmasq.cpu_us_per_query),
            ("dns_cpu_per_query_ratio", dnsmasq.cpu_us_per_query / sluice.cpu_us_per_query.max(1e-9)),
        ],
        loss: (sluice_loss, dnsmasq_loss),
    })
}
