//! Under a service manager (`Type=notify` with a watchdog, as the appliance image runs it),
//! the node says READY=1 once it forwards and serves its API, feeds the watchdog while its
//! dataplane turns, and says STOPPING=1 when it stops. The test plays the service manager: it
//! binds the notification socket and reads what arrives. Needs root (a lab).

mod node_harness;

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use node_harness::{require_root, Lab, Launch, Mode, Sluice};

/// Every datagram that arrives, with when it arrived, until the socket is idle for long.
fn listen(socket: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(len) = socket.recv(&mut buf) {
            if tx.send((Instant::now(), String::from_utf8_lossy(&buf[..len]).into_owned())).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_matching(rx: &mpsc::Receiver<(Instant, String)>, what: &str, within: Duration) -> (Instant, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, message)) if message.lines().any(|l| l.starts_with(what)) => return (at, message),
            Ok(_) => {}
            Err(_) => panic!("no `{what}` notification within {within:?}"),
        }
    }
}

fn tells_the_service_manager(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let rx = listen(UnixDatagram::bind(&socket_path).unwrap());
    let socket = socket_path.to_str().unwrap().to_owned();
    // A 3 s watchdog: the node pings about every second, and never lets a period pass (a
    // shorter period would measure the loaded test machine's scheduler, not the node).
    let period = Duration::from_secs(3);
    let env = [("NOTIFY_SOCKET", socket.as_str()), ("WATCHDOG_USEC", "3000000")];
    let mut node = Sluice::start(&lab, dir.path(), &Launch { mode, env: &env, ..Launch::default() });

    let (ready_at, ready) = next_matching(&rx, "READY=1", Duration::from_secs(10));
    assert!(ready.contains("STATUS=forwarding between"), "{ready}");
    assert!(node.log_text().contains("node running"), "READY=1 comes once the node runs");
    // Fed steadily from the control loop: no gap near the period.
    let mut last = ready_at;
    for _ in 0..4 {
        let (at, _) = next_matching(&rx, "WATCHDOG=1", 2 * period);
        assert!(at.duration_since(last) < period, "a gap of {:?} between pings", at - last);
        last = at;
    }

    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let (_, stopping) = next_matching(&rx, "STOPPING=1", Duration::from_secs(5));
    assert!(stopping.contains("STATUS=SIGTERM"), "{stopping}");
}

#[test]
fn software_node_notifies_readiness_and_feeds_the_watchdog() {
    tells_the_service_manager(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_node_notifies_readiness_and_feeds_the_watchdog() {
    tells_the_service_manager(Mode::Dpdk);
}
