//! The DNS side of the lab: dnsmasq as the authoritative server of the test names in the
//! upstream namespace, `dig` from the client, TCP connections that tell a drop from a refusal,
//! and an acceptor that stands in for a web server on an extra address.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{in_netns, Lab};

pub const DNS_SERVER: &str = "198.51.100.53";
pub const WEB: &str = "198.51.100.10";
pub const WEB2: &str = "198.51.100.11";

/// dnsmasq as the authoritative server of the test names, in the upstream namespace.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    pub fn start(lab: &Lab) -> Dnsmasq {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.upstream, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts"])
            .args(["--conf-file=/dev/null", "--port=53", "--bind-interfaces", "--user=root", "--pid-file="])
            .arg(format!("--listen-address={DNS_SERVER}"))
            .arg(format!("--host-record=allowed.test,{WEB},300"))
            .arg(format!("--host-record=target.test,{WEB2},300"))
            .arg("--cname=www.alias.test,target.test")
            .arg("--host-record=denied.test,198.51.100.20")
            .arg(format!("--host-record=short.test,{WEB},1"));
        for i in 0..150u32 {
            cmd.arg(format!("--host-record=big.test,10.77.{}.{}", i / 200, i % 200 + 1));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dnsmasq_log(lab)).unwrap();
        cmd.args(["--log-facility=-", "--log-queries"]);
        // Its own process group: dnsmasq forks a child per TCP connection, and the proxy keeps
        // its TCP connection open, so stopping the server means stopping the whole group.
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).process_group(0);
        let server = Dnsmasq(cmd.spawn().expect("start dnsmasq (Debian package dnsmasq-base)"));
        // Ready when it answers inside its own namespace.
        let ready = in_netns(&lab.upstream, || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
            (0..50).any(|_| s.send_to(&query, (DNS_SERVER, 53)).is_ok() && s.recv(&mut [0u8; 512]).is_ok())
        });
        assert!(
            ready,
            "dnsmasq did not answer within 10 s:\n{}",
            std::fs::read_to_string(dnsmasq_log(lab)).unwrap_or_default()
        );
        server
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // SAFETY: plain system call on the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

pub fn dnsmasq_log(lab: &Lab) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-dnsmasq.log", lab.prefix))
}

/// `dig` from the client namespace at the node; the whole output.
pub fn dig(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.client, "dig", "@10.10.0.1", "+tries=1", "+time=4"])
        .args(args)
        .output()
        .expect("run dig (Debian package dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn status(dig_output: &str) -> &str {
    dig_output.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("(no answer)")
}

/// A TCP connection from the client; the error kind tells a drop (timeout) from a refusal.
/// 2.5 s leaves room for the one SYN retransmission (after 1 s) a busy machine may need.
pub fn connect(lab: &Lab, to: &str, port: u16) -> std::io::Result<TcpStream> {
    let to: SocketAddr = format!("{to}:{port}").parse().unwrap();
    in_netns(&lab.client, move || TcpStream::connect_timeout(&to, Duration::from_millis(2500)))
}

/// Accepts connections on `addr:80` in the upstream namespace and closes them at once.
pub struct Acceptor(Arc<AtomicBool>);

impl Acceptor {
    pub fn start(lab: &Lab, addr: &'static str) -> Acceptor {
        let listener = in_netns(&lab.upstream, move || TcpListener::bind((addr, 80)).expect("bind"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Acceptor(stop)
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The DNS server's and the second web server's addresses in the upstream namespace.
pub fn add_upstream_addresses(lab: &Lab) {
    run(&["ip", "-n", &lab.upstream, "addr", "add", &format!("{DNS_SERVER}/32"), "dev", "lo"]);
    run(&["ip", "-n", &lab.upstream, "addr", "add", &format!("{WEB2}/32"), "dev", "lo"]);
}

pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
