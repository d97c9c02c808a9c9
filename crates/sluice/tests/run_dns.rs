//! Hostname policy end to end: `dig` in the client namespace asks the node's DNS proxy
//! (10.10.0.1, through the internal port and the service lane), the proxy asks dnsmasq in the
//! upstream namespace (198.51.100.53, through the service lane, the engine's SNAT and the
//! external port: the node namespace has no other way there), and real TCP connections show
//! what the learned addresses open. Each scenario runs in software and (with the `dpdk`
//! feature) DPDK mode.
//!
//! Needs root, `dig` (Debian: dnsutils) and `dnsmasq` (dnsmasq-base).

mod node_harness;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use node_harness::dns::{
    add_upstream_addresses, connect, dig, dnsmasq_log, status, Acceptor, Dnsmasq, DNS_SERVER, WEB, WEB2,
};
use node_harness::{in_netns, require_root, tcp_server, Lab, Launch, Mode, Sluice};

/// Hostname rules only: nothing leaves unless a name was resolved through the node.
const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow",
          "match": { "hostnames": ["allowed.test", "*.alias.test", "big.test", "short.test"], "proto": "tcp", "dst_ports": [80, 7] } }
      ] }
  ]
}"#;

fn start(lab: &Lab, dir: &std::path::Path, mode: Mode, extra: &[&str]) -> Sluice {
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let mut flags = vec!["--dns-upstream", DNS_SERVER];
    flags.extend_from_slice(extra);
    Sluice::start(lab, dir, &Launch { mode, policy: Some(&policy), extra: &flags, ..Launch::default() })
}

fn dns_counter(node: &Sluice, name: &str) -> u64 {
    node.fresh_stats()["dns"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no dns counter {name}: {:#}", node.stats()))
}

#[test]
fn software_hostname_policy_end_to_end() {
    hostname_policy_end_to_end(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_hostname_policy_end_to_end() {
    hostname_policy_end_to_end(Mode::Dpdk);
}

#[test]
fn xdp_hostname_policy_end_to_end() {
    hostname_policy_end_to_end(Mode::Xdp);
}

fn hostname_policy_end_to_end(mode: Mode) {
    require_root();
    let lab = Lab::new();
    add_upstream_addresses(&lab);
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Dnsmasq::start(&lab);
    let node = start(&lab, dir.path(), mode, &[]);
    let (_web, _web2) = (tcp_server(&lab.upstream, 80), Acceptor::start(&lab, WEB2));

    // Allowed name: answered (through the upstream path), and its address opens the rule's port.
    // Asked like a stub resolver, which tries again: the very first query out waits for the
    // dataplane to resolve the gateway, and a busy machine may stretch that.
    let out = (0..3).map(|_| dig(&lab, &["allowed.test"])).find(|o| status(o) == "NOERROR").unwrap_or_default();
    assert_eq!(status(&out), "NOERROR", "{out}\n{}", node.log_text());
    assert!(out.contains(&format!("allowed.test.\t\t300\tIN\tA\t{WEB}")) || out.contains(WEB), "{out}");
    // The node's stack gets each client packet once, through the lane only (its kernel also
    // sees the internal port's frames, and must not take them).
    let sink = in_netns(&lab.node, || UdpSocket::bind("10.10.0.1:5555").unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    in_netns(&lab.client, || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        for i in 0..10u8 {
            s.send_to(&[i; 20], "10.10.0.1:5555").unwrap();
        }
    });
    // All ten (waiting up to 5 s for a slow machine), then a quiet moment: no duplicates.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 10 && std::time::Instant::now() < deadline {
        if sink.recv(&mut buf).is_ok() {
            got.push(buf[0]);
        }
    }
    while sink.recv(&mut buf).is_ok() {
        got.push(buf[0]);
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>(), "each datagram once, in order");
    connect(&lab, WEB, 80).expect("the learned address is open on the rule's port");
    // ... and only on the rule's ports.
    let e = connect(&lab, WEB, 22).expect_err("port 22 is not in the rule");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "dropped, not refused: {e}");

    // Denied name: NXDOMAIN from the proxy, with the reason for EDNS clients.
    let out = dig(&lab, &["denied.test"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains("EDE: 15 (Blocked)"), "{out}");

    // An address nobody looked up is dropped, even on an allowed port...
    let e = connect(&lab, WEB2, 80).expect_err("direct IP without a lookup");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    // ... until a name allowed by a rule resolves to it through a CNAME: the alias's address
    // belongs to the name asked for.
    let out = dig(&lab, &["www.alias.test"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("CNAME\ttarget.test.") && out.contains(WEB2), "{out}");
    connect(&lab, WEB2, 80).expect("the CNAME target's address is open");

    // 0x20: the answer comes back in the client's letter case.
    let out = dig(&lab, &["AlLoWeD.TeSt", "+noall", "+answer"]);
    assert!(out.trim_start().starts_with("AlLoWeD.TeSt."), "{out}");

    // Truncation: too big for 512 bytes over UDP, so TC to the client; the proxy itself
    // fetched the whole answer over TCP, and over TCP the client gets it.
    let out = dig(&lab, &["+noedns", "+ignore", "big.test"]);
    assert!(out.contains("flags: qr tc") || out.contains(" tc "), "{out}");
    let out = dig(&lab, &["+tcp", "big.test"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 150"), "{out}");
    assert!(dns_counter(&node, "upstream_tcp_retries") >= 1);
    assert!(dns_counter(&node, "allowlist_over_cap") >= 118, "150 addresses, 32 kept per answer");

    // A flood of garbage at the proxy leaves it serving. Sent in short bursts: what is
    // measured is the proxy's handling, not how many frames a busy test machine's receive
    // rings can hold when 2000 arrive at once.
    let malformed = || {
        let counters = &node.stats()["dns"]["counters"];
        counters["formerr"].as_u64().unwrap_or(0) + counters["malformed_dropped"].as_u64().unwrap_or(0)
    };
    let before = malformed();
    in_netns(&lab.client, || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        for i in 0..2000u32 {
            let mut pkt = (i.wrapping_mul(2_654_435_761)).to_be_bytes().repeat(1 + (i % 7) as usize);
            pkt[2] &= 0x7F;
            let _ = s.send_to(&pkt, "10.10.0.1:53");
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let out = (0..3).map(|_| dig(&lab, &["allowed.test"])).find(|o| status(o) == "NOERROR");
    assert!(out.is_some(), "the proxy still answers after the flood");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut counted = malformed() - before;
    while counted < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        counted = malformed() - before;
    }
    assert!(counted >= 500, "only {counted} of 2000 malformed queries counted");

    // Upstream down: SERVFAIL; back: answers again.
    drop(upstream);
    let out = dig(&lab, &["allowed.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    upstream = Dnsmasq::start(&lab);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = dig(&lab, &["allowed.test"]);
        if status(&out) == "NOERROR" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover when the upstream came back:\n{out}\n{:#}\n{}\n{}",
            node.stats()["dns"],
            std::fs::read_to_string(dnsmasq_log(&lab)).unwrap_or_default(),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(upstream);
    assert!(dns_counter(&node, "nxdomain_policy") >= 1);

    // A policy write that keeps the rule's names keeps what was learned for it: no new lookup.
    let policy = dir.path().join("policy.json");
    let more = POLICY.replace(
        r#"      ] }"#,
        r#"      , { "id": "ntp", "action": "allow", "match": { "proto": "udp", "dst_ports": [123], "dst_cidrs": ["203.0.113.0/24"] } } ] }"#,
    );
    assert_ne!(more, POLICY);
    std::fs::write(&policy, &more).unwrap();
    node.signal(libc::SIGHUP);
    node.wait_generation(2);
    connect(&lab, WEB, 80).expect("learned addresses survive a policy write that keeps the rule");
    // One that changes the rule's names drops them.
    std::fs::write(&policy, more.replace(r#""allowed.test", "#, "")).unwrap();
    node.signal(libc::SIGHUP);
    node.wait_generation(3);
    let e = connect(&lab, WEB, 80).expect_err("the rule's names changed: its learned addresses are gone");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
}

#[test]
fn software_ttl_expiry_stops_new_connections_not_live_ones() {
    ttl_expiry_stops_new_connections_not_live_ones(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_ttl_expiry_stops_new_connections_not_live_ones() {
    ttl_expiry_stops_new_connections_not_live_ones(Mode::Dpdk);
}

fn ttl_expiry_stops_new_connections_not_live_ones(mode: Mode) {
    require_root();
    let lab = Lab::new();
    add_upstream_addresses(&lab);
    let dir = tempfile::tempdir().unwrap();
    let _upstream = Dnsmasq::start(&lab);
    let node = start(&lab, dir.path(), mode, &["--dns-ttl-floor", "3", "--dns-ttl-ceiling", "3"]);
    let _echo = tcp_server(&lab.upstream, 7);
    let out = dig(&lab, &["short.test"]);
    assert_eq!(status(&out), "NOERROR", "{out}\n{}", node.log_text());
    let mut live = connect(&lab, WEB, 7).expect("a connection while the address is fresh");
    live.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let e = connect(&lab, WEB, 7).expect_err("a new connection after the TTL");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    live.write_all(b"still here\n").unwrap();
    let mut buf = [0u8; 64];
    let n = live.read(&mut buf).expect("the live connection still carries data");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("still here"));
}

#[test]
fn a_taken_dns_port_stops_the_node_with_exit_24() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    // Something in the node's namespace already holds port 53 on every address.
    let squatter = in_netns(&lab.node, || UdpSocket::bind("0.0.0.0:53").expect("bind 0.0.0.0:53"));
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice"), "run"])
        .args(["--internal-port", &lab.node_in, "--external-port", &lab.node_out])
        .args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"])
        .args(["--gateway", "203.0.113.1", "--dns-upstream", DNS_SERVER, "--data-dir"])
        .arg(dir.path())
        .env_remove("SLUICE_CONFIG")
        .output()
        .unwrap();
    drop(squatter);
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(24), "{log}");
    assert!(log.contains("cannot start the DNS proxy") && log.contains("10.10.0.1:53"), "{log}");
}
