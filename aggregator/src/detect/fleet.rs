//! The fleet comparison behind an incident: what its affected targets share that the
//! unaffected targets of the same service lack, ranked by Fisher's exact test and told
//! with the counts as evidence ("9 of 10 on v2.4.0 affected, 0 of 8 on v2.3.1"); the
//! module several leaking services share; and the incident's severity.
//!
//! It works on plain strings and maps, not on wire or storage types, so that the
//! comparison depends on nothing but what it is given.

use std::collections::{BTreeMap, HashMap, HashSet};

/// The service version label.
pub const VERSION: &str = "version";
/// The Go toolchain the binary was built with (`go1.26.0`).
pub const GO_VERSION: &str = "go_version";
/// The host a target runs on.
pub const HOST: &str = "host";
/// The `vcs.revision` build setting: the commit the binary was built from.
pub const VCS_REVISION: &str = "vcs.revision";
/// Prefix of a dependency's attribute: `module:<path>`, valued with its version.
pub const MODULE_PREFIX: &str = "module:";

/// Labels never compared: per-instance ids (`pod`, `pod_uid`, `container_id`, `pid`,
/// `instance`) hold one target each and so separate nothing but that target, and
/// per-service constants (`service`, the main `module` and its `path`) are the same on
/// every target an incident compares.
pub const EXCLUDED_LABELS: [&str; 8] = [
    "pod",
    "pod_uid",
    "container_id",
    "pid",
    "instance",
    "service",
    "module",
    "path",
];

/// Seconds to OOM within which [`severity`] adds [`OOM_WITHIN_HOUR`].
pub const HOUR_SECS: f64 = 3600.0;
/// Seconds to OOM within which [`severity`] adds [`OOM_WITHIN_DAY`].
pub const DAY_SECS: f64 = 86_400.0;
/// What an OOM due within the hour adds to severity.
pub const OOM_WITHIN_HOUR: f64 = 0.5;
/// What an OOM due within the day (but not the hour) adds to severity.
pub const OOM_WITHIN_DAY: f64 = 0.25;

/// Affected services a [`shared_module`] text names before "and N more".
const NAMED_SERVICES: usize = 5;

/// One target of the service an incident concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The target's id; the comparison does not read it.
    pub id: String,
    /// Whether the incident's diagnosis holds on this target.
    pub affected: bool,
    /// What the target is compared on, as [`attributes`] builds it.
    pub attributes: BTreeMap<String, String>,
}

/// One attribute value the affected targets share more than the unaffected ones, with
/// the 2×2 table that says how much more.
///
/// "With" counts the members holding `value` for `attribute`; "without" counts the other
/// members for which the attribute is known (see [`probable_causes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// The attribute's name: [`VERSION`], [`VCS_REVISION`], `module:<path>`,
    /// [`GO_VERSION`], [`HOST`] or another label's name.
    pub attribute: String,
    /// The value the affected members share.
    pub value: String,
    /// Affected members holding the value.
    pub affected_with: u32,
    /// Members holding the value.
    pub total_with: u32,
    /// Affected members not holding it.
    pub affected_without: u32,
    /// Members not holding it.
    pub total_without: u32,
    /// One-sided Fisher exact p value of the table ([`fisher_enrichment`]): the chance
    /// that the affected crowd on this value as much as they do by luck alone.
    pub p_value: f64,
    /// The evidence in one sentence, e.g. "9 of 10 on v2.4.0 affected, 0 of 8 on v2.3.1".
    pub text: String,
}

/// Ranked causes, best first, at most `max`.
///
/// For each attribute, each value held by at least one affected member gives a table:
/// members with the value against the other members for which the attribute is known.
/// A member without an attribute tells nothing about it and is left out of its tables
/// (a target whose Go version is unknown is not "on another Go version"); for
/// dependencies, a member with build information (any `module:` attribute) that lacks a
/// module counts as without it, since a dependency only the affected have is a cause
/// too. A value kept must separate: some member lacks it (a value every member shares
/// explains nothing) and the affected are more frequent with it than without it. So a
/// dependency at the same version everywhere costs one count and no test.
///
/// Ranked by p value ascending (equal to nine digits counts as equal), then precision (`affected_with / total_with`) and
/// recall (the share of the affected holding the value) descending, then attribute
/// ([`VERSION`], [`VCS_REVISION`], modules, [`GO_VERSION`], [`HOST`], other labels),
/// then name and value. Attributes that co-vary (a version, its revision and the
/// module it bumped) are all kept, in that order, each with a self-contained text.
///
/// No member affected, or every member affected, leaves nothing to compare: the result
/// is empty, and the caller says "every target affected". O(total attributes of the
/// members) to count, plus one Fisher test per kept value. The p values are not
/// corrected for the many values compared: they rank causes; a threshold on them is a
/// screen, not a significance level.
pub fn probable_causes(members: &[Member], max: usize) -> Vec<Cause> {
    let affected = members.iter().filter(|m| m.affected).count();
    if max == 0 || affected == 0 || affected == members.len() {
        return Vec::new();
    }

    #[derive(Default)]
    struct Tally<'a> {
        members: u64,
        affected: u64,
        /// value -> (members, affected members)
        values: HashMap<&'a str, (u64, u64)>,
    }
    let mut tallies: HashMap<&str, Tally> = HashMap::new();
    // Members with build information: the universe of every `module:` table.
    let (mut built, mut built_affected) = (0u64, 0u64);
    for m in members {
        let hit = u64::from(m.affected);
        let mut has_modules = false;
        for (name, value) in &m.attributes {
            if value.is_empty() {
                continue;
            }
            has_modules |= name.starts_with(MODULE_PREFIX);
            let t = tallies.entry(name).or_default();
            t.members += 1;
            t.affected += hit;
            let v = t.values.entry(value).or_default();
            v.0 += 1;
            v.1 += hit;
        }
        if has_modules {
            built += 1;
            built_affected += hit;
        }
    }

    struct Candidate<'a> {
        attribute: &'a str,
        value: &'a str,
        /// [affected_with, total_with, affected_without, total_without]
        counts: [u64; 4],
        universe_affected: u64,
        ln_p: f64,
        /// ln p in units of 1e-9: p values equal to nine digits tie, whatever rounding
        /// their different tables took (a table and its transpose have one p).
        rank: i64,
        priority: u8,
        other: Other<'a>,
    }
    let ln_fact = LnFactorial::new(members.len() as u64);
    let mut candidates = Vec::new();
    for (&attribute, t) in &tallies {
        let is_module = attribute.starts_with(MODULE_PREFIX);
        let (universe, universe_affected) = if is_module {
            (built, built_affected)
        } else {
            (t.members, t.affected)
        };
        for (&value, &(with, affected_with)) in &t.values {
            let without = universe - with;
            let affected_without = universe_affected - affected_with;
            // affected_with / with > affected_without / without, in integers.
            if affected_with == 0
                || without == 0
                || affected_with * without <= affected_without * with
            {
                continue;
            }
            let other = if t.members < universe {
                if t.values.len() == 1 {
                    Other::Absent
                } else {
                    Other::AbsentOrOthers
                }
            } else if t.values.len() == 2 {
                let single = t.values.keys().copied().find(|v| *v != value);
                single.map_or(Other::Others, Other::One)
            } else {
                Other::Others
            };
            let ln_p = ln_fact.ln_upper_tail(
                affected_with,
                with - affected_with,
                affected_without,
                without - affected_without,
            );
            candidates.push(Candidate {
                attribute,
                value,
                counts: [affected_with, with, affected_without, without],
                universe_affected,
                ln_p,
                rank: (ln_p * 1e9).round() as i64,
                priority: priority(attribute),
                other,
            });
        }
    }

    candidates.sort_by(|x, y| {
        let [xa, xw, ..] = x.counts;
        let [ya, yw, ..] = y.counts;
        x.rank
            .cmp(&y.rank)
            .then_with(|| (ya * xw).cmp(&(xa * yw)))
            .then_with(|| (ya * x.universe_affected).cmp(&(xa * y.universe_affected)))
            .then_with(|| x.priority.cmp(&y.priority))
            .then_with(|| x.attribute.cmp(y.attribute))
            .then_with(|| x.value.cmp(y.value))
    });
    candidates.truncate(max);
    candidates
        .into_iter()
        .map(|c| {
            let [aw, tw, awo, two] = c.counts.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            Cause {
                attribute: c.attribute.to_string(),
                value: c.value.to_string(),
                affected_with: aw,
                total_with: tw,
                affected_without: awo,
                total_without: two,
                p_value: c.ln_p.exp(),
                text: format!(
                    "{aw} of {tw} {} affected, {awo} of {two} {}",
                    phrase(c.attribute, c.value),
                    other_phrase(c.attribute, c.other)
                ),
            }
        })
        .collect()
}

/// Who the "without" side of a table is, for its text.
#[derive(Debug, Clone, Copy)]
enum Other<'a> {
    /// All hold this one other value.
    One(&'a str),
    /// They hold several other values.
    Others,
    /// None has the attribute (a dependency they all lack).
    Absent,
    /// Some lack it, some hold other values.
    AbsentOrOthers,
}

/// Rank among attributes that separate equally well: the most actionable first.
fn priority(attribute: &str) -> u8 {
    match attribute {
        VERSION => 0,
        VCS_REVISION => 1,
        a if a.starts_with(MODULE_PREFIX) => 2,
        GO_VERSION => 3,
        HOST => 4,
        _ => 5,
    }
}

/// A revision as people quote it: its first 12 characters.
fn short_revision(revision: &str) -> &str {
    revision
        .char_indices()
        .nth(12)
        .map_or(revision, |(i, _)| &revision[..i])
}

/// "on v2.4.0", "built with go1.26.0", "with github.com/acme/pool v1.4.0", ...
fn phrase(attribute: &str, value: &str) -> String {
    match attribute {
        VERSION | HOST => format!("on {value}"),
        GO_VERSION => format!("built with {value}"),
        VCS_REVISION => format!("at revision {}", short_revision(value)),
        a => match a.strip_prefix(MODULE_PREFIX) {
            Some(path) => format!("with {path} {value}"),
            None => format!("with {a}={value}"),
        },
    }
}

/// The "without" side: its single value when it has one, else what it is made of.
fn other_phrase(attribute: &str, other: Other) -> String {
    let path = attribute.strip_prefix(MODULE_PREFIX);
    match (other, path) {
        (Other::One(value), _) => phrase(attribute, value),
        (Other::Absent, Some(path)) => format!("without {path}"),
        (Other::AbsentOrOthers, Some(path)) => {
            format!("with other versions of {path} or without it")
        }
        (_, Some(path)) => format!("with other versions of {path}"),
        // Only dependencies can be absent from a member a table counts.
        (_, None) => match attribute {
            VERSION => "on other versions".to_string(),
            HOST => "on other hosts".to_string(),
            GO_VERSION => "built with other Go versions".to_string(),
            VCS_REVISION => "at other revisions".to_string(),
            a => format!("with other values of {a}"),
        },
    }
}

/// One-sided Fisher exact test (enrichment of "affected" among "with"): P(X >= a) under
/// the hypergeometric law with the table's margins fixed, for the 2×2 table
/// `[[a, b], [c, d]]` = `[[affected_with, unaffected_with], [affected_without,
/// unaffected_without]]`.
///
/// Exact, from log-factorials summed as logarithms (compensated, no `lgamma`) up to
/// 2^20; above that, Stirling's series, exact to double precision at such sizes. The
/// tail is summed outward from its largest term and stops where terms no longer change
/// the sum, so the work grows with the square root of the total, not the total. The
/// relative error is about ln(total!) × 2^-52: 1e-10 at a total of 100,000, 1e-4 at
/// the largest totals `u32` counts allow. Always in [0, 1], never NaN; an empty table
/// gives 1, and a p value below about 1e-308 is 0.
pub fn fisher_enrichment(a: u32, b: u32, c: u32, d: u32) -> f64 {
    let [a, b, c, d] = [a, b, c, d].map(u64::from);
    LnFactorial::new(a + b + c + d)
        .ln_upper_tail(a, b, c, d)
        .exp()
}

/// ln(n!) for n up to a bound: a table, then Stirling's series.
struct LnFactorial {
    table: Vec<f64>,
}

impl LnFactorial {
    /// Beyond this many entries (8 MiB), Stirling's series takes over.
    const MAX_TABLE: u64 = 1 << 20;

    fn new(max: u64) -> Self {
        let len = max.min(Self::MAX_TABLE) + 1;
        let mut table = Vec::with_capacity(len as usize);
        // Kahan summation: the table's last entries are sums of a million terms.
        let (mut sum, mut carry) = (0.0f64, 0.0f64);
        table.push(0.0);
        for i in 1..len {
            let y = (i as f64).ln() - carry;
            let t = sum + y;
            carry = (t - sum) - y;
            sum = t;
            table.push(sum);
        }
        LnFactorial { table }
    }

    fn ln_fact(&self, n: u64) -> f64 {
        match self.table.get(n as usize) {
            Some(&v) => v,
            None => {
                // n > 2^20: the series' first omitted term is below 1e-40.
                let x = n as f64;
                let inv = 1.0 / x;
                let inv2 = inv * inv;
                x * x.ln() - x
                    + 0.5 * (2.0 * std::f64::consts::PI * x).ln()
                    + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
            }
        }
    }

    fn ln_choose(&self, n: u64, k: u64) -> f64 {
        self.ln_fact(n) - self.ln_fact(k) - self.ln_fact(n - k)
    }

    /// ln P(X >= a) for the table `[[a, b], [c, d]]`; at most 0.
    fn ln_upper_tail(&self, a: u64, b: u64, c: u64, d: u64) -> f64 {
        let total = a + b + c + d;
        let with = a + b;
        let affected = a + c;
        let hi = with.min(affected);
        let ln_all = self.ln_choose(total, with);
        let ln_term = |x: u64| {
            self.ln_choose(affected, x) + self.ln_choose(total - affected, with - x) - ln_all
        };
        // The law's mode, within the support; terms rise up to it and fall after it.
        let lo = (with + affected).saturating_sub(total);
        let mode = ((with as u128 + 1) * (affected as u128 + 1) / (total as u128 + 2)) as u64;
        let peak = mode.clamp(lo, hi).max(a);
        let ln_peak = ln_term(peak);
        let mut sum = 1.0f64;
        // Relative size below which a term cannot change the sum.
        const NEGLIGIBLE: f64 = 1e-18;
        let mut x = peak;
        while x < hi {
            x += 1;
            let t = (ln_term(x) - ln_peak).exp();
            sum += t;
            if t < sum * NEGLIGIBLE {
                break;
            }
        }
        let mut x = peak;
        while x > a {
            x -= 1;
            let t = (ln_term(x) - ln_peak).exp();
            sum += t;
            if t < sum * NEGLIGIBLE {
                break;
            }
        }
        let ln_p = ln_peak + sum.ln();
        // Rounding may leave a certain tail a hair above ln 1.
        if ln_p.is_nan() { 0.0 } else { ln_p.min(0.0) }
    }
}

/// The attributes a target is compared on, from what the aggregator knows of it: its
/// labels (but not [`EXCLUDED_LABELS`]), its host, Go version and `vcs.revision`, and
/// one `module:<path>` per dependency, valued with its version.
///
/// `deps` are (module path, version); a replaced module's version says so, as
/// "v1.2.3 => ../local" or "=> other/path v1.0.0", so that a replaced copy never counts
/// as the original. Blanks in a version are collapsed to single spaces so that equal
/// versions compare equal. Empty values are unknown and left out; the host, Go version
/// and revision given override labels of the same name.
pub fn attributes(
    labels: &BTreeMap<String, String>,
    host: &str,
    go_version: &str,
    vcs_revision: &str,
    deps: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels
        .iter()
        .filter(|(name, value)| {
            !EXCLUDED_LABELS.contains(&name.as_str())
                && !name.starts_with(MODULE_PREFIX)
                && !value.trim().is_empty()
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for (name, value) in [
        (HOST, host),
        (GO_VERSION, go_version),
        (VCS_REVISION, vcs_revision),
    ] {
        let value = value.trim();
        if !value.is_empty() {
            out.insert(name.to_string(), value.to_string());
        }
    }
    for (path, version) in deps {
        let path = path.trim();
        if path.is_empty() {
            continue;
        }
        let version = version.split_whitespace().collect::<Vec<_>>().join(" ");
        // A module without a version is still there: Go writes such a one "(devel)".
        let version = if version.is_empty() {
            "(devel)".to_string()
        } else {
            version
        };
        out.insert(format!("{MODULE_PREFIX}{path}"), version);
    }
    out
}

/// One service of the fleet, for a stack signature that leaks in several services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeps {
    /// The service's name.
    pub service: String,
    /// Whether the signature leaks in it.
    pub affected: bool,
    /// Its dependencies: module path -> version (written as for [`attributes`]).
    pub deps: BTreeMap<String, String>,
}

/// The module and version every affected service has, and how many unaffected ones have
/// it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedModule {
    /// The module's path.
    pub module: String,
    /// Its version, the same in every affected service.
    pub version: String,
    /// The affected services, in the order given.
    pub services: Vec<String>,
    /// Whether the leaking stack's frames are in this module.
    pub in_frames: bool,
    /// Affected services with the module at that version: all of them.
    pub affected_with: u32,
    /// Services with it.
    pub total_with: u32,
    /// Affected services without it: none.
    pub affected_without: u32,
    /// Services without it.
    pub total_without: u32,
    /// E.g. "github.com/acme/pool v1.4.0 is in all 3 affected services (orders, billing,
    /// search) and in 0 of 5 unaffected ones".
    pub text: String,
}

/// Across services: the module (path and version) every affected service has, when a
/// stack signature leaks in at least two services; `None` with fewer, or when nothing
/// shared points anywhere.
///
/// `frames_modules` are the function names of the leaking stack, top first
/// ("github.com/acme/pool.(*P).watch"); a frame belongs to the longest module path of
/// the affected services that prefixes it up to a `.` or `/`. Preferred, in order: a
/// module the frames are in; fewer unaffected services with it at that version; the
/// module of the frame nearest the top; then by path. A shared module the frames are
/// not in is named only if some unaffected service lacks it: one every service has
/// (`golang.org/x/sys` at the fleet's version) explains nothing.
pub fn shared_module(services: &[ServiceDeps], frames_modules: &[String]) -> Option<SharedModule> {
    let affected: Vec<&ServiceDeps> = services.iter().filter(|s| s.affected).collect();
    let unaffected: Vec<&ServiceDeps> = services.iter().filter(|s| !s.affected).collect();
    if affected.len() < 2 {
        return None;
    }
    let known: HashSet<&str> = affected
        .iter()
        .flat_map(|s| s.deps.keys())
        .map(String::as_str)
        .collect();
    let mut first_frame: HashMap<&str, usize> = HashMap::new();
    for (i, frame) in frames_modules.iter().enumerate() {
        if let Some(path) = module_of(frame, &known) {
            first_frame.entry(path).or_insert(i);
        }
    }
    let smallest = affected.iter().min_by_key(|s| s.deps.len())?;
    let best = smallest
        .deps
        .iter()
        .filter(|(path, version)| affected.iter().all(|s| s.deps.get(*path) == Some(*version)))
        .map(|(path, version)| {
            let unaffected_with = unaffected
                .iter()
                .filter(|s| s.deps.get(path) == Some(version))
                .count();
            (
                path,
                version,
                first_frame.get(path.as_str()).copied(),
                unaffected_with,
            )
        })
        .filter(|&(_, _, frame, unaffected_with)| {
            frame.is_some() || unaffected_with < unaffected.len()
        })
        .min_by(|x, y| {
            x.2.is_none()
                .cmp(&y.2.is_none())
                .then(x.3.cmp(&y.3))
                .then(x.2.cmp(&y.2))
                .then(x.0.cmp(y.0))
        })?;
    let (path, version, frame, unaffected_with) = best;

    let names: Vec<String> = affected.iter().map(|s| s.service.clone()).collect();
    let mut listed = names
        .iter()
        .take(NAMED_SERVICES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED_SERVICES {
        listed.push_str(&format!(" and {} more", names.len() - NAMED_SERVICES));
    }
    let among = match names.len() {
        2 => format!("both affected services ({listed})"),
        n => format!("all {n} affected services ({listed})"),
    };
    let others = match unaffected.len() {
        0 => "no service is unaffected".to_string(),
        1 => format!("in {unaffected_with} of 1 unaffected one"),
        n => format!("in {unaffected_with} of {n} unaffected ones"),
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Some(SharedModule {
        module: path.clone(),
        version: version.clone(),
        text: format!("{path} {version} is in {among} and {others}"),
        services: names,
        in_frames: frame.is_some(),
        affected_with: count(affected.len()),
        total_with: count(affected.len() + unaffected_with),
        affected_without: 0,
        total_without: count(unaffected.len() - unaffected_with),
    })
}

/// The longest module path in `known` that prefixes `frame` up to a `.` or `/`.
fn module_of<'a>(frame: &str, known: &HashSet<&'a str>) -> Option<&'a str> {
    frame
        .char_indices()
        .filter(|&(_, ch)| ch == '.' || ch == '/')
        .filter_map(|(i, _)| known.get(&frame[..i]).copied())
        .next_back()
}

/// Severity in [0, 1.5]: the share of the service affected, plus [`OOM_WITHIN_HOUR`]
/// when an OOM is due within [`HOUR_SECS`] (or overdue) and [`OOM_WITHIN_DAY`] within
/// [`DAY_SECS`]. An empty service has a share of 0; a NaN time to OOM is no forecast.
pub fn severity(affected: usize, total: usize, seconds_to_oom: Option<f64>) -> f64 {
    let share = if total == 0 {
        0.0
    } else {
        affected.min(total) as f64 / total as f64
    };
    let oom = match seconds_to_oom {
        Some(s) if s <= HOUR_SECS => OOM_WITHIN_HOUR,
        Some(s) if s <= DAY_SECS => OOM_WITHIN_DAY,
        // NaN compares false to everything and lands here.
        _ => 0.0,
    };
    share + oom
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, affected: bool, attrs: &[(&str, &str)]) -> Member {
        Member {
            id: id.to_string(),
            affected,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// `n` members on `version` and `host_of(i)`, the first `hit` affected.
    fn group(
        out: &mut Vec<Member>,
        version: &str,
        n: usize,
        hit: usize,
        host_of: impl Fn(usize) -> String,
    ) {
        let start = out.len();
        for i in 0..n {
            let host = host_of(start + i);
            out.push(member(
                &format!("{version}-{i}"),
                i < hit,
                &[(VERSION, version), (HOST, &host)],
            ));
        }
    }

    /// Exact hypergeometric upper tail, by integer binomials.
    fn exact_tail(a: u64, b: u64, c: u64, d: u64) -> f64 {
        fn choose(n: u64, k: u64) -> u128 {
            if k > n {
                return 0;
            }
            let mut r: u128 = 1;
            for i in 0..k.min(n - k) {
                r = r * (n - i) as u128 / (i + 1) as u128;
            }
            r
        }
        let (n, k, total) = (a + b, a + c, a + b + c + d);
        let num: u128 = (a..=n.min(k))
            .map(|x| choose(k, x) * choose(total - k, n - x))
            .sum();
        num as f64 / choose(total, n) as f64
    }

    fn close(x: f64, y: f64, rel: f64) -> bool {
        (x - y).abs() <= rel * y.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn nine_of_ten_on_the_new_version_names_the_version_with_its_counts() {
        let mut m = Vec::new();
        let host = |i: usize| format!("node-{}", i % 4);
        group(&mut m, "v2.4.0", 10, 9, host);
        group(&mut m, "v2.3.1", 8, 0, host);
        let causes = probable_causes(&m, 5);
        let first = &causes[0];
        assert_eq!(first.attribute, VERSION);
        assert_eq!(first.value, "v2.4.0");
        assert_eq!(first.text, "9 of 10 on v2.4.0 affected, 0 of 8 on v2.3.1");
        assert_eq!(
            (
                first.affected_with,
                first.total_with,
                first.affected_without,
                first.total_without
            ),
            (9, 10, 0, 8)
        );
        // [[9, 1], [0, 8]]: C(9,9)·C(9,1) / C(18,10) = 9 / 43758.
        assert!(close(first.p_value, 9.0 / 43758.0, 1e-9), "{first:?}");
        // Hosts mix both versions: each explains far less.
        assert!(causes[1..].iter().all(|c| c.p_value > 0.05), "{causes:?}");
    }

    #[test]
    fn fisher_matches_known_tables() {
        // Fisher's tea tasting: [[3, 1], [1, 3]], one-sided p = 17/70.
        assert!(close(fisher_enrichment(3, 1, 1, 3), 17.0 / 70.0, 1e-12));
        assert!((fisher_enrichment(3, 1, 1, 3) - 0.2429).abs() < 5e-5);
        // A perfect split: 1 / C(18, 10).
        assert!(close(fisher_enrichment(10, 0, 0, 8), 1.0 / 43758.0, 1e-12));
        // [[8, 2], [1, 5]]: (C(9,8)·C(7,2) + C(9,9)·C(7,1)) / C(16,10) = 196 / 8008.
        assert!(close(fisher_enrichment(8, 2, 1, 5), 196.0 / 8008.0, 1e-12));
        // [[1, 9], [11, 3]] (Wikipedia's dieting example) leans the other way: P(X >= 1)
        // = 1 - P(X = 0) = 1 - C(12,0)·C(12,10)/C(24,10) = 1 - 66/1961256.
        assert!(close(
            fisher_enrichment(1, 9, 11, 3),
            1.0 - 66.0 / 1_961_256.0,
            1e-12
        ));
        // Degenerate tables.
        assert_eq!(fisher_enrichment(0, 0, 0, 0), 1.0);
        assert_eq!(fisher_enrichment(0, 5, 0, 5), 1.0);
        assert!(close(fisher_enrichment(5, 0, 0, 0), 1.0, 1e-12));
        assert!(close(fisher_enrichment(0, 0, 3, 4), 1.0, 1e-12));
    }

    #[test]
    fn fisher_equals_the_exact_sum_on_every_small_table() {
        let mut worst = 0.0f64;
        for total in 0..=24u64 {
            for a in 0..=total {
                for b in 0..=total - a {
                    for c in 0..=total - a - b {
                        let d = total - a - b - c;
                        let got = fisher_enrichment(a as u32, b as u32, c as u32, d as u32);
                        let want = exact_tail(a, b, c, d);
                        assert!((0.0..=1.0).contains(&got));
                        let err = (got - want).abs() / want;
                        worst = worst.max(err);
                        assert!(err < 1e-11, "[[{a},{b}],[{c},{d}]]: {got} vs {want}");
                    }
                }
            }
        }
        assert!(worst < 1e-11);
    }

    #[test]
    fn fisher_is_stable_for_totals_of_a_hundred_thousand() {
        // P(X >= a) + P(X <= a - 1) = 1, and P(X <= a - 1) is the upper tail of the
        // unaffected count in the swapped table [[b + 1, a - 1], [d - 1, c + 1]].
        for (a, b, c, d) in [
            (30_000, 20_000, 25_000, 25_000),
            (25_010, 24_990, 25_000, 25_000),
            (50, 49_950, 40, 49_960),
            (1, 60_000, 0, 39_999),
            (99_000, 500, 300, 200),
        ] {
            let upper = fisher_enrichment(a, b, c, d);
            let lower = fisher_enrichment(b + 1, a - 1, d - 1, c + 1);
            assert!(upper.is_finite() && lower.is_finite());
            assert!(
                (upper + lower - 1.0).abs() < 1e-9,
                "[[{a},{b}],[{c},{d}]]: {upper} + {lower}"
            );
        }
        // A strong split of 100,000 underflows to 0, never NaN.
        let p = fisher_enrichment(50_000, 0, 0, 50_000);
        assert_eq!(p, 0.0);
        // Beyond the table, Stirling's series agrees with it where both apply.
        let big = LnFactorial::new(4_000_000);
        let table = LnFactorial::new(LnFactorial::MAX_TABLE);
        let n = LnFactorial::MAX_TABLE;
        let stirling_next = big.ln_fact(n + 1);
        assert!(close(
            stirling_next - table.ln_fact(n),
            ((n + 1) as f64).ln(),
            1e-6
        ));
        let p = fisher_enrichment(2_000_000, 2_000_000, 2_000_000, 2_000_000);
        assert!((0.49..0.51).contains(&p), "{p}");
        // Large u32 counts neither overflow nor hang.
        let p = fisher_enrichment(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        assert!((0.49..0.51).contains(&p), "{p}");
    }

    #[test]
    fn fisher_tail_grows_as_the_table_weakens() {
        let mut last = 0.0;
        for a in (0..=10).rev() {
            let p = fisher_enrichment(a, 10 - a, 10 - a, a);
            assert!(p >= last, "{a}: {p} < {last}");
            last = p;
        }
        assert!(close(last, 1.0, 1e-12));
    }

    #[test]
    fn version_confounded_with_host_keeps_both_and_puts_version_first() {
        // v2.4.0 runs only on node-a, v2.3.1 only on node-b.
        let mut m = Vec::new();
        group(&mut m, "v2.4.0", 6, 6, |_| "node-a".to_string());
        group(&mut m, "v2.3.1", 6, 0, |_| "node-b".to_string());
        let causes = probable_causes(&m, 10);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(causes[0].attribute, VERSION);
        assert_eq!(causes[1].attribute, HOST);
        assert_eq!(causes[0].p_value, causes[1].p_value);
        assert_eq!(
            causes[1].text,
            "6 of 6 on node-a affected, 0 of 6 on node-b"
        );
    }

    #[test]
    fn a_version_spread_over_hosts_beats_each_of_its_hosts() {
        // v2.4.0 on node-1 and node-2, v2.3.1 on node-3 and node-4.
        let mut m = Vec::new();
        group(&mut m, "v2.4.0", 8, 8, |i| format!("node-{}", 1 + i % 2));
        group(&mut m, "v2.3.1", 8, 0, |i| format!("node-{}", 3 + i % 2));
        let causes = probable_causes(&m, 10);
        assert_eq!(causes[0].attribute, VERSION);
        assert_eq!(
            causes[0].text,
            "8 of 8 on v2.4.0 affected, 0 of 8 on v2.3.1"
        );
        assert_eq!(causes[1].attribute, HOST);
        assert!(causes[1].p_value > causes[0].p_value);
        assert_eq!(
            causes[1].text,
            "4 of 4 on node-1 affected, 4 of 12 on other hosts"
        );
    }

    #[test]
    fn a_few_affected_on_the_old_version_still_rank_the_version_first() {
        let mut m = Vec::new();
        let host = |i: usize| format!("node-{}", i % 5);
        group(&mut m, "v2.4.0", 10, 9, host);
        group(&mut m, "v2.3.1", 8, 2, host);
        group(&mut m, "v2.2.0", 6, 1, host);
        let causes = probable_causes(&m, 3);
        assert_eq!(causes[0].attribute, VERSION);
        assert_eq!(
            causes[0].text,
            "9 of 10 on v2.4.0 affected, 3 of 14 on other versions"
        );
        assert!(causes[0].p_value < 0.01, "{:?}", causes[0]);
        assert!(
            causes[1..]
                .iter()
                .all(|c| c.p_value > 10.0 * causes[0].p_value)
        );
    }

    #[test]
    fn co_varying_attributes_are_all_kept_in_priority_order() {
        let mut m = Vec::new();
        for i in 0..12 {
            let new = i < 7;
            let labels: BTreeMap<String, String> = [
                ("version", if new { "v2.4.0" } else { "v2.3.1" }),
                ("namespace", "prod"),
                ("pod", &*format!("api-{i}")),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let deps = [
                (
                    "github.com/acme/pool".to_string(),
                    if new { "v1.3.0" } else { "v1.2.0" }.to_string(),
                ),
                ("golang.org/x/sys".to_string(), "v0.30.0".to_string()),
            ];
            m.push(Member {
                id: format!("api-{i}"),
                affected: new,
                attributes: attributes(
                    &labels,
                    &format!("node-{}", i % 3),
                    if new { "go1.26.0" } else { "go1.25.3" },
                    if new {
                        "abcdef0123456789abcdef0123456789abcdef01"
                    } else {
                        "0011223344556677889900112233445566778899"
                    },
                    &deps,
                ),
            });
        }
        let causes = probable_causes(&m, 10);
        // node-0 holds 3 of the 7 affected and 1 of the 5 others: weak, and last.
        assert!(
            causes[4..]
                .iter()
                .all(|c| c.attribute == HOST && c.p_value > 0.3)
        );
        let causes = &causes[..4];
        let names: Vec<&str> = causes.iter().map(|c| c.attribute.as_str()).collect();
        assert_eq!(
            names,
            [
                VERSION,
                VCS_REVISION,
                "module:github.com/acme/pool",
                GO_VERSION
            ]
        );
        let texts: Vec<&str> = causes.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "7 of 7 on v2.4.0 affected, 0 of 5 on v2.3.1",
                "7 of 7 at revision abcdef012345 affected, 0 of 5 at revision 001122334455",
                "7 of 7 with github.com/acme/pool v1.3.0 affected, \
                 0 of 5 with github.com/acme/pool v1.2.0",
                "7 of 7 built with go1.26.0 affected, 0 of 5 built with go1.25.3",
            ]
        );
        assert!(causes.windows(2).all(|w| w[0].p_value == w[1].p_value));
    }

    #[test]
    fn a_dependency_only_the_affected_have_is_named() {
        let mut m = Vec::new();
        for i in 0..10 {
            let affected = i < 4;
            let mut deps = vec![("golang.org/x/net".to_string(), "v0.35.0".to_string())];
            if affected {
                deps.push(("github.com/acme/cache".to_string(), "v0.9.1".to_string()));
            }
            if i % 2 == 0 {
                deps.push(("github.com/acme/log".to_string(), "v1.0.0".to_string()));
            }
            let attrs = attributes(&BTreeMap::new(), "node-1", "", "", &deps);
            m.push(Member {
                id: i.to_string(),
                affected,
                attributes: attrs,
            });
        }
        let causes = probable_causes(&m, 10);
        assert_eq!(causes[0].attribute, "module:github.com/acme/cache");
        assert_eq!(
            causes[0].text,
            "4 of 4 with github.com/acme/cache v0.9.1 affected, 0 of 6 without github.com/acme/cache"
        );
        // Shared by all, at one version: never a cause.
        assert!(
            causes
                .iter()
                .all(|c| c.attribute != "module:golang.org/x/net")
        );
        assert!(causes.iter().all(|c| c.attribute != HOST));
    }

    #[test]
    fn a_dependency_missing_from_some_and_at_other_versions_elsewhere() {
        let mut m = Vec::new();
        for i in 0..9 {
            let affected = i < 3;
            let version = match i {
                0..=2 => Some("v1.4.0"),
                3..=5 => Some("v1.3.0"),
                6 => Some("v1.2.0"),
                _ => None,
            };
            let mut attrs = vec![("module:golang.org/x/net", "v0.35.0")];
            if let Some(v) = version {
                attrs.push(("module:github.com/acme/pool", v));
            }
            m.push(member(&i.to_string(), affected, &attrs));
        }
        // One member with no build information at all: unknown, not "without".
        m.push(member("bare", false, &[(VERSION, "v1")]));
        let causes = probable_causes(&m, 10);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].text,
            "3 of 3 with github.com/acme/pool v1.4.0 affected, \
             0 of 6 with other versions of github.com/acme/pool or without it"
        );
    }

    #[test]
    fn a_replaced_module_is_not_the_original() {
        let labels = BTreeMap::new();
        let plain = attributes(
            &labels,
            "h",
            "",
            "",
            &[("github.com/acme/pool".into(), "v1.2.3".into())],
        );
        let local = attributes(
            &labels,
            "h",
            "",
            "",
            &[(
                "github.com/acme/pool".into(),
                " v1.2.3  =>  ../pool ".into(),
            )],
        );
        let fork = attributes(
            &labels,
            "h",
            "",
            "",
            &[(
                "github.com/acme/pool".into(),
                "=> github.com/fork/pool v1.0.0".into(),
            )],
        );
        let key = "module:github.com/acme/pool";
        assert_eq!(plain[key], "v1.2.3");
        assert_eq!(local[key], "v1.2.3 => ../pool");
        assert_eq!(fork[key], "=> github.com/fork/pool v1.0.0");

        let mut m = Vec::new();
        for i in 0..8 {
            let attrs = if i < 3 { local.clone() } else { plain.clone() };
            m.push(Member {
                id: i.to_string(),
                affected: i < 3,
                attributes: attrs,
            });
        }
        let causes = probable_causes(&m, 5);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].text,
            "3 of 3 with github.com/acme/pool v1.2.3 => ../pool affected, \
             0 of 5 with github.com/acme/pool v1.2.3"
        );
    }

    #[test]
    fn attributes_leave_out_per_instance_ids_and_unknowns() {
        let labels: BTreeMap<String, String> = [
            ("service", "api"),
            ("version", "v2"),
            ("pod", "api-7f9c"),
            ("pod_uid", "1234"),
            ("container_id", "abcd"),
            ("pid", "42"),
            ("instance", "10.0.0.1:8080"),
            ("module", "github.com/acme/api"),
            ("path", "github.com/acme/api/cmd/api"),
            ("namespace", "prod"),
            ("container", "api"),
            ("go_version", "go1.25.0"),
            ("zone", " "),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = attributes(
            &labels,
            "node-3",
            "go1.26.0",
            "",
            &[
                ("".into(), "v1".into()),
                ("example.com/devel".into(), "".into()),
            ],
        );
        let want: BTreeMap<String, String> = [
            ("container", "api"),
            ("go_version", "go1.26.0"),
            ("host", "node-3"),
            ("module:example.com/devel", "(devel)"),
            ("namespace", "prod"),
            ("version", "v2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a, want);
        // An empty Go version from the build leaves the label's.
        let b = attributes(&labels, "", "", "", &[]);
        assert_eq!(b[GO_VERSION], "go1.25.0");
        assert!(!b.contains_key(HOST));
    }

    #[test]
    fn other_labels_are_phrased_by_name() {
        let mut m = Vec::new();
        for (i, ns) in ["a", "a", "a", "b", "c", "c"].iter().enumerate() {
            m.push(member(&i.to_string(), i < 3, &[("namespace", ns)]));
        }
        let causes = probable_causes(&m, 5);
        assert_eq!(
            causes[0].text,
            "3 of 3 with namespace=a affected, 0 of 3 with other values of namespace"
        );
        assert_eq!(causes.len(), 1);
    }

    #[test]
    fn nothing_to_compare_gives_no_cause() {
        assert!(probable_causes(&[], 5).is_empty());
        let all: Vec<Member> = (0..4)
            .map(|i| {
                member(
                    &i.to_string(),
                    true,
                    &[(VERSION, if i < 2 { "a" } else { "b" })],
                )
            })
            .collect();
        assert!(probable_causes(&all, 5).is_empty());
        let none: Vec<Member> = all
            .iter()
            .cloned()
            .map(|mut m| {
                m.affected = false;
                m
            })
            .collect();
        assert!(probable_causes(&none, 5).is_empty());
        let mut mixed = all.clone();
        mixed[3].affected = false;
        assert!(probable_causes(&mixed, 0).is_empty());
        // Members without attributes compare on nothing.
        let bare = vec![member("x", true, &[]), member("y", false, &[])];
        assert!(probable_causes(&bare, 5).is_empty());
        // Attributes known only on the affected side separate nothing.
        let one_sided = vec![
            member("x", true, &[(GO_VERSION, "go1.26.0")]),
            member("y", false, &[]),
        ];
        assert!(probable_causes(&one_sided, 5).is_empty());
    }

    #[test]
    fn equal_p_values_rank_by_precision_then_recall() {
        // zzz: [[3, 1], [2, 4]] ranks before aaa: [[3, 2], [1, 4]], its transpose (one
        // p value), by precision: 3 of 4 against 3 of 5. Member 4 has no aaa, member 10
        // no zzz.
        let mut m = Vec::new();
        for i in 0..11 {
            let mut attrs = Vec::new();
            if i != 4 {
                attrs.push((
                    "aaa",
                    if [0, 1, 2, 5, 6].contains(&i) {
                        "x"
                    } else {
                        "y"
                    },
                ));
            }
            if i != 10 {
                attrs.push(("zzz", if [0, 1, 2, 5].contains(&i) { "p" } else { "q" }));
            }
            m.push(member(&i.to_string(), i < 5, &attrs));
        }
        let causes = probable_causes(&m, 5);
        let got: Vec<(&str, u32, u32)> = causes
            .iter()
            .map(|c| (c.attribute.as_str(), c.affected_with, c.total_with))
            .collect();
        assert_eq!(got, [("zzz", 3, 4), ("aaa", 3, 5)]);
        assert!(close(causes[0].p_value, causes[1].p_value, 1e-12));

        // zzz: [[1, 0], [0, 4]] ranks before aaa: [[2, 0], [1, 3]] (both p = 1/5, both
        // precise) by recall: all of its affected against 2 of 3.
        let mut m = Vec::new();
        for i in 0..7 {
            let mut attrs = Vec::new();
            if [0, 3, 4, 5, 6].contains(&i) {
                attrs.push(("zzz", if i == 0 { "x" } else { "y" }));
            }
            if i < 6 {
                attrs.push(("aaa", if i < 2 { "p" } else { "q" }));
            }
            m.push(member(&i.to_string(), i < 3, &attrs));
        }
        let causes = probable_causes(&m, 5);
        let got: Vec<(&str, u32, u32, u32)> = causes
            .iter()
            .map(|c| {
                (
                    c.attribute.as_str(),
                    c.affected_with,
                    c.total_with,
                    c.affected_without,
                )
            })
            .collect();
        assert_eq!(got, [("zzz", 1, 1, 0), ("aaa", 2, 2, 1)]);
        assert!(close(causes[0].p_value, 0.2, 1e-12));
        assert!(close(causes[1].p_value, 0.2, 1e-12));
    }

    #[test]
    fn a_value_the_unaffected_hold_more_is_never_a_cause() {
        let mut m = Vec::new();
        group(&mut m, "v1", 10, 2, |_| "h".to_string());
        group(&mut m, "v2", 10, 5, |_| "h".to_string());
        let causes = probable_causes(&m, 5);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].value, "v2");
        assert_eq!(causes[0].text, "5 of 10 on v2 affected, 2 of 10 on v1");
    }

    #[test]
    fn outputs_are_finite_and_within_range() {
        let mut m = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..300 {
            let r = next();
            let version = format!("v{}", r % 4);
            let host = format!("node-{}", (r >> 8) % 9);
            let affected = (r >> 20) % 3 == 0 || (version == "v3" && (r >> 30) % 4 != 0);
            m.push(member(
                &i.to_string(),
                affected,
                &[(VERSION, &version), (HOST, &host)],
            ));
        }
        let causes = probable_causes(&m, 100);
        assert!(!causes.is_empty());
        assert_eq!(causes[0].value, "v3");
        for c in &causes {
            assert!(
                c.p_value.is_finite() && (0.0..=1.0).contains(&c.p_value),
                "{c:?}"
            );
            assert!(c.affected_with <= c.total_with && c.affected_without <= c.total_without);
            assert!(
                c.affected_with as u64 * c.total_without as u64
                    > c.affected_without as u64 * c.total_with as u64
            );
        }
        assert!(causes.windows(2).all(|w| w[0].p_value <= w[1].p_value));
    }

    #[test]
    fn thousands_of_members_with_hundreds_of_modules_run() {
        let mut m = Vec::new();
        for i in 0..4000usize {
            let new = i % 5 == 0;
            let affected = new && i % 10 != 5 || i % 97 == 1;
            let deps: Vec<(String, String)> = (0..300)
                .map(|k| {
                    let version = if k < 10 && new {
                        format!("v1.{}.1", k)
                    } else if k >= 290 {
                        format!("v0.{}.0", i % 3)
                    } else {
                        format!("v1.{}.0", k)
                    };
                    (format!("example.com/mod{k:03}"), version)
                })
                .collect();
            let labels: BTreeMap<String, String> = [(
                "version".to_string(),
                if new { "v2" } else { "v1" }.to_string(),
            )]
            .into();
            m.push(Member {
                id: i.to_string(),
                affected,
                attributes: attributes(&labels, &format!("node-{}", i % 50), "go1.26.0", "", &deps),
            });
        }
        let causes = probable_causes(&m, 20);
        assert_eq!(causes.len(), 20);
        assert_eq!(causes[0].attribute, VERSION);
        assert_eq!(causes[0].value, "v2");
        // The ten modules the new version bumped co-vary with it; chance follows.
        for (k, c) in causes[1..11].iter().enumerate() {
            assert_eq!(c.attribute, format!("module:example.com/mod{k:03}"));
            assert_eq!(c.p_value, causes[0].p_value);
            assert_eq!(
                c.text,
                format!(
                    "{} of 800 with example.com/mod{k:03} v1.{k}.1 affected, {} of 3200 \
                     with example.com/mod{k:03} v1.{k}.0",
                    c.affected_with, c.affected_without
                )
            );
        }
        assert!(causes[11..].iter().all(|c| c.p_value > causes[0].p_value));
    }

    fn service(name: &str, affected: bool, deps: &[(&str, &str)]) -> ServiceDeps {
        ServiceDeps {
            service: name.to_string(),
            affected,
            deps: deps
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn shared_module_picks_the_module_the_frames_are_in() {
        let common = [
            ("github.com/acme/pool", "v1.4.0"),
            ("github.com/acme/metrics", "v0.2.0"),
            ("github.com/acme/queue", "v2.0.0"),
            ("golang.org/x/sys", "v0.30.0"),
        ];
        let mut services = vec![
            service("orders", true, &common),
            service("billing", true, &common),
            service("search", true, &common),
        ];
        for name in ["a", "b", "c", "d", "e"] {
            services.push(service(
                name,
                false,
                &[
                    ("github.com/acme/pool", "v1.3.0"),
                    ("golang.org/x/sys", "v0.30.0"),
                ],
            ));
        }
        let frames = [
            "runtime.gopark",
            "runtime.chanrecv1",
            "github.com/acme/pool.(*P).watch",
            "github.com/acme/orders/internal/api.Start.func1",
        ]
        .map(String::from);
        let shared = shared_module(&services, &frames).unwrap();
        assert_eq!(shared.module, "github.com/acme/pool");
        assert_eq!(shared.version, "v1.4.0");
        assert!(shared.in_frames);
        assert_eq!(
            shared.text,
            "github.com/acme/pool v1.4.0 is in all 3 affected services (orders, billing, search) \
             and in 0 of 5 unaffected ones"
        );
        assert_eq!(
            (
                shared.affected_with,
                shared.total_with,
                shared.affected_without,
                shared.total_without
            ),
            (3, 3, 0, 5)
        );
        services[3]
            .deps
            .insert("github.com/acme/queue".into(), "v2.0.0".into());
        // Without frames: the queue is in one unaffected service; the pool (they run
        // v1.3.0) and metrics are in none at the affected version; the name decides.
        let shared = shared_module(&services, &[]).unwrap();
        assert!(!shared.in_frames);
        assert_eq!(shared.module, "github.com/acme/metrics");
        // Now the unaffected have the pool at v1.4.0 too, and metrics but for one: the
        // queue, in one of them, is the rarest.
        for s in &mut services[3..] {
            s.deps
                .insert("github.com/acme/pool".into(), "v1.4.0".into());
            s.deps
                .insert("github.com/acme/metrics".into(), "v0.2.0".into());
        }
        services[7].deps.remove("github.com/acme/metrics");
        let shared = shared_module(&services, &[]).unwrap();
        assert_eq!(
            shared.text,
            "github.com/acme/queue v2.0.0 is in all 3 affected services (orders, billing, \
             search) and in 1 of 5 unaffected ones"
        );
        assert_eq!((shared.total_with, shared.total_without), (4, 4));
        // The frames still name the pool, however common.
        let shared = shared_module(&services, &frames).unwrap();
        assert_eq!(shared.module, "github.com/acme/pool");
        assert_eq!(shared.total_with, 8);
    }

    #[test]
    fn shared_module_credits_the_longest_module_path() {
        let deps = [
            ("github.com/acme/pool", "v1.9.0"),
            ("github.com/acme/pool/v2", "v2.1.0"),
            ("gopkg.in/yaml.v3", "v3.0.1"),
        ];
        let services = vec![
            service("orders", true, &deps),
            service("billing", true, &deps),
        ];
        let frames = ["github.com/acme/pool/v2.(*P).watch".to_string()];
        let shared = shared_module(&services, &frames).unwrap();
        assert_eq!(shared.module, "github.com/acme/pool/v2");
        assert_eq!(
            shared.text,
            "github.com/acme/pool/v2 v2.1.0 is in both affected services (orders, billing) \
             and no service is unaffected"
        );
        let frames = ["gopkg.in/yaml.v3.(*decoder).unmarshal".to_string()];
        assert_eq!(
            shared_module(&services, &frames).unwrap().module,
            "gopkg.in/yaml.v3"
        );
        // Both in the frames and in no unaffected service: the frame nearest the top.
        let frames = [
            "gopkg.in/yaml.v3.(*decoder).unmarshal",
            "github.com/acme/pool/v2.(*P).watch",
        ]
        .map(String::from);
        assert_eq!(
            shared_module(&services, &frames).unwrap().module,
            "gopkg.in/yaml.v3"
        );
        // "github.com/acme/po" is no prefix of a module up to a separator.
        assert_eq!(
            module_of(
                "github.com/acme/pooling.F",
                &HashSet::from(["github.com/acme/pool"])
            ),
            None
        );
        // Nothing named and nothing rarer among the unaffected: no module.
        assert_eq!(shared_module(&services, &[]), None);
    }

    #[test]
    fn shared_module_needs_two_affected_services_sharing_a_version() {
        let one = vec![
            service("orders", true, &[("m", "v1")]),
            service("billing", false, &[]),
        ];
        assert_eq!(shared_module(&one, &[]), None);
        assert_eq!(shared_module(&[], &[]), None);
        let differ = vec![
            service("orders", true, &[("m", "v1")]),
            service("billing", true, &[("m", "v2")]),
            service("search", false, &[]),
        ];
        assert_eq!(shared_module(&differ, &["m.F".to_string()]), None);
        let many: Vec<ServiceDeps> = (0..8)
            .map(|i| service(&format!("s{i}"), i < 7, &[("m", "v1")]))
            .collect();
        let shared = shared_module(&many, &["m.F".to_string()]).unwrap();
        assert_eq!(
            shared.text,
            "m v1 is in all 7 affected services (s0, s1, s2, s3, s4 and 2 more) \
             and in 1 of 1 unaffected one"
        );
        assert_eq!(shared.services.len(), 7);
    }

    #[test]
    fn severity_is_the_share_raised_by_a_near_oom() {
        assert_eq!(severity(0, 0, None), 0.0);
        assert_eq!(severity(3, 12, None), 0.25);
        assert_eq!(severity(12, 12, None), 1.0);
        assert_eq!(severity(20, 12, None), 1.0);
        assert_eq!(severity(3, 12, Some(600.0)), 0.75);
        assert_eq!(severity(3, 12, Some(-5.0)), 0.75);
        assert_eq!(severity(3, 12, Some(3600.0)), 0.75);
        assert_eq!(severity(3, 12, Some(7200.0)), 0.5);
        assert_eq!(severity(3, 12, Some(86_401.0)), 0.25);
        assert_eq!(severity(3, 12, Some(f64::NAN)), 0.25);
        assert_eq!(severity(3, 12, Some(f64::INFINITY)), 0.25);
        assert_eq!(severity(12, 12, Some(f64::NEG_INFINITY)), 1.5);
    }
}
