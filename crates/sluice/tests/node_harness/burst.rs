//! Load from the client namespace: many new flows as fast as the client stack sends them,
//! and a long-lived TCP connection that does line round-trips through the node.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::netns_harness::{in_netns, Lab};
use super::SERVER;

/// One UDP datagram to `SERVER:port` from each client source port in `ports`: every
/// datagram is a new flow. Returns how many were handed to the client's stack.
pub fn udp_new_flows(lab: &Lab, port: u16, ports: Range<u16>, pace: Option<Duration>) -> usize {
    in_netns(&lab.client, move || {
        let mut sent = 0;
        for sport in ports {
            sent += usize::from(udp_new_flow(port, sport));
            if let Some(p) = pace {
                std::thread::sleep(p);
            }
        }
        sent
    })
}

/// One datagram from client port `sport`, on the calling thread (in the client namespace).
fn udp_new_flow(port: u16, sport: u16) -> bool {
    // A fresh namespace has nothing bound there; a port in use would only shrink the burst.
    let Ok(s) = UdpSocket::bind(("10.10.0.2", sport)) else { return false };
    s.send_to(format!("new flow from {sport}").as_bytes(), (SERVER, port)).is_ok()
}

/// New flows from the client as fast as its stack takes them: one UDP datagram from each
/// source port in `udp_sources` to `SERVER:udp_port`, with `tcp_connects` non-blocking TCP
/// connections to `SERVER:tcp_port` spread evenly among them, so which flows a node can
/// still admit is a mix of both kinds in a fixed order.
pub struct NewFlowBurst {
    pub udp_port: u16,
    pub udp_sources: Range<u16>,
    pub tcp_port: u16,
    pub tcp_connects: usize,
}

/// What a [`NewFlowBurst`] got done at the client.
pub struct BurstOutcome {
    pub udp_sent: usize,
    /// The TCP connections that were established; they stay open until dropped.
    pub established: Vec<TcpStream>,
}

impl NewFlowBurst {
    /// Sends the burst, then waits up to `wait` for the TCP connections. Those not
    /// established by then are closed, which sends nothing for a connection still waiting
    /// for its SYN-ACK (so no SYN retransmission outlives this call).
    pub fn run(&self, lab: &Lab, wait: Duration) -> BurstOutcome {
        let (udp_port, sources, tcp_port, connects) =
            (self.udp_port, self.udp_sources.clone(), self.tcp_port, self.tcp_connects);
        let (udp_sent, pending) = in_netns(&lab.client, move || {
            let every = (sources.len() / connects.max(1)).max(1);
            let (mut sent, mut pending) = (0, Vec::with_capacity(connects));
            for (i, sport) in sources.enumerate() {
                if i % every == 0 && pending.len() < connects {
                    pending.push(tcp_connect_nonblocking(tcp_port));
                }
                sent += usize::from(udp_new_flow(udp_port, sport));
            }
            while pending.len() < connects {
                pending.push(tcp_connect_nonblocking(tcp_port));
            }
            (sent, pending)
        });
        BurstOutcome { udp_sent, established: await_connects(pending, wait) }
    }
}

/// Starts a TCP connection from the calling thread's namespace without waiting for it.
fn tcp_connect_nonblocking(port: u16) -> OwnedFd {
    let server: Ipv4Addr = SERVER.parse().unwrap();
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(server).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "TCP socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_in for the size passed.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(r == 0 || err.raw_os_error() == Some(libc::EINPROGRESS), "connect: {err}");
    fd
}

/// Waits up to `wait` for connections in progress; returns those that were established.
fn await_connects(mut pending: Vec<OwnedFd>, wait: Duration) -> Vec<TcpStream> {
    let deadline = Instant::now() + wait;
    let mut established = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut pfds: Vec<libc::pollfd> =
            pending.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 }).collect();
        // SAFETY: `pfds` is a valid array of its length.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) } <= 0 {
            continue;
        }
        // Walk backwards so swap_remove does not disturb the indices still to visit.
        for i in (0..pfds.len()).rev() {
            if pfds[i].revents == 0 {
                continue;
            }
            let fd = pending.swap_remove(i);
            if socket_error(&fd) == 0 {
                established.push(TcpStream::from(fd));
            }
        }
    }
    established
}

fn socket_error(fd: &OwnedFd) -> libc::c_int {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for getsockopt's writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "SO_ERROR: {}", std::io::Error::last_os_error());
    err
}

/// Closes `conn` with a reset rather than a FIN, so the flow ends at once (and lingers
/// briefly in the node) instead of going through the longer closing states.
pub fn reset(conn: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is valid for the size passed.
    let r = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// A TCP connection from the client to a line-echo server (see `tcp_server`).
pub struct LineConn {
    stream: TcpStream,
    sent: u64,
}

impl LineConn {
    /// Connects from the client to `SERVER:port`; every round-trip may take up to `timeout`
    /// (TCP retransmits a lost segment itself; the timeout only bounds a dead connection).
    pub fn open(lab: &Lab, port: u16, timeout: Duration) -> std::io::Result<LineConn> {
        let stream = in_netns(&lab.client, move || {
            let to: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
            TcpStream::connect_timeout(&to, Duration::from_secs(3))
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(LineConn { stream, sent: 0 })
    }

    /// Sends one numbered line and checks that its echo comes back whole.
    pub fn round_trip(&mut self) -> Result<(), String> {
        self.sent += 1;
        let line = format!("round trip {}\n", self.sent);
        self.stream.write_all(line.as_bytes()).map_err(|e| format!("{}: send: {e}", line.trim_end()))?;
        let want = format!("echo {line}");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\n") {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(format!("{}: connection closed", line.trim_end())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("{}: no answer: {e}", line.trim_end())),
            }
        }
        if got != want.as_bytes() {
            return Err(format!("sent {line:?}, got {:?}", String::from_utf8_lossy(&got)));
        }
        Ok(())
    }
}
