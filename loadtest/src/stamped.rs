//! A client socket that knows when its data reached the machine: every
//! read is a `recvmsg` asking for the kernel's receive time of the data
//! (`SO_TIMESTAMPNS`), kept as [`StampedStream::received_us`].
//!
//! The simulated servers share two cores with the hub and with each other:
//! the moment a server's task gets to decode a frame includes waiting for
//! every other simulated server ahead of it on its thread. That wait is the
//! harness's, not the hub's (a real fleet has a machine per server), so
//! delivery is timed where the network hands the frame over: at the socket.
//! The floor's sockets are timed the same way.

use nix::sys::{
    socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt::ReceiveTimestampns},
    time::TimeSpec,
};
use std::{
    io::{self, IoSliceMut},
    os::fd::AsRawFd,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
};

/// A TCP stream whose reads note the kernel's receive time.
#[derive(Debug)]
pub struct StampedStream {
    inner: TcpStream,
    /// Kernel receive time of the data of the latest read (Unix µs); 0
    /// before the first.
    received_us: u64,
    /// Reads that came without a kernel time (stamped when read instead).
    unstamped_reads: u64,
    control: Vec<u8>,
}

impl StampedStream {
    pub fn new(inner: TcpStream) -> io::Result<Self> {
        setsockopt(&inner, ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(Self {
            inner,
            received_us: 0,
            unstamped_reads: 0,
            control: nix::cmsg_space!(TimeSpec),
        })
    }

    /// When the data of the latest read reached the socket (Unix µs). For
    /// TCP the kernel reports the newest segment the read consumed, so a
    /// read that took a frame and the start of the next one is stamped
    /// with the later time: never earlier than the frame's own arrival.
    pub fn received_us(&self) -> u64 {
        self.received_us
    }

    /// Reads the kernel gave no receive time for (the first moments after
    /// a machine's first socket asks for them, while the kernel turns
    /// receive stamps on); those were stamped when read.
    pub fn unstamped_reads(&self) -> u64 {
        self.unstamped_reads
    }

    fn read_stamped(&mut self, into: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        let fd = self.inner.as_raw_fd();
        let control = &mut self.control;
        self.inner.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(into)];
            let msg = recvmsg::<()>(
                fd,
                &mut iov,
                Some(control.as_mut_slice()),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let mut stamp = None;
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmTimestampns(at) = cmsg {
                    let us = at.tv_sec() as i128 * 1_000_000 + at.tv_nsec() as i128 / 1000;
                    stamp = u64::try_from(us).ok();
                }
            }
            Ok((msg.bytes, stamp))
        })
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            match this.read_stamped(buf.initialize_unfilled()) {
                Ok((n, stamp)) => {
                    if let Some(us) = stamp {
                        this.received_us = us;
                    } else if n > 0 {
                        this.received_us = crate::now_us();
                        this.unstamped_reads += 1;
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_carry_the_kernels_receive_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut stamped = StampedStream::new(client.unwrap()).unwrap();
        let (mut server, _) = accepted.unwrap();
        // The kernel turns receive stamps on shortly after the first socket
        // asks: until then reads are stamped when read, and counted.
        for attempt in 0..50 {
            let before = crate::now_us();
            server.write_all(b"hello").await.unwrap();
            // The data sits in the socket: its stamp is its arrival, not the read.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let mut got = [0u8; 5];
            let unstamped = stamped.unstamped_reads();
            stamped.read_exact(&mut got).await.unwrap();
            let read_at = crate::now_us();
            assert_eq!(&got, b"hello");
            if stamped.unstamped_reads() > unstamped {
                assert!(attempt < 49, "the kernel never stamped a read");
                continue;
            }
            let stamp = stamped.received_us();
            assert!(stamp + 1000 >= before, "{stamp} < {before}");
            assert!(
                read_at - stamp >= 25_000,
                "stamped at the read, not the arrival: {} µs",
                read_at - stamp
            );
            break;
        }
        stamped.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        server.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
