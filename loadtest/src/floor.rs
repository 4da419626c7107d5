//! The floor: what writing one pre-encoded frame to N plain sockets costs
//! on this machine. A minimal server loop accepts the workers' plain
//! sockets, then writes the same bytes (a WebSocket binary frame the size
//! of the hub's delta) to each in turn; the workers note when each whole
//! frame arrived. The hub's fan-out is reported as a ratio to this.

use anyhow::Context;
use std::{net::SocketAddr, time::Duration};
use tokio::{io::AsyncWriteExt, net::TcpListener, net::TcpStream};

/// A WebSocket binary frame (server to client: unmasked) around `payload`.
pub fn ws_binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// The floor server and its accepted sockets.
#[derive(Debug)]
pub struct Floor {
    listener: TcpListener,
    sockets: Vec<TcpStream>,
}

impl Floor {
    pub async fn bind() -> anyhow::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind("127.0.0.1:0").await?,
            sockets: Vec::new(),
        })
    }

    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts until `n` sockets are in (or 60 s pass).
    pub async fn accept(&mut self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.sockets.len() < n {
            let (socket, _) = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .with_context(|| {
                    format!(
                        "the floor accepted {} of {n} sockets in 60 s",
                        self.sockets.len()
                    )
                })??;
            socket.set_nodelay(true)?;
            self.sockets.push(socket);
        }
        Ok(())
    }

    /// Writes `frame` to every socket in turn; returns when the writes
    /// started (Unix µs).
    pub async fn write_all(&mut self, frame: &[u8]) -> anyhow::Result<u64> {
        let started = crate::now_us();
        for socket in &mut self.sockets {
            socket.write_all(frame).await?;
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(ws_binary_frame(&[1, 2]), vec![0x82, 2, 1, 2]);
        let mid = ws_binary_frame(&[0; 300]);
        assert_eq!(&mid[..4], &[0x82, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        assert_eq!(ws_binary_frame(&vec![0; 70_000])[1], 127);
    }
}
