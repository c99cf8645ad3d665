//! Goroutine stack summaries from net/http/pprof's text profiles.
//!
//! - `goroutine?debug=1` (and `goroutineleak?debug=1`): goroutines grouped by identical
//!   stack, each group a count then its frames as `#\t0xPC\tfunc+0xOFF\tfile:line`.
//! - `goroutine?debug=2`: every goroutine as the runtime prints it when a program
//!   panics: `goroutine 42 [chan receive, 17 minutes]:`, then a function line and a
//!   `\tfile:line +0xOFF` line per frame, then `created by ...`.
//!
//! Both are read a line at a time as they arrive ([`Summariser::line`]), so a 14 MB
//! debug=2 dump of 100,000 goroutines is never held whole: what is kept is one entry
//! per signature. A signature is the wait reason plus the top frames of the stack with
//! the runtime's own frames (parking, scheduling) dropped, each frame reduced to its
//! function name (program counters, offsets and arguments stripped), so goroutines
//! parked at the same place in the same code group together whatever their arguments.

use std::collections::HashMap;

use goroscope_proto::rules::{MAX_LABEL_VALUE, trim_label_value};
use goroscope_proto::v1;

/// Frames kept per signature, innermost first.
pub const MAX_FRAMES: usize = 16;
/// The frame of a goroutine the profile prints no frame for.
pub const NO_FRAMES: &str = "(no frames)";
/// Lines longer than this are cut (a function name with huge type parameters).
pub const MAX_LINE: usize = 4096;

/// Which text format a profile is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `debug=1`: grouped with counts.
    Grouped,
    /// `debug=2`: one goroutine at a time, with wait reasons and times.
    Each,
}

#[derive(Default)]
struct Group {
    wait_reason: String,
    frames: Vec<String>,
    location: String,
    count: u64,
    /// Wait times in minutes, one per goroutine (debug=2).
    waits: Vec<u32>,
}

/// The goroutine being read (debug=2) or the group being read (debug=1).
#[derive(Default)]
struct Current {
    active: bool,
    count: u64,
    wait_reason: String,
    wait_minutes: u32,
    frames: Vec<String>,
    location: String,
    /// A function line was read; its `file:line` comes next (debug=2).
    pending_function: bool,
    /// Frames past the runtime's own were seen (they are dropped until then).
    past_runtime: bool,
    /// The last function line read became a frame (so its file is that frame's).
    last_kept: bool,
    /// The outermost of the runtime frames dropped from the top: the stack's only frame
    /// if all of it is the runtime's (its own service goroutines).
    dropped: Option<String>,
    /// Past `created by`: the rest of the goroutine is not part of its stack.
    done: bool,
}

/// Builds a summary from a profile's lines.
pub struct Summariser {
    format: Format,
    groups: HashMap<(String, Vec<String>), Group>,
    current: Current,
    /// `total` from the profile's header (debug=1), else the goroutines counted.
    header_total: Option<u64>,
    counted: u64,
    partial: Vec<u8>,
    max_groups: usize,
}

impl Summariser {
    /// `max_groups`: groups kept in the summary (the largest); the rest are counted in
    /// `omitted`. The map of signatures is bounded at ten times that, past which new
    /// signatures count as omitted.
    pub fn new(format: Format, max_groups: usize) -> Summariser {
        Summariser {
            format,
            groups: HashMap::new(),
            current: Current::default(),
            header_total: None,
            counted: 0,
            partial: Vec::new(),
            max_groups: max_groups.max(1),
        }
    }

    /// Feeds the next bytes of the body, in any pieces.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&data[..nl]);
            } else {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                self.partial.extend_from_slice(&data[..nl.min(room)]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            }
            data = &data[nl + 1..];
        }
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&data[..data.len().min(room)]);
    }

    fn line(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(MAX_LINE)];
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        match self.format {
            Format::Grouped => self.grouped_line(line),
            Format::Each => self.each_line(line),
        }
    }

    fn grouped_line(&mut self, line: &str) {
        if let Some(total) = line
            .split_once(" profile: total ")
            .and_then(|(_, n)| n.trim().parse().ok())
        {
            self.header_total = Some(total);
            return;
        }
        if line.is_empty() {
            self.finish_current();
            return;
        }
        if let Some(frame) = line.strip_prefix('#') {
            if !self.current.active {
                return;
            }
            // `#\t0x46f1c4\tmain.worker+0x44\t/src/main.go:20`; labels lines are
            // `# labels: {...}`.
            let mut parts = frame.split('\t').filter(|p| !p.is_empty());
            let (Some(pc), Some(func)) = (parts.next(), parts.next()) else {
                return;
            };
            if !pc.starts_with("0x") {
                return;
            }
            let func = func.rsplit_once("+0x").map_or(func, |(f, _)| f);
            let file = parts.next().unwrap_or("");
            self.frame(func, file);
            return;
        }
        // `3 @ 0x43e8d6 0x44f0a5 ...`
        if let Some((count, _)) = line.split_once(" @ ")
            && let Ok(count) = count.trim().parse::<u64>()
        {
            self.finish_current();
            self.current = Current {
                active: true,
                count,
                ..Current::default()
            };
        }
    }

    fn each_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("goroutine ")
            && let Some(open) = rest.find(" [")
            && rest.ends_with("]:")
        {
            self.finish_current();
            let status = &rest[open + 2..rest.len() - 2];
            let (reason, minutes) = parse_status(status);
            self.current = Current {
                active: true,
                count: 1,
                wait_reason: reason,
                wait_minutes: minutes,
                ..Current::default()
            };
            return;
        }
        if !self.current.active || self.current.done {
            return;
        }
        if line.is_empty() {
            self.finish_current();
            return;
        }
        if line.starts_with("created by ") {
            self.current.done = true;
            return;
        }
        if let Some(file) = line.strip_prefix('\t') {
            if self.current.pending_function {
                self.current.pending_function = false;
                let file = file.rsplit_once(" +0x").map_or(file, |(f, _)| f);
                self.file_of_last_frame(file);
            }
            return;
        }
        if line.starts_with("...") {
            return;
        }
        let func = strip_arguments(line);
        self.frame(func, "");
        self.current.pending_function = true;
    }

    /// Adds a frame to the current stack: the runtime's own frames on top are dropped;
    /// at most [`MAX_FRAMES`] are kept.
    fn frame(&mut self, func: &str, file: &str) {
        let c = &mut self.current;
        c.last_kept = false;
        if func == "runtime.goexit" {
            return;
        }
        if !c.past_runtime && is_runtime_internal(func) {
            c.dropped = Some(trim_label_value(func).into_owned());
            return;
        }
        c.past_runtime = true;
        if c.frames.len() >= MAX_FRAMES {
            return;
        }
        c.frames.push(trim_label_value(func).into_owned());
        c.last_kept = true;
        if !file.is_empty() {
            self.file_of_last_frame(file);
        }
    }

    fn file_of_last_frame(&mut self, file: &str) {
        let c = &mut self.current;
        if c.last_kept && c.location.is_empty() && c.frames.last().is_some_and(|f| is_user_code(f))
        {
            c.location = trim_label_value(file).into_owned();
        }
    }

    fn finish_current(&mut self) {
        let mut c = std::mem::take(&mut self.current);
        if !c.active {
            return;
        }
        if c.frames.is_empty() {
            // A goroutine the profile gives no frame for (one exiting, say) still counts.
            c.frames
                .push(c.dropped.take().unwrap_or_else(|| NO_FRAMES.to_owned()));
        }
        self.counted = self.counted.saturating_add(c.count);
        let key = (c.wait_reason, c.frames);
        let room = self.groups.len() < self.max_groups.saturating_mul(10);
        if !room && !self.groups.contains_key(&key) {
            return;
        }
        let group = self.groups.entry(key).or_default();
        group.count = group.count.saturating_add(c.count);
        if group.location.is_empty() {
            group.location = c.location;
        }
        if self.format == Format::Each && group.waits.len() < 1_000_000 {
            group.waits.push(c.wait_minutes);
        }
    }

    /// The summary: the largest groups, each with its frames, count and waits.
    pub fn finish(mut self, source: &str) -> v1::StackSummary {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        self.finish_current();
        let total = self.header_total.unwrap_or(self.counted).max(self.counted);
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|((wait_reason, frames), mut g)| {
                g.wait_reason = wait_reason;
                g.frames = frames;
                g
            })
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
        groups.truncate(self.max_groups);
        let kept: u64 = groups.iter().map(|g| g.count).sum();
        v1::StackSummary {
            source: source.to_owned(),
            total,
            omitted: total.saturating_sub(kept),
            groups: groups
                .into_iter()
                .map(|mut g| {
                    let (max, median) = waits(&mut g.waits);
                    v1::StackGroup {
                        wait_reason: g.wait_reason,
                        frames: g.frames,
                        count: g.count,
                        max_wait_s: max,
                        median_wait_s: median,
                        location: g.location,
                        first_seen_ms: 0,
                    }
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Longest and median wait, seconds, from waits in whole minutes.
fn waits(minutes: &mut [u32]) -> (f64, f64) {
    if minutes.is_empty() {
        return (0.0, 0.0);
    }
    let mid = minutes.len() / 2;
    let (_, median, _) = minutes.select_nth_unstable(mid);
    let median = f64::from(*median) * 60.0;
    let max = minutes.iter().copied().max().unwrap_or(0);
    (f64::from(max) * 60.0, median)
}

/// `chan receive, 17 minutes, locked to thread` -> ("chan receive", 17). The runtime's
/// markers ` (scan)`, ` (durable)` and ` (leaked)` are not part of the reason.
fn parse_status(status: &str) -> (String, u32) {
    // Labels (`labels:{...}`) may hold commas: they come last and are cut first.
    let status = status.split(" labels:{").next().unwrap_or(status);
    let mut parts = status.split(", ");
    let reason = parts.next().unwrap_or("");
    let reason = reason
        .replace(" (scan)", "")
        .replace(" (durable)", "")
        .replace(" (leaked)", "");
    let minutes = parts
        .filter_map(|p| p.strip_suffix(" minutes"))
        .find_map(|m| m.trim().parse().ok())
        .unwrap_or(0);
    let reason = if reason.len() > MAX_LABEL_VALUE {
        trim_label_value(&reason).into_owned()
    } else {
        reason
    };
    (reason, minutes)
}

/// `main.(*Server).handle(0xc000123, {0x1, 0x2})` -> `main.(*Server).handle`: the
/// arguments are the last balanced parenthesis group.
fn strip_arguments(line: &str) -> &str {
    let line = line.trim_end();
    if !line.ends_with(')') {
        return line;
    }
    let mut depth = 0usize;
    for (i, c) in line.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &line[..i];
                }
            }
            _ => {}
        }
    }
    line
}

/// Frames of the runtime's parking and scheduling machinery: the same for every
/// goroutine that waits, so they say nothing of where it waits.
fn is_runtime_internal(func: &str) -> bool {
    func.starts_with("runtime.") || func.starts_with("internal/runtime/")
}

/// Whether a function is the program's own code rather than the standard library's:
/// its package is `main`, or its import path starts with a domain (has a dot in its
/// first element).
fn is_user_code(func: &str) -> bool {
    if func.starts_with("main.") {
        return true;
    }
    let first = func.split('/').next().unwrap_or("");
    first.contains('.') && func.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBUG1: &str = "goroutine profile: total 12
10 @ 0x4412ce 0x40a0a5 0x40a0d2 0x69c2b4 0x471da1
#\t0x69c2b3\tmain.leak.func1+0x33\t/src/leaky/main.go:31
#\t0x471da0\truntime.goexit+0x0\t/usr/local/go/src/runtime/asm_amd64.s:1700

1 @ 0x4412ce 0x43a6f7 0x46ee5d 0x4b9147 0x4b9b2a
#\t0x46ee5c\tinternal/poll.runtime_pollWait+0x5c\t/usr/local/go/src/runtime/netpoll.go:351
#\t0x4b9146\tinternal/poll.(*pollDesc).wait+0x26\t/usr/local/go/src/internal/poll/fd_poll_runtime.go:84
#\t0x5e1234\tnet/http.(*Server).Serve+0x1f4\t/usr/local/go/src/net/http/server.go:3360
#\t0x69c100\tgithub.com/acme/api/server.Run+0x40\t/src/acme/server/run.go:12

1 @ 0x4412ce 0x40a0a5 0x40a0d2 0x69c2b4 0x471da1
# labels: {\"handler\":\"x\"}
#\t0x69c2c9\tmain.leak.func1+0x49\t/src/leaky/main.go:32
#\t0x471da0\truntime.goexit+0x0\t/usr/local/go/src/runtime/asm_amd64.s:1700
";

    const DEBUG2: &str = "goroutine 1 [chan receive, 3 minutes]:
main.main()
\t/src/leaky/main.go:40 +0x1d5

goroutine 7 [select, 17 minutes, locked to thread]:
runtime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)
\t/usr/local/go/src/runtime/proc.go:435 +0xce
runtime.selectgo(0xc000047f28, 0xc000047ef0, 0x0?, 0x0, 0x0?, 0x1)
\t/usr/local/go/src/runtime/select.go:351 +0x837
main.(*worker).loop(0xc0000a2000, {0x7f, 0x1})
\t/src/leaky/main.go:20 +0x85
created by main.main in goroutine 1
\t/src/leaky/main.go:35 +0x1b

goroutine 8 [select, 1 minutes]:
runtime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)
\t/usr/local/go/src/runtime/proc.go:435 +0xce
main.(*worker).loop(0xc0000a2100, {0x7f, 0x2})
\t/src/leaky/main.go:20 +0x85
created by main.main in goroutine 1
\t/src/leaky/main.go:35 +0x1b

goroutine 9 [select (scan)]:
main.(*worker).loop(0xc0000a2200, {0x7f, 0x3})
\t/src/leaky/main.go:20 +0x85
...additional frames elided...
";

    fn summarise(format: Format, text: &str, piece: usize) -> v1::StackSummary {
        let mut s = Summariser::new(format, 100);
        for chunk in text.as_bytes().chunks(piece) {
            s.feed(chunk);
        }
        s.finish("test")
    }

    #[test]
    fn debug1_groups_by_function_whatever_the_offsets_and_pieces() {
        for piece in [1, 7, 4096] {
            let s = summarise(Format::Grouped, DEBUG1, piece);
            assert_eq!(s.total, 12);
            assert_eq!(s.omitted, 0);
            assert_eq!(s.groups.len(), 2, "{s:?}");
            let leak = &s.groups[0];
            assert_eq!(leak.count, 11);
            assert_eq!(leak.frames, vec!["main.leak.func1"]);
            assert_eq!(leak.location, "/src/leaky/main.go:31");
            let serve = &s.groups[1];
            assert_eq!(
                serve.frames,
                vec![
                    "internal/poll.runtime_pollWait",
                    "internal/poll.(*pollDesc).wait",
                    "net/http.(*Server).Serve",
                    "github.com/acme/api/server.Run"
                ]
            );
            assert_eq!(serve.location, "/src/acme/server/run.go:12");
        }
    }

    #[test]
    fn debug2_groups_by_wait_reason_and_frames_with_wait_times() {
        for piece in [1, 13, 4096] {
            let s = summarise(Format::Each, DEBUG2, piece);
            assert_eq!(s.total, 4);
            let select = s.groups.iter().find(|g| g.wait_reason == "select").unwrap();
            assert_eq!(select.count, 3, "{s:?}");
            assert_eq!(select.frames, vec!["main.(*worker).loop"]);
            assert_eq!(select.max_wait_s, 17.0 * 60.0);
            assert_eq!(select.median_wait_s, 60.0);
            assert_eq!(select.location, "/src/leaky/main.go:20");
            let main = s
                .groups
                .iter()
                .find(|g| g.wait_reason == "chan receive")
                .unwrap();
            assert_eq!((main.count, main.max_wait_s), (1, 180.0));
            assert_eq!(main.frames, vec!["main.main"]);
        }
    }

    #[test]
    fn a_stack_of_runtime_frames_only_keeps_its_outermost() {
        let text = "goroutine 2 [force gc (idle)]:\nruntime.gopark(0x0?)\n\t/go/src/runtime/proc.go:435 +0xce\nruntime.forcegchelper()\n\t/go/src/runtime/proc.go:348 +0xb3\ncreated by runtime.init.7 in goroutine 1\n";
        let mut s = Summariser::new(Format::Each, 10);
        s.feed(text.as_bytes());
        let out = s.finish("debug=2");
        assert_eq!(out.groups[0].frames, vec!["runtime.forcegchelper"]);
        assert_eq!(out.groups[0].wait_reason, "force gc (idle)");
    }

    #[test]
    fn only_the_largest_groups_are_kept_and_the_rest_counted() {
        let mut text = String::from("goroutine profile: total 60\n");
        for i in 0..10 {
            text.push_str(&format!(
                "{} @ 0x1\n#\t0x1\tmain.f{i}+0x1\t/src/main.go:{i}\n\n",
                i + 1
            ));
        }
        let mut s = Summariser::new(Format::Grouped, 3);
        s.feed(text.as_bytes());
        let s = s.finish("debug=1");
        assert_eq!(s.groups.len(), 3);
        assert_eq!(s.groups[0].frames, vec!["main.f9"]);
        assert_eq!(s.total, 60);
        assert_eq!(s.omitted, 60 - (10 + 9 + 8));
    }

    #[test]
    fn statuses_and_arguments_parse_as_the_runtime_prints_them() {
        assert_eq!(parse_status("IO wait"), ("IO wait".into(), 0));
        assert_eq!(
            parse_status("chan receive (nil chan), 5 minutes"),
            ("chan receive (nil chan)".into(), 5)
        );
        assert_eq!(
            parse_status("sync.WaitGroup.Wait (leaked), 12 minutes, locked to thread"),
            ("sync.WaitGroup.Wait".into(), 12)
        );
        assert_eq!(
            parse_status("select labels:{\"a, b\": \"c\"}"),
            ("select".into(), 0)
        );
        assert_eq!(
            strip_arguments("main.(*T).M(0xc000010000, {0x1, 0x2})"),
            "main.(*T).M"
        );
        assert_eq!(strip_arguments("main.main()"), "main.main");
        assert_eq!(strip_arguments("main.f[...](...)"), "main.f[...]");
        assert!(is_user_code("github.com/a/b.F") && is_user_code("main.main"));
        assert!(!is_user_code("net/http.(*conn).serve") && !is_user_code("sync.(*Mutex).Lock"));
    }

    #[test]
    fn garbage_and_huge_lines_never_panic_and_stay_bounded() {
        let mut s = Summariser::new(Format::Each, 10);
        s.feed(&vec![b'x'; 100_000]);
        s.feed(b"\ngoroutine 1 [\xff\xfe, 9999999999999 minutes]:\n(((((\n\t\n");
        let long = format!("goroutine 2 [select]:\n{}()\n", "f".repeat(10_000));
        s.feed(long.as_bytes());
        let out = s.finish("debug=2");
        assert!(
            out.groups
                .iter()
                .all(|g| g.frames.iter().all(|f| f.len() <= MAX_LABEL_VALUE))
        );
        let mut s = Summariser::new(Format::Grouped, 10);
        s.feed(b"18446744073709551615 @ 0x1\n#\t0x1\tf\n\n18446744073709551615 @ 0x1\n#\t0x1\tf\n");
        assert_eq!(s.finish("debug=1").groups[0].count, u64::MAX);
    }
}
