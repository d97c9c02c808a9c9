//! Clients in the lab's client namespace, talking to the upstream server through the node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::netns_harness::{self, icmp_echo, in_netns, Lab};
use super::SERVER;

/// An HTTP-like exchange from the client; returns the response.
pub fn http_get(lab: &Lab, port: u16) -> std::io::Result<String> {
    in_netns(&lab.client, move || {
        let to: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: upstream\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Sends `msg` from the client to `SERVER:port` until an answer arrives; `None` if none
/// does in `tries` attempts (the first may wait for ARP).
pub fn udp_ask(lab: &Lab, port: u16, msg: &'static [u8], tries: usize) -> Option<Vec<u8>> {
    in_netns(&lab.client, move || {
        let s = UdpSocket::bind("10.10.0.2:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..tries {
            s.send_to(msg, (SERVER, port)).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    })
}

/// ICMP echo from the client to `dst`, a few tries.
pub fn ping(lab: &Lab, dst: [u8; 4]) -> bool {
    in_netns(&lab.client, move || (0..4).any(|_| icmp_echo(dst, Duration::from_millis(700))))
}

/// A UDP datagram with TTL 1 from the client to the server; returns the source of the ICMP
/// time-exceeded message that comes back, if any.
pub fn ttl_one_probe(lab: &Lab) -> Option<[u8; 4]> {
    in_netns(&lab.client, || {
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned and is owned by nobody else.
        let raw = unsafe { OwnedFd::from_raw_fd(fd) };
        let udp = UdpSocket::bind("10.10.0.2:0").unwrap();
        udp.set_ttl(1).unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..5 {
            udp.send_to(b"ttl probe", (SERVER, 7)).unwrap();
            let deadline = Instant::now() + Duration::from_millis(600);
            while Instant::now() < deadline {
                let mut pfd = libc::pollfd { fd: raw.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                    continue;
                }
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::recv(raw.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 28 {
                    continue;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if buf[ihl] == 11 && buf[ihl + 1] == 0 {
                    return Some([buf[12], buf[13], buf[14], buf[15]]);
                }
            }
        }
        None
    })
}

/// The node namespace's interfaces and addresses, one per line (`ip -br addr`).
pub fn links(lab: &Lab) -> String {
    let out = netns_harness::run(&["ip", "-n", &lab.node, "-br", "addr", "show"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
