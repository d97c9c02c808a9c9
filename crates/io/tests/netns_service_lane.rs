//! The TAP service lane with real packets: clients reach a service on the node's own stack
//! at the node's inside address, and the node's own traffic leaves through the external
//! data port, SNATed like a client flow.

mod netns_harness;

use std::net::UdpSocket;
use std::time::Duration;

use netns_harness::{eventually, in_netns, require_root, run, Lab, Node};
use sluice_dataplane::counters::Counter;
use sluice_dataplane::engine::PortId;

/// Send `msg` from `sock` to `to` until an answer arrives (the first tries may wait for ARP).
fn ask(sock: &UdpSocket, to: (&str, u16), msg: &[u8]) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(msg, to).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    panic!("no answer from {to:?}");
}

#[test]
fn client_reaches_a_host_service_through_the_tap() {
    require_root();
    let lab = Lab::new();
    let node = Node::start(&lab, true);
    let tap = node.tap_name.clone().expect("tap");
    assert!(tap.starts_with(&format!("{}t", lab.prefix)), "TAP named from the prefix: {tap}");
    run(&["ip", "-n", &lab.node, "addr", "add", "10.10.0.1/24", "dev", &tap]);
    let service = in_netns(&lab.node, || UdpSocket::bind("10.10.0.1:5353").expect("bind service"));
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (n, from) = service.recv_from(&mut buf).expect("service recv");
        let mut reply = b"answer to ".to_vec();
        reply.extend_from_slice(&buf[..n]);
        service.send_to(&reply, from).expect("service send");
        from
    });
    let reply = in_netns(&lab.client, || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        ask(&s, ("10.10.0.1", 5353), b"query")
    });
    assert_eq!(reply, b"answer to query");
    let from = server.join().unwrap();
    assert_eq!(from.ip().to_string(), "10.10.0.2", "the service sees the client's own address");
    let io = node.io();
    eventually("frames written to and read from the TAP", || {
        io.port(PortId::Host).tx_packets >= 1 && io.port(PortId::Host).rx_packets >= 1
    });
}

#[test]
fn host_traffic_leaves_through_the_external_port_with_snat() {
    require_root();
    let lab = Lab::new();
    let node = Node::start(&lab, true);
    let tap = node.tap_name.clone().expect("tap");
    run(&["ip", "-n", &lab.node, "addr", "add", "10.10.0.1/24", "dev", &tap]);
    // The engine answers ARP for every address on the lane, so a device route will do.
    run(&["ip", "-n", &lab.node, "route", "add", "default", "dev", &tap]);
    let echo = in_netns(&lab.upstream, || UdpSocket::bind(("198.51.100.10", 53)).expect("bind :53"));
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (n, from) = echo.recv_from(&mut buf).expect("recv");
        echo.send_to(&buf[..n], from).expect("send");
        from
    });
    let answer = in_netns(&lab.node, || {
        let s = UdpSocket::bind("10.10.0.1:0").unwrap();
        ask(&s, ("198.51.100.10", 53), b"upstream query")
    });
    assert_eq!(answer, b"upstream query");
    // Port 53 is not in the client policy: the node's own traffic is not subject to it.
    assert_eq!(server.join().unwrap().ip().to_string(), "203.0.113.2");
    assert!(node.counters().get(Counter::HostOriginatedFlows) >= 1);
}
