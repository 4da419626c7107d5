//! WebSocket endpoints: they authenticate, upgrade, and hand the socket to
//! an actor in `hotswap-actors`.
//!
//! # Layout
//! - `servers.rs`: `GET /ws/v1/servers`, the game-server socket.

pub mod servers;
