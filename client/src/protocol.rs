//! The game-server wire protocol (v1), as `docs/PROTOCOL.md` defines it:
//! one MessagePack map per binary frame, string keys in camelCase, the
//! message named by `"type"`. Unknown fields are ignored, so fields can be
//! added within v1.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest frame either side accepts by default.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// The path of the socket endpoint.
pub const ENDPOINT_PATH: &str = "/ws/v1/servers";

/// Close codes the hub uses (RFC 6455 codes, and 4000-4999 of its own).
pub mod close_code {
    /// The hub is going away (shutdown); `reconnect` said when to return.
    pub const GOING_AWAY: u16 = 1001;
    /// Undecodable frame or unknown message type.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame that breaks a rule (`hello` twice, fields out of range, limits of the key).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The hub failed on one of the session's frames (a bug, logged).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The hub cannot take this session now (its store is unreachable); come back later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Another connection with the same `serverId` replaced this one.
    pub const REPLACED: u16 = 4000;
    /// No `hello` within 5 s.
    pub const HELLO_TIMEOUT: u16 = 4001;
    /// Nothing heard for 3 heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The server did not read its frames fast enough.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The API key was revoked.
    pub const KEY_REVOKED: u16 = 4004;
    /// An admin deregistered the server (and released its id).
    pub const DEREGISTERED: u16 = 4005;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Server → hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    Hello(Hello),
    Heartbeat {
        players: u32,
        status: Health,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load: Option<f64>,
    },
    Ack(Ack),
    Resync {
        config: String,
    },
    Metrics(Box<MetricsReport>),
}

/// The first frame of every session: who the server is and what it wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub server_id: String,
    pub region: String,
    pub environment: String,
    #[serde(default, deserialize_with = "capped::strings")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub capacity: u32,
    #[serde(default)]
    pub players: u32,
    #[serde(default, deserialize_with = "capped::strings")]
    pub subscriptions: Vec<String>,
    /// Config name → revision the server already holds.
    #[serde(default)]
    pub known: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    /// Asks for the live-ops definitions (`liveops` frames), to resolve
    /// players locally.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub liveops: bool,
}

/// A server's answer to a snapshot or delta: applied (`ok`) or not, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub config: String,
    pub revision: i64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub apply_micros: u64,
}

/// One `metrics` frame: a server's players aggregated over `windowMs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    pub seq: u64,
    pub window_ms: u64,
    pub players: u32,
    #[serde(default)]
    pub sessions_started: u64,
    #[serde(default)]
    pub sessions_ended: u64,
    #[serde(default)]
    pub churned: u64,
    #[serde(default)]
    pub crashes: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub complaints: u64,
    #[serde(default)]
    pub purchases: u64,
    /// Name (`latencyMs`, `sessionSecs`, `fps`...) → histogram.
    #[serde(default)]
    pub histograms: BTreeMap<String, EncodedHistogram>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, f64>,
    /// The same metrics split by experiment variant: each entry covers the
    /// players of this report the server resolved into that variant, so
    /// experiments can compare variants on server metrics (absent when the
    /// server runs none).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "capped::variants"
    )]
    pub experiments: Vec<VariantMetrics>,
}

/// One variant's share of a `metrics` frame: the players the server
/// resolved into `variant` of `experiment`, with their counters,
/// histograms and custom metrics over the same window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantMetrics {
    pub experiment: String,
    pub variant: String,
    pub players: u32,
    #[serde(default)]
    pub sessions_started: u64,
    #[serde(default)]
    pub sessions_ended: u64,
    #[serde(default)]
    pub churned: u64,
    #[serde(default)]
    pub crashes: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub complaints: u64,
    #[serde(default)]
    pub purchases: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, EncodedHistogram>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, f64>,
}

impl MetricsReport {
    /// The counters, in [`crate::metrics::names::COUNTERS`]' order.
    pub fn counters(&self) -> [u64; 8] {
        [
            self.sessions_started,
            self.sessions_ended,
            self.churned,
            self.crashes,
            self.errors,
            self.requests,
            self.complaints,
            self.purchases,
        ]
    }
}

impl VariantMetrics {
    /// The counters, in [`crate::metrics::names::COUNTERS`]' order.
    pub fn counters(&self) -> [u64; 8] {
        [
            self.sessions_started,
            self.sessions_ended,
            self.churned,
            self.crashes,
            self.errors,
            self.requests,
            self.complaints,
            self.purchases,
        ]
    }
}

/// A histogram on the wire: sparse `[value, count]` pairs, or HdrHistogram
/// V2 serialized bytes (optionally deflated).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EncodedHistogram {
    Sparse(Vec<(u64, u64)>),
    #[serde(serialize_with = "serde_bytes_compat::serialize")]
    HdrV2(Vec<u8>),
}

/// By hand rather than `untagged`: an array is pairs, bytes are HdrHistogram,
/// read straight from the frame (the derived form buffers every value first,
/// which was most of the hub's metric ingest cost).
impl<'de> Deserialize<'de> for EncodedHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EncodedHistogram;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of [value, count] pairs, or HdrHistogram bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(pair) = seq.next_element::<(u64, u64)>()? {
                    pairs.push(pair);
                }
                Ok(EncodedHistogram::Sparse(pairs))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(EncodedHistogram::HdrV2(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(EncodedHistogram::HdrV2(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Sequences read without trusting the length a frame declares: room is
/// made for a few elements, and the rest grows as elements really arrive
/// (serde's own cap preallocates up to 1 MiB per sequence).
mod capped {
    use serde::{Deserializer, de::SeqAccess};

    pub fn variants<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<super::VariantMetrics>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<super::VariantMetrics>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of variant metrics")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // One more than the hub takes is kept (so it refuses the
                // report); the rest are read past without being built.
                let keep = crate::metrics::MAX_VARIANTS + 1;
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4));
                while out.len() < keep {
                    match seq.next_element()? {
                        Some(item) => out.push(item),
                        None => return Ok(out),
                    }
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }

    pub fn strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// MessagePack `bin` for byte vectors (serde's default would be an array of numbers).
mod serde_bytes_compat {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }
}

/// Hub → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum HubMessage {
    Welcome {
        session_id: String,
        heartbeat_ms: u64,
        metrics_ms: u64,
        server_time_ms: i64,
        hub_node: String,
    },
    Snapshot {
        config: String,
        revision: i64,
        version: String,
        content: Value,
        checksum: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        sent_at_ms: i64,
    },
    Delta {
        config: String,
        base_revision: i64,
        revision: i64,
        version: String,
        patch: Value,
        checksum: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        sent_at_ms: i64,
    },
    Error {
        code: String,
        message: String,
    },
    Reconnect {
        retry_after_ms: u64,
    },
    /// The live-ops definitions a server resolves its players with (sent
    /// after `welcome` to servers that asked, and on every change); acked
    /// as config `$liveops` at `revision`.
    #[serde(rename = "liveops")]
    LiveOps {
        revision: i64,
        segments: Vec<crate::liveops::SegmentDefinition>,
        events: Vec<crate::liveops::EventDefinition>,
        /// Running experiments (absent from hubs before them).
        #[serde(default)]
        experiments: Vec<crate::liveops::experiments::ExperimentDefinition>,
    },
    /// A live event covering this server changed phase.
    Event {
        /// The event's name.
        name: String,
        /// `preview`, `started`, `endingSoon` or `ended`.
        phase: String,
        /// The occurrence's scheduled start (Unix ms).
        occurrence: i64,
        /// The region whose local time the occurrence follows, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// The event's rules (mutators, reward multipliers...).
        rules: Value,
        /// When the occurrence ends (Unix ms).
        ends_at_ms: i64,
        sent_at_ms: i64,
    },
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not MessagePack, or not a map with the fields a known type needs.
    Malformed(String),
    /// A well-formed map whose `type` this side does not know.
    UnknownType(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed frame: {why}"),
            DecodeError::UnknownType(kind) => write!(f, "unknown message type {kind:?}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a message (named fields, as the protocol requires).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Protocol types always serialize: no maps with non-string keys, no failing impls.
    rmp_serde::to_vec_named(message).expect("protocol messages serialize")
}

/// Nesting a server's frame may have: no message of the protocol is
/// deeper than 4 (a metrics frame's histogram pairs). Anything deeper is
/// refused before it is read, ignored fields included (rmp-serde's own
/// limit, 1024, let a 1 KB frame overflow the hub's stack).
pub const MAX_SERVER_FRAME_DEPTH: usize = 16;

/// Nesting a hub frame may have: documents are at most 64 deep by default
/// (`limits.max_json_depth`), inside a few levels of message.
pub const MAX_HUB_FRAME_DEPTH: usize = 160;

fn from_slice<T: serde::de::DeserializeOwned>(
    frame: &[u8],
    max_depth: usize,
) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(frame);
    deserializer.set_max_depth(max_depth);
    T::deserialize(&mut deserializer)
}

/// Decodes a frame, telling an unknown `type` apart from a broken frame.
pub fn decode<T: serde::de::DeserializeOwned>(
    frame: &[u8],
    known_types: &[&str],
) -> Result<T, DecodeError> {
    match from_slice::<T>(frame, MAX_HUB_FRAME_DEPTH) {
        Ok(message) => Ok(message),
        Err(error) => {
            #[derive(Deserialize)]
            struct Tagged {
                #[serde(rename = "type")]
                kind: String,
            }
            match from_slice::<Tagged>(frame, MAX_HUB_FRAME_DEPTH) {
                Ok(Tagged { kind }) if !known_types.contains(&kind.as_str()) => {
                    Err(DecodeError::UnknownType(kind))
                }
                _ => Err(DecodeError::Malformed(error.to_string())),
            }
        }
    }
}

/// The `type`s a server may send.
/// Decodes a server's frame. Same result as `decode::<ServerMessage>`,
/// but the `type` is read first and the body decoded straight into its
/// struct: the derived internally tagged form buffers the whole map
/// (every histogram pair an allocation) before it looks at `type`, and
/// metrics frames arrive 10,000 a second.
pub fn decode_server_message(frame: &[u8]) -> Result<ServerMessage, DecodeError> {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Heartbeat {
        players: u32,
        status: Health,
        #[serde(default)]
        load: Option<f64>,
    }
    #[derive(Deserialize)]
    struct Resync {
        config: String,
    }
    fn body<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
        from_slice(frame, MAX_SERVER_FRAME_DEPTH).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
    // Every encoder writes `type` first (serde's internally tagged form):
    // read it there, without walking the frame twice; any other order still
    // decodes, with a pass for the tag.
    let kind = match leading_type(frame) {
        Some(kind) => std::borrow::Cow::Borrowed(kind),
        None => std::borrow::Cow::Owned(body::<Tagged>(frame)?.kind),
    };
    match &*kind {
        "hello" => body(frame).map(ServerMessage::Hello),
        "heartbeat" => body(frame).map(|h: Heartbeat| ServerMessage::Heartbeat {
            players: h.players,
            status: h.status,
            load: h.load,
        }),
        "ack" => body(frame).map(ServerMessage::Ack),
        "resync" => body(frame).map(|r: Resync| ServerMessage::Resync { config: r.config }),
        "metrics" => body(frame).map(|m| ServerMessage::Metrics(Box::new(m))),
        _ => Err(DecodeError::UnknownType(kind.into_owned())),
    }
}

/// The value of a MessagePack map's first key when that key is `type` and
/// the value a string.
fn leading_type(frame: &[u8]) -> Option<&str> {
    let mut reader = frame;
    if rmp::decode::read_map_len(&mut reader).ok()? == 0 {
        return None;
    }
    let (key, rest) = rmp::decode::read_str_from_slice(reader).ok()?;
    if key != "type" {
        return None;
    }
    let (kind, _) = rmp::decode::read_str_from_slice(rest).ok()?;
    Some(kind)
}

pub const SERVER_MESSAGE_TYPES: &[&str] = &["hello", "heartbeat", "ack", "resync", "metrics"];
/// The `type`s the hub may send (a client ignores others).
pub const HUB_MESSAGE_TYPES: &[&str] = &[
    "welcome",
    "snapshot",
    "delta",
    "error",
    "reconnect",
    "event",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_type_is_found_wherever_it_sits_in_the_map() {
        let heartbeat = |value: Value| rmp_serde::to_vec_named(&value).unwrap();
        // serde_json's maps are sorted: `type` comes last here.
        let late = heartbeat(json!({"players": 3, "status": "healthy", "type": "heartbeat"}));
        assert_eq!(leading_type(&late), None);
        let early = encode(&ServerMessage::Heartbeat {
            players: 3,
            status: Health::Healthy,
            load: None,
        });
        assert_eq!(leading_type(&early), Some("heartbeat"));
        for frame in [late, early] {
            match decode_server_message(&frame).unwrap() {
                ServerMessage::Heartbeat { players, .. } => assert_eq!(players, 3),
                other => panic!("{other:?}"),
            }
        }
        let unknown = heartbeat(json!({"type": "dance"}));
        assert!(
            matches!(decode_server_message(&unknown), Err(DecodeError::UnknownType(t)) if t == "dance")
        );
        let not_a_string = heartbeat(json!({"type": 7}));
        assert!(matches!(
            decode_server_message(&not_a_string),
            Err(DecodeError::Malformed(_))
        ));
        assert!(decode_server_message(&[0x80]).is_err(), "an empty map");
        assert!(decode_server_message(&[0xc1]).is_err(), "not a map");
    }

    #[test]
    fn deep_nesting_is_refused_before_it_is_read() {
        // A hello whose ignored field nests 10,000 arrays (10 KB): refused,
        // not recursed into.
        let mut frame = vec![0x82, 0xa4];
        frame.extend_from_slice(b"type");
        frame.push(0xa5);
        frame.extend_from_slice(b"hello");
        frame.push(0xa3);
        frame.extend_from_slice(b"zzz");
        frame.extend(std::iter::repeat_n(0x91, 10_000));
        frame.push(0xc0);
        match decode_server_message(&frame) {
            Err(DecodeError::Malformed(why)) => assert!(why.contains("depth"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Real messages are far shallower than the limit.
        let metrics = encode(&ServerMessage::Metrics(Box::new(MetricsReport {
            seq: 1,
            window_ms: 1000,
            players: 1,
            histograms: BTreeMap::from([("fps".into(), EncodedHistogram::Sparse(vec![(60, 1)]))]),
            ..Default::default()
        })));
        assert!(decode_server_message(&metrics).is_ok());
    }

    #[test]
    fn messages_are_maps_with_camel_case_keys_and_a_type() {
        let frame = encode(&ServerMessage::Ack(Ack {
            config: "c".into(),
            revision: 3,
            ok: true,
            error: None,
            apply_micros: 12,
        }));
        let as_json: Value = rmp_serde::from_slice(&frame).unwrap();
        assert_eq!(
            as_json,
            json!({"type": "ack", "config": "c", "revision": 3, "ok": true, "applyMicros": 12})
        );
    }

    #[test]
    fn every_message_round_trips() {
        let messages = vec![
            ServerMessage::Hello(Hello {
                server_id: "s1".into(),
                region: "EU-WEST".into(),
                environment: "production".into(),
                tags: vec!["ranked".into()],
                capacity: 64,
                players: 10,
                subscriptions: vec!["weapons".into()],
                known: BTreeMap::from([("weapons".into(), 3)]),
                hostname: Some("h".into()),
                address: None,
                build: None,
                sdk: Some("rust/0.1".into()),
                liveops: false,
            }),
            ServerMessage::Heartbeat {
                players: 3,
                status: Health::Degraded,
                load: Some(0.5),
            },
            ServerMessage::Resync {
                config: "weapons".into(),
            },
            ServerMessage::Metrics(Box::new(MetricsReport {
                seq: 1,
                window_ms: 1000,
                players: 10,
                crashes: 2,
                histograms: BTreeMap::from([
                    (
                        "latencyMs".into(),
                        EncodedHistogram::Sparse(vec![(20, 5), (40, 1)]),
                    ),
                    ("fps".into(), EncodedHistogram::HdrV2(vec![1, 2, 3])),
                ]),
                ..Default::default()
            })),
        ];
        for message in messages {
            let back: ServerMessage = decode(&encode(&message), SERVER_MESSAGE_TYPES).unwrap();
            assert_eq!(back, message);
            assert_eq!(decode_server_message(&encode(&message)).unwrap(), message);
        }
        let ack = ServerMessage::Ack(Ack {
            config: "weapons".into(),
            revision: 4,
            ok: false,
            error: Some("bad".into()),
            apply_micros: 12,
        });
        assert_eq!(decode_server_message(&encode(&ack)).unwrap(), ack);
        let delta = HubMessage::Delta {
            config: "w".into(),
            base_revision: 1,
            revision: 2,
            version: "1.1.0".into(),
            patch: json!([{"op": "replace", "path": "/a", "value": 2}]),
            checksum: "ab".into(),
            signature: Some("sig".into()),
            deployment_id: None,
            sent_at_ms: 5,
        };
        assert_eq!(
            decode::<HubMessage>(&encode(&delta), HUB_MESSAGE_TYPES).unwrap(),
            delta
        );
    }

    #[test]
    fn unknown_types_and_garbage_are_told_apart() {
        let unknown = rmp_serde::to_vec_named(&json!({"type": "teleport", "x": 1})).unwrap();
        assert_eq!(
            decode::<ServerMessage>(&unknown, SERVER_MESSAGE_TYPES),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        assert!(matches!(
            decode::<ServerMessage>(b"\xc1\xc1", SERVER_MESSAGE_TYPES),
            Err(DecodeError::Malformed(_))
        ));
        let missing = rmp_serde::to_vec_named(&json!({"type": "ack"})).unwrap();
        assert!(matches!(
            decode::<ServerMessage>(&missing, SERVER_MESSAGE_TYPES),
            Err(DecodeError::Malformed(_))
        ));
        // The hub's direct decoder tells them apart the same way.
        assert_eq!(
            decode_server_message(&unknown),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        for bad in [
            b"\xc1\xc1".to_vec(),
            missing,
            rmp_serde::to_vec_named(&json!({"kind": "ack"})).unwrap(),
            rmp_serde::to_vec_named(&json!({"type": "metrics", "seq": 1, "windowMs": 1, "players": 1, "histograms": {"x": "text"}})).unwrap(),
        ] {
            assert!(matches!(decode_server_message(&bad), Err(DecodeError::Malformed(_))), "{bad:?}");
        }
    }
}
