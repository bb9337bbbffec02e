//! Lingering close: what nginx calls `lingering_close`.
//!
//! A server that answers a request before reading its body (a 413 for an 8 MiB upload) and
//! then closes the connection leaves the client's unsent bytes arriving at a closed socket;
//! the kernel answers them with a reset, which destroys the answer in the client's receive
//! buffer before the client (still busy sending) reads it — the client sees "EOF occurred in
//! violation of protocol" instead of the 413. So when hyper has finished with such a
//! connection (it has written the answer, sent TLS close_notify and shut the write side), the
//! connection is kept open a little longer and whatever the client still sends is read and
//! discarded, bounded in bytes and in time, and only then closed.
//!
//! hyper owns the stream while it serves the connection and drops it when done; [`Lend`] is
//! the stream as hyper sees it, and gives the stream back when hyper drops it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// At most this much is read and discarded.
pub(crate) const LINGER_BYTES: u64 = 64 << 20;
/// For at most this long in all...
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(30);
/// ...and at most this long without receiving anything.
pub(crate) const LINGER_QUIET: Duration = Duration::from_secs(2);

/// A stream lent to hyper: returned through the receiver of [`Lend::new`] when dropped.
pub(crate) struct Lend<T> {
    stream: Option<T>,
    back: Option<oneshot::Sender<T>>,
}

impl<T> Lend<T> {
    pub fn new(stream: T) -> (Lend<T>, oneshot::Receiver<T>) {
        let (back, returned) = oneshot::channel();
        (
            Lend {
                stream: Some(stream),
                back: Some(back),
            },
            returned,
        )
    }

    fn stream(&mut self) -> io::Result<&mut T> {
        // Only `drop` takes it; never observed here.
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("stream already returned"))
    }
}

impl<T> Drop for Lend<T> {
    fn drop(&mut self) {
        if let (Some(stream), Some(back)) = (self.stream.take(), self.back.take()) {
            let _ = back.send(stream);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lend<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lend<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Reads and discards what the peer still sends, within the bounds above; returns the bytes
/// discarded. The caller drops (closes) the stream afterwards.
pub(crate) async fn drain<T: AsyncRead + Unpin>(stream: &mut T) -> u64 {
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    let until = tokio::time::Instant::now() + LINGER_TIME;
    while discarded < LINGER_BYTES {
        let quiet = tokio::time::Instant::now() + LINGER_QUIET;
        match tokio::time::timeout_at(until.min(quiet), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
            _ => break, // end of stream, an error, or time is up
        }
    }
    discarded
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_lent_stream_comes_back_when_dropped() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut lent, returned) = Lend::new(a);
        lent.write_all(b"hi").await.unwrap();
        drop(lent);
        let mut a = returned.await.unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        let writer = tokio::spawn(async move {
            b.write_all(&[0u8; 1000]).await.unwrap();
        });
        assert_eq!(drain(&mut a).await, 1000);
        writer.await.unwrap();
    }
}
