//! HotSwap actors: one per connected game server, deployment and live event. They arrive with the socket endpoint; `ARCHITECTURE.md` describes the plan.
