//! Caps the connections a front holds open, in all and per peer address: each accepted
//! connection takes a slot of both, given back when it closes; past either cap a new connection
//! is closed at once (the client sees the connection reset and retries, as it would for a
//! restarting server), so neither a flood of connections nor one greedy peer can exhaust memory,
//! file descriptors or the other clients' room. Accepted sockets get TCP_NODELAY.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that holds at most `max` connections open at once, at most `per_peer` of them
/// from one IP address.
pub struct Limited {
    listener: TcpListener,
    /// The front, as a metric label.
    front: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    per_peer: usize,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The second of the last "connection refused" warning, so a flood logs once a second.
    last_warning: AtomicI64,
}

/// An accepted connection, holding its slots until dropped.
pub struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// A connection's place in its peer's count (and in its front's gauge).
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    front: &'static str,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::CONNECTIONS, "front" => self.front).decrement(1);
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = peers.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

impl Limited {
    /// `front` names the front in metrics (`rest`, `grpc`).
    pub fn new(listener: TcpListener, front: &'static str, max: usize, per_peer: usize) -> Limited {
        Limited {
            listener,
            front,
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            per_peer: per_peer.max(1),
            peers: Arc::default(),
            last_warning: AtomicI64::new(i64::MIN),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits until every connection accepted so far has closed.
    pub async fn drained(&self) {
        let _ = self.slots.acquire_many(self.max as u32).await;
    }

    /// The next connection within the caps; connections past them are closed on arrival.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Counted, SocketAddr)>> {
        loop {
            let (tcp, addr) = ready!(self.listener.poll_accept(cx))?;
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.refused(addr, "connection limit reached");
                continue;
            };
            let Some(peer) = self.peer_slot(addr.ip()) else {
                self.refused(addr, "per-peer connection limit reached");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return Poll::Ready(Ok((
                Counted {
                    tcp,
                    _slot: slot,
                    _peer: peer,
                },
                addr,
            )));
        }
    }

    fn peer_slot(&self, ip: IpAddr) -> Option<PeerSlot> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let count = peers.entry(ip).or_default();
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        metrics::gauge!(crate::metrics::CONNECTIONS, "front" => self.front).increment(1);
        Some(PeerSlot {
            peers: self.peers.clone(),
            ip,
            front: self.front,
        })
    }

    fn refused(&self, addr: SocketAddr, why: &'static str) {
        metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "front" => self.front).increment(1);
        let now = crate::time::Timestamp::now().second();
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(%addr, max = self.max, per_peer = self.per_peer, "{why}; closing new connections");
        }
    }

    /// The next connection within the caps, pausing (rather than spinning) when accepting
    /// fails, as when the process is out of file descriptors.
    pub async fn accept(&self) -> (Counted, SocketAddr) {
        loop {
            match std::future::poll_fn(|cx| self.poll_accept(cx)).await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
