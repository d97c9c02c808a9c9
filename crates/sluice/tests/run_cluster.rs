//! Three real `sluice run` processes, each a node with its own dataplane in its own lab
//! (client, node, upstream), joined by a management network for cluster RPC: the cluster
//! forms by seed and `--join`; a policy written through a follower is enforced by all three
//! dataplanes; the leader is killed (-9) and replaced, and comes back without seed or token;
//! a node cut off the management network reports `cluster` not ready and refuses writes with
//! 503 while its dataplane keeps enforcing, then catches up. Needs root.

mod node_harness;

use std::path::Path;
use std::time::{Duration, Instant};

use node_harness::cli::{sluice_in, Ran};
use node_harness::mgmt::Mgmt;
use node_harness::{require_root, udp_ask, udp_echo, Lab, Launch, Mode, Server, Sluice, POLICY};
use serde_json::Value;

/// The harness policy without the UDP echo rule.
fn policy_without_echo() -> String {
    let echo = r#"{ "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } },"#;
    assert!(POLICY.contains(echo), "the harness policy has the echo rule");
    POLICY.replace(echo, "")
}

struct Node {
    lab: Lab,
    dir: tempfile::TempDir,
    index: usize,
    process: Option<Sluice>,
    _echo: Server,
    runs: usize,
}

impl Node {
    fn flags(&self, join: bool) -> Vec<String> {
        let me = Mgmt::address(self.index);
        let mut flags =
            vec!["--http-bind".to_owned(), format!("{me}:8443"), "--cluster-bind".to_owned(), format!("{me}:9600")];
        if join {
            flags.extend(["--join".to_owned(), format!("{}:9601", Mgmt::address(0))]);
        }
        flags
    }

    fn start(&mut self, policy: Option<&Path>, join: bool) {
        self.runs += 1;
        let flags = self.flags(join);
        let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
        let launch = Launch { mode: Mode::Software, policy, run: self.runs, extra: &extra, ..Launch::default() };
        self.process = Some(Sluice::start(&self.lab, self.dir.path(), &launch));
    }

    fn cli(&self, args: &[&str]) -> Ran {
        let dir = self.dir.path().to_str().unwrap();
        let mut all = args.to_vec();
        all.extend(["--data-dir", dir]);
        sluice_in(&self.lab.node, &all)
    }

    fn cluster(&self) -> Value {
        self.cli(&["cluster", "members", "--json"]).ok().json()
    }

    fn ready(&self) -> Value {
        self.cli(&["status", "--json"]).json()
    }

    fn echo_passes(&self) -> bool {
        udp_ask(&self.lab, 7, b"through this node", 6).is_some()
    }

    fn node_id(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("node_id")).unwrap().trim().parse().unwrap()
    }

    fn log(&self) -> String {
        self.process.as_ref().map(Sluice::log_text).unwrap_or_default()
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_ok(ready: &Value, check: &str) -> bool {
    ready["ready"]["checks"][check]["ok"] == true
}

/// Every member at the same applied index with the same state hash, as the asked node sees.
fn hashes_agree(node: &Node) -> bool {
    let cluster = node.cluster();
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    members.len() == 3
        && members.iter().all(|m| m["state_hash"].is_string() && m["lag"] == 0)
        && members.windows(2).all(|w| w[0]["state_hash"] == w[1]["state_hash"])
}

/// Three labs, their management network, and a node per lab (not started).
fn three_labs() -> (Mgmt, Vec<Node>) {
    let labs: Vec<Lab> = (0..3).map(|_| Lab::new()).collect();
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
fn form(nodes: &mut [Node], policy: Option<&Path>) -> String {
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

#[test]
fn three_nodes_form_a_cluster_fail_over_and_survive_a_partition() {
    require_root();
    let (mgmt, mut nodes) = three_labs();
    let first = nodes[0].dir.path().join("policy.json");
    std::fs::write(&first, policy_without_echo()).unwrap();
    let with_echo = nodes[0].dir.path().join("with-echo.json");
    std::fs::write(&with_echo, POLICY).unwrap();

    // Seed, then two joins with a copy of the bootstrap token.
    let token = form(&mut nodes, Some(&first));
    for node in &nodes {
        assert!(!node.echo_passes(), "version 1 has no echo rule (node {})", node.index);
    }
    let cluster = nodes[0].cluster();
    let voters = cluster["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count();
    assert_eq!(voters, 3, "{cluster:#}");

    // A policy written through a follower is enforced by all three dataplanes.
    let leader_id = nodes[0].cluster()["leader"].as_u64().unwrap();
    let follower = nodes.iter().position(|n| n.node_id() != leader_id).unwrap();
    let put = nodes[follower].cli(&["policy", "put", with_echo.to_str().unwrap()]).ok();
    assert_eq!(put.stdout, "stored as version 2; the dataplane runs it");
    for node in &nodes {
        wait_until("version 2 everywhere", Duration::from_secs(10), || node.echo_passes());
    }
    wait_until("equal state hashes", Duration::from_secs(10), || hashes_agree(&nodes[0]));

    // kill -9 the leader: a survivor takes over and accepts writes.
    let leader = nodes.iter().position(|n| n.node_id() == leader_id).unwrap();
    let killed_at = Instant::now();
    nodes[leader].process.as_mut().unwrap().stop(libc::SIGKILL, Duration::from_secs(5));
    let survivor = (leader + 1) % 3;
    wait_until("a new leader", Duration::from_secs(10), || {
        nodes[survivor].cluster()["leader"].as_u64().is_some_and(|l| l != leader_id)
    });
    let failover = killed_at.elapsed();
    let put = nodes[survivor].cli(&["policy", "put", first.to_str().unwrap(), "--comment", "after failover"]).ok();
    assert_eq!(put.stdout, "stored as version 3; the dataplane runs it", "failover took {failover:?}");
    // The old leader restarts with neither the seed's help nor the token.
    std::fs::remove_file(nodes[leader].dir.path().join("bootstrap-token")).unwrap();
    nodes[leader].start(None, false);
    assert!(nodes[leader].log().contains("Restarted"), "{}", nodes[leader].log());
    wait_until("the old leader catches up", Duration::from_secs(20), || {
        let ready = nodes[leader].ready();
        check_ok(&ready, "policy_replication") && !nodes[leader].echo_passes()
    });
    wait_until("equal state hashes after the restart", Duration::from_secs(10), || hashes_agree(&nodes[survivor]));

    // Cut a follower off: it is not ready, refuses writes with 503, keeps enforcing.
    let leader_id = nodes[survivor].cluster()["leader"].as_u64().unwrap();
    let cut = nodes.iter().position(|n| n.node_id() != leader_id).unwrap();
    let majority: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    mgmt.set_link(&nodes[cut].lab.node, cut, false);
    wait_until("the cut node to notice", Duration::from_secs(15), || !check_ok(&nodes[cut].ready(), "cluster"));
    let refused = nodes[cut].cli(&["policy", "put", with_echo.to_str().unwrap()]);
    assert_eq!(refused.code, 5, "{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("no_leader"), "{}", refused.stderr);
    assert!(!nodes[cut].echo_passes(), "the cut node's dataplane still enforces version 3");
    let put = nodes[majority[0]].cli(&["policy", "put", with_echo.to_str().unwrap(), "--comment", "majority"]).ok();
    assert_eq!(put.stdout, "stored as version 4; the dataplane runs it");
    assert!(
        nodes[majority[1]].echo_passes() || {
            std::thread::sleep(Duration::from_secs(2));
            nodes[majority[1]].echo_passes()
        }
    );
    assert!(!nodes[cut].echo_passes(), "the cut node did not get version 4");
    mgmt.set_link(&nodes[cut].lab.node, cut, true);
    wait_until("the cut node catches up", Duration::from_secs(30), || {
        let ready = nodes[cut].ready();
        check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication")
    });
    assert!(nodes[cut].echo_passes(), "version 4 reached the node that was cut off");
    wait_until("equal state hashes after the partition", Duration::from_secs(15), || hashes_agree(&nodes[cut]));

    for node in &mut nodes {
        let (status, _) = node.process.as_mut().unwrap().stop(libc::SIGTERM, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{}", node.log());
        assert!(!node.log().contains(token.trim()), "the bootstrap token is never logged");
    }
    eprintln!("failover (kill -9 to a new leader seen by a survivor): {failover:?}");
}

/// A policy document whose single group's id names the round, so every write is distinct.
fn numbered_policy(n: usize) -> String {
    policy_without_echo().replacen("\"clients\"", &format!("\"clients-{n}\""), 1)
}

#[test]
fn no_acknowledged_write_is_lost_while_random_nodes_are_killed() {
    require_root();
    let (_mgmt, mut nodes) = three_labs();
    form(&mut nodes, None);
    nodes[0].cli(&["settings", "--policy-history-limit", "10000"]).ok();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut written = 0;
    for round in 0..20 {
        let victim = (next() % 3) as usize;
        // Writes through the other nodes while the victim goes down and comes back; each
        // answered "stored as version N" is an acknowledged write.
        let kill_after = (next() % 3) as usize;
        for attempt in 0..6 {
            if attempt == kill_after {
                nodes[victim].process.as_mut().unwrap().stop(libc::SIGKILL, Duration::from_secs(5));
            }
            written += 1;
            let file = nodes[0].dir.path().join(format!("round-{round}-{attempt}.json"));
            std::fs::write(&file, numbered_policy(written)).unwrap();
            let through = (victim + 1 + (next() % 2) as usize) % 3;
            let ran = nodes[through].cli(&["policy", "put", file.to_str().unwrap(), "--timeout", "15s"]);
            match ran.stdout.strip_prefix("stored as version ") {
                Some(rest) => acknowledged.push(rest.split(';').next().unwrap().parse::<u64>().unwrap()),
                None => {
                    refused += 1;
                    if refused <= 5 {
                        eprintln!("round {round}: not acknowledged (exit {}): {}", ran.code, ran.stderr.trim());
                    }
                }
            }
        }
        nodes[victim].start(None, false);
        let node = &nodes[victim];
        wait_until("the killed node back and caught up", Duration::from_secs(30), || {
            let ready = node.ready();
            check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication")
        });
    }
    assert!(
        acknowledged.len() >= 60,
        "most writes were acknowledged: {} of {written} ({refused} not)",
        acknowledged.len()
    );
    for node in &nodes {
        let versions = node.cli(&["policy", "versions", "--json"]).ok().json();
        let stored: Vec<u64> =
            versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
        let lost: Vec<&u64> = acknowledged.iter().filter(|v| !stored.contains(v)).collect();
        assert!(lost.is_empty(), "node {}: acknowledged versions missing: {lost:?}", node.index);
    }
    wait_until("equal state hashes at the end", Duration::from_secs(15), || hashes_agree(&nodes[0]));
    eprintln!("{} of {written} writes acknowledged over 20 kill -9 rounds; none lost", acknowledged.len());
}
