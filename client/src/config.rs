//! How a game server connects and who it is: [`ClientConfig`].

use crate::protocol::{self};
use std::{path::PathBuf, time::Duration};
/// How a server connects and who it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` (the endpoint path is added when missing) or a full URL.
    pub url: String,
    pub api_key: String,
    pub server_id: String,
    pub region: String,
    pub environment: String,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub subscriptions: Vec<String>,
    pub hostname: Option<String>,
    pub build: Option<String>,
    /// The hub's signing key (`GET /api/v1/signing-key`, base64). When set,
    /// a document whose signature does not verify is refused.
    pub signing_key: Option<String>,
    /// Keep the last good configs here, so a server restarted while the hub
    /// is down starts with them.
    pub persist_path: Option<PathBuf>,
    /// First reconnect delay; doubles per failure up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Ask the hub for the live-ops definitions, to resolve players
    /// locally with [`crate::Client::for_player`].
    pub liveops: bool,
}

impl ClientConfig {
    pub fn new(
        url: impl Into<String>,
        api_key: impl Into<String>,
        server_id: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            api_key: api_key.into(),
            server_id: server_id.into(),
            region: "default".into(),
            environment: "development".into(),
            tags: Vec::new(),
            capacity: 0,
            subscriptions: Vec::new(),
            hostname: None,
            build: None,
            signing_key: None,
            persist_path: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            liveops: false,
        }
    }

    /// Receive the live-ops definitions (segments, live events) and
    /// resolve players locally with [`crate::Client::for_player`].
    pub fn liveops(mut self) -> Self {
        self.liveops = true;
        self
    }

    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = environment.into();
        self
    }

    pub fn subscribe(mut self, config: impl Into<String>) -> Self {
        self.subscriptions.push(config.into());
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    pub fn verify_with(mut self, signing_key: impl Into<String>) -> Self {
        self.signing_key = Some(signing_key.into());
        self
    }

    pub fn persist_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.persist_path = Some(path.into());
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    pub(crate) fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if base.ends_with(protocol::ENDPOINT_PATH) {
            base.to_owned()
        } else {
            format!("{base}{}", protocol::ENDPOINT_PATH)
        }
    }
}
