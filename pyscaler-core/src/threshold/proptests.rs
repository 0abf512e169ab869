//! For random sequences of samples (a value, or no data) at random times,
//! a threshold trigger fires exactly when its promise says: the condition
//! held on every sample for the whole window, counted from the first
//! breaching sample after the last dip, gap in the data or firing, and the
//! cooldown since the last firing is over. Both directions: a scale-out
//! above its threshold, a scale-in below it.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::{MockMetricSource, Node};

/// One sample round: seconds since the round before, and the value (`None`:
/// no data; the source answered nothing, or a value that is not a number).
type Round = (u64, Option<f64>, bool);

fn source() -> Arc<dyn MetricSource> {
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    Arc::new(m)
}

/// Around the threshold: below, on it, above; or no data.
fn rounds(threshold: f64) -> impl Strategy<Value = Vec<Round>> {
    let value = prop_oneof![
        3 => Just(Some(threshold + 1.0)),
        1 => Just(Some(threshold)),
        1 => Just(Some(threshold - 1.0)),
        1 => Just(None),
    ];
    prop::collection::vec((1u64..=45, value, any::<bool>()), 1..80)
}

fn policy(threshold: f64) -> impl Strategy<Value = MissingData> {
    prop_oneof![
        Just(MissingData::Hold),
        Just(MissingData::Fail),
        Just(MissingData::Value(threshold + 1.0)),
        Just(MissingData::Value(threshold - 1.0)),
    ]
}

struct Case {
    direction: Direction,
    comparison: Comparison,
    threshold: f64,
    window: Option<Duration>,
    cooldown: Duration,
    missing: MissingData,
}

/// Runs `rounds` through the trigger; whether it fired on each.
fn fired(case: &Case, rounds: &[Round]) -> (Vec<bool>, Duration) {
    let mut builder = ThresholdTrigger::builder("t", source())
        .when(case.comparison, case.threshold)
        .cooldown(case.cooldown)
        .on_missing_data(case.missing);
    if let Some(w) = case.window {
        builder = builder.window(w);
    }
    let mut trigger = builder.build().expect("a valid trigger");
    trigger.bind(case.direction);
    let cluster = Cluster::new("web").with_nodes([Node::new("i-1", "web-01")]);
    let mut now = Instant::now();
    let fires = rounds
        .iter()
        .map(|&(gap, value, nan)| {
            now += Duration::from_secs(gap);
            let samples = match value {
                Some(v) => vec![Sample::new("web-01", v)],
                None if nan => vec![Sample::new("web-01", f64::NAN)],
                None => Vec::new(),
            };
            trigger.evaluate(now, &cluster, &samples).fire.is_some()
        })
        .collect();
    (fires, trigger.window())
}

/// Checks each round against the promise, in both directions of the
/// implication: fired if and only if it should have.
fn check(case: &Case, rounds: &[Round]) -> Result<(), TestCaseError> {
    let (fires, window) = fired(case, rounds);
    let default = match case.direction {
        Direction::In => Duration::from_secs(300),
        _ => Duration::from_secs(60),
    };
    prop_assert_eq!(window, case.window.unwrap_or(default));
    let breaching = |value: Option<f64>| match (value, case.missing) {
        (Some(v), _) | (None, MissingData::Value(v)) => case.comparison.holds(v, case.threshold),
        (None, _) => false,
    };
    let mut t = 0u64;
    let mut since: Option<u64> = None;
    let mut last_fired: Option<u64> = None;
    for (i, (&(gap, value, _), &fire)) in rounds.iter().zip(&fires).enumerate() {
        t += gap;
        if !breaching(value) {
            since = None;
            prop_assert!(!fire, "round {i} fired without the condition");
            continue;
        }
        let start = *since.get_or_insert(t);
        let held = Duration::from_secs(t - start);
        let cooled = last_fired.is_none_or(|f| Duration::from_secs(t - f) >= case.cooldown);
        let should = held >= window && cooled;
        prop_assert_eq!(
            fire,
            should,
            "round {} at {}s: held {:?} of {:?}, cooled {}",
            i,
            t,
            held,
            window,
            cooled
        );
        if fire {
            last_fired = Some(t);
            since = None;
        }
    }
    Ok(())
}

fn window() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((0u64..=240).prop_map(Duration::from_secs))
}

fn cooldown() -> impl Strategy<Value = Duration> {
    (0u64..=400).prop_map(Duration::from_secs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_scale_out_fires_exactly_when_above_for_the_whole_window(
        rounds in rounds(2.0),
        window in window(),
        cooldown in cooldown(),
        missing in policy(2.0),
    ) {
        let case = Case {
            direction: Direction::Out,
            comparison: Comparison::Greater,
            threshold: 2.0,
            window,
            cooldown,
            missing,
        };
        check(&case, &rounds)?;
    }

    #[test]
    fn a_scale_in_fires_exactly_when_below_for_the_whole_window(
        rounds in rounds(0.5),
        window in window(),
        cooldown in cooldown(),
        missing in policy(0.5),
    ) {
        // `rounds` leans above the threshold: mirror it, so it leans below.
        let rounds: Vec<Round> = rounds
            .into_iter()
            .map(|(gap, v, nan)| (gap, v.map(|v| 1.0 - v), nan))
            .collect();
        let case = Case {
            direction: Direction::In,
            comparison: Comparison::Less,
            threshold: 0.5,
            window,
            cooldown,
            missing,
        };
        check(&case, &rounds)?;
    }
}
