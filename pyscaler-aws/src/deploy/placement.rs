//! Where new nodes go: AWS Auto Scaling's balance rule, as a pure function.

/// The share of `n` new nodes each zone gets, when zone `i` runs `current[i]`
/// nodes of the cluster already: each new node goes to the zone with the
/// fewest nodes at that moment, ties to the zone that comes first (the
/// profile's order). So afterwards the zones are as balanced as `n` allows,
/// and a scale-out onto an unbalanced cluster fills the smaller zones first.
///
/// `spread(&[2, 0], 4)` is `[1, 3]`: the empty zone catches up, then both
/// take turns, the first zone first.
pub(crate) fn spread(current: &[usize], n: usize) -> Vec<usize> {
    let mut counts = current.to_vec();
    let mut shares = vec![0; counts.len()];
    for _ in 0..n {
        let fewest = counts
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (**c, *i))
            .map(|(i, _)| i);
        let Some(i) = fewest else {
            // No zone: nothing can be placed.
            break;
        };
        counts[i] += 1;
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_cluster_gets_even_shares_the_first_zone_first() {
        assert_eq!(spread(&[0, 0], 6), [3, 3]);
        assert_eq!(spread(&[0, 0], 1), [1, 0]);
        assert_eq!(spread(&[0, 0, 0], 7), [3, 2, 2]);
        assert_eq!(spread(&[4, 4], 20), [10, 10]);
    }

    #[test]
    fn the_smaller_zones_are_filled_first() {
        assert_eq!(spread(&[2, 0], 4), [1, 3]);
        assert_eq!(spread(&[2, 0], 2), [0, 2]);
        assert_eq!(spread(&[5, 1, 3], 4), [0, 3, 1]);
        // Not enough to catch up: all of it goes to the smallest.
        assert_eq!(spread(&[9, 0], 3), [0, 3]);
    }

    #[test]
    fn afterwards_no_zone_has_two_more_than_another_unless_it_had_them() {
        for a in 0..5 {
            for b in 0..5 {
                for n in 0..12 {
                    let s = spread(&[a, b], n);
                    assert_eq!(s.iter().sum::<usize>(), n);
                    let (x, y) = (a + s[0], b + s[1]);
                    let gap = x.abs_diff(y);
                    assert!(
                        gap <= 1 || (n < a.abs_diff(b) && gap == a.abs_diff(b) - n),
                        "{a} {b} {n}: {s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_zone_places_nothing() {
        assert_eq!(spread(&[], 3), Vec::<usize>::new());
        assert_eq!(spread(&[1], 3), [3]);
    }
}
