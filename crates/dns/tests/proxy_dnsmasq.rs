//! The proxy against real dnsmasq upstreams on loopback, with a real allowlist drained by a
//! worker thread as a dataplane worker would: what clients get, what the allowlist holds
//! when they get it, and how the proxy copes with failing upstreams and garbage.
//!
//! Needs `dnsmasq` (Debian: dnsmasq-base); loopback only, so no root.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use sluice_dataplane::allowlist::{allowlist_channel, Allowlist, AllowlistConfig};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dns::proxy::monotonic_ns;
use sluice_dns::{DnsConfig, DnsCounter, DnsProxy};
use sluice_policy::RuleKey;

const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "local", "priority": 10, "sources": { "cidrs": ["127.0.0.0/8"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "hostnames": ["allowed.test", "*.alias.test", "big.test", "slow.test"], "proto": "tcp", "dst_ports": [443] } }
      ] }
  ]
}"#;

/// A dnsmasq answering the test names on 127.0.0.1:`port`.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(port: u16) -> Dnsmasq {
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--user=root", "--log-facility=-", "--pid-file="])
            .arg(format!("--port={port}"))
            .arg("--host-record=allowed.test,198.51.100.10,120")
            .arg("--host-record=target.test,198.51.100.11,120")
            .arg("--cname=www.alias.test,target.test")
            .arg("--host-record=denied.test,198.51.100.20");
        // 150 addresses do not fit a 1232-byte UDP answer: dnsmasq truncates.
        for i in 0..150u32 {
            cmd.arg(format!("--host-record=big.test,10.77.{}.{}", i / 200, i % 200 + 1));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("start dnsmasq (Debian package dnsmasq-base)");
        let upstream = Dnsmasq(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ask_udp(SocketAddr::from(([127, 0, 0, 1], port)), &query(1, "allowed.test", true)).is_none() {
            assert!(Instant::now() < deadline, "dnsmasq did not answer on port {port}");
        }
        upstream
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An A query, with an OPT record (4096 bytes) when `edns`.
fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

fn ask_udp(server: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    s.send_to(q, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn ask_tcp(server: SocketAddr, queries: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Pipelined: every query before any answer is read.
    for q in queries {
        s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        s.write_all(q).unwrap();
    }
    let mut out = Vec::new();
    for _ in queries {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).unwrap();
        out.push(body);
    }
    out
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect()
}

/// A proxy on loopback with a worker thread draining the (single) allowlist.
struct Setup {
    proxy: DnsProxy,
    allowlist: Arc<Mutex<Allowlist>>,
    rule: RuleKey,
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Setup {
    fn new(upstreams: &[u16], tune: impl FnOnce(&mut DnsConfig)) -> Setup {
        Setup::with_policy(POLICY, upstreams, tune)
    }

    fn with_policy(policy: &str, upstreams: &[u16], tune: impl FnOnce(&mut DnsConfig)) -> Setup {
        let policy = sluice_policy::compile_json(policy).unwrap();
        let rule = policy.dns_decision(u32::from(Ipv4Addr::LOCALHOST), "allowed.test").learn_for[0];
        let (writer, mut lists) = allowlist_channel(1, &AllowlistConfig { capacity: 4096, channel_capacity: 64 });
        let allowlist = Arc::new(Mutex::new(lists.pop().unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, halt) = (Arc::clone(&allowlist), Arc::clone(&stop));
        let worker = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                list.lock().unwrap().drain(monotonic_ns(), 256);
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        let ups = upstreams.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()], ups);
        // Long enough that a descheduled dnsmasq on a loaded machine is not taken for a dead
        // one; a dead upstream here refuses at once (connected UDP), so nothing waits this long.
        config.upstream_timeout = Duration::from_secs(2);
        tune(&mut config);
        let proxy = DnsProxy::start(config, PolicyHandle::new(policy), writer).unwrap();
        Setup { proxy, allowlist, rule, stop, worker: Some(worker) }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.listening()[0]
    }

    fn ask(&self, name: &str, edns: bool) -> (Vec<u8>, Message) {
        let bytes = ask_udp(self.addr(), &query(0x1234, name, edns)).expect("the proxy answers");
        let m = Message::from_vec(&bytes).unwrap();
        (bytes, m)
    }

    fn learned(&self, ip: Ipv4Addr) -> bool {
        self.allowlist.lock().unwrap().contains(self.rule, u32::from(ip), monotonic_ns())
    }

    fn count(&self, c: DnsCounter) -> u64 {
        self.proxy.counters().get(c)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[test]
fn allowed_names_are_answered_after_the_allowlist_has_them_and_others_get_nxdomain() {
    let port = free_port();
    let _up = Dnsmasq::start(port);
    let s = Setup::new(&[port], |_| {});
    let web = Ipv4Addr::new(198, 51, 100, 10);

    let (_, m) = s.ask("allowed.test", true);
    assert_eq!((m.metadata.id, m.metadata.response_code), (0x1234, ResponseCode::NoError));
    assert_eq!(addresses(&m), [web]);
    assert!(s.learned(web), "the address is in the allowlist by the time the answer arrives");

    let (_, m) = s.ask("denied.test", true);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert!(!s.learned(Ipv4Addr::new(198, 51, 100, 20)));

    // The alias's address belongs to the name asked for.
    let (_, m) = s.ask("www.alias.test", true);
    let target = Ipv4Addr::new(198, 51, 100, 11);
    assert_eq!(addresses(&m), [target]);
    assert!(s.learned(target));

    assert_eq!(s.count(DnsCounter::NxdomainPolicy), 1);
    assert_eq!(s.count(DnsCounter::Answered), 2);
    assert_eq!(s.count(DnsCounter::AllowlistInserts), 2);
    // Asked again at once: the workers already hold the address, nothing is re-sent, and the
    // answer's TTL is no longer than what is left of the entry.
    let (_, m) = s.ask("allowed.test", true);
    assert_eq!(addresses(&m), [web]);
    assert!(m.answers[0].ttl <= 120, "{}", m.answers[0].ttl);
    assert_eq!(s.count(DnsCounter::AllowlistInserts), 2);
    assert!(s.proxy.counters().latency_histogram().iter().map(|(_, n)| n).sum::<u64>() >= 2);
}

#[test]
fn the_clients_letter_case_comes_back() {
    let port = free_port();
    let _up = Dnsmasq::start(port);
    let s = Setup::new(&[port], |_| {});
    let q = query(7, "AlLoWeD.tEsT", false);
    let a = ask_udp(s.addr(), &q).unwrap();
    let span = 12..q.len() - 4;
    assert_eq!(&a[span.clone()], &q[span], "question echoed in the client's case");
    let m = Message::from_vec(&a).unwrap();
    assert_eq!(m.answers[0].name.to_ascii(), "AlLoWeD.tEsT.");
}

#[test]
fn truncated_answers_are_fetched_over_tcp_on_a_reused_connection() {
    let port = free_port();
    let _up = Dnsmasq::start(port);
    let s = Setup::new(&[port], |c| c.limits.max_ips_per_name = 100);
    // Too big for the client's 512 bytes: TC, so it asks again over TCP.
    let (_, m) = s.ask("big.test", false);
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert!(s.count(DnsCounter::UpstreamTcpRetries) >= 1, "dnsmasq truncated over UDP, the proxy used TCP");
    let learned = (0..150u8).filter(|&i| s.learned(Ipv4Addr::new(10, 77, i / 200, i % 200 + 1))).count();
    assert_eq!(learned, 100, "the per-name cap: 100 of the 150 addresses learned");
    assert_eq!(s.count(DnsCounter::AllowlistOverCap), 50, "150 addresses, 100 kept");
    // Over TCP the client gets all 150, pipelined queries on one connection.
    let answers =
        ask_tcp(s.addr(), &[query(1, "big.test", false), query(2, "allowed.test", false), query(3, "big.test", true)]);
    let mut ids: Vec<u16> = answers.iter().map(|a| Message::from_vec(a).unwrap().metadata.id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    for a in &answers {
        let m = Message::from_vec(a).unwrap();
        assert_eq!(addresses(&m).len(), if m.metadata.id == 2 { 1 } else { 150 });
    }
    assert_eq!(s.count(DnsCounter::UpstreamTcpConnects), 1, "one upstream TCP connection carried every retry");
}

#[test]
fn a_dead_upstream_is_failed_over_and_all_dead_is_servfail_until_one_returns() {
    let (dead, live) = (free_port(), free_port());
    let up = Dnsmasq::start(live);
    let s = Setup::new(&[dead, live], |_| {});
    let (_, m) = s.ask("allowed.test", true);
    assert_eq!(addresses(&m), [Ipv4Addr::new(198, 51, 100, 10)]);
    assert!(s.count(DnsCounter::UpstreamFailovers) >= 1);
    // The dead one is now tried last: no failover needed.
    let failovers = s.count(DnsCounter::UpstreamFailovers);
    s.ask("allowed.test", true);
    assert_eq!(s.count(DnsCounter::UpstreamFailovers), failovers);

    drop(up);
    let (_, m) = s.ask("allowed.test", true);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(s.count(DnsCounter::Servfail) >= 1);

    let _back = Dnsmasq::start(dead);
    let (_, m) = s.ask("allowed.test", true);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "the proxy recovers when an upstream returns");
}

#[test]
fn a_flood_of_garbage_leaves_the_proxy_serving() {
    let port = free_port();
    let _up = Dnsmasq::start(port);
    let s = Setup::new(&[port], |_| {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let good = query(5, "allowed.test", true);
    for i in 0..3000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut pkt = match i % 3 {
            0 => seed.to_le_bytes().repeat(1 + i % 9),
            // A valid header over a broken body: FORMERR.
            1 => good[..good.len() - 3].to_vec(),
            // Bit flips in a valid query.
            _ => good.clone(),
        };
        if i % 3 == 2 {
            let at = 12 + (seed as usize % (pkt.len() - 12));
            pkt[at] ^= (seed >> 8) as u8 | 1;
        }
        pkt[2] &= 0x7F; // queries, not responses
        sock.send_to(&pkt, s.addr()).unwrap();
    }
    // The flood overflows the socket's receive queue while it lasts (the kernel drops what
    // does not fit), so ask like a stub resolver does: again after a timeout.
    let answer =
        (0..3).find_map(|_| ask_udp(s.addr(), &query(0x1234, "allowed.test", true))).expect("the proxy answers");
    assert_eq!(addresses(&Message::from_vec(&answer).unwrap()), [Ipv4Addr::new(198, 51, 100, 10)]);
    assert!(s.count(DnsCounter::Formerr) >= 100, "{:?}", s.proxy.counters().snapshot());
}

#[test]
fn an_audit_group_forwards_what_it_would_refuse_and_counts_it() {
    let port = free_port();
    let _up = Dnsmasq::start(port);
    let audit = POLICY.replace(r#""priority": 10,"#, r#""priority": 10, "mode": "audit","#);
    assert_ne!(audit, POLICY);
    let s = Setup::with_policy(&audit, &[port], |_| {});
    let (_, m) = s.ask("denied.test", true);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "audit mode does not break resolution");
    assert_eq!(addresses(&m), [Ipv4Addr::new(198, 51, 100, 20)]);
    assert_eq!(s.count(DnsCounter::AuditWouldDeny), 1);
    assert_eq!(s.count(DnsCounter::NxdomainPolicy), 0);
    assert!(!s.learned(Ipv4Addr::new(198, 51, 100, 20)), "allowed by audit only: nothing learned");
}
