//! The connections a listener takes: Nagle's algorithm off, and at most
//! [`CONNECTIONS_MAX`] open at once.
//!
//! Every open connection costs the server its HTTP/2 buffers and a task;
//! without a bound, a client opening connections faster than it closes
//! them takes the memory the stock needs. A connection past the bound is
//! accepted and closed at once (counted in
//! `stockraft_connections_refused_total`), so its client fails fast and
//! the listen backlog never fills with connections nobody will serve.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

pub use crate::limits::CONNECTIONS_MAX;

/// The connections `listener` accepts, each with Nagle's algorithm off.
/// The tonic builder's own `tcp_nodelay` applies only to listeners tonic
/// binds itself and is ignored for one handed in, as the server does (to
/// fail fast on a taken port and learn the port bound). Left on, a
/// response longer than one segment waits for the client's delayed ACK
/// (40 ms on Linux), as a 1,000-SKU availability read does.
pub fn accept(listener: tokio::net::TcpListener, connections_max: usize) -> Admitted {
    Admitted {
        inner: TcpIncoming::from(listener).with_nodelay(Some(true)),
        open: Arc::new(Semaphore::new(connections_max)),
    }
}

/// A listener's connections, at most a bound of them open at once.
pub struct Admitted {
    inner: TcpIncoming,
    open: Arc<Semaphore>,
}

impl Stream for Admitted {
    type Item = Result<Counted, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let next = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Poll::Pending,
            };
            let stream = match next {
                Some(Ok(stream)) => stream,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            match self.open.clone().try_acquire_owned() {
                Ok(permit) => {
                    return Poll::Ready(Some(Ok(Counted {
                        stream,
                        _permit: permit,
                    })))
                }
                Err(_) => {
                    metrics::counter!("stockraft_connections_refused_total").increment(1);
                    // Dropped: closed at once.
                    drop(stream);
                }
            }
        }
    }
}

/// An open connection, holding its place under the bound until closed.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    use super::*;

    /// A connection the server accepts has Nagle's algorithm off, where a
    /// plain accept leaves it on.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let _plain_client = TcpStream::connect(plain_addr).await.unwrap();
        let (plain_accepted, _) = plain.accept().await.unwrap();
        assert!(!plain_accepted.nodelay().unwrap());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accept(listener, 4);
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.stream.nodelay().unwrap());
    }

    /// Past the bound a connection is closed at once; closing one makes
    /// room for the next.
    #[tokio::test]
    async fn connections_past_the_bound_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accept(listener, 1);
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let third = incoming.next().await.unwrap().unwrap();
            (incoming, third)
        });
        // The second is accepted and dropped: its client reads end of file.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut byte))
            .await
            .expect("the connection past the bound was left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        drop(first);
        let _third_client = TcpStream::connect(addr).await.unwrap();
        let (_incoming, third) = accepting.await.unwrap();
        assert!(third.stream.nodelay().unwrap());
    }
}
