//! The load: a warm-up that opens every flow with a real request and reply through the
//! forwarder (checking that the upstream saw the node's external address), then trafgen
//! sending the same flows one way as fast as it can.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::Load;
use super::{FIRST_PORT, SINK_ADDR, SINK_PORT};
use crate::{err, in_netns, Lab, Result, CLIENT_ADDR, NODE_EXTERNAL};

/// Flows opened at a time by the warm-up (one socket each).
const WARM_UP_BATCH: u16 = 128;

/// Open `flows` UDP flows (`CLIENT_ADDR:FIRST_PORT+i` to the sink address) through the
/// forwarder: each gets a datagram answered by a responder in the upstream namespace, so
/// the forwarder sees both directions and treats the flow as established. Fails unless every
/// flow was answered and the responder saw the node's external address as every source.
pub fn warm_up(lab: &Lab, flows: u16) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop2, ready2) = (stop.clone(), ready.clone());
    let upstream = lab.upstream.clone();
    let responder = std::thread::spawn(move || {
        crate::enter(&upstream)?;
        respond(&stop2, &ready2)
    });
    while !ready.load(Ordering::Acquire) && !responder.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = in_netns(&lab.client, move || open_flows(flows));
    stop.store(true, Ordering::Release);
    let sources = responder.join().map_err(|_| err("the warm-up responder panicked"))??;
    let answered = answered??;
    let external: Ipv4Addr = NODE_EXTERNAL.split('/').next().and_then(|a| a.parse().ok()).expect("node address");
    if let Some(wrong) = sources.iter().find(|s| **s != external) {
        return Err(err(format!(
            "the forwarder did not translate: the upstream saw source {wrong}, expected the node's external \
             address {external}; not measuring"
        )));
    }
    if answered < flows as usize {
        return Err(err(format!(
            "only {answered} of {flows} warm-up flows were answered through the forwarder; not measuring"
        )));
    }
    Ok(())
}

/// Echo every datagram to the sink address until `stop`; returns the sources seen.
fn respond(stop: &AtomicBool, ready: &AtomicBool) -> Result<Vec<Ipv4Addr>> {
    let addr: Ipv4Addr = SINK_ADDR.parse().expect("sink address");
    let sock =
        UdpSocket::bind(SocketAddrV4::new(addr, SINK_PORT)).map_err(|e| err(format!("bind {SINK_ADDR}: {e}")))?;
    sock.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| err(e.to_string()))?;
    ready.store(true, Ordering::Release);
    let mut sources = Vec::new();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Acquire) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let std::net::SocketAddr::V4(v4) = from {
                sources.push(*v4.ip());
            }
            let _ = sock.send_to(&buf[..n], from);
        }
    }
    Ok(sources)
}

/// Send one datagram from each flow's source port and wait for its reply (retrying, since
/// the forwarder may still be resolving addresses); returns how many were answered.
fn open_flows(flows: u16) -> Result<usize> {
    let client: Ipv4Addr = CLIENT_ADDR.parse().expect("client address");
    let sink = SocketAddrV4::new(SINK_ADDR.parse().expect("sink address"), SINK_PORT);
    let mut answered = 0;
    let mut first = 0u16;
    while first < flows {
        let count = WARM_UP_BATCH.min(flows - first);
        let mut pending = Vec::with_capacity(count as usize);
        for i in first..first + count {
            let port = FIRST_PORT + i;
            let sock = UdpSocket::bind(SocketAddrV4::new(client, port))
                .map_err(|e| err(format!("bind {client}:{port} for the warm-up: {e}")))?;
            sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| err(e.to_string()))?;
            pending.push(sock);
        }
        for _attempt in 0..10 {
            for sock in &pending {
                let _ = sock.send_to(b"open", sink);
            }
            let mut buf = [0u8; 64];
            pending.retain(|sock| !matches!(sock.recv_from(&mut buf), Ok((_, from)) if from == sink.into()));
            if pending.is_empty() {
                break;
            }
        }
        answered += count as usize - pending.len();
        first += count;
    }
    Ok(answered)
}

/// trafgen sending `load` from the client namespace, pinned to one CPU, until stopped.
pub struct Trafgen {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Trafgen {
    pub fn start(lab: &Lab, load: &Load, cpu: usize) -> Result<Trafgen> {
        let cfg = lab.dir.join("trafgen.cfg");
        fs::write(&cfg, load.trafgen_config()).map_err(|e| err(format!("write {}: {e}", cfg.display())))?;
        let log = lab.dir.join("trafgen.log");
        let out = File::create(&log).map_err(|e| err(format!("create {}: {e}", log.display())))?;
        let out2 = out.try_clone().map_err(|e| err(e.to_string()))?;
        let mut cmd = Command::new("ip");
        // One trafgen process; it pins itself to the first CPU of its affinity mask.
        // --no-sock-mem: socket memory is ours to manage (see `WmemDefault`);
        // --notouch-irq: leave interrupt affinities alone;
        // --gap 0: sendto(2) per frame instead of the TX_RING, which on a veth is half as
        // fast: a ring frame's pages must be copied when it crosses into another namespace.
        cmd.args(["netns", "exec", &lab.client, "taskset", "-c", &cpu.to_string()])
            .args(["trafgen", "--dev", &lab.client_if(), "--conf"])
            .arg(&cfg)
            .args(["--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats", "--gap", "0"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out2)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("could not start trafgen: {e} (it comes from the Debian package netsniff-ng)")))?;
        Ok(Trafgen { child: Some(child), log })
    }

    /// Fails with trafgen's output if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let child = self.child.as_mut().expect("running");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Err(err(format!(
                "trafgen exited ({status}):\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// SIGINT (trafgen's way to stop) to its process group, then wait.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: plain system call; the group is our child's, created with process_group(0).
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Nanoseconds trafgen has run (the process we started and the sender it forks).
    pub fn cpu_ns(&self) -> u64 {
        let Some(child) = &self.child else { return 0 };
        let pid = child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let forked = children.split_whitespace().filter_map(|p| p.parse::<u32>().ok());
        std::iter::once(pid).chain(forked).map(super::wire::cpu_ns).sum()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        self.stop();
    }
}
