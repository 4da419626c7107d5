//! The built-in game schemas, compiled into the binary from `config/schemas/`
//! so the hub validates game configs out of the box.

/// One built-in schema version.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinSchema {
    pub id: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

pub const BUILTIN_SCHEMAS: &[BuiltinSchema] = &[
    BuiltinSchema {
        id: "game-balance",
        version: "1.0.0",
        description: "Weapons, characters and abilities (configType GameBalance)",
        document: include_str!("../../config/schemas/game-balance.schema.json"),
    },
    BuiltinSchema {
        id: "economy",
        version: "1.0.0",
        description: "Store prices, rewards and loot tables (configType Economy)",
        document: include_str!("../../config/schemas/economy.schema.json"),
    },
    BuiltinSchema {
        id: "matchmaking",
        version: "1.0.0",
        description: "Skill ranges, team composition and queues (configType Matchmaking)",
        document: include_str!("../../config/schemas/matchmaking.schema.json"),
    },
    BuiltinSchema {
        id: "live-event",
        version: "1.0.0",
        description: "Time-limited events (configType LiveEvent)",
        document: include_str!("../../config/schemas/live-event.schema.json"),
    },
    BuiltinSchema {
        id: "live-event-rules",
        version: "1.0.0",
        description: "The rules of a live event (POST /live-events `rules`)",
        document: include_str!("../../config/schemas/live-event-rules.schema.json"),
    },
    BuiltinSchema {
        id: "performance",
        version: "1.0.0",
        description: "Graphics presets and server tick settings (configType Performance)",
        document: include_str!("../../config/schemas/performance.schema.json"),
    },
    BuiltinSchema {
        id: "content-manifest",
        version: "1.0.0",
        description: "The content version clients run, its hash and the oldest client build allowed (configType ContentManifest)",
        document: include_str!("../../config/schemas/content-manifest.schema.json"),
    },
];
