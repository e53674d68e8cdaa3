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

/// Groups `vectors` (unit length) by average link, merging while two groups are on average
/// at least `threshold` similar. Returns each vector's group, numbered from 0 in order of
/// each group's first member.
pub fn average_link(vectors: &[Vec<f32>], threshold: f32) -> Vec<usize> {
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
    let mut size = vec![1usize; n];
    // Alive and may still merge; a group whose nearest neighbour is under the threshold
    // never will (average link cannot bring a merged group closer than its closest part).
    let mut open = vec![true; n];
    let mut parent: Vec<usize> = (0..n).collect();
    let mut chain: Vec<usize> = Vec::new();
    let mut remaining = n;
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
        remaining -= 1;
    }
    // Each vector's root, numbered by first appearance.
    let root = |mut i: usize| {
        while parent[i] != i {
            i = parent[i];
        }
        i
    };
    let mut number = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let next = number.len();
            *number.entry(root(i)).or_insert(next)
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
        let n = vectors.len();
        let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        loop {
            let mut best = (f32::MIN, 0, 0);
            for a in 0..groups.len() {
                for b in a + 1..groups.len() {
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
}
