//! WebSocket endpoints: they authenticate, upgrade, and hand the socket to
//! an actor in `hotswap-actors`.
//!
//! # Layout
//! - `servers.rs`: `GET /ws/v1/servers`, the game-server socket.
//! - `upgrade.rs`: the upgrade lane: every WebSocket upgrade goes through
//!   the App from here, and a game server's socket is taken off the HTTP
//!   server once its 101 is written.

pub mod servers;
pub mod upgrade;
