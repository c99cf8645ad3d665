//! Robust statistics over a window of samples, for detectors that must not fire on one
//! odd sample: the Theil-Sen slope (the median of pairwise slopes, unmoved by up to
//! ~29% outliers), the Mann-Kendall trend test (is there a monotonic trend at all, with
//! what confidence), and Pettitt's change-point test (did the level shift, and when).
//!
//! Every function takes points as (time in seconds, value), skips non-finite values,
//! and is O(n²) in the window's points: windows are bounded by the caller (a detector
//! keeps at most [`MAX_POINTS`], thinning older points).

/// Points a window holds at most (O(n²) pairs: 65,000 at this size).
pub const MAX_POINTS: usize = 360;

/// The finite points, in time order.
fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A robust line: slope per second and intercept, Theil-Sen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
}

impl Line {
    pub fn at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }

    /// When the line reaches `level` (seconds), if it rises towards it.
    pub fn reaches(&self, level: f64) -> Option<f64> {
        (self.slope > 0.0).then(|| (level - self.intercept) / self.slope)
    }
}

/// The Theil-Sen line of the points: the median of the slopes of all pairs with
/// distinct times, and the median of `v - slope * t`. `None` with fewer than two
/// distinct times.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Line> {
    let p = finite(points);
    let mut slopes = Vec::with_capacity(p.len() * p.len().saturating_sub(1) / 2);
    for (i, a) in p.iter().enumerate() {
        for b in &p[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut intercepts: Vec<f64> = p.iter().map(|(t, v)| v - slope * t).collect();
    let intercept = median(&mut intercepts)?;
    Some(Line { slope, intercept })
}

/// The Mann-Kendall test of a monotonic trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Sum of the signs of all later-minus-earlier differences.
    pub s: i64,
    /// The normal approximation's z score (continuity corrected, ties accounted for).
    pub z: f64,
    /// Two-sided p value: how likely a trend this strong is by chance.
    pub p: f64,
    /// Kendall's tau: s over the pairs, from -1 (always falling) to 1 (always rising).
    pub tau: f64,
}

/// The Mann-Kendall trend test of the values in time order. `None` below 4 points.
pub fn mann_kendall(points: &[(f64, f64)]) -> Option<Trend> {
    let p = finite(points);
    let n = p.len();
    if n < 4 {
        return None;
    }
    let mut s = 0i64;
    for (i, a) in p.iter().enumerate() {
        for b in &p[i + 1..] {
            s += match b.1.total_cmp(&a.1) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    // Variance with ties: groups of equal values reduce it.
    let mut values: Vec<f64> = p.iter().map(|x| x.1).collect();
    values.sort_by(f64::total_cmp);
    let mut ties = 0f64;
    let mut run = 1usize;
    for w in values.windows(2) {
        if w[0] == w[1] {
            run += 1;
        } else {
            ties += tie_term(run);
            run = 1;
        }
    }
    ties += tie_term(run);
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    let z = if var <= 0.0 {
        0.0
    } else if s > 0 {
        (s as f64 - 1.0) / var.sqrt()
    } else if s < 0 {
        (s as f64 + 1.0) / var.sqrt()
    } else {
        0.0
    };
    let p_value = if z == 0.0 {
        1.0
    } else {
        2.0 * (1.0 - normal_cdf(z.abs()))
    };
    let pairs = nf * (nf - 1.0) / 2.0;
    Some(Trend {
        s,
        z,
        p: p_value.clamp(0.0, 1.0),
        tau: s as f64 / pairs,
    })
}

fn tie_term(t: usize) -> f64 {
    let t = t as f64;
    t * (t - 1.0) * (2.0 * t + 5.0)
}

/// The standard normal cumulative distribution (Abramowitz and Stegun 7.1.26 through
/// erf; absolute error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y
}

/// A change of level found by Pettitt's test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The time of the last point before the change.
    pub at: f64,
    /// Medians of the values before and after it.
    pub before: f64,
    pub after: f64,
    /// Approximate p value of a change this strong by chance.
    pub p: f64,
}

/// Pettitt's non-parametric test for one change of level. `None` below 4 points.
pub fn pettitt(points: &[(f64, f64)]) -> Option<Change> {
    let p = finite(points);
    let n = p.len();
    if n < 4 {
        return None;
    }
    // U_t = sum over i <= t < j of sign(x_j - x_i); the change is where |U| is largest.
    let sign = |a: f64, b: f64| match b.total_cmp(&a) {
        std::cmp::Ordering::Greater => 1i64,
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
    };
    let mut best = (0i64, 0usize);
    let mut u = 0i64;
    for t in 0..n - 1 {
        // Moving the split past t adds t's comparisons with everything after it and
        // removes those of everything before it with t.
        for j in t + 1..n {
            u += sign(p[t].1, p[j].1);
        }
        for i in 0..t {
            u -= sign(p[i].1, p[t].1);
        }
        if u.abs() > best.0.abs() {
            best = (u, t);
        }
    }
    let (k, t) = best;
    let nf = n as f64;
    let p_value = (2.0 * (-6.0 * (k as f64).powi(2) / (nf.powi(3) + nf.powi(2))).exp()).min(1.0);
    let mut before: Vec<f64> = p[..=t].iter().map(|x| x.1).collect();
    let mut after: Vec<f64> = p[t + 1..].iter().map(|x| x.1).collect();
    Some(Change {
        at: p[t].0,
        before: median(&mut before)?,
        after: median(&mut after)?,
        p: p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64, n: usize) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64 * 10.0, f(i as f64))).collect()
    }

    #[test]
    fn theil_sen_ignores_outliers_that_would_move_a_least_squares_fit() {
        let mut p = series(|i| 100.0 + 2.0 * i, 30);
        // A quarter of the points wildly off.
        for k in [3, 7, 11, 15, 19, 23, 27] {
            p[k].1 = 1e9;
        }
        let line = theil_sen(&p).unwrap();
        assert!((line.slope - 0.2).abs() < 1e-9, "{line:?}");
        assert!((line.at(0.0) - 100.0).abs() < 1e-6, "{line:?}");
        assert_eq!(line.reaches(102.0), Some(10.0));
        assert!(theil_sen(&[(1.0, 1.0)]).is_none());
        assert!(theil_sen(&[(1.0, 1.0), (1.0, 5.0)]).is_none());
        // NaN and infinities are left out, never poison the result.
        let mut q = series(|i| i, 10);
        q.push((200.0, f64::NAN));
        q.push((210.0, f64::INFINITY));
        assert!((theil_sen(&q).unwrap().slope - 0.1).abs() < 1e-12);
    }

    #[test]
    fn mann_kendall_sees_a_noisy_rise_and_not_bounded_noise() {
        // A rise of 60 buried in noise of 40.
        // Uniform noise in [0, 40) from a fixed hash of the index (splitmix64).
        let noise = |i: f64| {
            let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 40.0
        };
        let rising = series(|i| i + noise(i), 60);
        let t = mann_kendall(&rising).unwrap();
        assert!(t.p < 0.01 && t.tau > 0.2, "{t:?}");
        let flat = series(|i| 100.0 + noise(i), 60);
        let t = mann_kendall(&flat).unwrap();
        assert!(t.p > 0.05, "{t:?}");
        // All equal: no trend, no division by zero.
        let t = mann_kendall(&series(|_| 5.0, 10)).unwrap();
        assert_eq!((t.s, t.z, t.p), (0, 0.0, 1.0));
        assert!(mann_kendall(&series(|i| i, 3)).is_none());
        // A textbook value: 1..=10 strictly rising, S = 45, tau = 1.
        let t = mann_kendall(&series(|i| i, 10)).unwrap();
        assert_eq!(t.s, 45);
        assert!((t.tau - 1.0).abs() < 1e-12);
        assert!((t.z - 44.0 / 125.0f64.sqrt()).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn pettitt_finds_a_step_and_when() {
        let step = series(|i| if i < 20.0 { 50.0 } else { 500.0 }, 40);
        let c = pettitt(&step).unwrap();
        assert_eq!(c.at, 190.0);
        assert_eq!((c.before, c.after), (50.0, 500.0));
        assert!(c.p < 0.001, "{c:?}");
        let flat = series(|i| 50.0 + (i % 3.0), 40);
        assert!(pettitt(&flat).unwrap().p > 0.05);
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-3.0) - 0.001_35).abs() < 1e-5);
    }
}
