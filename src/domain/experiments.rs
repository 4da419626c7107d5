//! Experiment assignment: which variant a unit gets, from its bucket and
//! the weights. The code lives in the SDK crate
//! (`hotswap_client::liveops::experiments`) so game servers assign players
//! exactly as the hub does; this module is its name in the hub's domain.

pub use hotswap_client::liveops::experiments::*;
