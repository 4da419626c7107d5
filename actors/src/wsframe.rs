//! WebSocket frames as RFC 6455 says a client sends them, parsed and
//! bounded: [`parse`] takes whole messages off a buffer, checking every
//! length against the limit before a byte of it is kept.

use bytes::{Buf, Bytes, BytesMut};
use std::io;

/// What a game server sent: one whole message (continuations joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    /// A text message (refused by the protocol; its content is not kept).
    Text,
    Ping(Bytes),
    Pong,
    /// A close frame, with its code if it carried one.
    Close(Option<u16>),
}

/// Why reading the socket stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A message longer than the limit (its bytes were never buffered).
    Overflow,
    /// Not WebSocket as RFC 6455 says a client speaks it.
    Protocol(String),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Overflow => f.write_str("message larger than the limit"),
            ReadError::Protocol(why) => f.write_str(why),
            ReadError::Io(error) => write!(f, "reading the socket: {error}"),
        }
    }
}

fn protocol(why: impl Into<String>) -> ReadError {
    ReadError::Protocol(why.into())
}

/// A message begun by a data frame without FIN, waiting for its continuations.
#[derive(Debug)]
pub(crate) struct Partial {
    binary: bool,
    data: BytesMut,
}

/// The WebSocket opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Takes the next whole message off the front of `buf`, if it holds one.
/// Every length is checked against `max_message` before a byte of it is
/// buffered; a client's frames must be masked, carry no reserved bits (no
/// extension is negotiated) and use known opcodes; control frames are
/// short and unfragmented.
pub(crate) fn parse(
    buf: &mut BytesMut,
    max_message: usize,
    partial: &mut Option<Partial>,
) -> Result<Option<Incoming>, ReadError> {
    loop {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buf[0], buf[1]);
        if first & 0x70 != 0 {
            return Err(protocol("reserved bits set, and no extension was agreed"));
        }
        if second & 0x80 == 0 {
            return Err(protocol("a client's frames must be masked"));
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let control = opcode & 0x08 != 0;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(protocol(format!("unknown opcode {opcode}")));
        }
        let (length, header) = match second & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        if control && (!fin || length > 125) {
            return Err(protocol(
                "control frames are at most 125 bytes and never fragmented",
            ));
        }
        // A control frame between fragments is not part of the message.
        let held = if control {
            0
        } else {
            partial.as_ref().map_or(0, |p| p.data.len()) as u64
        };
        if length.saturating_add(held) > max_message as u64 {
            return Err(ReadError::Overflow);
        }
        // Bounded by `max_message` just above.
        let length = length as usize;
        let total = header + 4 + length;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mask = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        buf.advance(header + 4);
        // A frame that ends the buffer takes it whole: `split_to` would
        // first make the buffer shared (an allocation, then a free, per
        // message of a socket that sends one at a time).
        let mut payload = if buf.len() == length {
            std::mem::take(buf)
        } else {
            buf.split_to(length)
        };
        unmask(&mut payload, mask);
        match opcode {
            CLOSE => {
                return match payload.len() {
                    0 => Ok(Some(Incoming::Close(None))),
                    1 => Err(protocol("a close frame's code is two bytes")),
                    _ => Ok(Some(Incoming::Close(Some(u16::from_be_bytes([
                        payload[0], payload[1],
                    ]))))),
                };
            }
            PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
            PONG => return Ok(Some(Incoming::Pong)),
            CONTINUATION => {
                let Some(message) = partial.as_mut() else {
                    return Err(protocol("a continuation frame with no message to continue"));
                };
                message.data.extend_from_slice(&payload);
                if fin {
                    let done = partial.take().expect("checked above");
                    return Ok(Some(whole(done.binary, done.data)));
                }
            }
            _ => {
                if partial.is_some() {
                    return Err(protocol("a new message began before the last one ended"));
                }
                let binary = opcode == BINARY;
                if fin {
                    return Ok(Some(whole(binary, payload)));
                }
                *partial = Some(Partial {
                    binary,
                    data: payload,
                });
            }
        }
    }
}

fn whole(binary: bool, data: BytesMut) -> Incoming {
    if binary {
        Incoming::Binary(data.freeze())
    } else {
        Incoming::Text
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client's frame: masked, with `first` as its first byte.
    pub(crate) fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, String>> {
        let mut buf = BytesMut::from(bytes);
        let mut partial = None;
        let mut out = Vec::new();
        loop {
            match parse(&mut buf, max, &mut partial) {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => return out,
                Err(error) => {
                    out.push(Err(error.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn masked_frames_of_every_length_form_parse() {
        for size in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let parsed = parse_all(&frame(0x82, &payload), 100_000);
            assert_eq!(parsed, vec![Ok(Incoming::Binary(payload.into()))], "{size}");
        }
    }

    #[test]
    fn a_frame_arriving_a_byte_at_a_time_parses_once_whole() {
        let mut bytes = frame(0x82, b"hello");
        bytes.extend(frame(0x89, b"p"));
        let mut buf = BytesMut::new();
        let mut partial = None;
        let mut got = Vec::new();
        for byte in bytes {
            buf.extend_from_slice(&[byte]);
            while let Some(message) = parse(&mut buf, 1024, &mut partial).unwrap() {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Binary(Bytes::from_static(b"hello")),
                Incoming::Ping(Bytes::from_static(b"p"))
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn continuations_join_with_control_frames_between() {
        let mut bytes = frame(0x02, b"ab");
        bytes.extend(frame(0x89, b""));
        bytes.extend(frame(0x00, b"cd"));
        bytes.extend(frame(0x80, b"e"));
        bytes.extend(frame(0x01, b"te"));
        bytes.extend(frame(0x80, b"xt"));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![
                Ok(Incoming::Ping(Bytes::new())),
                Ok(Incoming::Binary(Bytes::from_static(b"abcde"))),
                Ok(Incoming::Text),
            ]
        );
    }

    #[test]
    fn a_message_read_one_frame_at_a_time_joins_and_the_buffer_is_handed_over() {
        // Each read holds one frame exactly, as a server sending one at a
        // time gives them: the first fragment takes the buffer whole, the
        // rest join it, and the next read starts from an empty buffer.
        let reads = [
            frame(0x02, b"ab"),
            frame(0x89, b"p"),
            frame(0x80, b"cd"),
            frame(0x82, b"x"),
        ];
        let mut buf = BytesMut::new();
        let mut partial = None;
        let mut got = Vec::new();
        for read in reads {
            buf.extend_from_slice(&read);
            while let Some(message) = parse(&mut buf, 1024, &mut partial).unwrap() {
                got.push(message);
            }
            assert!(buf.is_empty(), "each read is one whole frame");
        }
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"abcd")),
                Incoming::Binary(Bytes::from_static(b"x")),
            ]
        );
        assert!(partial.is_none());
    }

    #[test]
    fn a_length_past_the_limit_is_refused_before_its_bytes_arrive() {
        // Only the header of a frame claiming 2^62 bytes.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        let error = parse(&mut buf, 1024, &mut None).unwrap_err();
        assert!(matches!(error, ReadError::Overflow));
        assert!(buf.capacity() < 4096, "nothing was reserved for it");
        // A message whose fragments add up past the limit.
        let mut bytes = frame(0x02, &[1; 600]);
        bytes.extend(frame(0x80, &[2; 600]));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![Err("message larger than the limit".into())]
        );
        // Exactly the limit is fine.
        assert_eq!(parse_all(&frame(0x82, &[3; 1024]), 1024).len(), 1);
    }

    #[test]
    fn frames_a_client_must_not_send_are_protocol_errors() {
        let unmasked = [0x82, 0x01, 0x00];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked.to_vec(), "masked"),
            (frame(0xC2, b"x"), "reserved"),
            (frame(0x83, b"x"), "opcode 3"),
            (frame(0x8B, b"x"), "opcode 11"),
            (frame(0x09, b"x"), "control"),
            (frame(0x89, &[0; 126]), "control"),
            (frame(0x80, b"x"), "continuation"),
            (frame(0x88, b"x"), "two bytes"),
            (
                [frame(0x02, b"a"), frame(0x82, b"b")].concat(),
                "new message",
            ),
        ];
        for (bytes, why) in cases {
            let parsed = parse_all(&bytes, 1024);
            match parsed.last() {
                Some(Err(error)) => assert!(error.contains(why), "{why}: {error}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_ping_between_fragments_does_not_count_toward_the_message() {
        let mut bytes = frame(0x02, &[1; 1000]);
        bytes.extend(frame(0x89, &[2; 100]));
        bytes.extend(frame(0x80, &[3; 24]));
        let parsed = parse_all(&bytes, 1024);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert!(matches!(&parsed[1], Ok(Incoming::Binary(b)) if b.len() == 1024));
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = frame(0x88, &payload);
        bytes.extend(frame(0x88, b""));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![Ok(Incoming::Close(Some(4000))), Ok(Incoming::Close(None))]
        );
    }

    #[test]
    fn unmasking_matches_byte_by_byte() {
        let mask = [1, 2, 3, 4];
        for len in 0..20 {
            let mut data: Vec<u8> = (0..len as u8).collect();
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut data, mask);
            assert_eq!(data, expected);
        }
    }
}
