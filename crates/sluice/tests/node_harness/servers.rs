//! Servers in the upstream namespace: UDP echo and sink, and a line-echo / HTTP-like TCP
//! server. Each remembers the peers it heard from, so a test can tell what got through.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns_harness::in_netns;
use super::SERVER;

/// A server thread in a namespace that runs until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn spawn(body: impl FnOnce(Arc<AtomicBool>, Arc<Mutex<HashSet<SocketAddr>>>) + Send + 'static) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&peers));
        let thread = std::thread::spawn(move || body(flag, seen));
        Server { stop, peers, thread: Some(thread) }
    }

    /// The distinct peers (source address and port, as the server saw them) so far: UDP
    /// senders, or accepted TCP connections.
    pub fn peers(&self) -> HashSet<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn udp_server(ns: &str, port: u16, echo: bool) -> Server {
    let sock = in_netns(ns, move || UdpSocket::bind((SERVER, port)).expect("bind UDP server"));
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    Server::spawn(move |stop, peers| {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                peers.lock().unwrap().insert(from);
                if echo {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }
    })
}

/// A UDP echo server on `SERVER:port` in `ns`.
pub fn udp_echo(ns: &str, port: u16) -> Server {
    udp_server(ns, port, true)
}

/// A UDP server on `SERVER:port` in `ns` that only counts its senders and never answers, so
/// the flows it is sent stay in their short "only the inside spoke" state.
pub fn udp_sink(ns: &str, port: u16) -> Server {
    udp_server(ns, port, false)
}

/// A TCP server on `SERVER:port` in `ns`: answers each line with `echo <line>` and each
/// HTTP-like request (`GET ...` up to the blank line) with a response naming the peer.
pub fn tcp_server(ns: &str, port: u16) -> Server {
    let listener = in_netns(ns, move || TcpListener::bind((SERVER, port)).expect("bind TCP"));
    listener.set_nonblocking(true).unwrap();
    Server::spawn(move |stop, peers| {
        while !stop.load(Ordering::Relaxed) {
            let Ok((conn, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            peers.lock().unwrap().insert(peer);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(conn, peer, &stop));
        }
    })
}

fn serve(mut conn: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        if pending.starts_with(b"GET ") {
            if pending.windows(4).any(|w| w == b"\r\n\r\n") {
                let body = format!("hello {}\n", peer.ip());
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(format!("{head}{body}").as_bytes());
                return;
            }
            continue;
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let _ = conn.write_all(&[b"echo ", &line[..]].concat());
        }
    }
}
