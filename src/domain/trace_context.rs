//! W3C Trace Context (`traceparent`): read from a caller, so the hub's work
//! joins the caller's trace, and given back naming the hub's own span.
//! `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`,
//! lower-case; all-zero ids and version `ff` are invalid, and a header that
//! does not parse starts a new trace (it is never echoed).

/// A trace and the span the hub's work is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, when it sent one.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (index, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A caller's `traceparent`: (trace id, parent span id, sampled), or none
/// when it is not a valid version-00 header (later versions are read by
/// their first four fields, as the specification asks).
pub fn parse(header: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let header = header.trim();
    if header.len() > 512 {
        return None;
    }
    let mut parts = header.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let version = hex_bytes::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = hex_bytes::<16>(trace).filter(|id| id.iter().any(|b| *b != 0))?;
    let parent_id = hex_bytes::<8>(parent).filter(|id| id.iter().any(|b| *b != 0))?;
    let flags = hex_bytes::<1>(flags)?[0];
    Some((trace_id, parent_id, flags & 1 == 1))
}

impl TraceContext {
    /// The context of a request: the caller's trace when its header
    /// parses, else a new sampled one; a new span either way. `random`
    /// gives 24 fresh bytes.
    pub fn for_request(header: Option<&str>, random: [u8; 24]) -> TraceContext {
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&random[16..]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        match header.and_then(parse) {
            Some((trace_id, parent, sampled)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent),
                sampled,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id.copy_from_slice(&random[..16]);
                if trace_id == [0; 16] {
                    trace_id[15] = 1;
                }
                TraceContext {
                    trace_id,
                    span_id,
                    parent_id: None,
                    sampled: true,
                }
            }
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The `traceparent` naming the hub's span, for the caller and for
    /// whatever the hub calls next.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_callers_trace_is_joined_with_a_new_span() {
        let context = TraceContext::for_request(Some(HEADER), [7; 24]);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            context.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(context.sampled);
        assert_eq!(
            context.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
        let unsampled = HEADER.replace("-01", "-00");
        assert!(!TraceContext::for_request(Some(&unsampled), [7; 24]).sampled);
        // A later version is read by its first fields.
        assert!(parse(&format!("{}-extra", HEADER.replacen("00", "01", 1))).is_some());
    }

    #[test]
    fn a_header_that_does_not_parse_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
            let context = TraceContext::for_request(Some(bad), [9; 24]);
            assert_eq!(context.trace_id, [9; 16]);
            assert_eq!(context.parent_id, None);
        }
    }
}
