//! Which judgement a deployment acts on. Each treatment (the canary, or
//! each A/B variant against the control) is judged over two windows by
//! [`judge`](super::judgement::judge); this picks the one that decides.

use super::judgement::{Judgement, Verdict};

/// How bad a verdict is: the order the worst treatment is picked by.
pub fn severity(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::NotEnoughData => 0,
        Verdict::Healthy => 1,
        Verdict::Hold => 2,
        Verdict::Rollback => 3,
    }
}

/// One treatment judged over both windows: the fast window's judgement
/// when it calls for a rollback (a sharp regression acts within seconds),
/// else the long window's (holds and promotions wait for the full window).
pub fn decisive(long: Judgement, fast: Judgement) -> Judgement {
    if fast.verdict == Verdict::Rollback {
        fast
    } else {
        long
    }
}

/// The worst of the treatments' judgements (the first of equals).
pub fn worst(judgements: impl IntoIterator<Item = Judgement>) -> Option<Judgement> {
    worst_by(judgements, |j| j.verdict)
}

fn worst_by<T>(items: impl IntoIterator<Item = T>, verdict: impl Fn(&T) -> Verdict) -> Option<T> {
    items.into_iter().fold(None, |worst, item| match worst {
        Some(w) if severity(verdict(&item)) <= severity(verdict(&w)) => Some(w),
        _ => Some(item),
    })
}

/// What an operator is told while a warning holds auto-promotion.
pub fn hold_warning(judgement: &Judgement) -> Option<String> {
    (judgement.verdict == Verdict::Hold).then(|| {
        format!(
            "warning on {}: auto-promotion holds",
            judgement
                .deciding_metric()
                .map(|m| format!("{m:?}"))
                .unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(verdict: Verdict) -> Judgement {
        Judgement {
            verdict,
            rules: Vec::new(),
            rank_tests: Vec::new(),
        }
    }

    #[test]
    fn the_fast_window_decides_only_a_rollback() {
        use Verdict::*;
        // (long, fast, the verdict acted on)
        let table = [
            (Healthy, Rollback, Rollback),
            (Hold, Rollback, Rollback),
            (Rollback, Healthy, Rollback),
            (Healthy, Hold, Healthy),
            (NotEnoughData, Hold, NotEnoughData),
            (Hold, Healthy, Hold),
            (Healthy, NotEnoughData, Healthy),
        ];
        for (long, fast, acted) in table {
            assert_eq!(
                decisive(judged(long), judged(fast)).verdict,
                acted,
                "long {long:?}, fast {fast:?}"
            );
        }
    }

    #[test]
    fn the_worst_treatment_decides_and_the_first_of_equals_wins() {
        use Verdict::*;
        let pick = |verdicts: &[(Verdict, &'static str)]| {
            worst_by(verdicts.iter().copied(), |(v, _)| *v).map(|(_, name)| name)
        };
        assert_eq!(pick(&[]), None);
        assert_eq!(
            pick(&[(Healthy, "A"), (Hold, "B"), (NotEnoughData, "C")]),
            Some("B")
        );
        assert_eq!(pick(&[(NotEnoughData, "A"), (Healthy, "B")]), Some("B"));
        assert_eq!(
            pick(&[(Hold, "A"), (Rollback, "B"), (Rollback, "C")]),
            Some("B")
        );
        assert_eq!(pick(&[(Hold, "A"), (Hold, "B")]), Some("A"));
        assert_eq!(
            worst([judged(Healthy), judged(Rollback)]).unwrap().verdict,
            Rollback
        );
    }

    #[test]
    fn only_a_hold_warns() {
        assert!(hold_warning(&judged(Verdict::Hold)).is_some());
        for verdict in [Verdict::Healthy, Verdict::Rollback, Verdict::NotEnoughData] {
            assert_eq!(hold_warning(&judged(verdict)), None);
        }
    }
}
