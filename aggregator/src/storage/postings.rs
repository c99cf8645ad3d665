//! Postings: for every label name and value, the ids of the series carrying it, so that
//! a selector finds its series without looking at every one.
//!
//! A series' labels are `__name__` (its metric), `host` and `pid` (its target's id),
//! its target's labels and its own (`le`, `quantile`, ...). The lists live in memory,
//! sorted, rebuilt at open from the `series` and `targets` records, and kept up to date
//! as series are added, targets relabelled and targets forgotten.

use std::collections::HashMap;

pub use goroscope_promql::{MatchOp, Matcher as LabelMatcher};

#[derive(Default)]
pub(super) struct Postings {
    by_label: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Every series.
    all: Vec<u64>,
}

fn insert_sorted(list: &mut Vec<u64>, id: u64) {
    match list.last() {
        Some(&last) if last < id => list.push(id),
        None => list.push(id),
        _ => {
            if let Err(i) = list.binary_search(&id) {
                list.insert(i, id);
            }
        }
    }
}

fn remove_sorted(list: &mut Vec<u64>, id: u64) {
    if let Ok(i) = list.binary_search(&id) {
        list.remove(i);
    }
}

/// The ids in both sorted lists.
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small
        .iter()
        .copied()
        .filter(|id| large.binary_search(id).is_ok())
        .collect()
}

impl Postings {
    pub fn add<'a>(&mut self, id: u64, labels: impl Iterator<Item = (&'a str, &'a str)>) {
        insert_sorted(&mut self.all, id);
        for (name, value) in labels {
            if value.is_empty() {
                continue;
            }
            let list = self
                .by_label
                .entry(name.to_owned())
                .or_default()
                .entry(value.to_owned())
                .or_default();
            insert_sorted(list, id);
        }
    }

    /// Removes the postings of `labels` for `id` (and the series itself with `whole`).
    pub fn remove<'a>(
        &mut self,
        id: u64,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
        whole: bool,
    ) {
        if whole {
            remove_sorted(&mut self.all, id);
        }
        for (name, value) in labels {
            let Some(values) = self.by_label.get_mut(name) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                remove_sorted(list, id);
                if list.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.by_label.remove(name);
            }
        }
    }

    /// The series that may match every matcher: those in the postings of each matcher
    /// that cannot match a missing label. Matchers that can (`!=`, `!~`, or a regex
    /// matching the empty value) are left for the caller to check on each candidate.
    pub fn candidates(&self, matchers: &[LabelMatcher]) -> Vec<u64> {
        let mut lists: Vec<Vec<u64>> = Vec::new();
        for m in matchers {
            if m.matches("") {
                continue;
            }
            let values = self.by_label.get(&m.name);
            let list = match (m.op, values) {
                (_, None) => Vec::new(),
                (MatchOp::Equal, Some(values)) => values.get(&m.value).cloned().unwrap_or_default(),
                (_, Some(values)) => {
                    let mut ids: Vec<u64> = values
                        .iter()
                        .filter(|(v, _)| m.matches(v))
                        .flat_map(|(_, ids)| ids.iter().copied())
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids
                }
            };
            if list.is_empty() {
                return Vec::new();
            }
            lists.push(list);
        }
        lists.sort_by_key(Vec::len);
        let mut lists = lists.into_iter();
        let Some(mut out) = lists.next() else {
            return self.all.clone();
        };
        for list in lists {
            out = intersect(&out, &list);
            if out.is_empty() {
                break;
            }
        }
        out
    }

    /// Label names, and the values of one name.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_label.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn values(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .by_label
            .get(name)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        values.sort();
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
        LabelMatcher::new(name, op, value).unwrap()
    }

    fn postings() -> Postings {
        let mut p = Postings::default();
        p.add(
            1,
            [("__name__", "go_goroutines"), ("service", "api-gw")].into_iter(),
        );
        p.add(
            2,
            [("__name__", "go_goroutines"), ("service", "billing")].into_iter(),
        );
        p.add(
            3,
            [("__name__", "go_threads"), ("service", "billing")].into_iter(),
        );
        p.add(4, [("__name__", "go_threads")].into_iter());
        p
    }

    #[test]
    fn each_matcher_kind_narrows_the_candidates() {
        let p = postings();
        assert_eq!(
            p.candidates(&[m("__name__", MatchOp::Equal, "go_goroutines")]),
            vec![1, 2]
        );
        assert_eq!(
            p.candidates(&[
                m("__name__", MatchOp::Regex, "go_.*"),
                m("service", MatchOp::Equal, "billing")
            ]),
            vec![2, 3]
        );
        // Fully anchored: "bill" does not match "billing".
        assert!(
            p.candidates(&[m("service", MatchOp::Regex, "bill")])
                .is_empty()
        );
        // Matchers that hold on a missing label leave every series to check.
        assert_eq!(
            p.candidates(&[m("service", MatchOp::NotEqual, "billing")]),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            p.candidates(&[m("service", MatchOp::Regex, "|api-.*")]),
            vec![1, 2, 3, 4]
        );
        assert!(p.candidates(&[m("zone", MatchOp::Equal, "a")]).is_empty());
        assert!(m("service", MatchOp::NotRegex, "bill.*").matches(""));
        assert!(!m("service", MatchOp::NotRegex, "bill.*").matches("billing"));
    }

    #[test]
    fn removed_postings_are_gone_and_empty_lists_dropped() {
        let mut p = postings();
        p.remove(
            2,
            [("__name__", "go_goroutines"), ("service", "billing")].into_iter(),
            true,
        );
        assert_eq!(
            p.candidates(&[m("service", MatchOp::Equal, "billing")]),
            vec![3]
        );
        p.remove(1, [("service", "api-gw")].into_iter(), false);
        assert_eq!(p.values("service"), vec!["billing"]);
        assert_eq!(
            p.candidates(&[m("__name__", MatchOp::Equal, "go_goroutines")]),
            vec![1]
        );
        assert_eq!(p.names(), vec!["__name__", "service"]);
    }

    #[test]
    fn a_bad_or_huge_regex_is_an_error_not_a_panic() {
        // The engine's matchers are the storage's: their bound holds here too.
        assert!(LabelMatcher::new("a", MatchOp::Regex, "(").is_err());
        assert!(LabelMatcher::new("a", MatchOp::Regex, "x{100000}{100000}").is_err());
    }
}
