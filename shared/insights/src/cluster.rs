//! Grouping items into themes all at once: average-link agglomerative clustering of unit
//! vectors, cut where the closest two groups are less than a threshold similar on average.
//!
//! Themes form online, one item at a time, as messages arrive; that order makes early themes
//! absorb what later turns out to be its own topic. Regrouping every item of a user in one
//! pass gives the grouping a batch method reaches, and the store keeps theme ids stable
//! across it (`db::insights::regroup`).
//!
//! The nearest-neighbour-chain algorithm merges reciprocal nearest neighbours; for a
//! reducible linkage such as average link it yields the same hierarchy as merging the
//! globally closest pair each step, in O(n²) time instead of O(n³). The upper triangle of the
//! similarity matrix is the only O(n²) memory (n = 6,000: 72 MB).

/// Upper-triangle index of the pair (i, j), i ≠ j.
fn at(n: usize, i: usize, j: usize) -> usize {
    let (a, b) = if i < j { (i, j) } else { (j, i) };
    a * n - a * (a + 1) / 2 + (b - a - 1)
}

/// What people decided about the grouping, which a regrouping keeps (indexes into the
/// vectors): each `must` list ends up in one group, and no group holds both of a `cannot`
/// pair.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub must: Vec<Vec<usize>>,
    pub cannot: Vec<(usize, usize)>,
}

/// Groups `vectors` (unit length) by average link, merging while two groups are on average
/// at least `threshold` similar. Returns each vector's group, numbered from 0 in order of
/// each group's first member.
pub fn average_link(vectors: &[Vec<f32>], threshold: f32) -> Vec<usize> {
    average_link_with(vectors, threshold, &Constraints::default())
}

/// [`average_link`] under `constraints`. A cannot-link pair's similarity is −∞, which every
/// average that includes it keeps, so no merge ever joins the pair (and average link stays
/// reducible: a merged group is never closer to a third than its closest part). Must-link
/// lists are merged before the rest, however far apart their members are.
pub fn average_link_with(
    vectors: &[Vec<f32>],
    threshold: f32,
    constraints: &Constraints,
) -> Vec<usize> {
    let n = vectors.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sim = vec![0f32; n * (n - 1) / 2];
    for i in 0..n {
        for j in i + 1..n {
            sim[at(n, i, j)] = crate::classify::dot(&vectors[i], &vectors[j]);
        }
    }
    for &(a, b) in &constraints.cannot {
        if a != b {
            sim[at(n, a, b)] = f32::NEG_INFINITY;
        }
    }
    let mut size = vec![1usize; n];
    // Alive and may still merge; a group whose nearest neighbour is under the threshold
    // never will (average link cannot bring a merged group closer than its closest part).
    let mut open = vec![true; n];
    let mut parent: Vec<usize> = (0..n).collect();
    let mut chain: Vec<usize> = Vec::new();
    let mut remaining = n;
    // Merges b into a: a's similarity to each other open group becomes the size-weighted
    // mean of a's and b's.
    let merge = |sim: &mut [f32],
                 size: &mut [usize],
                 open: &mut [bool],
                 parent: &mut [usize],
                 a: usize,
                 b: usize| {
        for k in 0..n {
            if open[k] && k != a && k != b {
                let v = (sim[at(n, a, k)] * size[a] as f32 + sim[at(n, b, k)] * size[b] as f32)
                    / (size[a] + size[b]) as f32;
                sim[at(n, a, k)] = v;
            }
        }
        size[a] += size[b];
        open[b] = false;
        parent[b] = a;
    };
    let root_of = |parent: &[usize], mut i: usize| {
        while parent[i] != i {
            i = parent[i];
        }
        i
    };
    for list in &constraints.must {
        let Some(&first) = list.first() else { continue };
        for &other in &list[1..] {
            let (a, b) = (root_of(&parent, first), root_of(&parent, other));
            if a != b {
                merge(&mut sim, &mut size, &mut open, &mut parent, a, b);
                remaining -= 1;
            }
        }
    }
    let nearest = |sim: &[f32], open: &[bool], a: usize, prefer: Option<usize>| {
        let mut best: Option<(f32, usize)> = prefer.map(|p| (sim[at(n, a, p)], p));
        for k in 0..n {
            if k != a && open[k] {
                let s = sim[at(n, a, k)];
                if best.is_none_or(|(bs, _)| s > bs) {
                    best = Some((s, k));
                }
            }
        }
        best
    };
    while remaining > 1 {
        if chain.is_empty() {
            match (0..n).find(|&i| open[i]) {
                Some(i) => chain.push(i),
                None => break,
            }
        }
        let a = *chain.last().expect("not empty");
        let previous = chain.len().checked_sub(2).map(|p| chain[p]);
        // Ties go to the previous link of the chain, so the chain cannot cycle.
        let Some((s, b)) = nearest(&sim, &open, a, previous) else {
            open[a] = false;
            chain.clear();
            remaining -= 1;
            continue;
        };
        if s < threshold {
            // Nothing is close enough to `a`, now or after any later merge.
            open[a] = false;
            remaining -= 1;
            chain.pop();
            continue;
        }
        if Some(b) != previous {
            chain.push(b);
            continue;
        }
        // a and b are each other's nearest: merge b into a.
        chain.pop();
        chain.pop();
        merge(&mut sim, &mut size, &mut open, &mut parent, a, b);
        remaining -= 1;
    }
    // Each vector's root, numbered by first appearance.
    let mut number = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let next = number.len();
            *number.entry(root_of(&parent, i)).or_insert(next)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// The O(n³) definition: merge the globally closest pair while it reaches the threshold.
    fn naive(vectors: &[Vec<f32>], threshold: f32) -> Vec<usize> {
        naive_with(vectors, threshold, &Constraints::default())
    }

    /// The same under constraints: must-link lists start as groups, and a pair of groups
    /// that would join a cannot-link pair is never the closest.
    fn naive_with(vectors: &[Vec<f32>], threshold: f32, c: &Constraints) -> Vec<usize> {
        let n = vectors.len();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in 0..n {
            match c.must.iter().find(|m| m.contains(&i)) {
                Some(m) if m[0] != i => {}
                Some(m) => groups.push(m.clone()),
                None => groups.push(vec![i]),
            }
        }
        loop {
            let mut best = (f32::MIN, 0, 0);
            for a in 0..groups.len() {
                for b in a + 1..groups.len() {
                    let apart = c.cannot.iter().any(|&(x, y)| {
                        (groups[a].contains(&x) && groups[b].contains(&y))
                            || (groups[a].contains(&y) && groups[b].contains(&x))
                    });
                    if apart {
                        continue;
                    }
                    let mut total = 0.0;
                    for &i in &groups[a] {
                        for &j in &groups[b] {
                            total += crate::classify::dot(&vectors[i], &vectors[j]);
                        }
                    }
                    let s = total / (groups[a].len() * groups[b].len()) as f32;
                    if s > best.0 {
                        best = (s, a, b);
                    }
                }
            }
            if groups.len() < 2 || best.0 < threshold {
                break;
            }
            let merged = groups.remove(best.2);
            groups[best.1].extend(merged);
        }
        let mut out = vec![0; n];
        for g in &groups {
            let first = *g.iter().min().expect("member");
            for &i in g {
                out[i] = first;
            }
        }
        let mut number = std::collections::HashMap::new();
        out.iter()
            .map(|r| {
                let next = number.len();
                *number.entry(*r).or_insert(next)
            })
            .collect()
    }

    #[test]
    fn close_vectors_group_and_distant_ones_stay_apart() {
        let v = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.95, 0.05, 0.0]),
            unit(&[0.0, 0.9, 0.1]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        assert_eq!(average_link(&v, 0.8), vec![0, 1, 0, 1, 2]);
        assert_eq!(average_link(&v, -1.0), vec![0, 0, 0, 0, 0]);
        assert_eq!(average_link(&v, 1.01), vec![0, 1, 2, 3, 4]);
        assert!(average_link(&[], 0.5).is_empty());
    }

    #[test]
    fn the_chain_gives_what_merging_the_closest_pair_gives() {
        // Pseudo-random vectors in 8 dimensions with some structure, at several cuts.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..6).map(|_| (0..8).map(|_| next()).collect()).collect();
        let vectors: Vec<Vec<f32>> = (0..90)
            .map(|i| {
                let c = &centres[i % 6];
                unit(&c.iter().map(|x| x + next() * 0.6).collect::<Vec<_>>())
            })
            .collect();
        for threshold in [0.2, 0.4, 0.6, 0.8] {
            assert_eq!(
                average_link(&vectors, threshold),
                naive(&vectors, threshold),
                "threshold {threshold}"
            );
        }
    }

    #[test]
    fn must_link_holds_far_items_together_and_cannot_link_keeps_close_ones_apart() {
        let v = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.98, 0.02, 0.0]),
            unit(&[0.97, 0.0, 0.03]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        assert_eq!(average_link(&v, 0.8), vec![0, 0, 0, 1]);
        let c = Constraints {
            must: vec![vec![0, 3]],
            cannot: vec![(1, 2)],
        };
        // 0 and 3 are together although orthogonal; 1 and 2 are apart although nearly equal.
        let g = average_link_with(&v, 0.4, &c);
        assert_eq!(g[0], g[3]);
        assert_ne!(g[1], g[2]);
        assert_eq!(g, naive_with(&v, 0.4, &c));
        // Cannot-link reaches whole groups: 1 cannot join 2's group, whoever else is in it.
        let c = Constraints {
            must: vec![vec![0, 2]],
            cannot: vec![(1, 2)],
        };
        let g = average_link_with(&v, -1.0, &c);
        assert_eq!(g[0], g[2]);
        assert_ne!(g[1], g[0]);
    }

    #[test]
    fn the_chain_keeps_agreeing_with_the_definition_under_constraints() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let vectors: Vec<Vec<f32>> = (0..60)
            .map(|i| {
                let mut v = vec![0f32; 6];
                v[i % 4] = 1.0;
                for x in v.iter_mut() {
                    *x += (next() % 1000) as f32 / 2500.0;
                }
                unit(&v)
            })
            .collect();
        let pick = |r: u64| (r % 60) as usize;
        let c = Constraints {
            must: (0..5)
                .map(|k| vec![3 * k, 3 * k + 20, 3 * k + 41])
                .collect(),
            cannot: (0..12)
                .map(|_| (pick(next()), pick(next())))
                .filter(|(a, b)| a != b)
                .collect(),
        };
        for threshold in [0.3, 0.6, 0.85] {
            let g = average_link_with(&vectors, threshold, &c);
            assert_eq!(
                g,
                naive_with(&vectors, threshold, &c),
                "threshold {threshold}"
            );
            for m in &c.must {
                assert!(m.iter().all(|&i| g[i] == g[m[0]]));
            }
        }
    }
}

/// The adjusted Rand index of two groupings of the same items: 1 when they agree on every
/// pair, about 0 for agreement by chance (Hubert and Arabie, 1985).
pub fn adjusted_rand(a: &[usize], b: &[usize]) -> f64 {
    use std::collections::HashMap;
    let mut table: HashMap<(usize, usize), usize> = HashMap::new();
    let (mut by_a, mut by_b): (HashMap<usize, usize>, HashMap<usize, usize>) =
        (HashMap::new(), HashMap::new());
    for (x, y) in a.iter().zip(b) {
        *table.entry((*x, *y)).or_default() += 1;
        *by_a.entry(*x).or_default() += 1;
        *by_b.entry(*y).or_default() += 1;
    }
    let pairs = |c: usize| (c * c.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = table.values().map(|c| pairs(*c)).sum();
    let sa: f64 = by_a.values().map(|c| pairs(*c)).sum();
    let sb: f64 = by_b.values().map(|c| pairs(*c)).sum();
    let expected = sa * sb / pairs(a.len().min(b.len()));
    let max = (sa + sb) / 2.0;
    if max - expected != 0.0 {
        (index - expected) / (max - expected)
    } else {
        1.0
    }
}

#[cfg(test)]
mod rand_tests {
    use super::adjusted_rand;

    #[test]
    fn adjusted_rand_is_one_for_the_same_partition_under_other_names_and_low_for_unrelated() {
        assert_eq!(adjusted_rand(&[0, 0, 1, 1, 2], &[5, 5, 3, 3, 9]), 1.0);
        // Every item alone against all together: no pair agrees beyond chance.
        assert!(adjusted_rand(&[0, 1, 2, 3], &[0, 0, 0, 0]).abs() < 1e-9);
        // One item moved: between.
        let moved = adjusted_rand(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 1, 1]);
        assert!(moved > 0.0 && moved < 1.0, "{moved}");
    }
}
