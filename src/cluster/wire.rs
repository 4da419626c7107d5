//! What nodes say to each other on the channel, JSON, read into bounded
//! values: a message from another node is input like any other.

use crate::domain::window::Slice;
use serde::{Deserialize, Serialize};

/// The largest message read (a deployment's progress on 10,000 servers
/// is about 1 MB).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// The most servers one progress message names.
pub const MAX_SERVERS: usize = 100_000;
/// The most slices one message carries.
pub const MAX_SLICES: usize = 4_096;
/// The longest `event` frame forwarded, base64 (a frame is a few hundred
/// bytes; its rules are bounded when the event is defined).
pub const MAX_FRAME_BASE64: usize = 256 << 10;
/// The longest name (node, config, deployment, server, cohort, region).
const MAX_NAME: usize = 256;
/// The longest error a server gave.
const MAX_ERROR: usize = 500;

/// A message, the node that sent it, and when (Unix ms, the sender's clock).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    #[serde(default)]
    pub at: i64,
    pub message: Message,
}

/// How far a message's time may be from the receiver's clock: an older
/// (replayed) or a future one is refused.
pub const FRESH_MS: i64 = 30_000;

/// HMAC-SHA256 (RFC 2104) of `data` under a 32-byte key.
fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let (mut inner, mut outer) = ([0x36u8; 64], [0x5cu8; 64]);
    for (i, byte) in key.iter().enumerate() {
        inner[i] ^= byte;
        outer[i] ^= byte;
    }
    let inner = Sha256::new()
        .chain_update(inner)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(outer)
        .chain_update(inner)
        .finalize()
        .into()
}

/// An envelope as it travels: its HMAC under the cluster's key in hex, a
/// dot, then its JSON.
pub fn seal(key: &[u8; 32], envelope: &Envelope) -> Vec<u8> {
    seal_bytes(
        key,
        &serde_json::to_vec(envelope).expect("messages serialize"),
    )
}

/// A key for one use of the cluster's key (`label` names it), so what is
/// sealed for one use is never taken for another.
pub fn derive(key: &[u8; 32], label: &str) -> [u8; 32] {
    mac(key, label.as_bytes())
}

/// `json` as it is kept where others could write (a roster's entry): its
/// HMAC under the cluster's key in hex, a dot, then the JSON.
pub fn seal_bytes(key: &[u8; 32], json: &[u8]) -> Vec<u8> {
    let mut out = hex::encode(mac(key, json)).into_bytes();
    out.push(b'.');
    out.extend_from_slice(json);
    out
}

/// The JSON of what [`seal_bytes`] made, if its HMAC verifies.
pub fn open_bytes<'a>(key: &[u8; 32], bytes: &'a [u8]) -> Result<&'a [u8], String> {
    if bytes.len() < 65 || bytes[64] != b'.' {
        return Err("not a signed value".into());
    }
    let (given, json) = (&bytes[..64], &bytes[65..]);
    let expected = hex::encode(mac(key, json));
    // Compared in constant time.
    let differs = given
        .iter()
        .zip(expected.as_bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err("its signature does not verify".into());
    }
    Ok(json)
}

/// A message from the channel, read only if its HMAC verifies under the
/// cluster's key and its time is within [`FRESH_MS`] of `now_ms`; then
/// checked as [`read`] does.
pub fn open(key: &[u8; 32], bytes: &[u8], now_ms: i64) -> Result<Envelope, String> {
    if bytes.len() > MAX_MESSAGE_BYTES + 65 {
        return Err(format!("{} bytes", bytes.len()));
    }
    let json =
        open_bytes(key, bytes).map_err(|why| format!("{why} (another cluster, or a forgery)"))?;
    let envelope = read(json)?;
    if (now_ms - envelope.at).abs() > FRESH_MS {
        return Err(format!(
            "sent {} ms from now (stale, replayed, or a clock far off)",
            envelope.at - now_ms
        ));
    }
    Ok(envelope)
}

/// What comes out of the subscription.
#[derive(Debug)]
pub enum Inbound {
    /// Subscribed (again): announcements may have been missed meanwhile.
    Subscribed,
    Message(Envelope),
}

/// A progress message without `full` is whole (the sender's every server).
fn full_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Message {
    /// The sender is up (every second): owners wait for the nodes that are.
    Alive,
    /// What `config`'s servers should run changed in the store.
    Changed { config: String },
    /// The sender's servers' part in a deployment: every server it tracks
    /// (`full`, at least every 2 s), or those whose part moved since its
    /// previous message for the deployment.
    #[serde(rename_all = "camelCase")]
    Progress {
        deployment: String,
        /// The deployment's stored state (its `updated_at`) the sender's
        /// servers were last brought to: the owner waits for every node
        /// that is up to have served its latest move.
        served: i64,
        servers: Vec<ProgressEntry>,
        /// The sender's count of its messages for this deployment: the
        /// owner credits `served` only while it has every message since
        /// the last full one (a lost one waits for the next full).
        #[serde(default)]
        seq: u64,
        #[serde(default = "full_by_default")]
        full: bool,
        /// Drawn at random when the sender starts numbering (a restart, a
        /// new record): a number from another epoch is not the next one.
        #[serde(default)]
        epoch: u64,
    },
    /// An operator's action on a deployment another node drives, for its
    /// owner to carry out and answer.
    #[serde(rename_all = "camelCase")]
    Command {
        request: String,
        deployment: String,
        /// The action as `hub/cluster/commands.rs` writes it.
        action: serde_json::Value,
        /// Who asked, as the audit trail names them.
        actor: serde_json::Value,
    },
    /// An operator's control of a live event (or `refresh`: its
    /// definition changed), for the node driving it.
    #[serde(rename_all = "camelCase")]
    EventCommand {
        request: String,
        event: String,
        control: String,
        actor: serde_json::Value,
    },
    /// A live event's `event` frame its owner sent its own servers, for
    /// the servers of `regions` (all, when empty) on the other nodes.
    #[serde(rename_all = "camelCase")]
    EventFrame {
        regions: Vec<String>,
        /// The encoded frame, base64.
        frame: String,
    },
    /// The owner's answer to `request`, for node `to`.
    #[serde(rename_all = "camelCase")]
    Reply {
        request: String,
        to: String,
        /// `ok`, or the kind of error.
        outcome: String,
        #[serde(default)]
        message: String,
    },
    /// The sender's servers' metrics for a deployment's cohorts since its
    /// last slices.
    #[serde(rename_all = "camelCase")]
    Slices {
        deployment: String,
        slices: Vec<SliceEntry>,
    },
    /// The sender's connected servers, counted (every second): the
    /// dashboards' fleet on any node adds every node's up.
    #[serde(rename_all = "camelCase")]
    Fleet { fleet: FleetShare },
    /// A deployment's view as its owner shows it (with the first 100
    /// servers, as the API does), for the other nodes' API and dashboards.
    #[serde(rename_all = "camelCase")]
    View {
        deployment: String,
        view: serde_json::Value,
    },
    /// An operator set a server's tags: every node that knows the server
    /// takes them (they follow it to whichever node it connects to).
    #[serde(rename_all = "camelCase")]
    ServerTags { server: String, tags: Vec<String> },
    /// An admin deregistered a server (stored already): the node it is
    /// connected to closes its session (4005) and every node forgets it.
    #[serde(rename_all = "camelCase")]
    ServerGone { server: String },
}

/// Connected servers, healthy ones, and their players.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetCounts {
    pub connected: u64,
    pub healthy: u64,
    pub players: u64,
}

/// One node's connected servers counted by region and environment, and
/// by the revision of each config they acked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetShare {
    pub regions: std::collections::BTreeMap<String, FleetCounts>,
    pub environments: std::collections::BTreeMap<String, FleetCounts>,
    /// Config → (revision, servers that acked it): pairs, since a map's
    /// keys are text in JSON and this message is read through serde's
    /// buffered (tagged) path, which does not read numbers from text.
    pub revisions: std::collections::BTreeMap<String, Vec<(i64, u64)>>,
}

/// The most regions, environments or configs a fleet share names, and
/// revisions per config.
pub const MAX_FLEET_KEYS: usize = 4_096;

/// One server's part in a deployment, as the node it is connected to saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgressEntry {
    pub server: String,
    pub revision: i64,
    /// `pushed`, `acked` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_micros: Option<u64>,
    /// When it last changed (Unix ms).
    pub at: i64,
}

/// One cohort's metrics in one region for the slot of `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SliceEntry {
    pub cohort: String,
    pub region: String,
    pub at: i64,
    pub slice: Slice,
}

/// A message read and checked: sizes, counts, names, states.
pub fn read(bytes: &[u8]) -> Result<Envelope, String> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(format!("{} bytes", bytes.len()));
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let name = |what: &str, text: &str| {
        if text.is_empty() || text.len() > MAX_NAME {
            Err(format!("{what} of {} bytes", text.len()))
        } else {
            Ok(())
        }
    };
    name("node", &envelope.from)?;
    match &envelope.message {
        Message::Alive => {}
        Message::Changed { config } => name("config", config)?,
        Message::Command {
            request,
            deployment,
            ..
        } => {
            name("request", request)?;
            name("deployment", deployment)?;
        }
        Message::EventCommand {
            request,
            event,
            control,
            ..
        } => {
            name("request", request)?;
            name("event", event)?;
            name("control", control)?;
        }
        Message::EventFrame { regions, frame } => {
            if regions.len() > 256 {
                return Err(format!("{} regions", regions.len()));
            }
            for region in regions {
                name("region", region)?;
            }
            if frame.len() > MAX_FRAME_BASE64 {
                return Err(format!("a frame of {} bytes", frame.len()));
            }
        }
        Message::Reply {
            request,
            to,
            outcome,
            message,
        } => {
            name("request", request)?;
            name("node", to)?;
            name("outcome", outcome)?;
            if message.len() > 4_096 {
                return Err("a reply's message past 4 KiB".into());
            }
        }
        Message::Progress {
            deployment,
            servers,
            ..
        } => {
            name("deployment", deployment)?;
            if servers.len() > MAX_SERVERS {
                return Err(format!("{} servers", servers.len()));
            }
            for entry in servers {
                name("server", &entry.server)?;
                if !matches!(entry.state.as_str(), "pushed" | "acked" | "failed") {
                    return Err(format!("state {:?}", entry.state));
                }
                if entry.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR) {
                    return Err("an error past 500 bytes".into());
                }
            }
        }
        Message::Fleet { fleet } => {
            if fleet.regions.len() > MAX_FLEET_KEYS
                || fleet.environments.len() > MAX_FLEET_KEYS
                || fleet.revisions.len() > MAX_FLEET_KEYS
                || fleet.revisions.values().any(|r| r.len() > MAX_FLEET_KEYS)
            {
                return Err("a fleet past its bounds".into());
            }
            for key in fleet
                .regions
                .keys()
                .chain(fleet.environments.keys())
                .chain(fleet.revisions.keys())
            {
                name("fleet key", key)?;
            }
        }
        Message::View { deployment, view } => {
            name("deployment", deployment)?;
            if view.get("id").and_then(|id| id.as_str()) != Some(deployment.as_str()) {
                return Err("a view of another deployment".into());
            }
        }
        Message::ServerTags { server, tags } => {
            name("server", server)?;
            if tags.len() > 32 {
                return Err(format!("{} tags", tags.len()));
            }
            for tag in tags {
                crate::domain::names::Tag::parse(tag).map_err(|why| format!("tag {why}"))?;
            }
        }
        Message::ServerGone { server } => name("server", server)?,
        Message::Slices { deployment, slices } => {
            name("deployment", deployment)?;
            if slices.len() > MAX_SLICES {
                return Err(format!("{} slices", slices.len()));
            }
            for entry in slices {
                name("cohort", &entry.cohort)?;
                name("region", &entry.region)?;
                entry.slice.check()?;
            }
        }
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(message: Message) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            from: "hub-a".into(),
            at: 0,
            message,
        })
        .unwrap()
    }

    #[test]
    fn a_fleet_and_a_view_travel_and_are_bounded() {
        let mut fleet = FleetShare::default();
        fleet.regions.insert(
            "EU-WEST".into(),
            FleetCounts {
                connected: 2,
                healthy: 1,
                players: 40,
            },
        );
        fleet.revisions.insert("loot".into(), vec![(3, 2)]);
        let message = Message::Fleet { fleet };
        assert_eq!(read(&envelope(message.clone())).unwrap().message, message);
        let mut wide = FleetShare::default();
        wide.revisions
            .insert("loot".into(), vec![(1, 1); MAX_FLEET_KEYS + 1]);
        assert!(read(&envelope(Message::Fleet { fleet: wide })).is_err());

        let view = Message::View {
            deployment: "d-1".into(),
            view: serde_json::json!({"id": "d-1"}),
        };
        assert!(read(&envelope(view)).is_ok());
        let other = Message::View {
            deployment: "d-1".into(),
            view: serde_json::json!({"id": "d-2"}),
        };
        assert!(
            read(&envelope(other)).is_err(),
            "a view of another deployment"
        );
        let tags = Message::ServerTags {
            server: "gs-1".into(),
            tags: vec!["not a tag!".into()],
        };
        assert!(read(&envelope(tags)).is_err());
    }

    #[test]
    fn only_signed_fresh_messages_are_read() {
        let key = [7u8; 32];
        let envelope = Envelope {
            from: "hub-a".into(),
            at: 1_000_000,
            message: Message::Alive,
        };
        let sealed = seal(&key, &envelope);
        assert_eq!(
            open(&key, &sealed, 1_000_500).unwrap().message,
            Message::Alive
        );
        assert!(open(&[8u8; 32], &sealed, 1_000_500).is_err(), "another key");
        let mut forged = sealed.clone();
        let last = forged.len() - 2;
        forged[last] ^= 1;
        assert!(open(&key, &forged, 1_000_500).is_err(), "a changed byte");
        assert!(
            open(&key, &sealed, 1_000_000 + FRESH_MS + 1).is_err(),
            "replayed later"
        );
        assert!(
            open(&key, &sealed, 1_000_000 - FRESH_MS - 1).is_err(),
            "from the future"
        );
        assert!(open(&key, b"{}", 1_000_000).is_err(), "unsigned");
        // RFC 4231 test case 2 checks the HMAC itself (a 4-byte key there;
        // here the key is zero-padded to 32 bytes, which HMAC does anyway).
        let mut jefe = [0u8; 32];
        jefe[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(mac(&jefe, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn messages_travel_and_bad_ones_are_refused() {
        let progress = Message::Progress {
            deployment: "d1".into(),
            served: 7,
            seq: 4,
            full: false,
            epoch: 9,
            servers: vec![ProgressEntry {
                server: "eu-1".into(),
                revision: 3,
                state: "acked".into(),
                error: None,
                apply_micros: Some(40),
                at: 1_000,
            }],
        };
        assert_eq!(read(&envelope(progress.clone())).unwrap().message, progress);
        let changed = Message::Changed {
            config: "economy".into(),
        };
        assert_eq!(read(&envelope(changed.clone())).unwrap().message, changed);
        assert_eq!(
            read(&envelope(Message::Alive)).unwrap().message,
            Message::Alive
        );
        let bad_state = Message::Progress {
            deployment: "d1".into(),
            served: 7,
            seq: 0,
            full: true,
            epoch: 0,
            servers: vec![ProgressEntry {
                server: "eu-1".into(),
                revision: 3,
                state: "done".into(),
                error: None,
                apply_micros: None,
                at: 0,
            }],
        };
        assert!(read(&envelope(bad_state)).is_err());
        assert!(
            read(&envelope(Message::Changed {
                config: String::new()
            }))
            .is_err()
        );
        assert!(
            read(
                b"{\"from\":\"a\",\"message\":{\"type\":\"changed\",\"config\":\"x\",\"more\":1}}"
            )
            .is_err()
        );
        assert!(read(b"not json").is_err());
        assert!(read(&vec![b' '; MAX_MESSAGE_BYTES + 1]).is_err());
        let slice = crate::domain::window::Slice {
            fps: vec![(1, 1); crate::domain::window::MAX_SLICE_PAIRS + 1],
            ..Default::default()
        };
        let slices = Message::Slices {
            deployment: "d1".into(),
            slices: vec![SliceEntry {
                cohort: "canary".into(),
                region: "eu".into(),
                at: 0,
                slice,
            }],
        };
        assert!(read(&envelope(slices)).is_err());
    }
}
