use super::*;
use serde_json::json;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn player(attributes: Value) -> Map<String, Value> {
    attributes.as_object().expect("an object").clone()
}

fn book() -> SegmentBook {
    SegmentBook::with_built_ins()
}

#[test]
fn attribute_tests_match_as_documented() {
    let book = book();
    let alice = player(json!({
        "platform": "ios", "level": 12, "country": "DE", "clientVersion": "1.4.2",
        "firstSeen": NOW - 3 * DAY, "lastSeen": "2027-01-15T08:00:00Z", "spendTier": "vip",
        "beta": true,
    }));
    // (rule, matches alice)
    let table = [
        (json!({"attribute": "platform", "eq": "ios"}), true),
        (json!({"attribute": "platform", "eq": "android"}), false),
        (json!({"attribute": "platform", "ne": "android"}), true),
        (json!({"attribute": "guild", "ne": "x"}), true),
        (json!({"attribute": "guild", "eq": "x"}), false),
        (json!({"attribute": "level", "gte": 12}), true),
        (json!({"attribute": "level", "gt": 12}), false),
        (json!({"attribute": "level", "lt": 12.5}), true),
        (json!({"attribute": "level", "lte": "12"}), false),
        (json!({"attribute": "beta", "eq": true}), true),
        (json!({"attribute": "country", "in": ["FR", "DE"]}), true),
        (json!({"attribute": "country", "in": ["US"]}), false),
        (
            json!({"attribute": "clientVersion", "semver": ">=1.4.0, <2"}),
            true,
        ),
        (
            json!({"attribute": "clientVersion", "semver": "^1.5"}),
            false,
        ),
        (json!({"attribute": "level", "semver": ">=1.0.0"}), false),
        (json!({"attribute": "firstSeen", "within": "P7D"}), true),
        (json!({"attribute": "firstSeen", "within": "P1D"}), false),
        (json!({"attribute": "firstSeen", "before": "P2D"}), true),
        (json!({"attribute": "lastSeen", "before": "P14D"}), false),
        (
            json!({"not": {"attribute": "platform", "eq": "ios"}}),
            false,
        ),
        (
            json!({"all": [{"attribute": "platform", "eq": "ios"}, {"attribute": "level", "gte": 20}]}),
            false,
        ),
        (
            json!({"any": [{"attribute": "platform", "eq": "pc"}, {"attribute": "level", "gte": 10}]}),
            true,
        ),
        (json!({"segment": "vip"}), true),
        (json!({"segment": "new-players"}), true),
        (json!({"segment": "inactive-players"}), false),
    ];
    for (rule, expected) in table {
        let parsed = Rule::parse(&rule, &|name| book.get(name).is_some()).expect("a valid rule");
        assert_eq!(
            book.matches(&parsed, "alice", &alice, NOW),
            expected,
            "{rule}"
        );
    }
    // Relative times: inactive once lastSeen is more than 14 days back.
    let gone = player(json!({"lastSeen": NOW - 15 * DAY, "firstSeen": NOW - 400 * DAY}));
    assert!(book.contains("inactive-players", "bob", &gone, NOW));
    assert!(!book.contains("new-players", "bob", &gone, NOW));
    assert!(!book.contains("no-such-segment", "bob", &gone, NOW));
}

#[test]
fn list_segments_hold_their_members() {
    let mut book = book();
    book.define_list("testers", ["p-1".to_string(), "p-2".to_string()])
        .unwrap();
    let nobody = Map::new();
    assert!(book.contains("testers", "p-2", &nobody, NOW));
    assert!(!book.contains("testers", "p-3", &nobody, NOW));
    book.define_rule(
        "testers-on-ios",
        &json!({"all": [{"segment": "testers"}, {"attribute": "platform", "eq": "ios"}]}),
    )
    .unwrap();
    assert!(book.contains(
        "testers-on-ios",
        "p-1",
        &player(json!({"platform": "ios"})),
        NOW
    ));
    assert!(!book.contains(
        "testers-on-ios",
        "p-3",
        &player(json!({"platform": "ios"})),
        NOW
    ));
    let too_many = (0..=MAX_LIST_MEMBERS).map(|i| format!("p-{i}"));
    assert_eq!(
        book.define_list("huge", too_many),
        Err(BookError::TooManyMembers(MAX_LIST_MEMBERS + 1))
    );
    assert!(book.get("huge").is_none(), "nothing half-created");
}

#[test]
fn reference_cycles_are_refused() {
    let mut book = book();
    book.define_rule("a", &json!({"segment": "vip"})).unwrap();
    book.define_rule("b", &json!({"segment": "a"})).unwrap();
    assert_eq!(
        book.define_rule("a", &json!({"segment": "b"})),
        Err(BookError::Cycle(vec!["a".into(), "b".into(), "a".into()]))
    );
    assert!(matches!(
        book.define_rule("c", &json!({"not": {"segment": "c"}})),
        Err(BookError::Cycle(_))
    ));
    // The refused definitions changed nothing.
    assert!(book.get("c").is_none());
    assert!(book.contains("a", "x", &player(json!({"spendTier": "whale"})), NOW));
}

#[test]
fn bad_rules_name_their_path() {
    let book = book();
    let deep = (0..MAX_DEPTH).fold(json!({"attribute": "a", "eq": 1}), |r, _| json!({"not": r}));
    let wide = json!({"any": (0..MAX_NODES).map(|_| json!({"attribute": "a", "eq": 1})).collect::<Vec<_>>()});
    // (rule, path named)
    let table = [
        (json!("vip"), ""),
        (json!({}), ""),
        (json!({"all": []}), "/all"),
        (json!({"all": [{"attribute": "a"}]}), "/all/0"),
        (
            json!({"any": [{"attribute": "a", "eq": 1}, {"segment": "nope"}]}),
            "/any/1/segment",
        ),
        (json!({"not": {"attribute": "", "eq": 1}}), "/not/attribute"),
        (json!({"attribute": "a", "eq": 1, "ne": 2}), ""),
        (json!({"attribute": "a", "matches": ".*"}), "/matches"),
        (json!({"attribute": "a", "lt": true}), "/lt"),
        (json!({"attribute": "a", "eq": {"x": 1}}), "/eq"),
        (json!({"attribute": "a", "in": []}), "/in"),
        (json!({"attribute": "a", "in": [[1]]}), "/in"),
        (
            json!({"attribute": "a", "semver": "one point four"}),
            "/semver",
        ),
        (json!({"attribute": "a", "within": "yesterday"}), "/within"),
        (
            json!({"all": [{"attribute": "a", "eq": 1}], "any": []}),
            "/any",
        ),
        (deep, "/not/not/not/not/not/not/not/not"),
        (wide, "/any/255"),
    ];
    for (rule, path) in table {
        let error = Rule::parse(&rule, &|name| book.get(name).is_some()).expect_err("refused");
        assert_eq!(error.path, path, "{rule}: {}", error.message);
    }
}

#[test]
fn percentage_buckets_are_stable_spread_and_only_widen() {
    assert_eq!(percent_bucket("e1", "p-1"), percent_bucket("e1", "p-1"));
    let players: Vec<String> = (0..20_000).map(|i| format!("player-{i}")).collect();
    let share = |percent: f64| {
        players
            .iter()
            .filter(|p| in_percentage("summer", p, percent))
            .count() as f64
            / players.len() as f64
    };
    for percent in [1.0, 10.0, 50.0] {
        let got = share(percent) * 100.0;
        assert!(
            (got - percent).abs() < percent.sqrt() * 0.7 + 0.3,
            "{percent}% gave {got}%"
        );
    }
    assert_eq!(share(0.0), 0.0);
    assert_eq!(share(100.0), 1.0);
    for p in &players {
        if in_percentage("summer", p, 10.0) {
            assert!(
                in_percentage("summer", p, 30.0),
                "{p} left as the audience widened"
            );
        }
    }
    // Another salt draws other players.
    let overlap = players
        .iter()
        .filter(|p| in_percentage("a", p, 10.0) && in_percentage("b", p, 10.0))
        .count();
    assert!(
        overlap < players.len() / 50,
        "{overlap} players in both 10 % draws"
    );
}

#[test]
fn reference_chains_are_bounded_and_each_segment_is_worked_out_once() {
    let mut book = book();
    book.define_rule("s0", &json!({"attribute": "x", "eq": 1}))
        .unwrap();
    // Eight levels, each naming the level below 255 times: without working
    // each segment out once per player, 255^8 evaluations.
    for level in 1..=MAX_DEPTH {
        let below = json!({"segment": format!("s{}", level - 1)});
        let rule = json!({"any": vec![below; 255]});
        book.define_rule(&format!("s{level}"), &rule).unwrap();
    }
    let top = format!("s{MAX_DEPTH}");
    assert!(!book.contains(&top, "p", &player(json!({"x": 2})), NOW));
    assert!(book.contains(&top, "p", &player(json!({"x": 1})), NOW));
    // One level more is refused, and so is deepening the chain from below.
    let deeper = json!({"segment": top});
    assert_eq!(
        book.define_rule("too-deep", &deeper),
        Err(BookError::TooDeep(MAX_DEPTH + 1))
    );
    assert!(book.get("too-deep").is_none());
    assert_eq!(
        book.define_rule("s0", &json!({"segment": "vip"})),
        Err(BookError::TooDeep(MAX_DEPTH + 1))
    );
    assert!(
        book.contains("s0", "p", &player(json!({"x": 1})), NOW),
        "the refused redefinition left s0 as it was"
    );
}

#[test]
fn time_attributes_at_the_extremes_match_nothing_odd() {
    let book = book();
    let ancient = player(json!({"firstSeen": i64::MIN, "lastSeen": i64::MIN}));
    assert!(!book.contains("new-players", "p", &ancient, NOW));
    let future = player(json!({"firstSeen": i64::MAX}));
    assert!(!book.contains("new-players", "p", &future, NOW));
}

#[test]
fn a_segment_says_which_attributes_it_reads_through_its_references() {
    let mut book = book();
    book.define_rule("veterans", &json!({"attribute": "level", "gte": 10}))
        .unwrap();
    book.define_rule(
        "fresh-veterans",
        &json!({"all": [{"segment": "veterans"}, {"not": {"segment": "new-players"}}]}),
    )
    .unwrap();
    book.define_list("testers", ["p-1".to_string()]).unwrap();
    assert!(book.reads_any("new-players", &["firstSeen"]));
    assert!(book.reads_any("fresh-veterans", &["firstSeen"]));
    assert!(book.reads_any("fresh-veterans", &["level"]));
    assert!(!book.reads_any("veterans", &["firstSeen", "sessions"]));
    assert!(!book.reads_any("testers", &["firstSeen"]));
    assert!(!book.reads_any("no-such-segment", &["firstSeen"]));
}
