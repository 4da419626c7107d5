//! Pure rules, no I/O: names, config kinds, document limits, diffs, schema
//! validation with the game rules, schema compatibility, who may do what
//! where, and the deployment rules: the layers a server's revision comes
//! from, cohorts, the plan and the next step of each strategy, metric
//! windows, rollback judgement.
//!
//! **Architecture invariant:** nothing here touches a socket, a file, a
//! clock or the database, so every rule is unit tested on plain values. A
//! test below reads this folder's sources and fails on an import of the
//! hub's I/O layers or of an I/O crate.

pub mod compat;
pub mod diff;
pub mod document;
pub mod evaluation;
pub mod event_progress;
pub mod experiment_stats;
pub mod experiments;
pub mod feedback;
pub mod judgement;
pub mod kinds;
pub mod kpis;
pub mod layers;
pub mod live_event;
pub mod manifest;
pub mod names;
pub mod plan;
pub mod policy;
pub mod resolution;
pub mod rollout;
pub mod schedule;
pub mod secrets;
pub mod segments;
pub mod server_hello;
pub mod stats;
pub mod strategy;
pub mod telemetry;
pub mod trace_context;
pub mod validation;
pub mod window;

#[cfg(test)]
mod purity {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("the domain folder reads") {
            let path = entry.expect("an entry reads").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// The domain may use `crate::domain`, serde, JSON, JSON Schema,
    /// hashing, date parsing and the wire types, nothing that does I/O.
    #[test]
    fn the_domain_imports_nothing_that_does_io() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(files.len() > 20, "found the domain's sources: {files:?}");
        // Spelt in pieces so this list does not match itself.
        let forbidden: Vec<String> = [
            ("crate::", "store"),
            ("crate::", "hub"),
            ("crate::", "http"),
            ("crate::", "ws"),
            ("crate::", "catalog"),
            ("crate::", "startup"),
            ("crate::", "settings"),
            ("crate::", "crypto"),
            ("crate::", "auth"),
            ("hotswap_", "actors"),
            ("sq", "lx"),
            ("tok", "io"),
            ("act", "ix"),
            ("aw", "c::"),
            ("std::", "fs"),
            ("std::", "net"),
            ("std::", "env"),
            ("std::", "process"),
            ("std::", "thread"),
            ("Utc::", "now"),
            ("SystemTime::", "now"),
            ("Instant::", "now"),
        ]
        .iter()
        .map(|(a, b)| format!("{a}{b}"))
        .collect();
        let mut offences = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a source reads");
            // This test reads files; it is not a rule.
            let rules = text.split("\nmod purity {").next().unwrap_or("");
            for (number, line) in rules.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in &forbidden {
                    if code.contains(word.as_str()) {
                        offences.push(format!("{}:{}: {word}", file.display(), number + 1));
                    }
                }
            }
        }
        assert!(offences.is_empty(), "the domain does I/O: {offences:#?}");
    }
}
