//! The lab harness removes its namespaces even when a test panics.

mod netns_harness;

use netns_harness::{require_root, Lab};

fn namespaces() -> String {
    String::from_utf8(netns_harness::run(&["ip", "netns", "list"]).stdout).unwrap()
}

#[test]
fn namespaces_are_removed_after_a_panic() {
    require_root();
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new();
        names.lock().unwrap().extend([lab.client.clone(), lab.node.clone(), lab.upstream.clone()]);
        assert!(namespaces().contains(&lab.node));
        panic!("a failing test");
    });
    assert!(result.is_err());
    let list = namespaces();
    for ns in names.into_inner().unwrap() {
        assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())), "{ns} left behind");
    }
}
