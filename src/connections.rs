//! Caps the connections a front holds open: each accepted connection takes a slot, given back
//! when it closes; past the cap a new connection is closed at once (the client sees the
//! connection refused and retries, as it would for a restarting server), so a flood of
//! connections cannot exhaust memory or file descriptors. Accepted sockets get TCP_NODELAY.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A listener that holds at most `max` connections open at once.
pub struct Limited {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    /// The second of the last "connection refused" warning, so a flood logs once a second.
    last_warning: AtomicI64,
}

/// An accepted connection, holding its slot until dropped.
pub struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Limited {
    pub fn new(listener: TcpListener, max: usize) -> Limited {
        Limited {
            listener,
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            last_warning: AtomicI64::new(i64::MIN),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the cap; connections past it are closed on arrival.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Counted, SocketAddr)>> {
        loop {
            let (tcp, addr) = ready!(self.listener.poll_accept(cx))?;
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let _ = tcp.set_nodelay(true);
                    return Poll::Ready(Ok((Counted { tcp, _slot: slot }, addr)));
                }
                Err(_) => self.refused(addr),
            }
        }
    }

    fn refused(&self, addr: SocketAddr) {
        let now = crate::time::Timestamp::now().second();
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(%addr, max = self.max, "connection limit reached; closing new connections");
        }
    }
}

impl tokio_stream::Stream for Limited {
    type Item = io::Result<Counted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_accept(cx)
            .map(|accepted| Some(accepted.map(|(io, _)| io)))
    }
}

impl axum::serve::Listener for Limited {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            match std::future::poll_fn(|cx| self.poll_accept(cx)).await {
                Ok(accepted) => return accepted,
                // Out of file descriptors and the like: pause rather than spin (as axum does).
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Limited::local_addr(self)
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
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
