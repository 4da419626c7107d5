//! What a player sees of a config: base, then the player's live events by
//! priority, then the experiment variant, each an RFC 7396 merge patch. The
//! code lives in the SDK crate (`hotswap_client::liveops::resolution`), so
//! the hub's REST answers and the SDK's local resolution are one function.

pub use hotswap_client::liveops::resolution::*;
