//! `sluice run` with real packets, in software mode and (with the `dpdk` feature) in DPDK
//! mode on `net_af_packet` ports over the same veths: the real binary runs in the node
//! namespace of a client / node / upstream lab (see the io crate's netns harness, shared
//! here) and is driven by signals, as an operator or the lab tooling would. Each scenario is
//! one function run once per mode.
//!
//! These tests need root (namespaces, veths, TAPs); without it they fail and say so.

mod node_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use node_harness::{
    http_get, in_netns, links, ping, require_root, tcp_server, ttl_one_probe, udp_ask, udp_echo, Lab, Launch, Mode,
    Sluice, POLICY, SERVER,
};

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

#[test]
fn software_node_forwards_what_the_policy_allows_and_stops_cleanly() {
    forwards_what_the_policy_allows_and_stops_cleanly(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_node_forwards_what_the_policy_allows_and_stops_cleanly() {
    forwards_what_the_policy_allows_and_stops_cleanly(Mode::Dpdk);
}

#[test]
fn xdp_node_forwards_what_the_policy_allows_and_stops_cleanly() {
    forwards_what_the_policy_allows_and_stops_cleanly(Mode::Xdp);
}

/// `ip -d link show` of a node port: names the XDP program attached to it, if any.
fn port_link(lab: &Lab, dev: &str) -> String {
    let out =
        std::process::Command::new("ip").args(["-n", &lab.node, "-d", "link", "show", "dev", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn forwards_what_the_policy_allows_and_stops_cleanly(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let mut node = Sluice::start(&lab, dir.path(), &Launch { mode, policy: Some(&policy), ..Launch::default() });
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
    if mode == Mode::Dpdk {
        // The driver's own counters, read from the control thread while the worker polls.
        let dpdk = &stats["dpdk"];
        assert_eq!(dpdk["internal"]["device"], "net_af_packet0", "{dpdk:#}");
        assert!(dpdk["internal"]["rx_packets"].as_u64().unwrap() > 0, "{dpdk:#}");
        assert!(dpdk["external"]["tx_packets"].as_u64().unwrap() > 0, "{dpdk:#}");
        assert!(dpdk["external"]["xstats"].is_object(), "{dpdk:#}");
    } else {
        assert!(stats.get("dpdk").is_none(), "no driver section in software mode");
    }
    for dev in [&lab.node_in, &lab.node_out] {
        assert_eq!(port_link(&lab, dev).contains("xdp"), mode == Mode::Xdp, "{}", port_link(&lab, dev));
    }
    let port_io = match mode {
        Mode::Software => "af-packet",
        Mode::Xdp => "af-xdp",
        Mode::Dpdk => "dpdk",
    };
    assert_eq!(stats["port_io"], port_io);
    if mode == Mode::Xdp {
        assert!(node.log_text().contains("AF_XDP port open"), "{}", node.log_text());
    }

    let (status, took) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    // Drain (200 ms) and the bounded shutdown steps; generous, for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let log = node.log_text();
    assert!(log.contains("final counters") && log.contains("service lane removed"), "{log}");
    assert!(!links(&lab).contains("sl-lane"), "the TAP is gone:\n{}", links(&lab));
    assert_eq!(node.stats()["running"], false, "the last stats file says it stopped");
    for dev in [&lab.node_in, &lab.node_out] {
        assert!(!port_link(&lab, dev).contains("xdp"), "nothing left attached: {}", port_link(&lab, dev));
    }

    // The port locks are released: another node starts on the same ports and stops on SIGINT.
    let mut again =
        Sluice::start(&lab, dir.path(), &Launch { mode, policy: Some(&policy), run: 2, ..Launch::default() });
    assert!(ping(&lab, [198, 51, 100, 10]), "the second node forwards");
    let (status, _) = again.stop(libc::SIGINT, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", again.log_text());
}

#[test]
fn sighup_applies_a_new_policy_to_existing_flows_and_refuses_a_broken_one() {
    sighup_applies_a_new_policy(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_sighup_applies_a_new_policy_to_existing_flows_and_refuses_a_broken_one() {
    sighup_applies_a_new_policy(Mode::Dpdk);
}

#[test]
fn xdp_sighup_applies_a_new_policy_to_existing_flows_and_refuses_a_broken_one() {
    sighup_applies_a_new_policy(Mode::Xdp);
}

fn sighup_applies_a_new_policy(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let mut node = Sluice::start(&lab, dir.path(), &Launch { mode, policy: Some(&policy), ..Launch::default() });
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
    node.wait_log("policy reloaded: stored as version 2");
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
    assert_eq!(node.fresh_stats()["policy_generation"], 2, "the broken file was not published");
    assert_eq!(udp_ask(&lab, 7, b"kept", 10).as_deref(), Some(&b"kept"[..]));
    assert!(http_get(&lab, 80).is_err(), "the web rule is still gone");

    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
}

#[test]
fn without_a_policy_nothing_leaves_but_the_node_itself_answers() {
    without_a_policy(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_without_a_policy_nothing_leaves_but_the_node_itself_answers() {
    without_a_policy(Mode::Dpdk);
}

fn without_a_policy(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Sluice::start(&lab, dir.path(), &Launch { mode, ..Launch::default() });
    assert!(node.log_text().contains("applying a deny-all policy"), "{}", node.log_text());
    let _echo = udp_echo(&lab.upstream, 7);
    assert_eq!(udp_ask(&lab, 7, b"out?", 3), None, "nothing leaves without a policy");
    assert!(!ping(&lab, [198, 51, 100, 10]), "not even ping");
    assert!(ping(&lab, [10, 10, 0, 1]), "the node's own address answers through the service lane");
    node.signal(libc::SIGHUP);
    node.wait_log("nothing to reload");
    assert!(node.counter("policy_denied") >= 2, "{:#}", node.stats()["counters"]);
    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
}

/// `--software-io af-xdp` on ports it cannot serve stops at start with the port-open exit
/// code and says why and what to do: an interface with two receive queues, and an interface
/// another XDP program already holds.
#[test]
fn xdp_ports_it_cannot_serve_stop_the_node_with_a_clear_error() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    // `sluice run --software-io af-xdp` to its exit: the exit code and what it printed.
    let run = |internal: &str, data_dir: &std::path::Path| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice"), "run", "--software-io", "af-xdp"])
            .args(["--internal-port", internal, "--external-port", &lab.node_out])
            .args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"])
            .args(["--gateway", "203.0.113.1", "--data-dir"])
            .arg(data_dir)
            .env_remove("SLUICE_CONFIG")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
    };
    let (mq, peer) = (format!("{}mq", lab.prefix), format!("{}mr", lab.prefix));
    let made = std::process::Command::new("ip")
        .args(["-n", &lab.node, "link", "add", &mq, "numrxqueues", "2", "numtxqueues", "2", "type", "veth"])
        .args(["peer", "name", &peer])
        .status()
        .unwrap();
    assert!(made.success());
    let (code, log) = run(&mq, dir.path());
    assert_eq!(code, Some(22), "{log}");
    assert!(log.contains("cannot open the internal port") && log.contains("ethtool -L"), "{log}");

    // A node already on the ports: the second one is refused before it touches them.
    let mut first = Sluice::start(&lab, dir.path(), &Launch { mode: Mode::Xdp, ..Launch::default() });
    let other = tempfile::tempdir().unwrap();
    let (code, log) = run(&lab.node_in, other.path());
    assert_eq!(code, Some(22), "{log}");
    assert!(log.contains("another XDP program is attached"), "{log}");
    assert!(ping(&lab, [10, 10, 0, 1]), "the first node still answers through its ports");
    let (status, _) = first.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
}
