//! Client-side probes: each sends real traffic from the calling thread's namespace and
//! reports what came back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// An HTTP/1.0 GET; the status line and the body on success.
pub fn http_get(addr: &str, port: u16, timeout: Duration) -> Result<(String, String), String> {
    let sa: SocketAddr = format!("{addr}:{port}").parse().map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| describe(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(|e| describe(&e))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| describe(&e))?;
    let status = reply.lines().next().unwrap_or("").to_string();
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    if status.is_empty() {
        return Err("connected, but no reply".into());
    }
    Ok((status, body))
}

/// A TCP connection and one echoed line.
pub fn tcp_echo(addr: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let sa: SocketAddr = format!("{addr}:{port}").parse().map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| describe(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let msg = b"sluice tcp probe\n";
    s.write_all(msg).map_err(|e| describe(&e))?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| describe(&e))?;
    if &buf[..n] == msg {
        Ok(format!("connected; {n} bytes echoed"))
    } else {
        Err(format!("connected; echo mismatch ({n} bytes)"))
    }
}

/// One UDP datagram and its echo.
pub fn udp_echo(addr: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let msg = b"sluice udp probe";
    // Two tries: the first datagram may wait for ARP on the node.
    for _ in 0..2 {
        s.send_to(msg, (addr, port)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return if &buf[..n] == msg { Ok(format!("{n} bytes echoed")) } else { Err("echo mismatch".into()) };
        }
    }
    Err(format!("no echo within {} s", 2 * timeout.as_secs()))
}

/// A DNS query for the A record of `name`, sent to `server`:53; the addresses answered.
pub fn dns_query(server: &str, name: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let mut buf = [0u8; 512];
    let mut reply = None;
    for _ in 0..2 {
        s.send_to(&q, (server, 53)).map_err(|e| e.to_string())?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            reply = Some(n);
            break;
        }
    }
    let n = reply.ok_or_else(|| format!("no answer within {} s", 2 * timeout.as_secs()))?;
    parse_a_records(&buf[..n], id)
}

fn parse_a_records(m: &[u8], id: u16) -> Result<Vec<String>, String> {
    let short = || "truncated reply".to_string();
    if m.len() < 12 || m[0..2] != id.to_be_bytes() {
        return Err("reply with a different id".into());
    }
    let rcode = m[3] & 0x0f;
    if rcode != 0 {
        return Err(match rcode {
            3 => "NXDOMAIN".into(),
            5 => "REFUSED".into(),
            c => format!("rcode {c}"),
        });
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *m.get(i)? as usize;
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + len;
            if len == 0 {
                return Some(i);
            }
        }
    };
    for _ in 0..qd {
        i = skip_name(i).ok_or_else(short)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(i).ok_or_else(short)?;
        let h = m.get(i..i + 10).ok_or_else(short)?;
        let (rtype, rdlen) = (u16::from_be_bytes([h[0], h[1]]), usize::from(u16::from_be_bytes([h[8], h[9]])));
        let data = m.get(i + 10..i + 10 + rdlen).ok_or_else(short)?;
        if rtype == 1 && rdlen == 4 {
            out.push(format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3]));
        }
        i += 10 + rdlen;
    }
    Ok(out)
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_records_and_rcodes() {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 10]);
        assert_eq!(parse_a_records(&m, 0x1234).unwrap(), ["198.51.100.10"]);
        m[3] = 0x83;
        assert_eq!(parse_a_records(&m, 0x1234).unwrap_err(), "NXDOMAIN");
        assert!(parse_a_records(&m[..20], 0x1234).is_err());
        assert!(parse_a_records(&m, 0x9999).is_err());
    }
}
