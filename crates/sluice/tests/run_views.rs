//! The node-local listings of a real `sluice run`: a client resolves names through the
//! node's DNS proxy and opens a TCP connection through the dataplane, then
//! `GET /api/v1/dns/allowlist` shows the learned address under its rule (pinned by the
//! connection) and `GET /api/v1/flows` shows the connection with the SNAT port the upstream
//! server saw; filters narrow both, `limit=1` truncates. Needs root, `dig`, `dnsmasq`, `curl`.

mod node_harness;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_harness::{in_netns, require_root, tcp_server, Lab, Launch, Mode, Sluice, SERVER};
use serde_json::Value;

const DNS_SERVER: &str = "198.51.100.53";
const API: &str = "https://127.0.0.1:8443";

/// Two hostname rules whose names resolve to the same server: one address, two entries.
const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "hostnames": ["allowed.test"], "proto": "tcp", "dst_ports": [80] } },
        { "id": "echo", "action": "allow", "match": { "hostnames": ["echo.test"], "proto": "tcp", "dst_ports": [7] } }
      ] }
  ]
}"#;

/// dnsmasq answering the two names, in the upstream namespace; killed with its process group.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(lab: &Lab) -> Dnsmasq {
        let out = Command::new("ip")
            .args(["-n", &lab.upstream, "addr", "add", &format!("{DNS_SERVER}/32"), "dev", "lo"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.upstream, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts"])
            .args(["--conf-file=/dev/null", "--port=53", "--bind-interfaces", "--user=root", "--pid-file="])
            .arg(format!("--listen-address={DNS_SERVER}"))
            .arg(format!("--host-record=allowed.test,{SERVER},300"))
            .arg(format!("--host-record=echo.test,{SERVER},300"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start dnsmasq (Debian package dnsmasq-base)");
        let server = Dnsmasq(child);
        let ready = in_netns(&lab.upstream, || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
            (0..50).any(|_| s.send_to(&query, (DNS_SERVER, 53)).is_ok() && s.recv(&mut [0u8; 512]).is_ok())
        });
        assert!(ready, "dnsmasq did not answer within 10 s");
        server
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // SAFETY: plain system call on the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `dig` from the client at the node, asked like a stub resolver (a few tries: the very
/// first query out waits for the dataplane to resolve the gateway).
fn resolve(lab: &Lab, name: &str) {
    for _ in 0..3 {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.client, "dig", "@10.10.0.1", "+tries=1", "+time=4", "+short", name])
            .output()
            .expect("run dig (Debian package dnsutils)");
        if String::from_utf8_lossy(&out.stdout).trim() == SERVER {
            return;
        }
    }
    panic!("{name} did not resolve to {SERVER} through the node");
}

/// A GET over HTTPS from the node's namespace with a bearer token: (status, JSON body).
fn get(lab: &Lab, dir: &Path, token: &str, path: &str) -> (u16, Value) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, "curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(dir.join("api-cert.pem"))
        .args(["-H", &format!("Authorization: Bearer {token}"), &format!("{API}{path}")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl said: {text} {:?}", out.stderr));
    (status.trim().parse().expect("an HTTP status"), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn readonly_token(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "mint", "--role", "readonly", "--label", "views test", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn list<'a>(page: &'a Value, key: &str) -> &'a Vec<Value> {
    page[key].as_array().unwrap_or_else(|| panic!("no {key} in {page:#}"))
}

#[test]
fn software_listings_show_learned_addresses_and_flows() {
    listings_show_learned_addresses_and_flows(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_listings_show_learned_addresses_and_flows() {
    listings_show_learned_addresses_and_flows(Mode::Dpdk);
}

fn listings_show_learned_addresses_and_flows(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _dns = Dnsmasq::start(&lab);
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let extra = ["--dns-upstream", DNS_SERVER, "--http-bind", "127.0.0.1:8443"];
    let node =
        Sluice::start(&lab, dir.path(), &Launch { mode, policy: Some(&policy), extra: &extra, ..Launch::default() });
    let web = tcp_server(&lab.upstream, 80);
    let token = readonly_token(dir.path());

    resolve(&lab, "allowed.test");
    resolve(&lab, "echo.test");
    let to: SocketAddr = format!("{SERVER}:80").parse().unwrap();
    let mut conn = in_netns(&lab.client, move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .expect("the learned address is open on port 80");
    conn.write_all(b"hello\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert_eq!(line, "echo hello\n", "the connection is established end to end");
    let client_port = conn.local_addr().unwrap().port();
    let seen: Vec<SocketAddr> = web.peers().into_iter().collect();
    assert_eq!(seen.len(), 1, "one connection reached the server: {seen:?}");
    assert_eq!(seen[0].ip().to_string(), "203.0.113.2", "source-NATed to the external address");
    let snat_port = seen[0].port();

    // The allowlist: one address under both rules, the one the connection uses pinned.
    let (status, page) = get(&lab, dir.path(), &token, "/api/v1/dns/allowlist");
    assert_eq!(status, 200, "{page:#}\n{}", node.log_text());
    let entries = list(&page, "entries");
    assert_eq!(entries.len(), 2, "{page:#}");
    let web_entry = entries.iter().find(|e| e["rule"] == "web").unwrap_or_else(|| panic!("{page:#}"));
    assert_eq!(
        (&web_entry["ip"], &web_entry["group"], &web_entry["pinned"]),
        (&Value::from(SERVER), &Value::from("clients"), &Value::Bool(true))
    );
    let ttl = web_entry["expires_in_ms"].as_u64().unwrap();
    assert!(ttl > 200_000 && ttl <= 300_000, "within the record's 300 s TTL: {ttl}");
    assert_eq!(web_entry["rule_key"].as_str().map(str::len), Some(16));
    let echo_entry = entries.iter().find(|e| e["rule"] == "echo").unwrap_or_else(|| panic!("{page:#}"));
    assert_eq!(echo_entry["pinned"], false, "no flow through the echo rule");
    let (_, page) = get(&lab, dir.path(), &token, "/api/v1/dns/allowlist?rule=web");
    assert_eq!(list(&page, "entries").len(), 1, "{page:#}");
    let (_, page) = get(&lab, dir.path(), &token, &format!("/api/v1/dns/allowlist?ip={SERVER}&group=clients&limit=1"));
    assert_eq!((list(&page, "entries").len(), &page["truncated"]), (1, &Value::Bool(true)), "{page:#}");
    let (_, page) = get(&lab, dir.path(), &token, "/api/v1/dns/allowlist?group=nobody");
    assert!(list(&page, "entries").is_empty() && page["truncated"] == false, "{page:#}");

    // The flows: the client's connection with the port the server saw, and the DNS proxy's
    // own queries to its upstream (the host's flows).
    let (status, page) = get(&lab, dir.path(), &token, &format!("/api/v1/flows?dst={SERVER}&port=80"));
    assert_eq!(status, 200, "{page:#}");
    let flows = list(&page, "flows");
    assert_eq!(flows.len(), 1, "{page:#}");
    let flow = &flows[0];
    assert_eq!(
        (&flow["proto"], &flow["src"], &flow["src_port"]),
        (&Value::from("tcp"), &Value::from("10.10.0.2"), &Value::from(client_port))
    );
    assert_eq!(
        (&flow["nat_ip"], &flow["nat_port"]),
        (&Value::from("203.0.113.2"), &Value::from(snat_port)),
        "{flow:#}"
    );
    assert_eq!((&flow["state"], &flow["origin"]), (&Value::from("tcp_established"), &Value::from("internal")));
    assert_eq!(
        (&flow["group"], &flow["rule"]),
        (&Value::from("clients"), &Value::from("web")),
        "the rule that admitted it"
    );
    assert!(flow["idle_ms"].as_u64().unwrap() < 60_000 && flow["expires_in_ms"].as_u64().unwrap() > 0, "{flow:#}");
    let (_, page) = get(&lab, dir.path(), &token, "/api/v1/flows?proto=udp");
    let udp = list(&page, "flows");
    assert!(!udp.is_empty(), "the proxy's upstream queries: {page:#}");
    assert!(udp.iter().all(|f| f["proto"] == "udp" && f["dst"] == DNS_SERVER && f["origin"] == "host"), "{page:#}");
    let (_, page) = get(&lab, dir.path(), &token, "/api/v1/flows?limit=1");
    assert_eq!((list(&page, "flows").len(), &page["truncated"]), (1, &Value::Bool(true)), "{page:#}");
    let (_, page) = get(&lab, dir.path(), &token, "/api/v1/flows?src=10.10.0.99");
    assert!(list(&page, "flows").is_empty(), "{page:#}");

    drop(conn);
    // Seven listings went to the worker; `group=nobody` names no rule of the policy and was
    // answered without asking it.
    assert_eq!(node.counter("views_served"), 7);
}
