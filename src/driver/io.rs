//! The buffered socket of one live connection.
//!
//! Packets are decoded from the read buffer in place and encoded into the write buffer,
//! which goes out in batches: many acks, one write. Nothing here knows MQTT.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

use crate::error::DownReason;
use crate::transport::{down_reason, Stream};

/// Bytes requested from the socket per read when the buffer runs low.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A connection's transport with its read and write buffers.
pub(crate) struct Buffered {
    io: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes were written since the last completed flush.
    needs_flush: bool,
    /// Bytes read so far: the keepalive's evidence that the broker is alive.
    rx_total: u64,
    /// The broker's close was seen (see [`Buffered::peer_closed`]).
    peer_closed: bool,
    /// Bytes were written since [`Buffered::peer_closed`] last looked.
    wrote: bool,
    /// How long the TCP handshake took (about one round trip).
    connect_rtt: Duration,
}

impl Buffered {
    /// Wrap a connected transport whose TCP handshake took `connect_rtt`; `read_buf` may
    /// already hold bytes read past the CONNACK.
    pub(crate) fn new(io: Stream, read_buf: BytesMut, connect_rtt: Duration) -> Self {
        Self {
            io,
            read_buf,
            write_buf: BytesMut::with_capacity(4096),
            needs_flush: false,
            rx_total: 0,
            peer_closed: false,
            wrote: false,
            connect_rtt,
        }
    }

    /// How long the TCP handshake took.
    pub(crate) fn connect_rtt(&self) -> Duration {
        self.connect_rtt
    }

    /// The socket's receive buffer size, as the kernel reports it.
    pub(crate) fn receive_buffer(&self) -> std::io::Result<usize> {
        self.io.receive_buffer()
    }

    /// Fix the socket's receive buffer at `bytes` (see [`Stream::set_receive_buffer`]).
    pub(crate) fn set_receive_buffer(&self, bytes: usize) -> std::io::Result<()> {
        self.io.set_receive_buffer(bytes)
    }

    /// Whether the broker has closed the connection although bytes it sent before are
    /// still buffered or unread (plain TCP only; see [`Stream::poll_peer_closed`]).
    /// Looked at only while the read buffer holds bytes: that is when it matters.
    #[inline]
    pub(crate) fn peer_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.peer_closed && !self.read_buf.is_empty() {
            self.peer_closed = self.io.poll_peer_closed(cx, self.wrote);
            self.wrote = false;
        }
        self.peer_closed
    }

    /// Received bytes not decoded yet.
    #[inline]
    pub(crate) fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Encoded packets not written yet.
    #[inline]
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Bytes read from the socket since the connection opened.
    #[inline]
    pub(crate) fn rx_total(&self) -> u64 {
        self.rx_total
    }

    /// Whether everything encoded so far has been written and flushed.
    #[inline]
    pub(crate) fn is_flushed(&self) -> bool {
        self.write_buf.is_empty() && !self.needs_flush
    }

    /// Write as much of the write buffer as the socket takes; once it is empty, flush.
    /// Returns whether anything happened: bytes written, or a flush completed (the
    /// closing phases wait for that, and a flush that was pending may complete in a pass
    /// that has nothing else to do).
    #[inline]
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, DownReason> {
        let mut progress = false;
        while !self.write_buf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write_buf) {
                Poll::Ready(Ok(0)) => return Err(DownReason::Closed),
                Poll::Ready(Ok(n)) => {
                    self.write_buf.advance(n);
                    self.needs_flush = true;
                    self.wrote = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(down_reason(e)),
                Poll::Pending => break,
            }
        }
        if self.write_buf.is_empty() && self.needs_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(down_reason(e)),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Read more into the read buffer, with room for at least `needed` more bytes (the
    /// rest of an incomplete packet). Returns whether bytes arrived; the end of the
    /// stream is an error: the broker closed the connection.
    #[inline]
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        needed: usize,
    ) -> Result<bool, DownReason> {
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < needed.max(4096) {
            self.read_buf.reserve(needed.max(READ_CHUNK));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
            Poll::Ready(Ok(0)) => Err(DownReason::Closed),
            Poll::Ready(Ok(n)) => {
                self.rx_total += n as u64;
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(down_reason(e)),
            Poll::Pending => Ok(false),
        }
    }

    /// Everything is written: close our side, then read and drop whatever still arrives
    /// until the broker closes its side, so that it has read every ack before the
    /// socket goes away (closing with unread data would send a RST, which can discard
    /// them). True once the broker has closed (or the connection failed).
    pub(crate) fn poll_linger(&mut self, cx: &mut Context<'_>) -> bool {
        // From here on errors no longer matter: every ack is written.
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => self.discard_until_eof(cx),
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        }
    }

    /// Read and drop whatever arrives until the broker closes; true once it has (or
    /// the connection failed).
    fn discard_until_eof(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            self.read_buf.clear();
            if self.read_buf.capacity() < 4096 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
    }
}
