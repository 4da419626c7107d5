//! `hotswap-client`: the SDK game servers link, and the wire types the hub
//! and the servers share.
//!
//! # Layout
//! - [`checksum`]: the canonical form of a config document and its SHA-256
//!   checksum, as `docs/PROTOCOL.md` defines them. The hub stamps every
//!   version with it and the SDK verifies it before swapping a config in.
//! - [`protocol`]: the messages of the game-server socket and their
//!   MessagePack encoding.
//! - [`signature`]: the Ed25519 signature every config version carries, and
//!   its verification.
//!
//! The socket client, protocol messages and metrics recorder land with the
//! hub's socket endpoint.

pub mod checksum;
pub mod protocol;
pub mod signature;

pub use checksum::{canonical_json, document_checksum};
