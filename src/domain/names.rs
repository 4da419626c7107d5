//! Names that cross the API edge, parsed once ("parse, don't validate").

use std::fmt;

/// A slug naming a config, schema or event: `[a-z0-9][a-z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

/// Why a string is not a [`Slug`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 128 characters")]
    TooLong,
    #[error("must start with a lowercase letter or digit")]
    BadStart,
    #[error("may contain only lowercase letters, digits, '.', '_' and '-' (found {0:?})")]
    BadCharacter(char),
}

impl Slug {
    pub const MAX_LEN: usize = 128;

    pub fn parse(candidate: &str) -> Result<Self, SlugError> {
        let first = candidate.chars().next().ok_or(SlugError::Empty)?;
        if candidate.len() > Self::MAX_LEN {
            return Err(SlugError::TooLong);
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(SlugError::BadStart);
        }
        if let Some(bad) = candidate.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(SlugError::BadCharacter(bad));
        }
        Ok(Self(candidate.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version tag: `stable`, `beta`, `deprecated`, `rollback`, or a free tag
/// of lowercase letters, digits and `.`, `_`, `-`, `:` (at most 64).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub const MAX_LEN: usize = 64;
    /// How many tags one version may carry.
    pub const MAX_PER_VERSION: usize = 32;

    pub fn parse(candidate: &str) -> Result<Self, SlugError> {
        let first = candidate.chars().next().ok_or(SlugError::Empty)?;
        if candidate.len() > Self::MAX_LEN {
            return Err(SlugError::TooLong);
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(SlugError::BadStart);
        }
        if let Some(bad) = candidate.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | ':'))
        }) {
            return Err(SlugError::BadCharacter(bad));
        }
        Ok(Self(candidate.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_api_pattern() {
        for good in [
            "weapon-balance",
            "a",
            "0",
            "eu.events_2026",
            &"x".repeat(128),
        ] {
            assert!(Slug::parse(good).is_ok(), "{good} should parse");
        }
        let cases = [
            ("", SlugError::Empty),
            ("-lead", SlugError::BadStart),
            ("Upper", SlugError::BadStart),
            ("has space", SlugError::BadCharacter(' ')),
            ("ünï", SlugError::BadStart),
            ("semi;colon", SlugError::BadCharacter(';')),
        ];
        for (bad, why) in cases {
            assert_eq!(Slug::parse(bad).unwrap_err(), why, "{bad:?}");
        }
        assert_eq!(
            Slug::parse(&"x".repeat(129)).unwrap_err(),
            SlugError::TooLong
        );
    }

    #[test]
    fn tags_allow_colons_but_not_spaces() {
        assert!(Tag::parse("rollback-of:1.2.0").is_ok());
        assert!(Tag::parse("stable").is_ok());
        assert!(Tag::parse("not ok").is_err());
    }
}
