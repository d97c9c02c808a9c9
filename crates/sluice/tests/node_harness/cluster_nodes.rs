//! Several nodes, each in its own lab, on one management network: what the cluster and
//! disaster-recovery tests share.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cli::{sluice_in, Ran};
use super::mgmt::Mgmt;
use super::{udp_ask, udp_echo, Lab, Launch, Mode, Server, Sluice, POLICY};

/// The harness policy without the UDP echo rule.
pub fn policy_without_echo() -> String {
    let echo = r#"{ "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } },"#;
    assert!(POLICY.contains(echo), "the harness policy has the echo rule");
    POLICY.replace(echo, "")
}

pub struct Node {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
    pub index: usize,
    pub process: Option<Sluice>,
    pub _echo: Server,
    pub runs: usize,
}

impl Node {
    pub fn flags(&self, join: bool) -> Vec<String> {
        let me = Mgmt::address(self.index);
        let mut flags =
            vec!["--http-bind".to_owned(), format!("{me}:8443"), "--cluster-bind".to_owned(), format!("{me}:9600")];
        if join {
            flags.extend(["--join".to_owned(), format!("{}:9601", Mgmt::address(0))]);
        }
        flags
    }

    pub fn start(&mut self, policy: Option<&Path>, join: bool) {
        self.start_with(policy, join, None);
    }

    /// Starts `binary` (default: the one the tests were built with).
    pub fn start_with(&mut self, policy: Option<&Path>, join: bool, binary: Option<&Path>) {
        self.runs += 1;
        let flags = self.flags(join);
        let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
        let launch =
            Launch { mode: Mode::Software, policy, run: self.runs, extra: &extra, binary, ..Launch::default() };
        self.process = Some(Sluice::start(&self.lab, self.dir.path(), &launch));
    }

    pub fn cli(&self, args: &[&str]) -> Ran {
        let dir = self.dir.path().to_str().unwrap();
        let mut all = args.to_vec();
        all.extend(["--data-dir", dir]);
        sluice_in(&self.lab.node, &all)
    }

    pub fn cluster(&self) -> Value {
        self.cli(&["cluster", "members", "--json"]).ok().json()
    }

    pub fn ready(&self) -> Value {
        self.cli(&["status", "--json"]).json()
    }

    pub fn echo_passes(&self) -> bool {
        udp_ask(&self.lab, 7, b"through this node", 6).is_some()
    }

    pub fn node_id(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("node_id")).unwrap().trim().parse().unwrap()
    }

    pub fn log(&self) -> String {
        self.process.as_ref().map(Sluice::log_text).unwrap_or_default()
    }
}

pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    wait_seeing(what, within, || if done() { Ok(()) } else { Err(String::new()) });
}

/// Like `wait_until`, for a condition that says what it saw when it does not hold yet: a
/// timeout names the last sighting, so a failed run shows which node was not there and why.
pub fn wait_seeing(what: &str, within: Duration, mut look: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        let seen = match look() {
            Ok(()) => return,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}; last seen: {seen}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn check_ok(ready: &Value, check: &str) -> bool {
    ready["ready"]["checks"][check]["ok"] == true
}

/// Every member at the same applied index with the same state hash, as the asked node sees.
pub fn hashes_agree(node: &Node) -> bool {
    members_agree(node).is_ok()
}

/// `hashes_agree`, saying what each member reported when they do not agree.
pub fn members_agree(node: &Node) -> Result<(), String> {
    let cluster = node.cluster();
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    let agree = members.len() == 3
        && members.iter().all(|m| m["state_hash"].is_string() && m["lag"] == 0)
        && members.windows(2).all(|w| w[0]["state_hash"] == w[1]["state_hash"]);
    if agree {
        return Ok(());
    }
    let seen: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "node {} applied {} lag {} hash {} release {} ready {} error {}",
                m["id"], m["applied_index"], m["lag"], m["state_hash"], m["release"], m["ready"], m["error"]
            )
        })
        .collect();
    Err(format!("leader {}, {} member(s): {}", cluster["leader"], members.len(), seen.join("; ")))
}

/// Three labs, their management network, and a node per lab (not started).
pub fn three_labs() -> (Mgmt, Vec<Node>) {
    labs(3)
}

/// `n` labs on one management network, a node per lab (not started).
pub fn labs(n: usize) -> (Mgmt, Vec<Node>) {
    let labs: Vec<Lab> = (0..n).map(|_| Lab::new()).collect();
    let namespaces: Vec<&str> = labs.iter().map(|l| l.node.as_str()).collect();
    let mgmt = Mgmt::new(&labs[0].prefix, &namespaces);
    let nodes: Vec<Node> = labs
        .into_iter()
        .enumerate()
        .map(|(index, lab)| {
            let echo = udp_echo(&lab.upstream, 7);
            Node { lab, dir: tempfile::tempdir().unwrap(), index, process: None, _echo: echo, runs: 0 }
        })
        .collect();
    (mgmt, nodes)
}

/// Starts the seed and joins the two others with a copy of its token; returns the token.
pub fn form(nodes: &mut [Node], policy: Option<&Path>) -> String {
    nodes[0].start(policy, false);
    let token = std::fs::read_to_string(nodes[0].dir.path().join("bootstrap-token")).expect("the seed wrote its token");
    for node in &mut nodes[1..] {
        std::fs::write(node.dir.path().join("bootstrap-token"), &token).unwrap();
        node.start(None, true);
    }
    for node in nodes.iter() {
        wait_until("every node ready", Duration::from_secs(20), || {
            let ready = node.ready();
            check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication") && ready["ready"]["ready"] == true
        });
    }
    token
}
