//! A bounded window of one series' points: the last `span` of time, at most
//! [`stats::MAX_POINTS`](super::stats::MAX_POINTS) points. Points closer together than
//! `span / (MAX_POINTS - 2)` are merged (the newer one stays), so the window covers its
//! whole span at an even resolution whatever the sampling interval: what trend tests
//! need (the shape over the span) at a bounded cost.

use std::collections::VecDeque;

use super::stats::MAX_POINTS;

#[derive(Debug, Clone)]
pub struct Window {
    /// Seconds of history kept.
    span: f64,
    points: VecDeque<(f64, f64)>,
}

impl Window {
    pub fn new(span_seconds: f64) -> Window {
        Window {
            span: span_seconds,
            points: VecDeque::new(),
        }
    }

    /// Adds a point (time in seconds). Points at or before the newest are ignored (a
    /// re-sent batch); non-finite values are kept out.
    pub fn push(&mut self, t: f64, v: f64) {
        if !t.is_finite() || !v.is_finite() {
            return;
        }
        if self.points.back().is_some_and(|(last, _)| t <= *last) {
            return;
        }
        let min_gap = self.span / (MAX_POINTS - 2) as f64;
        let n = self.points.len();
        if n >= 2 && t - self.points[n - 2].0 < min_gap {
            // The newest point replaces the one that was newest.
            self.points[n - 1] = (t, v);
        } else {
            self.points.push_back((t, v));
        }
        while self
            .points
            .front()
            .is_some_and(|(first, _)| t - first > self.span)
        {
            self.points.pop_front();
        }
        while self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
    }

    pub fn points(&self) -> Vec<(f64, f64)> {
        self.points.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Seconds between the oldest and the newest point.
    pub fn covered(&self) -> f64 {
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        }
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        self.points.back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_span_within_the_point_bound() {
        let mut w = Window::new(3600.0);
        for i in 0..10_000 {
            w.push(f64::from(i), f64::from(i));
            assert!(w.len() <= MAX_POINTS);
        }
        // The whole last hour is covered, evenly, with the newest point.
        assert!(w.covered() >= 3500.0, "{}", w.covered());
        let p = w.points();
        assert_eq!(p.last(), Some(&(9999.0, 9999.0)));
        assert!(p.len() >= MAX_POINTS / 2);
        assert!(
            p.windows(2)
                .all(|x| x[0].0 < x[1].0 && x[1].0 - x[0].0 <= 21.0)
        );
    }

    #[test]
    fn old_points_leave_and_bad_points_never_enter() {
        let mut w = Window::new(60.0);
        for i in 0..100 {
            w.push(f64::from(i), 1.0);
        }
        assert_eq!(w.points()[0].0, 39.0);
        w.push(50.0, 2.0);
        w.push(200.0, f64::NAN);
        w.push(f64::INFINITY, 1.0);
        assert_eq!(w.last(), Some((99.0, 1.0)));
        w.push(200.0, 3.0);
        assert_eq!(w.len(), 1);
    }
}
