//! Connected UDP sockets to one upstream, shared by concurrent queries and replaced often.
//!
//! A socket per query would give every query a fresh random source port, at the price of
//! five system calls and two poller registrations each. Instead each upstream has a few
//! sockets, every one bound to a kernel-chosen random port and connected (so the kernel drops
//! datagrams from any other source); a query takes one at random and a random id unused on
//! it, and a reader task hands each reply to the query waiting for its id. A socket is
//! retired after [`QUERIES_PER_SOCKET`] queries, so ports keep changing: a spoofer still has
//! to guess the port and the id of a query in flight.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::wire;

/// Sockets per upstream.
pub const SOCKETS: usize = 8;
/// Queries sent through one socket before it is replaced by one on a new port.
pub const QUERIES_PER_SOCKET: u32 = 256;
/// Largest UDP reply read (larger ones are truncated by the kernel and then fail to parse).
const MAX_REPLY: usize = 16_384;

type Pending = Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>;

struct Channel {
    socket: Arc<UdpSocket>,
    pending: Arc<Pending>,
    sent: AtomicU32,
    retired: Arc<AtomicBool>,
}

impl Channel {
    fn open(upstream: SocketAddr) -> io::Result<Arc<Channel>> {
        let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let std_socket = std::net::UdpSocket::bind(bind)?;
        std_socket.connect(upstream)?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let pending: Arc<Pending> = Arc::default();
        let retired = Arc::new(AtomicBool::new(false));
        let (reader, waiting, done) = (Arc::clone(&socket), Arc::clone(&pending), Arc::clone(&retired));
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REPLY];
            loop {
                // Wake now and then to notice retirement once nothing is waiting any more.
                match tokio::time::timeout(Duration::from_millis(500), reader.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        let Some(id) = wire::id(&buf[..n]) else { continue };
                        let waiter = waiting.lock().expect("pending lock").remove(&id);
                        if let Some(tx) = waiter {
                            let _ = tx.send(buf[..n].to_vec());
                        }
                    }
                    // ICMP errors (port unreachable) surface here: fail every waiter at once
                    // rather than let them time out.
                    Ok(Err(_)) => waiting.lock().expect("pending lock").clear(),
                    Err(_) => {}
                }
                if done.load(Ordering::Acquire) && waiting.lock().expect("pending lock").is_empty() {
                    break;
                }
            }
        });
        Ok(Arc::new(Channel { socket, pending, sent: AtomicU32::new(0), retired }))
    }
}

/// The sockets of one upstream.
pub struct UdpPool {
    upstream: SocketAddr,
    slots: Mutex<Vec<Option<Arc<Channel>>>>,
}

impl UdpPool {
    pub fn new(upstream: SocketAddr) -> UdpPool {
        UdpPool { upstream, slots: Mutex::new(vec![None; SOCKETS]) }
    }

    /// A socket to send one query on: a random slot, opened or replaced as needed.
    fn channel(&self) -> io::Result<Arc<Channel>> {
        let slot = rand::random::<u32>() as usize % SOCKETS;
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(ch) = &slots[slot] {
            if ch.sent.fetch_add(1, Ordering::Relaxed) < QUERIES_PER_SOCKET {
                return Ok(Arc::clone(ch));
            }
            ch.retired.store(true, Ordering::Release);
        }
        let ch = Channel::open(self.upstream)?;
        ch.sent.store(1, Ordering::Relaxed);
        slots[slot] = Some(Arc::clone(&ch));
        Ok(ch)
    }

    /// Sends `query` under a random id; returns that id and the reply carrying it.
    pub async fn exchange(&self, query: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let ch = self.channel()?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = ch.pending.lock().expect("pending lock");
            let mut id: u16 = rand::random();
            while pending.contains_key(&id) {
                id = rand::random();
            }
            pending.insert(id, tx);
            id
        };
        let mut cleanup = Forget { pending: &ch.pending, id, armed: true };
        let mut out = query.to_vec();
        wire::set_id(&mut out, id);
        ch.socket.send(&out).await?;
        let reply = rx.await.map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "upstream refused"))?;
        cleanup.armed = false;
        Ok((id, reply))
    }
}

/// Forgets a waiter whose query was abandoned (timeout) or failed.
struct Forget<'a> {
    pending: &'a Pending,
    id: u16,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&self.id);
            }
        }
    }
}
