//! The trend detector on synthetic streams whose truth is known: themes whose mentions arrive
//! at a steady Poisson rate (every alert is a false alarm), and themes whose rate rises at a
//! known week (how often, and how soon after the rise, it is announced). Arrivals are spread
//! uniformly within each week, and a detector that runs after each placed item fires at the
//! arrival that first makes the week's count pass, so delays are in days, as users see them.
//! Beside ours, the two detectors products usually ship: a three-sigma z-score and "twice the
//! trailing mean", on the same streams.

use insights::trend::TrendTest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Whether a week's count (the last of `weeks`) is an alert, given the weeks before it.
pub type Detector = fn(&[u32]) -> bool;

pub fn ours(weeks: &[u32]) -> bool {
    TrendTest::default().rise(weeks).is_some()
}

/// The same trailing 8 weeks; fires above mean + 3σ (any mention above a flat history).
pub fn z_score(weeks: &[u32]) -> bool {
    let (&x, before) = weeks.split_last().expect("a week");
    let before = &before[before.len().saturating_sub(8)..];
    let n = before.len().max(1) as f64;
    let mean = before.iter().map(|&c| f64::from(c)).sum::<f64>() / n;
    let var = before
        .iter()
        .map(|&c| (f64::from(c) - mean).powi(2))
        .sum::<f64>()
        / n;
    f64::from(x) > mean + 3.0 * var.sqrt()
}

/// The same trailing 8 weeks; fires at twice their mean or more (any mention after silence).
pub fn doubling(weeks: &[u32]) -> bool {
    let (&x, before) = weeks.split_last().expect("a week");
    let before = &before[before.len().saturating_sub(8)..];
    let mean = before.iter().map(|&c| f64::from(c)).sum::<f64>() / before.len().max(1) as f64;
    x > 0 && f64::from(x) >= 2.0 * mean
}

/// A Poisson draw (Knuth's product of uniforms; the rates here are small).
fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.r#gen::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Weeks tested per theme, after the 8 that make the first baseline.
pub const WEEKS: usize = 52;
const WARMUP: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
pub struct FalseAlarms {
    pub theme_weeks: usize,
    pub alarms: usize,
}

impl FalseAlarms {
    pub fn per_thousand(&self) -> f64 {
        1000.0 * self.alarms as f64 / self.theme_weeks.max(1) as f64
    }
}

/// Themes at each steady rate in `rates` (mentions a week), `themes` of each, tested each week
/// after the warm-up: every alert is false.
pub fn no_change(detector: Detector, rates: &[f64], themes: usize, seed: u64) -> FalseAlarms {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = FalseAlarms::default();
    for &rate in rates {
        for _ in 0..themes {
            let weeks: Vec<u32> = (0..WARMUP + WEEKS)
                .map(|_| poisson(&mut rng, rate))
                .collect();
            for w in WARMUP..weeks.len() {
                out.theme_weeks += 1;
                out.alarms += usize::from(detector(&weeks[..=w]));
            }
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Rises {
    pub themes: usize,
    /// Themes announced within four weeks of their rise.
    pub detected: usize,
    /// Days from the rise to the announcement, of those detected.
    pub delays: Vec<f64>,
    /// Themes announced before their rise (false alarms in the same streams).
    pub early: usize,
}

impl Rises {
    pub fn median_delay(&self) -> Option<f64> {
        let mut d = self.delays.clone();
        d.sort_by(f64::total_cmp);
        (!d.is_empty()).then(|| d[d.len() / 2])
    }
}

/// Themes steady at each of `rates` for 12 weeks, then `factor` times as frequent: when is the
/// rise first announced? The detector runs at each arrival, with the week's count so far.
pub fn rise(detector: Detector, rates: &[f64], factor: f64, themes: usize, seed: u64) -> Rises {
    const BEFORE: usize = 12;
    const AFTER: usize = 4;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Rises::default();
    for &rate in rates {
        for _ in 0..themes {
            out.themes += 1;
            let mut weeks: Vec<u32> = Vec::new();
            let mut early = false;
            for w in 0..BEFORE {
                let count = poisson(&mut rng, rate);
                weeks.push(count);
                early |= w >= WARMUP && detector(&weeks);
            }
            out.early += usize::from(early);
            'weeks: for w in 0..AFTER {
                let count = poisson(&mut rng, rate * factor);
                let mut arrivals: Vec<f64> = (0..count).map(|_| rng.r#gen::<f64>() * 7.0).collect();
                arrivals.sort_by(f64::total_cmp);
                weeks.push(0);
                for (k, at) in arrivals.iter().enumerate() {
                    *weeks.last_mut().expect("this week") = k as u32 + 1;
                    if detector(&weeks) {
                        out.detected += 1;
                        out.delays.push(w as f64 * 7.0 + at);
                        break 'weeks;
                    }
                }
            }
        }
    }
    out
}

/// The steady rates of the streams: from a theme heard once in five weeks to twenty a week.
pub const RATES: [f64; 7] = [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_streams_raise_few_alarms_and_a_tripling_is_found_within_days() {
        // Ours stays near its 1e-3 design rate on steady streams; the usual detectors do not.
        let ours_steady = no_change(ours, &RATES, 100, 7);
        assert_eq!(ours_steady.theme_weeks, 7 * 100 * WEEKS);
        assert!(ours_steady.per_thousand() < 2.0, "{ours_steady:?}");
        let z = no_change(z_score, &RATES, 100, 7);
        assert!(
            z.per_thousand() > 10.0 * ours_steady.per_thousand().max(0.1),
            "{z:?}"
        );
        // A theme at 5 a week going to 15 is announced for most themes, most within the week.
        let r = rise(ours, &[5.0], 3.0, 300, 11);
        assert!(r.detected as f64 > 0.8 * r.themes as f64, "{r:?}");
        assert!(r.median_delay().unwrap() < 10.0, "{r:?}");
        // No change, no detection: a factor of one is found about as rarely as the steady rate.
        let flat = rise(ours, &[5.0], 1.0, 300, 11);
        assert!(flat.detected < 10, "{flat:?}");
    }
}
