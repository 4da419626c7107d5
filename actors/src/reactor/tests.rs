//! The socket set's tests: bytes both ways, the busy window, held reads.

use super::*;
use crate::socket::tests::local;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (accepted.unwrap().0, client.unwrap())
}

fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(10), f)
}

#[test]
fn bytes_cross_both_ways_and_a_close_ends_the_read() {
    local(async {
        let (hub, mut client) = pair().await;
        let (mut reader, mut writer) = take(hub).unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        within(reader.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"hello");
        writer.write_all(b"world").await.unwrap();
        within(client.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"world");
        writer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        within(client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty(), "the write side is shut");
        drop(client);
        let n = within(reader.read(&mut got)).await.unwrap().unwrap();
        assert_eq!(n, 0, "the client closed");
    });
}

#[test]
fn sockets_kept_busy_are_read_by_the_window_and_lose_nothing() {
    local(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        const SOCKETS: usize = 50;
        const ROUNDS: usize = 40;
        // Another thread writes a byte to one socket after another,
        // every 50 µs for about 100 ms: wakes come well within the
        // window, so the set goes busy.
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            let mut clients: Vec<_> = (0..SOCKETS)
                .map(|_| std::net::TcpStream::connect(address).unwrap())
                .collect();
            for round in 0..ROUNDS {
                for client in &mut clients {
                    client.write_all(&[round as u8]).unwrap();
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            clients
        });
        let std_listener = tokio::net::TcpListener::from_std({
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .unwrap();
        let mut readers = Vec::new();
        for _ in 0..SOCKETS {
            let (hub, _) = within(std_listener.accept()).await.unwrap().unwrap();
            readers.push(take(hub).unwrap().0);
        }
        // Every socket's bytes, in order, however they were batched.
        let reads = readers.iter_mut().map(|reader| async move {
            let mut got = vec![0u8; ROUNDS];
            within(reader.read_exact(&mut got)).await.unwrap().unwrap();
            got
        });
        for got in futures_util::future::join_all(reads).await {
            assert_eq!(got, (0..ROUNDS as u8).collect::<Vec<_>>());
        }
        drop(writer.join().unwrap());
        let reactor = Reactor::current().unwrap();
        assert!(reactor.windowed.get() > 0, "the set went busy");
    });
}

/// Reads a socket on this worker in a task of its own: when it got
/// its bytes.
fn read_later(mut reader: TcpReader) -> tokio::task::JoinHandle<(TcpReader, Instant)> {
    tokio::task::spawn_local(async move {
        let mut got = [0; 1];
        within(reader.read_exact(&mut got)).await.unwrap().unwrap();
        (reader, Instant::now())
    })
}

#[test]
fn reads_wait_behind_the_fanout_writes_due_on_their_worker() {
    local(async {
        let (hub, mut client) = pair().await;
        let (reader, _writer) = take(hub).unwrap();
        // Only the writes going can let the read go here.
        Reactor::current()
            .unwrap()
            .max_hold
            .set(Duration::from_secs(3600));
        let read = read_later(reader);
        tokio::task::yield_now().await;
        // A push's writes are due here: the ack that comes meanwhile
        // waits for them.
        let due = due::on_this_thread();
        due.fetch_add(1, Ordering::SeqCst);
        client.write_all(b"a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!read.is_finished(), "read while a write was due");
        let written = Instant::now();
        due.fetch_sub(1, Ordering::SeqCst);
        let (reader, at) = within(read).await.unwrap().unwrap();
        assert!(at >= written, "read before the writes went");
        // Nothing due: a read goes at once (the set goes idle again).
        let read = read_later(reader);
        tokio::task::yield_now().await;
        client.write_all(b"b").await.unwrap();
        within(read).await.unwrap().unwrap();
    });
}

#[test]
fn a_read_waits_for_due_writes_at_most_its_hold() {
    local(async {
        let (hub, mut client) = pair().await;
        let (reader, _writer) = take(hub).unwrap();
        let read = read_later(reader);
        tokio::task::yield_now().await;
        // Writes due that never go (a count that never falls).
        let due = due::on_this_thread();
        due.fetch_add(1, Ordering::SeqCst);
        let sent = Instant::now();
        client.write_all(b"a").await.unwrap();
        let (_, at) = within(read).await.unwrap().unwrap();
        due.fetch_sub(1, Ordering::SeqCst);
        assert!(at - sent >= MAX_READ_HOLD, "held {:?}", at - sent);
    });
}

/// The whole path: a fan-out to a served socket counts on the worker the
/// socket lives on until its writer has taken the frame.
#[test]
fn a_fanout_to_a_served_socket_is_due_until_its_writer_takes_it() {
    actix::System::new().block_on(async {
        let (hub, mut client) = pair().await;
        let (outbox, _reader) = crate::socket::serve(
            Box::new(hub),
            bytes::BytesMut::new(),
            8,
            1024,
            &std::sync::Arc::default(),
        )
        .unwrap();
        let mut fanout = crate::Fanout::new();
        fanout
            .push(&outbox, bytes::Bytes::from_static(b"d"))
            .unwrap();
        assert!(!due::writes_due(), "queued, not yet woken");
        fanout.wake();
        assert!(due::writes_due(), "woken, not yet taken");
        let mut frame = [0; 3];
        within(client.read_exact(&mut frame))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame, [0x82, 1, b'd']);
        assert!(!due::writes_due(), "taken and written");
        // A server that stopped reading: its writer stalls on a full
        // socket, and a push for it holds nobody's reads.
        outbox
            .push(bytes::Bytes::from(vec![7u8; 32 << 20]))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut fanout = crate::Fanout::new();
        fanout
            .push(&outbox, bytes::Bytes::from_static(b"e"))
            .unwrap();
        fanout.wake();
        assert!(due::writes_due());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!due::writes_due(), "a stalled writer holds no reads");
    });
}

#[test]
fn a_full_send_buffer_waits_for_the_client_to_read() {
    local(async {
        let (hub, mut client) = pair().await;
        let (_reader, mut writer) = take(hub).unwrap();
        let block = vec![9u8; 1 << 20];
        let sent = 8usize << 20;
        let write = async {
            for _ in 0..8 {
                writer.write_all(&block).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        };
        let read = async {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all.len()
        };
        let ((), got) = within(async { tokio::join!(write, read) }).await.unwrap();
        assert_eq!(got, sent);
    });
}

#[test]
fn a_dropped_socket_frees_its_place_and_is_closed() {
    local(async {
        let (hub, mut client) = pair().await;
        let (reader, writer) = take(hub).unwrap();
        let reactor = Reactor::current().unwrap();
        assert_eq!(reactor.sockets.borrow().len(), 1);
        drop(reader);
        assert_eq!(
            reactor.sockets.borrow().len(),
            1,
            "the writer still holds it"
        );
        drop(writer);
        assert_eq!(reactor.sockets.borrow().len(), 0);
        let mut rest = Vec::new();
        within(client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    });
}
