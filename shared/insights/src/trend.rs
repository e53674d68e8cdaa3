//! Whether a theme is rising beyond its usual range, from its mentions per week.
//!
//! A theme's mentions in a week are counts of independent arrivals, so the test is Poisson:
//! the week's count `x` against `λ`, the mean of the trailing weeks. It fires when all of
//! - `P(X ≥ x | λ) < alpha` (0.001): noise alone gives a week like this once in a thousand
//!   theme-weeks or less;
//! - `x ≥ min_count` (5): a theme with three items never trends, however new;
//! - `x ≥ ratio × λ` (2): a busy theme's ordinary wobble is not news even when it is
//!   statistically unusual.
//!
//! `λ` is at least `floor` (0.5 a week), so a new or quiet theme is not measured against a
//! rate of zero, under which any mention would be infinitely surprising. A z-score or a bare
//! ratio is the usual alternative and fails exactly where product feedback lives, at small
//! counts: 1 → 3 mentions is +200% and two standard deviations at λ = 1, yet the Poisson tail
//! says such a week comes one time in twelve (p = 0.08).

/// The test's settings; `Default` is what the pipeline uses.
#[derive(Debug, Clone, Copy)]
pub struct TrendTest {
    pub alpha: f64,
    pub min_count: u32,
    pub ratio: f64,
    pub floor: f64,
    /// How many weeks before the tested one make the baseline.
    pub trailing: usize,
}

impl Default for TrendTest {
    fn default() -> Self {
        Self {
            alpha: 1e-3,
            min_count: 5,
            ratio: 2.0,
            floor: 0.5,
            trailing: 8,
        }
    }
}

/// A week that rose beyond the theme's usual range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rise {
    pub count: u32,
    /// The mean of the trailing weeks (at least the floor).
    pub baseline: f64,
    /// `P(X ≥ count)` at the baseline.
    pub p_value: f64,
}

/// `P(X ≥ x)` for `X ~ Poisson(λ)`. Above the mean the tail is summed directly (in log space
/// for its first term), so probabilities far below machine epsilon stay exact in relative
/// terms; at or below it, `1 − P(X < x)`.
pub fn poisson_tail(x: u32, lambda: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    if f64::from(x) <= lambda {
        let mut term = (-lambda).exp();
        let mut below = term;
        for k in 1..x {
            term *= lambda / f64::from(k);
            below += term;
        }
        return (1.0 - below).clamp(0.0, 1.0);
    }
    let ln_factorial: f64 = (1..=x).map(|k| f64::from(k).ln()).sum();
    let mut term = (-lambda + f64::from(x) * lambda.ln() - ln_factorial).exp();
    let mut sum = 0.0;
    let mut k = x;
    while term > 0.0 && term > sum * 1e-16 {
        sum += term;
        k += 1;
        term *= lambda / f64::from(k);
    }
    sum.min(1.0)
}

impl TrendTest {
    /// Tests the last of `weeks` (mentions per week, oldest first) against the ones before.
    pub fn rise(&self, weeks: &[u32]) -> Option<Rise> {
        let (&count, before) = weeks.split_last()?;
        let trailing = &before[before.len().saturating_sub(self.trailing)..];
        let mean = if trailing.is_empty() {
            0.0
        } else {
            trailing.iter().map(|&c| f64::from(c)).sum::<f64>() / trailing.len() as f64
        };
        self.rise_over(count, mean)
    }

    /// Tests a week's `count` against `mean`, the trailing weeks' mean mentions.
    pub fn rise_over(&self, count: u32, mean: f64) -> Option<Rise> {
        let baseline = mean.max(self.floor);
        if count < self.min_count || f64::from(count) < self.ratio * baseline {
            return None;
        }
        let p_value = poisson_tail(count, baseline);
        (p_value < self.alpha).then_some(Rise {
            count,
            baseline,
            p_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_matches_the_distribution() {
        // P(X ≥ 3 | λ = 1) = 1 − e⁻¹(1 + 1 + 1/2).
        let expected = 1.0 - (-1f64).exp() * 2.5;
        assert!((poisson_tail(3, 1.0) - expected).abs() < 1e-12);
        // Below the mean: P(X ≥ 2 | λ = 4) = 1 − e⁻⁴(1 + 4).
        assert!((poisson_tail(2, 4.0) - (1.0 - (-4f64).exp() * 5.0)).abs() < 1e-12);
        assert_eq!(poisson_tail(0, 3.0), 1.0);
        // Far in the tail it stays positive and tiny: P(X ≥ 40 | λ = 0.5) ≈ e^-0.5 0.5^40 / 40!.
        let far = poisson_tail(40, 0.5);
        assert!(far > 0.0 && far < 1e-55, "{far}");
        // The tail only shrinks as x grows.
        let mut last = 1.0;
        for x in 0..60 {
            let p = poisson_tail(x, 6.0);
            assert!(p <= last + 1e-15, "x = {x}");
            last = p;
        }
    }

    #[test]
    fn small_themes_and_ordinary_weeks_do_not_trend() {
        let test = TrendTest::default();
        // Three items, all this week: a new theme, not a trend.
        assert_eq!(test.rise(&[0, 0, 0, 0, 0, 0, 0, 0, 3]), None);
        // A busy theme's ordinary week.
        assert_eq!(test.rise(&[20, 22, 18, 25, 19, 21, 23, 20, 27]), None);
        // Statistically unusual for a busy theme, but not twice its usual.
        assert_eq!(test.rise(&[20, 22, 18, 25, 19, 21, 23, 20, 38]), None);
        // 1 → 3 is +200% and still noise.
        assert_eq!(test.rise(&[1, 1, 1, 1, 1, 1, 1, 1, 3]), None);
        assert_eq!(test.rise(&[]), None);
    }

    #[test]
    fn a_real_rise_trends() {
        let test = TrendTest::default();
        let rise = test
            .rise(&[1, 0, 2, 1, 0, 1, 1, 2, 9])
            .expect("9 against about 1 a week");
        assert_eq!(rise.count, 9);
        assert!((rise.baseline - 1.0).abs() < 1e-12);
        assert!(rise.p_value < 1e-5, "{rise:?}");
        // A theme new this week with many mentions trends against the floor.
        assert!(test.rise(&[0, 0, 0, 0, 0, 0, 0, 0, 8]).is_some());
        // Only the trailing weeks count: an old burst does not raise the baseline.
        assert!(test.rise(&[50, 50, 1, 1, 1, 1, 1, 1, 1, 1, 9]).is_some());
    }
}
