//! Segments: rules over player attributes and lists of player ids, with
//! the stable percentage bucket. The code lives in the SDK crate
//! (`hotswap_client::liveops::segments`) so game servers run the very same
//! rules; this module is its name in the hub's domain.

pub use hotswap_client::liveops::segments::*;
