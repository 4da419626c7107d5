//! Walking the audit chain to find the first broken link.

use super::{Catalog, CatalogResult, views::AuditVerificationView};
use crate::store::audit::{self, GENESIS_HASH};

/// Rows read per query while walking.
const PAGE: i64 = 1000;

impl Catalog {
    /// Recomputes every row's hash from its content and the previous row's
    /// hash, and checks the chain's head: an edited, inserted, removed or
    /// reordered row breaks it.
    pub async fn verify_audit_chain(&self) -> CatalogResult<AuditVerificationView> {
        let mut conn = self.store.conn().await?;
        let mut expected_prev = GENESIS_HASH.to_owned();
        let mut after = 0;
        let mut checked = 0u64;
        let broken = |seq: i64, reason: String, checked: u64| AuditVerificationView {
            valid: false,
            checked,
            first_broken_seq: Some(seq),
            reason: Some(reason),
        };
        loop {
            let rows = audit::chain_page(&mut conn, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in rows {
                checked += 1;
                let (Some(prev_hash), Some(hash)) = (&row.prev_hash, &row.hash) else {
                    return Ok(broken(row.seq, "the row carries no hash".into(), checked));
                };
                if *prev_hash != expected_prev {
                    return Ok(broken(
                        row.seq,
                        "the row does not follow the row before it (a row was removed or inserted)"
                            .into(),
                        checked,
                    ));
                }
                if row.expected_hash(prev_hash) != *hash {
                    return Ok(broken(
                        row.seq,
                        "the row's content does not match its hash (it was edited)".into(),
                        checked,
                    ));
                }
                expected_prev = hash.clone();
            }
        }
        let (head_seq, head_hash) = audit::head(&mut conn).await?;
        if head_hash != expected_prev || (checked > 0 && head_seq != after) {
            return Ok(broken(
                head_seq,
                "the chain ends before its recorded head (rows were removed at the end)".into(),
                checked,
            ));
        }
        Ok(AuditVerificationView {
            valid: true,
            checked,
            first_broken_seq: None,
            reason: None,
        })
    }
}
