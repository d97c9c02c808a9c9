//! The proxy's I/O edge: UDP and TCP listeners on a runtime of its own (one dedicated thread,
//! so API or cluster load elsewhere in the process cannot starve it), bounded concurrency,
//! and the allowlist wait that holds an answer back until every worker has its addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_dataplane::allowlist::{AllowlistSendError, AllowlistWriter, Ticket};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_policy::{DnsDecision, RuleKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, warn};

use crate::answer::{learn_from_answer, LearnLimits};
use crate::counters::{DnsCounter, DnsCounters};
use crate::query::{ClientQuery, Rejected};
use crate::recent::{Learn, RecentlyLearned};
use crate::upstream::Upstreams;
use crate::wire::{self, Rcode};

/// Everything the proxy is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Addresses to listen on, each on UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Upstream resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
    pub limits: LearnLimits,
    /// Queries being forwarded at once; UDP queries beyond it are dropped (counted), TCP
    /// clients wait.
    pub max_inflight: usize,
    /// TCP client connections at once; more are refused (counted).
    pub max_tcp_clients: usize,
    /// A TCP client connection silent this long is closed.
    pub tcp_idle: Duration,
    /// How long an answer may wait for the workers to apply its addresses; SERVFAIL after.
    pub allowlist_timeout: Duration,
}

impl DnsConfig {
    /// Defaults for everything but where to listen and where to forward.
    pub fn new(listen: Vec<SocketAddr>, upstreams: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            listen,
            upstreams,
            upstream_timeout: Duration::from_millis(1500),
            limits: LearnLimits { ttl_floor: 30, ttl_ceiling: 3600, max_ips_per_name: 32 },
            max_inflight: 4096,
            max_tcp_clients: 256,
            tcp_idle: Duration::from_secs(10),
            allowlist_timeout: Duration::from_millis(500),
        }
    }
}

/// A running proxy. Dropping it (or [`DnsProxy::stop`]) stops its thread and closes its sockets.
pub struct DnsProxy {
    thread: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    counters: Arc<DnsCounters>,
    listening: Vec<SocketAddr>,
}

impl DnsProxy {
    /// Binds every listen address and starts serving. Fails (with the address in the message)
    /// if any cannot be bound; nothing keeps running then.
    pub fn start(config: DnsConfig, policy: PolicyHandle, allowlist: AllowlistWriter) -> io::Result<DnsProxy> {
        let counters = Arc::new(DnsCounters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new().name("sluice-dns".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let proxy = Arc::new(Proxy {
                    recent: std::sync::Mutex::default(),
                    upstreams: Upstreams::new(&config.upstreams, config.upstream_timeout, Arc::clone(&shared_counters)),
                    inflight: Arc::new(Semaphore::new(config.max_inflight)),
                    tcp_clients: Arc::new(Semaphore::new(config.max_tcp_clients)),
                    config,
                    policy,
                    allowlist,
                    counters: shared_counters,
                });
                match proxy.bind().await {
                    Ok((udp, tcp)) => {
                        let addrs = udp.iter().filter_map(|s| s.local_addr().ok()).collect();
                        let _ = ready_tx.send(Ok(addrs));
                        for socket in udp {
                            tokio::spawn(Arc::clone(&proxy).serve_udp(Arc::new(socket)));
                        }
                        for listener in tcp {
                            tokio::spawn(Arc::clone(&proxy).serve_tcp(listener));
                        }
                        let _ = stop_rx.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            // Dropping the runtime here cancels every task and closes every socket.
        })?;
        let listening = match ready_rx.recv() {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("the DNS proxy thread ended before it was ready"));
            }
        };
        info!(listen = ?listening, "DNS proxy serving");
        Ok(DnsProxy { thread: Some(thread), stop: Some(stop_tx), counters, listening })
    }

    pub fn counters(&self) -> Arc<DnsCounters> {
        Arc::clone(&self.counters)
    }

    pub fn counters_ref(&self) -> &DnsCounters {
        &self.counters
    }

    /// The bound addresses (UDP; TCP listens on the same), in configured order.
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DnsProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An address already applied is sent again only if its expiry moves by more than this.
const RESEND_SLACK_NS: u64 = 1_000_000_000;

struct Proxy {
    config: DnsConfig,
    recent: std::sync::Mutex<RecentlyLearned>,
    policy: PolicyHandle,
    allowlist: AllowlistWriter,
    upstreams: Upstreams,
    counters: Arc<DnsCounters>,
    inflight: Arc<Semaphore>,
    tcp_clients: Arc<Semaphore>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// What happens to one query after it was read and decided.
enum Step {
    Reply(Vec<u8>),
    Drop,
    Forward(Forward),
}

struct Forward {
    bytes: Vec<u8>,
    query: ClientQuery,
    learn_for: Vec<RuleKey>,
    transport: Transport,
}

impl Proxy {
    async fn bind(&self) -> io::Result<(Vec<UdpSocket>, Vec<TcpListener>)> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in &self.config.listen {
            let named =
                |e: io::Error, what: &str| io::Error::new(e.kind(), format!("cannot listen on {what} {addr}: {e}"));
            let socket = UdpSocket::bind(addr).await.map_err(|e| named(e, "UDP"))?;
            // With port 0 (tests), TCP takes the port UDP got.
            let tcp_addr = socket.local_addr()?;
            udp.push(socket);
            tcp.push(TcpListener::bind(tcp_addr).await.map_err(|e| named(e, "TCP"))?);
        }
        Ok((udp, tcp))
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    debug!("DNS UDP receive error: {e}");
                    continue;
                }
            };
            self.counters.inc(DnsCounter::QueriesUdp);
            match self.prepare(peer, &buf[..n], Transport::Udp) {
                Step::Reply(answer) => {
                    let _ = socket.send_to(&answer, peer).await;
                }
                Step::Drop => {}
                Step::Forward(job) => {
                    let Ok(permit) = Arc::clone(&self.inflight).try_acquire_owned() else {
                        self.counters.inc(DnsCounter::OverloadDropped);
                        continue;
                    };
                    let (proxy, socket) = (Arc::clone(&self), Arc::clone(&socket));
                    tokio::spawn(async move {
                        let answer = proxy.forward(job).await;
                        let _ = socket.send_to(&answer, peer).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, for instance: do not spin.
                    warn!("DNS TCP accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.tcp_clients).try_acquire_owned() else {
                self.counters.inc(DnsCounter::TcpClientsRefused);
                continue;
            };
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                proxy.serve_tcp_client(stream, peer).await;
                drop(permit);
            });
        }
    }

    /// One client connection: queries are read as they come and answered as they finish
    /// (possibly out of order, which DNS over TCP allows).
    async fn serve_tcp_client(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        let write_task = tokio::spawn(async move {
            while let Some(answer) = rx.recv().await {
                let mut framed = Vec::with_capacity(answer.len() + 2);
                framed.extend_from_slice(&(answer.len() as u16).to_be_bytes());
                framed.extend_from_slice(&answer);
                if writer.write_all(&framed).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 65_535];
        loop {
            let len = match tokio::time::timeout(self.config.tcp_idle, reader.read_u16()).await {
                Ok(Ok(len)) => usize::from(len),
                _ => break,
            };
            match tokio::time::timeout(self.config.tcp_idle, reader.read_exact(&mut buf[..len])).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            self.counters.inc(DnsCounter::QueriesTcp);
            match self.prepare(peer, &buf[..len], Transport::Tcp) {
                Step::Reply(answer) => {
                    if tx.send(answer).await.is_err() {
                        break;
                    }
                }
                Step::Drop => {}
                Step::Forward(job) => {
                    let Ok(permit) = Arc::clone(&self.inflight).acquire_owned().await else { break };
                    let (proxy, tx) = (Arc::clone(&self), tx.clone());
                    tokio::spawn(async move {
                        let answer = proxy.forward(job).await;
                        let _ = tx.send(answer).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(tx);
        let _ = write_task.await;
    }

    /// Reads and decides one query; only forwarding needs to wait for anything.
    fn prepare(&self, peer: SocketAddr, bytes: &[u8], transport: Transport) -> Step {
        let query = match ClientQuery::parse(bytes) {
            Ok(q) => q,
            Err(Rejected::Drop) => {
                self.counters.inc(DnsCounter::MalformedDropped);
                return Step::Drop;
            }
            Err(Rejected::Answer(rcode, answer)) => {
                self.counters.inc(if rcode == Rcode::NotImp { DnsCounter::Notimp } else { DnsCounter::Formerr });
                return Step::Reply(answer);
            }
        };
        let decision = match peer.ip() {
            IpAddr::V4(client) => self.policy.current().policy.dns_decision(u32::from(client), &query.name_text),
            // No source group holds an IPv6 client.
            IpAddr::V6(_) => {
                DnsDecision { allowed: false, audit_would_deny: false, learn_for: Vec::new(), cause: None }
            }
        };
        if decision.audit_would_deny {
            self.counters.inc(DnsCounter::AuditWouldDeny);
        }
        if !decision.allowed {
            self.counters.inc(DnsCounter::NxdomainPolicy);
            debug!(client = %peer.ip(), name = %query.name_text, "DNS query refused by policy: NXDOMAIN");
            return Step::Reply(wire::own_answer(&query.answer_to(bytes), Rcode::NxDomain, false, true));
        }
        Step::Forward(Forward { bytes: bytes.to_vec(), query, learn_for: decision.learn_for, transport })
    }

    async fn forward(&self, job: Forward) -> Vec<u8> {
        self.counters.inc(DnsCounter::Forwarded);
        let Forward { bytes, query, learn_for, transport } = job;
        let question = &bytes[query.question.clone()];
        let servfail = || wire::own_answer(&query.answer_to(&bytes), Rcode::ServFail, false, false);
        let reply = match self.upstreams.exchange(&bytes, question).await {
            Ok(r) => r,
            Err(_) => {
                self.counters.inc(DnsCounter::Servfail);
                return servfail();
            }
        };
        let mut ttl_cap = self.config.limits.ttl_ceiling.max(self.config.limits.ttl_floor);
        if !learn_for.is_empty() {
            let learned = learn_from_answer(&reply.message, &query.name, &self.config.limits);
            self.counters.add(DnsCounter::AllowlistOverCap, learned.over_cap as u64);
            if !learned.addresses.is_empty() {
                let generation = self.policy.current().generation;
                let plan = self.recent.lock().expect("recent lock").plan(
                    generation,
                    &learn_for,
                    &learned.addresses,
                    monotonic_ns(),
                    RESEND_SLACK_NS,
                );
                if let Some(left) = plan.ttl_cap {
                    ttl_cap = ttl_cap.min(left);
                }
                if let Err(why) = self.learn(&plan.send).await {
                    warn!(name = %query.name_text, "answer withheld (SERVFAIL): {why}");
                    self.counters.inc(DnsCounter::AllowlistFailures);
                    self.counters.inc(DnsCounter::Servfail);
                    return servfail();
                }
                self.recent.lock().expect("recent lock").applied(generation, &plan.send);
            }
        }
        let mut answer = reply.bytes;
        wire::set_id(&mut answer, query.id);
        // The client's letter case back into the question (0x20), whatever the upstream did.
        if wire::question_span(&answer).as_ref() == Some(&query.question) {
            answer[query.question.clone()].copy_from_slice(question);
        }
        let _ = wire::cap_ttls(&mut answer, ttl_cap);
        if transport == Transport::Udp && answer.len() > query.udp_limit {
            // Too big for the client over UDP: it retries over TCP (addresses already learned).
            self.counters.inc(DnsCounter::TruncatedToClient);
            return wire::own_answer(&query.answer_to(&bytes), Rcode::NoError, true, false);
        }
        self.counters.inc(DnsCounter::Answered);
        answer
    }

    /// Inserts every entry into every worker's allowlist and waits until the workers have
    /// applied them, without blocking the runtime: the writer is asked not to wait, and the
    /// ticket is polled.
    async fn learn(&self, entries: &[Learn]) -> Result<(), String> {
        let deadline = Instant::now() + self.config.allowlist_timeout;
        let mut last: Option<Ticket> = None;
        for &(rule, ip, expires_at) in entries {
            let mut pause = Pause::default();
            loop {
                match self.allowlist.learn(rule, u32::from(ip), expires_at, Duration::ZERO) {
                    Ok(ticket) => {
                        last = Some(ticket);
                        self.counters.inc(DnsCounter::AllowlistInserts);
                        break;
                    }
                    Err(AllowlistSendError::Disconnected) => return Err("no dataplane worker is running".into()),
                    Err(AllowlistSendError::Full) if Instant::now() >= deadline => {
                        return Err("the workers' allowlist channels stayed full".into())
                    }
                    Err(AllowlistSendError::Full) => pause.wait().await,
                }
            }
        }
        let Some(ticket) = last else { return Ok(()) };
        let mut pause = Pause::default();
        while !self.allowlist.is_applied(ticket) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the workers did not apply the learned addresses within {:?}",
                    self.config.allowlist_timeout
                ));
            }
            pause.wait().await;
        }
        Ok(())
    }
}

/// Waiting on the runtime: a few yields (the worker usually applies within microseconds),
/// then timer sleeps.
#[derive(Default)]
struct Pause(u32);

impl Pause {
    async fn wait(&mut self) {
        self.0 += 1;
        if self.0 <= 32 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the dataplane workers expire entries by.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
