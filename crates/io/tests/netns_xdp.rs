//! Real TCP, UDP and ICMP through the engine on AF_XDP ports in network namespaces, and what
//! the port does to its interface (program attached while open, gone after; one owner).

mod netns_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netns_harness::{eventually, exec, have_ping, icmp_echo, in_netns, require_root, Lab, Node, PortKind};
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::PortId;
use sluice_dataplane::packet::Packet;
use sluice_io::{AfPacketPort, IoError, IoFrame, Port, XdpPort};

const WEB: &str = "198.51.100.10";

fn start(lab: &Lab) -> Node {
    Node::start_on(lab, false, None, PortKind::Xdp)
}

/// `ip link show` of a node interface: names the attached XDP program, if any.
fn link_show(lab: &Lab, dev: &str) -> String {
    String::from_utf8_lossy(&exec(&lab.node, &["ip", "-d", "link", "show", "dev", dev]).stdout).into_owned()
}

/// Upload and download through the node: `len` bytes each way over one TCP connection.
fn round_trip(lab: &Lab, len: usize) -> (bool, SocketAddr) {
    let listener = in_netns(&lab.upstream, || TcpListener::bind((WEB, 80)).expect("bind :80"));
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).expect("upload");
        s.write_all(&buf).expect("download");
        peer
    });
    let intact = in_netns(&lab.client, move || {
        let addr: SocketAddr = format!("{WEB}:80").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect through the node");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).expect("download");
        got == data
    });
    (intact, server.join().expect("server"))
}

/// TCP both ways, SNAT seen by the server, the program attached while the node runs and
/// gone once it stops.
#[test]
fn tcp_is_forwarded_and_snatted_and_stop_detaches_the_program() {
    require_root();
    let lab = Lab::new();
    let mut node = start(&lab);
    for dev in [&lab.node_in, &lab.node_out] {
        let shown = link_show(&lab, dev);
        assert!(shown.contains("prog/xdp") || shown.contains("xdp"), "program attached to {dev}: {shown}");
    }
    let (intact, peer) = round_trip(&lab, 256 << 10);
    assert!(intact, "256 KiB came back intact");
    assert_eq!(peer.ip().to_string(), "203.0.113.2", "server sees the node's external address");
    let io = node.io();
    eventually("both ports received and sent", || {
        let (i, e) = (io.port(PortId::Internal), io.port(PortId::External));
        i.rx_packets > 0 && i.tx_packets > 0 && e.rx_packets > 0 && e.tx_packets > 0
    });
    let c = node.counters();
    assert!(c.get(Counter::FlowsOpened) >= 1);
    assert!(c.get(Counter::ArpRequestsAnswered) >= 1, "the node answered the client's ARP");
    node.stop();
    for dev in [&lab.node_in, &lab.node_out] {
        let shown = link_show(&lab, dev);
        assert!(!shown.contains("xdp"), "no program left on {dev}: {shown}");
    }
}

/// UDP echo and ping through AF_XDP ports; denied traffic is dropped and counted.
#[test]
fn udp_and_icmp_pass_and_denied_traffic_is_dropped() {
    require_root();
    let lab = Lab::new();
    let node = start(&lab);
    let sock = in_netns(&lab.upstream, || UdpSocket::bind((WEB, 7)).expect("bind :7"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    let echoed = in_netns(&lab.client, || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        (0..6).any(|_| {
            let _ = s.send_to(b"over xdp", (WEB, 7));
            let mut buf = [0u8; 64];
            matches!(s.recv_from(&mut buf), Ok((8, _))) && &buf[..8] == b"over xdp"
        })
    });
    assert!(echoed, "UDP echo came back");
    if have_ping() {
        let ok = in_netns(&lab.client, || icmp_echo([198, 51, 100, 10], Duration::from_secs(3)));
        assert!(ok, "ping answered through the node");
    }
    // Port 81 is not in the policy.
    let refused = in_netns(&lab.client, || {
        let addr: SocketAddr = format!("{WEB}:81").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_millis(800)).is_err()
    });
    assert!(refused, "denied connection does not get through");
    eventually("the denied SYNs were counted", || node.dropped(DropReason::PolicyDenied) > 0);
}

/// A sender whose checksum offload is on leaves partial TCP checksums in its frames; XDP does
/// not say so, and the port completes them (or the transfer would stall).
#[test]
fn checksums_left_to_offload_are_completed() {
    require_root();
    let lab = Lab::new();
    for (ns, dev) in [(&lab.client, format!("{}ci", lab.prefix)), (&lab.upstream, format!("{}ue", lab.prefix))] {
        let out = exec(ns, &["ethtool", "-K", &dev, "tx", "on", "tso", "off"]);
        assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
    }
    let node = start(&lab);
    let (intact, _) = round_trip(&lab, 128 << 10);
    assert!(intact, "data came back intact");
    let io = node.io();
    eventually("both ports completed partial checksums (offload really on)", || {
        io.port(PortId::Internal).rx_checksum_partial > 0 && io.port(PortId::External).rx_checksum_partial > 0
    });
}

/// One port per interface: a second open is refused with a message that says why, and the
/// first keeps working; a missing interface is the usual typed error.
#[test]
fn a_second_port_on_the_interface_is_refused_clearly() {
    require_root();
    let lab = Lab::new();
    let nin = lab.node_in.clone();
    let (first, second) = in_netns(&lab.node, move || {
        let first = XdpPort::open(&nin).expect("first open");
        (first, XdpPort::open(&nin).err().expect("second open must fail"))
    });
    let text = second.to_string();
    assert!(matches!(second, IoError::Xdp { .. }), "{second:?}");
    assert!(text.contains("another XDP program"), "{text}");
    drop(first);
    let nin = lab.node_in.clone();
    in_netns(&lab.node, move || XdpPort::open(&nin).map(drop)).expect("reopen after the first closed");
    let missing = in_netns(&lab.node, || XdpPort::open("slnosuchxdp0").err().expect("missing interface"));
    assert!(matches!(missing, IoError::InterfaceMissing { .. }), "{missing:?}");
}

/// An interface with two receive queues is refused with the command that fixes it (one socket
/// serves queue 0, and frames of the other queue would never reach the dataplane).
#[test]
fn an_interface_with_several_receive_queues_is_refused() {
    require_root();
    let lab = Lab::new();
    let (a, b) = (format!("{}mq", lab.prefix), format!("{}mr", lab.prefix));
    let out = exec(
        &lab.node,
        &["ip", "link", "add", &a, "numrxqueues", "2", "numtxqueues", "2", "type", "veth", "peer", "name", &b],
    );
    assert!(out.status.success(), "ip link add: {}", String::from_utf8_lossy(&out.stderr));
    let e = in_netns(&lab.node, move || XdpPort::open(&a).err().expect("two receive queues must be refused"));
    let text = e.to_string();
    assert!(matches!(e, IoError::Xdp { .. }), "{e:?}");
    assert!(text.contains("2 receive queues") && text.contains("ethtool -L"), "{text}");
}

/// A tagged frame reaches the port with its tag in place, and opening the port turned off the
/// interface's VLAN tag stripping (a stripped tag would never reach the XDP program, and the
/// engine would take a frame of another VLAN for an untagged one).
#[test]
fn vlan_tags_reach_the_port_as_sent() {
    require_root();
    let lab = Lab::new();
    let nin = lab.node_in.clone();
    let mut port = in_netns(&lab.node, move || XdpPort::open(&nin).expect("open"));
    let features = String::from_utf8_lossy(&exec(&lab.node, &["ethtool", "-k", &lab.node_in]).stdout).into_owned();
    assert!(features.contains("rx-vlan-offload: off"), "{features}");
    let frame = netns_harness::tagged_frame(port.mac());
    netns_harness::send_from_client(&lab, &frame);
    netns_harness::wait_for_frame(&mut port, &frame, "the tagged frame never arrived intact");
}

/// Frames queued faster than one transmit call sends (copy mode sends a budget per call) all
/// leave: the port keeps asking while the kernel makes progress.
#[test]
fn a_full_burst_of_queued_frames_is_all_sent() {
    require_root();
    let lab = Lab::new();
    let nin = lab.node_in.clone();
    let client_if = format!("{}ci", lab.prefix);
    let mut rx = in_netns(&lab.client, move || AfPacketPort::open(&client_if, 64).expect("open the client side"));
    let sent = in_netns(&lab.node, move || {
        let mut port = XdpPort::open(&nin).expect("open");
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&port.mac());
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend([0u8; 46]);
        for _ in 0..200 {
            port.queue(&frame);
        }
        port.flush();
        std::thread::sleep(Duration::from_millis(50));
        port.flush();
        port.stats()
    });
    assert_eq!((sent.tx_packets, sent.tx_dropped, sent.tx_errors), (200, 0, 0), "{sent:?}");
    let mut frames: Vec<IoFrame> = (0..64).map(|_| IoFrame::with_capacity(rx.frame_capacity())).collect();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while got < 200 && Instant::now() < deadline {
        let n = rx.recv_burst(&mut frames).expect("recv");
        got += frames[..n].iter().filter(|f| f.data().get(12..14) == Some(&[0x88, 0xb5][..])).count();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(got, 200, "every queued frame arrived");
}
