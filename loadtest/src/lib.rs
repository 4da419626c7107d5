//! The load-test harness: simulated game servers and players against a real hub. It arrives with the load-test issue; `ARCHITECTURE.md` describes the plan.
