//! The numeric kernels of PromQL functions and aggregations, written to match Prometheus'
//! `promql/functions.go` and `promql/quantile.go` step for step (Kahan sums included), so
//! results agree to the last bit where the operations are the same.

use crate::source::{fold_max, fold_min};

/// One step of Kahan-Neumaier summation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `rate`, `increase` and `delta`: Prometheus' `extrapolatedRate`. `samples` are the
/// window's samples; `range_start`/`range_end` the window edges in ms; `range_s` the range in
/// seconds. `None` when the window holds fewer than two samples.
pub(crate) fn extrapolated_rate(
    samples: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_s: f64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n_minus_one = samples.len() - 1;
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[n_minus_one];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = first_v;
        for &(_, v) in &samples[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let average_between = sampled_interval / n_minus_one as f64;
    let threshold = average_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        // A counter cannot go below zero: do not extrapolate past the point where it was zero.
        let duration_to_zero = sampled_interval * (first_v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    extrapolate_to += duration_to_start;
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    extrapolate_to += duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_s;
    }
    Some(result * factor)
}

/// `irate` (`is_rate`) and `idelta`: from the last two samples.
pub(crate) fn instant_value(samples: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (lt, lv) = samples[samples.len() - 1];
    let (pt, pv) = samples[samples.len() - 2];
    let mut v = if is_rate && lv < pv { lv } else { lv - pv };
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept with x in seconds relative to `intercept_ms`.
pub(crate) fn linear_regression(samples: &[(i64, f64)], intercept_ms: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in samples.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_ms) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// `deriv`.
pub(crate) fn deriv(samples: &[(i64, f64)]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    Some(linear_regression(samples, samples[0].0).0)
}

/// `predict_linear`, predicting `duration_s` seconds after `eval_ms`.
pub(crate) fn predict_linear(samples: &[(i64, f64)], eval_ms: i64, duration_s: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(samples, eval_ms);
    Some(slope * duration_s + intercept)
}

/// A mean with Kahan summation that falls back to an incremental mean when the sum
/// overflows, as `avg_over_time` and `avg` do.
pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut incremental = false;
    for v in values {
        count += 1.0;
        if !incremental {
            let (new_sum, new_c) = kahan_inc(v, sum, c);
            if count == 1.0 || !new_sum.is_infinite() {
                (sum, c) = (new_sum, new_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let corrected = mean + c;
        (mean, c) = kahan_inc(v / count - corrected / count, mean, c);
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

/// A Kahan sum, as `sum_over_time` and `sum` compute it.
pub(crate) fn sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in values {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

pub(crate) fn min(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::NAN, fold_min)
}

pub(crate) fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::NAN, fold_max)
}

/// Population standard deviation (`stddev_over_time`, `stddev`).
pub(crate) fn stddev(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    ((aux + c_aux) / count).sqrt()
}

/// The φ-quantile of `values` with linear interpolation between neighbours; NaN sorts first.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Whether two floats are equal within a relative `eps` (Prometheus' `almost.Equal`).
fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// `histogram_quantile` over classic buckets `(upper bound, cumulative count)`.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(&(ub, _)) if ub == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Buckets with the same upper bound are added up.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut buckets = merged;
    // Cumulative counts never decrease; tiny float differences are treated as equal.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        bucket_start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || ((a - b) / b).abs() < 1e-12
    }

    #[test]
    fn rate_extrapolates_to_window_edges_within_the_threshold() {
        // Window (0, 60s], samples every 10 s from 5 s to 55 s, +10 each: 50 over 50 s,
        // extrapolated 5 s at each end (below 1.1 * 10 s) to 60 over 60 s.
        let s: Vec<(i64, f64)> = (0..6)
            .map(|i| (5_000 + i * 10_000, 100.0 + 10.0 * i as f64))
            .collect();
        assert!(close(
            extrapolated_rate(&s, 0, 60_000, 60.0, true, false).unwrap(),
            60.0
        ));
        assert!(close(
            extrapolated_rate(&s, 0, 60_000, 60.0, true, true).unwrap(),
            1.0
        ));
    }

    #[test]
    fn rate_extrapolates_half_an_interval_when_the_series_starts_late() {
        // Samples 30 s..55 s every 5 s: start gap 30 s > 1.1 * 5 s, so only 2.5 s added there;
        // end gap 5 s < 5.5 s, extrapolated fully. 25 over 25 s -> 32.5.
        let s: Vec<(i64, f64)> = (0..6)
            .map(|i| (30_000 + i * 5_000, 100.0 + 5.0 * i as f64))
            .collect();
        assert!(close(
            extrapolated_rate(&s, 0, 60_000, 60.0, true, false).unwrap(),
            32.5
        ));
    }

    #[test]
    fn the_zero_point_clamp_applies_after_the_half_interval_limit() {
        // Samples 40 s..55 s every 5 s, 1 to 4: the start gap (40 s) exceeds 1.1 * 5 s, so
        // it becomes 2.5 s; the zero point (5 s before the first sample) is further, so
        // 2.5 s stays (Prometheus 2.x took the zero point first and extrapolated 5 s).
        let s = vec![(40_000, 1.0), (45_000, 2.0), (50_000, 3.0), (55_000, 4.0)];
        let inc = extrapolated_rate(&s, 0, 60_000, 60.0, true, false).unwrap();
        assert!(close(inc, 4.5), "{inc}");
    }

    #[test]
    fn counter_resets_add_the_value_before_the_reset() {
        // 10, 20, 5, 15: increase = (15 - 10) + 20 = 25 over 30 s in a (0, 30s] window.
        let s = vec![(0, 10.0), (10_000, 20.0), (20_000, 5.0), (30_000, 15.0)];
        let inc = extrapolated_rate(&s, 0, 30_000, 30.0, true, false).unwrap();
        assert!(close(inc, 25.0), "{inc}");
        // delta ignores resets.
        assert!(close(
            extrapolated_rate(&s, 0, 30_000, 30.0, false, false).unwrap(),
            5.0
        ));
    }

    #[test]
    fn counter_extrapolation_stops_at_zero() {
        // Starts at 1 and climbs 10 per 10 s: zero was 1 s before the first sample, so the
        // start extrapolates 1 s, not 9 s. Window (0, 30s], samples 9 s..29 s.
        let s = vec![(9_000, 1.0), (19_000, 11.0), (29_000, 21.0)];
        let inc = extrapolated_rate(&s, 0, 30_000, 30.0, true, false).unwrap();
        // 20 over 20 s, extended by 1 s (zero point) + 1 s (end) = 22 s -> 22.
        assert!(close(inc, 22.0), "{inc}");
        // Not for delta.
        let d = extrapolated_rate(&s, 0, 30_000, 30.0, false, false).unwrap();
        assert!(close(d, 30.0), "{d}");
    }

    #[test]
    fn one_sample_windows_have_no_rate() {
        assert_eq!(extrapolated_rate(&[(1, 1.0)], 0, 10, 1.0, true, true), None);
        assert_eq!(extrapolated_rate(&[], 0, 10, 1.0, true, true), None);
        assert_eq!(instant_value(&[(1, 1.0)], true), None);
        assert_eq!(deriv(&[(1, 1.0)]), None);
    }

    #[test]
    fn irate_uses_the_last_two_samples_and_resets() {
        assert_eq!(
            instant_value(&[(0, 1.0), (10_000, 5.0), (20_000, 25.0)], true),
            Some(2.0)
        );
        assert_eq!(
            instant_value(&[(0, 1.0), (10_000, 50.0), (20_000, 20.0)], true),
            Some(2.0)
        );
        assert_eq!(
            instant_value(&[(0, 1.0), (10_000, 50.0), (20_000, 20.0)], false),
            Some(-30.0)
        );
    }

    #[test]
    fn deriv_and_predict_linear_fit_a_line() {
        let s = vec![(1_000_000, 3.0), (1_010_000, 5.0), (1_020_000, 7.0)];
        assert!(close(deriv(&s).unwrap(), 0.2));
        // At 1_020_000 the line is 7; 100 s later 27.
        assert!(close(predict_linear(&s, 1_020_000, 100.0).unwrap(), 27.0));
        // A constant series: slope 0; an infinite constant: NaN.
        assert_eq!(deriv(&[(0, 4.0), (1, 4.0)]), Some(0.0));
        assert!(
            deriv(&[(0, f64::INFINITY), (1, f64::INFINITY)])
                .unwrap()
                .is_nan()
        );
    }

    #[test]
    fn over_time_kernels_handle_nan_and_inf() {
        assert!(close(mean([1.0, 2.0, 4.0].into_iter()), 7.0 / 3.0));
        assert_eq!(mean([f64::MAX, f64::MAX].into_iter()), f64::MAX);
        assert_eq!(mean([1.0, f64::INFINITY].into_iter()), f64::INFINITY);
        assert!(mean([1.0, f64::NAN].into_iter()).is_nan());
        assert_eq!(sum([1.0, f64::INFINITY].into_iter()), f64::INFINITY);
        assert!(sum([f64::NEG_INFINITY, f64::INFINITY].into_iter()).is_nan());
        // Kahan summation keeps the small terms.
        assert_eq!(sum([1e100, 1.0, -1e100].into_iter()), 1.0);
        assert_eq!(min([f64::NAN, 3.0, 1.0].into_iter()), 1.0);
        assert_eq!(max([2.0, f64::NAN].into_iter()), 2.0);
        assert!(min([f64::NAN].into_iter()).is_nan());
        assert!(close(
            stddev([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter()),
            2.0
        ));
        assert_eq!(stddev([5.0].into_iter()), 0.0);
    }

    #[test]
    fn quantile_interpolates_and_bounds() {
        assert_eq!(quantile(0.5, vec![1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, vec![3.0, 1.0]), 1.0);
        assert_eq!(quantile(1.0, vec![3.0, 1.0]), 3.0);
        assert_eq!(quantile(-1.0, vec![1.0]), f64::NEG_INFINITY);
        assert_eq!(quantile(2.0, vec![1.0]), f64::INFINITY);
        assert!(quantile(f64::NAN, vec![1.0]).is_nan());
        assert!(quantile(0.5, vec![]).is_nan());
        // NaN sorts first.
        assert_eq!(quantile(1.0, vec![f64::NAN, 2.0]), 2.0);
        assert!(quantile(0.0, vec![f64::NAN, 2.0]).is_nan());
    }

    #[test]
    fn bucket_quantile_interpolates_within_the_bucket() {
        let b = vec![
            (0.1, 10.0),
            (0.5, 60.0),
            (1.0, 90.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 50 falls in (0.1, 0.5]: 0.1 + 0.4 * 40/50.
        assert!(close(bucket_quantile(0.5, b.clone()), 0.1 + 0.4 * 0.8));
        // rank 95 is past the last finite bucket: its upper bound.
        assert_eq!(bucket_quantile(0.95, b.clone()), 1.0);
        // rank 5 in the first bucket, interpolated from 0.
        assert!(close(bucket_quantile(0.05, b.clone()), 0.05));
        assert_eq!(bucket_quantile(-0.1, b.clone()), f64::NEG_INFINITY);
        assert_eq!(bucket_quantile(1.1, b.clone()), f64::INFINITY);
    }

    #[test]
    fn bucket_quantile_edge_cases() {
        // No +Inf bucket.
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0), (2.0, 2.0)]).is_nan());
        // Only +Inf.
        assert!(bucket_quantile(0.5, vec![(f64::INFINITY, 3.0)]).is_nan());
        // No observations.
        assert!(bucket_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        // A non-monotonic count is raised to the one before it.
        let b = vec![(1.0, 10.0), (2.0, 5.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.5, b), 0.5);
        // A first bucket with a non-positive bound returns that bound.
        assert_eq!(
            bucket_quantile(0.1, vec![(-1.0, 5.0), (f64::INFINITY, 10.0)]),
            -1.0
        );
    }
}
