//! The closed vocabularies of configs: type, environment, strategy,
//! schema compatibility mode.

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

macro_rules! string_enum {
    // `tt`, not `literal`: a `literal` fragment reaches the derives wrapped
    // in an invisible group, which utoipa's derive does not unwrap (it
    // published the variants' Rust names instead of their serde names).
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value {other:?}; expected one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// What a config is for; each type but `Custom` has a built-in schema.
    ConfigType {
        GameBalance => "GameBalance",
        Economy => "Economy",
        Matchmaking => "Matchmaking",
        LiveEvent => "LiveEvent",
        Performance => "Performance",
        ContentManifest => "ContentManifest",
        Custom => "Custom",
    }
);

string_enum!(
    /// Where a config runs.
    Environment {
        Development => "development",
        Staging => "staging",
        Production => "production",
    }
);

string_enum!(
    /// How a deployment reaches servers.
    Strategy {
        Canary => "Canary",
        Rolling => "Rolling",
        BlueGreen => "BlueGreen",
        Direct => "Direct",
        Geographic => "Geographic",
        ABTest => "ABTest",
    }
);

string_enum!(
    /// Which schema changes a new schema version may make.
    Compatibility {
        Backward => "backward",
        Forward => "forward",
        Full => "full",
        None => "none",
    }
);

impl ConfigType {
    /// The id of the built-in schema that validates this type, if any.
    pub fn builtin_schema_id(self) -> Option<&'static str> {
        match self {
            ConfigType::GameBalance => Some("game-balance"),
            ConfigType::Economy => Some("economy"),
            ConfigType::Matchmaking => Some("matchmaking"),
            ConfigType::LiveEvent => Some("live-event"),
            ConfigType::Performance => Some("performance"),
            ConfigType::ContentManifest => Some("content-manifest"),
            ConfigType::Custom => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_text() {
        for value in ConfigType::ALL {
            assert_eq!(value.as_str().parse::<ConfigType>().unwrap(), *value);
            assert_eq!(serde_json::to_value(value).unwrap(), value.as_str());
        }
        for value in Environment::ALL {
            assert_eq!(value.as_str().parse::<Environment>().unwrap(), *value);
        }
        for value in Strategy::ALL {
            assert_eq!(value.as_str().parse::<Strategy>().unwrap(), *value);
        }
        for value in Compatibility::ALL {
            assert_eq!(value.as_str().parse::<Compatibility>().unwrap(), *value);
        }
    }

    #[test]
    fn unknown_text_names_the_allowed_values() {
        let error = "prod".parse::<Environment>().unwrap_err();
        assert!(
            error.contains("development, staging, production"),
            "{error}"
        );
    }
}
