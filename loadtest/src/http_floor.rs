//! The HTTP floor: what answering keep-alive HTTP/1.1 requests costs on
//! this machine with nothing behind them. A two-worker tokio responder
//! answers every request (read up to its blank line, nothing parsed) with
//! the same body of a player lookup's size. `scripts/bench-players.sh`
//! runs `wrk` against it after the hub, with the same connections, and
//! reports the hub's player lookups as a ratio to it.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Longest request head the floor buffers (wrk's are ~200 bytes).
const MAX_HEAD: usize = 16 * 1024;

/// The bytes of one answer: a 200 with a JSON body of `body_bytes`, and
/// the headers the hub sends (a request id, a date), so the bytes on the
/// wire match its answers.
pub fn response(body_bytes: usize) -> Vec<u8> {
    let body = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(body_bytes.saturating_sub(10))
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\
         x-request-id: 019ae0a5-7c31-7d2e-9a41-3f0c2b7d9e11\r\n\
         date: Wed, 02 Dec 2026 23:00:00 GMT\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// How many whole request heads `buf` holds, and where the last ends.
fn heads(buf: &[u8]) -> (usize, usize) {
    let (mut count, mut end) = (0, 0);
    while let Some(at) = buf[end..].windows(4).position(|w| w == b"\r\n\r\n") {
        count += 1;
        end += at + 4;
    }
    (count, end)
}

async fn answer(mut socket: TcpStream, response: &'static [u8]) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let mut out = Vec::with_capacity(response.len());
    loop {
        let read = match socket.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += read;
        let (count, end) = heads(&buf[..filled]);
        if count == 0 && filled == buf.len() {
            return; // a head larger than any wrk sends
        }
        out.clear();
        for _ in 0..count {
            out.extend_from_slice(response);
        }
        buf.copy_within(end..filled, 0);
        filled -= end;
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Serves on `bind` until the process is killed.
pub async fn serve(bind: &str, body_bytes: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    let response: &'static [u8] = Box::leak(response(body_bytes).into_boxed_slice());
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(answer(socket, response));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_their_length_and_heads_are_counted() {
        let text = String::from_utf8(response(1000)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 1000);
        assert!(head.contains("content-length: 1000\r\n"), "{head}");
        assert_eq!(heads(b"GET / HTTP/1.1\r\n\r\nGET /"), (1, 18));
        assert_eq!(
            heads(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            (2, 36)
        );
        assert_eq!(heads(b"GET / HT"), (0, 0));
    }
}
