//! The proxy's own upstream client: ordered upstreams with a per-attempt timeout and
//! failover, a random id per query on connected UDP sockets on random ports that are replaced
//! often ([`crate::udp_pool`]), replies checked for id, question and source, TC answered by a
//! retry over TCP, and one reused TCP connection per upstream that carries many queries at
//! once (pipelining, matched by id).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::debug;

use crate::answer::check_reply;
use crate::counters::{DnsCounter, DnsCounters};
use crate::udp_pool::UdpPool;
use crate::wire;

/// How long an upstream that failed is tried only after the others.
pub const DEAD_FOR: Duration = Duration::from_secs(5);
/// Largest DNS message over TCP.
const MAX_TCP_MESSAGE: usize = 65_535;

/// Why no upstream answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Every upstream timed out or failed.
    AllFailed,
}

/// A validated reply: the bytes (id still the upstream one) and their parsed form.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub message: Message,
}

struct Upstream {
    addr: SocketAddr,
    /// Milliseconds since `Upstreams::epoch` until which this upstream is tried last.
    dead_until_ms: AtomicU64,
    udp: UdpPool,
    tcp: tokio::sync::Mutex<Option<Arc<TcpConn>>>,
}

pub struct Upstreams {
    list: Vec<Upstream>,
    timeout: Duration,
    epoch: Instant,
    counters: Arc<DnsCounters>,
}

impl Upstreams {
    pub fn new(addrs: &[SocketAddr], timeout: Duration, counters: Arc<DnsCounters>) -> Upstreams {
        let list = addrs
            .iter()
            .map(|&addr| Upstream {
                addr,
                dead_until_ms: AtomicU64::new(0),
                udp: UdpPool::new(addr),
                tcp: tokio::sync::Mutex::new(None),
            })
            .collect();
        Upstreams { list, timeout, epoch: Instant::now(), counters }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Upstreams in configured order, those that failed in the last [`DEAD_FOR`] last.
    fn in_order(&self) -> Vec<&Upstream> {
        let now = self.now_ms();
        let (alive, dead): (Vec<&Upstream>, Vec<&Upstream>) =
            self.list.iter().partition(|u| u.dead_until_ms.load(Ordering::Relaxed) <= now);
        alive.into_iter().chain(dead).collect()
    }

    /// Sends `query` (the client's bytes; its id is replaced) to the upstreams in order until
    /// one answers. `question` is the query's question bytes.
    pub async fn exchange(&self, query: &[u8], question: &[u8]) -> Result<Reply, UpstreamFailure> {
        for (attempt, upstream) in self.in_order().into_iter().enumerate() {
            if attempt > 0 {
                self.counters.inc(DnsCounter::UpstreamFailovers);
            }
            let started = Instant::now();
            let result = match tokio::time::timeout(self.timeout, self.ask(upstream, query, question)).await {
                Ok(r) => r,
                Err(_) => {
                    self.counters.inc(DnsCounter::UpstreamTimeouts);
                    Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
                }
            };
            match result {
                Ok(reply) => {
                    self.counters.upstream_latency(started.elapsed());
                    upstream.dead_until_ms.store(0, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(e) => {
                    if e.kind() != io::ErrorKind::TimedOut {
                        self.counters.inc(DnsCounter::UpstreamErrors);
                    }
                    debug!(upstream = %upstream.addr, "upstream failed: {e}");
                    let until = self.now_ms() + DEAD_FOR.as_millis() as u64;
                    upstream.dead_until_ms.store(until, Ordering::Relaxed);
                }
            }
        }
        Err(UpstreamFailure::AllFailed)
    }

    /// One upstream: UDP, then TCP if the UDP answer was truncated.
    async fn ask(&self, upstream: &Upstream, query: &[u8], question: &[u8]) -> io::Result<Reply> {
        let reply = self.ask_udp(upstream, query, question).await?;
        if !wire::is_truncated(&reply.bytes) {
            return Ok(reply);
        }
        self.counters.inc(DnsCounter::UpstreamTcpRetries);
        self.ask_tcp(upstream, query, question).await
    }

    async fn ask_udp(&self, upstream: &Upstream, query: &[u8], question: &[u8]) -> io::Result<Reply> {
        let (id, bytes) = upstream.udp.exchange(query).await?;
        match check_reply(&bytes, id, question) {
            Ok(message) => Ok(Reply { bytes, message }),
            Err(bad) => {
                // The connected socket only takes datagrams from the upstream itself.
                self.counters.inc(DnsCounter::UpstreamBadReplies);
                Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad UDP reply: {bad:?}")))
            }
        }
    }

    async fn ask_tcp(&self, upstream: &Upstream, query: &[u8], question: &[u8]) -> io::Result<Reply> {
        // A reused connection may have been closed by the upstream meanwhile: one retry on a
        // fresh connection.
        for fresh in [false, true] {
            let conn = self.tcp_conn(upstream, fresh).await?;
            match conn.exchange(query).await {
                Ok((id, bytes)) => {
                    return match check_reply(&bytes, id, question) {
                        Ok(message) => Ok(Reply { bytes, message }),
                        Err(bad) => {
                            self.counters.inc(DnsCounter::UpstreamBadReplies);
                            Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad TCP reply: {bad:?}")))
                        }
                    };
                }
                Err(e) if !fresh => {
                    debug!(upstream = %upstream.addr, "reused TCP connection failed ({e}); reconnecting")
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn tcp_conn(&self, upstream: &Upstream, fresh: bool) -> io::Result<Arc<TcpConn>> {
        let mut slot = upstream.tcp.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !fresh && !conn.closed.load(Ordering::Acquire) {
                return Ok(Arc::clone(conn));
            }
        }
        let stream = TcpStream::connect(upstream.addr).await?;
        let _ = stream.set_nodelay(true);
        self.counters.inc(DnsCounter::UpstreamTcpConnects);
        let conn = TcpConn::start(stream);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

type Pending = Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>;

/// One TCP connection to an upstream shared by concurrent queries: each gets an id unused on
/// the connection, writes its framed query, and is woken by the reader task when the reply
/// with its id arrives (replies may come in any order).
struct TcpConn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
}

impl TcpConn {
    fn start(stream: TcpStream) -> Arc<TcpConn> {
        let (mut reader, writer) = stream.into_split();
        let pending: Arc<Pending> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (pending2, closed2) = (Arc::clone(&pending), Arc::clone(&closed));
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_TCP_MESSAGE];
            while let Ok(len) = reader.read_u16().await {
                let len = usize::from(len);
                if reader.read_exact(&mut buf[..len]).await.is_err() {
                    break;
                }
                let Some(id) = wire::id(&buf[..len]) else { continue };
                let waiter = pending2.lock().expect("pending lock").remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(buf[..len].to_vec());
                }
            }
            closed2.store(true, Ordering::Release);
            // Dropping the senders wakes every waiter with an error.
            pending2.lock().expect("pending lock").clear();
        });
        Arc::new(TcpConn { writer: tokio::sync::Mutex::new(writer), pending, closed })
    }

    /// Sends `query` under a fresh id; returns that id and the reply carrying it.
    async fn exchange(&self, query: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self.pending.lock().expect("pending lock");
            if self.closed.load(Ordering::Acquire) {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection closed"));
            }
            let mut id: u16 = rand::random();
            while pending.contains_key(&id) {
                id = rand::random();
            }
            pending.insert(id, tx);
            id
        };
        let mut cleanup = RemoveOnDrop { pending: &self.pending, id, armed: true };
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        wire::set_id(&mut framed[2..], id);
        {
            let mut writer = self.writer.lock().await;
            if let Err(e) = writer.write_all(&framed).await {
                self.closed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        let reply = rx.await.map_err(|_| io::Error::new(io::ErrorKind::ConnectionReset, "connection closed"))?;
        // The reader removed the entry; the id may already serve another query.
        cleanup.armed = false;
        Ok((id, reply))
    }
}

/// Forgets a waiter whose query was abandoned (timeout) or failed.
struct RemoveOnDrop<'a> {
    pending: &'a Pending,
    id: u16,
    armed: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.id);
        }
    }
}
