//! The upstream servers: an HTTP responder on port 80, TCP echo on 7 and 22, UDP echo on 7,
//! on every address of the namespace they run in. Each answer names the address the client
//! came from, so the demo can show the node's source NAT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use crate::{ECHO_PORT, HTTP_PORT, SSH_PORT, UPSTREAM_ADDRS};

/// Bind every server and serve until the process ends.
pub fn serve_forever() -> std::io::Result<()> {
    let http = TcpListener::bind(("0.0.0.0", HTTP_PORT))?;
    let echo = TcpListener::bind(("0.0.0.0", ECHO_PORT))?;
    let ssh = TcpListener::bind(("0.0.0.0", SSH_PORT))?;
    // One UDP socket per address: a socket bound to 0.0.0.0 would answer from whichever
    // address the route picks, not the one the datagram was sent to.
    let udp: Vec<UdpSocket> =
        UPSTREAM_ADDRS.iter().map(|a| UdpSocket::bind((*a, ECHO_PORT))).collect::<std::io::Result<_>>()?;
    println!("serving: http :{HTTP_PORT}, tcp echo :{ECHO_PORT} :{SSH_PORT}, udp echo :{ECHO_PORT}");
    thread::spawn(move || accept(echo, echo_tcp));
    thread::spawn(move || accept(ssh, echo_tcp));
    for socket in udp {
        thread::spawn(move || udp_echo(socket));
    }
    accept(http, http_reply);
    Ok(())
}

fn accept(listener: TcpListener, handler: fn(TcpStream)) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || handler(stream));
    }
}

fn http_reply(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return };
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    // Read the headers up to the blank line.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    println!("http {peer} -> {local}: {}", request.trim());
    let body = format!("hello from {} (sluice lab); you came from {}\n", local.ip(), peer);
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(reply.as_bytes());
}

fn echo_tcp(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = [0u8; 65536];
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let _ = socket.send_to(&buf[..n], peer);
    }
}
