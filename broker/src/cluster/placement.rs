//! Replica placement of new partitions, as Kafka's `AdminUtils` does it: leaders round-robin
//! over the brokers from a start chosen per topic, followers shifted so that follower sets
//! differ between rounds, and, when every broker has a rack, the broker list alternated
//! across racks with followers pushed onto racks the partition does not use yet. Pure and
//! deterministic, so every controller voter computes the same assignment. Also which
//! leaderships go back to preferred replicas (`imbalanced`), as Kafka's controller decides.

use std::collections::{BTreeMap, BTreeSet};

/// Replicas (leader first) of `partitions` partitions with `rf` replicas each over
/// `brokers` (id, rack), starting at broker index `start` with follower shift `shift`.
/// The caller checks `1 <= rf <= brokers.len()`.
pub fn assign(brokers: &[(u64, Option<String>)], partitions: usize, rf: usize, start: usize, shift: usize) -> Vec<Vec<u64>> {
    let rack_aware = !brokers.is_empty() && brokers.iter().all(|(_, r)| r.is_some());
    let order: Vec<(u64, Option<String>)> = if rack_aware { rack_alternated(brokers) } else { brokers.to_vec() };
    let racks: BTreeSet<&str> = order.iter().filter_map(|(_, r)| r.as_deref()).collect();
    let n = order.len();
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let first = (start + p) % n;
        // The follower shift grows every n partitions, so follower sets differ between rounds.
        let round_shift = shift + p / n;
        let follower = |k: usize| (first + 1 + (round_shift + k) % (n - 1).max(1)) % n;
        let mut replicas = vec![order[first].0];
        if !rack_aware {
            replicas.extend((0..rf.saturating_sub(1)).map(|k| order[follower(k)].0));
            out.push(replicas);
            continue;
        }
        let mut used_racks: BTreeSet<&str> = order[first].1.as_deref().into_iter().collect();
        let mut k = 0;
        while replicas.len() < rf {
            let (id, rack) = &order[follower(k)];
            let rack = rack.as_deref().unwrap_or("");
            // A new rack while one is left, and a new broker while one is left.
            let rack_ok = !used_racks.contains(rack) || used_racks.len() == racks.len();
            if rack_ok && !replicas.contains(id) {
                replicas.push(*id);
                used_racks.insert(rack);
            }
            k += 1;
            if k > 4 * n * n {
                // Unreachable while rf <= n: every broker is tried; keep going without racks.
                used_racks = racks.clone();
            }
        }
        out.push(replicas);
    }
    out
}

/// Brokers ordered by taking one from each rack in turn (racks and brokers in id order),
/// so that consecutive brokers sit on different racks.
fn rack_alternated(brokers: &[(u64, Option<String>)]) -> Vec<(u64, Option<String>)> {
    let mut by_rack: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_deref().unwrap_or("")).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut out = Vec::with_capacity(brokers.len());
    for i in 0..by_rack.values().map(Vec::len).max().unwrap_or(0) {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(i) {
                out.push((*id, Some((*rack).to_string())));
            }
        }
    }
    out
}

/// Kafka's automatic leader rebalance: given each partition's preferred replica (its first)
/// and current leader, the partitions (by position in the input) to hand back to their
/// preferred replica. A node's share is handed back when more than `percentage` percent of
/// the partitions it prefers are led by others; then all of those, as Kafka does.
pub fn imbalanced(partitions: &[(u64, Option<u64>)], percentage: u32) -> Vec<usize> {
    let mut per_node: BTreeMap<u64, (usize, Vec<usize>)> = BTreeMap::new();
    for (i, (preferred, leader)) in partitions.iter().enumerate() {
        let entry = per_node.entry(*preferred).or_default();
        entry.0 += 1;
        if *leader != Some(*preferred) {
            entry.1.push(i);
        }
    }
    let mut out = Vec::new();
    for (total, elsewhere) in per_node.into_values() {
        // elsewhere / total > percentage / 100, in integers.
        if elsewhere.len() * 100 > total * percentage as usize {
            out.extend(elsewhere);
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brokers(racks: &[&str]) -> Vec<(u64, Option<String>)> {
        racks.iter().enumerate().map(|(i, r)| (i as u64 + 1, (!r.is_empty()).then(|| r.to_string()))).collect()
    }

    #[test]
    fn consecutive_brokers_alternate_racks() {
        let order: Vec<u64> = rack_alternated(&brokers(&["a", "a", "b", "b", "c"])).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, [1, 3, 5, 2, 4]);
    }

    #[test]
    fn replicas_of_a_partition_use_distinct_racks_when_there_are_enough() {
        let b = brokers(&["a", "a", "b", "b", "c", "c"]);
        let rack = |id: u64| b[id as usize - 1].1.clone();
        for replicas in assign(&b, 12, 3, 0, 0) {
            let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
    }

    proptest! {
        #[test]
        fn every_assignment_is_valid_and_spreads_leaders(
            rack_of in proptest::collection::vec(0u8..4, 1..9),
            with_racks in any::<bool>(),
            partitions in 1usize..40,
            rf_seed in any::<usize>(),
            start in any::<usize>(),
            shift in any::<usize>(),
        ) {
            let b: Vec<(u64, Option<String>)> = rack_of
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u64 + 10, with_racks.then(|| format!("r{r}"))))
                .collect();
            let n = b.len();
            let rf = 1 + rf_seed % n;
            let out = assign(&b, partitions, rf, start % n, shift % n);
            prop_assert_eq!(out.len(), partitions);
            let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
            for replicas in &out {
                prop_assert_eq!(replicas.len(), rf);
                let distinct: BTreeSet<_> = replicas.iter().collect();
                prop_assert_eq!(distinct.len(), rf, "a broker twice in {:?}", replicas);
                prop_assert!(replicas.iter().all(|id| b.iter().any(|(x, _)| x == id)));
                *leaders.entry(replicas[0]).or_default() += 1;
                if with_racks {
                    // As many racks as possible: min(rf, number of racks).
                    let all_racks: BTreeSet<_> = b.iter().map(|(_, r)| r.clone()).collect();
                    let used: BTreeSet<_> = replicas.iter().map(|id| b.iter().find(|(x, _)| x == id).map(|(_, r)| r.clone())).collect();
                    prop_assert_eq!(used.len(), rf.min(all_racks.len()), "racks of {:?}", replicas);
                }
            }
            // Leaders round-robin: counts differ by at most one, over every broker.
            let most = leaders.values().max().copied().unwrap_or(0);
            let least = if leaders.len() < n { 0 } else { leaders.values().min().copied().unwrap_or(0) };
            prop_assert!(most - least <= 1, "leaders {:?}", leaders);
        }
    }

    #[test]
    fn leaderships_go_back_when_a_node_leads_too_few_of_its_partitions() {
        // Node 1 prefers 10 partitions and leads 9 of them: 10% is not above 10%.
        let mut parts: Vec<(u64, Option<u64>)> = (0..9).map(|_| (1, Some(1))).collect();
        parts.push((1, Some(2)));
        assert!(imbalanced(&parts, 10).is_empty());
        // Two led elsewhere: both go back; leaderless ones count as led elsewhere.
        parts.push((1, None));
        assert_eq!(imbalanced(&parts, 10), vec![9, 10]);
        // Node 2 leads its one partition: nothing of its moves. At 0% any partition led
        // elsewhere goes back; at 100% none does.
        parts.push((2, Some(2)));
        assert_eq!(imbalanced(&parts, 10), vec![9, 10]);
        assert_eq!(imbalanced(&[(3, Some(1))], 0), vec![0]);
        assert!(imbalanced(&[(3, Some(1))], 100).is_empty());
    }
}
