//! The Go runtime settings a process was started with, from `/proc/PID/environ`.
//!
//! Only [`RUNTIME_VARS`] are kept. The environment of a service holds its secrets
//! (tokens, passwords, keys): nothing else of it is kept, logged or sent, and errors
//! name the file, never its content. The environment of a running process changes only
//! by `exec`, so it is read once per executable a process runs.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::proc::{ProcError, pid_err};

/// The variables the Go runtime reads its settings from; the only ones read.
pub const RUNTIME_VARS: [&str; 5] = ["GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG", "GOTRACEBACK"];

/// The most read of an environment. Linux caps the environment and arguments of an
/// `exec` together at a quarter of the stack limit (2 MiB with the usual 8 MiB); the
/// runtime's variables are almost always among the first ones, and an entry cut by
/// the cap is dropped rather than kept cut.
pub const MAX_ENVIRON_BYTES: u64 = 256 * 1024;

/// The runtime settings in a `NAME=value\0...` environment, in [`RUNTIME_VARS`] order,
/// each at most once (the first, as the runtime reads it), values cut to a label
/// value's length. `complete`: the text is the whole environment; otherwise a last
/// entry without its terminating NUL may be cut and is left out.
pub fn parse(environ: &[u8], complete: bool) -> Vec<(String, String)> {
    let mut found: [Option<&[u8]>; RUNTIME_VARS.len()] = [None; RUNTIME_VARS.len()];
    let mut entries = environ.split(|b| *b == 0).peekable();
    while let Some(entry) = entries.next() {
        if entries.peek().is_none() && !complete {
            break;
        }
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        if let Some(i) = RUNTIME_VARS.iter().position(|v| v.as_bytes() == name)
            && found[i].is_none()
        {
            found[i] = Some(value);
        }
    }
    RUNTIME_VARS
        .iter()
        .zip(found)
        .filter_map(|(name, value)| {
            let value = String::from_utf8_lossy(value?);
            let value = match goroscope_proto::rules::trim_label_value(&value) {
                std::borrow::Cow::Borrowed(v) => v.to_owned(),
                std::borrow::Cow::Owned(cut) => {
                    crate::model::LABELS_TRIMMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    cut
                }
            };
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// Reads the runtime settings of `pid` (needs the right to inspect the process: its
/// user, or root).
pub fn read(root: &Path, pid: u32) -> Result<Vec<(String, String)>, ProcError> {
    let path = root.join(pid.to_string()).join("environ");
    let mut bytes = Vec::new();
    let read = File::open(&path)
        .and_then(|f| f.take(MAX_ENVIRON_BYTES).read_to_end(&mut bytes))
        .map_err(|e| pid_err(pid, path, e));
    let settings = read.map(|n| parse(&bytes, (n as u64) < MAX_ENVIRON_BYTES));
    // What else the environment held does not outlive this read.
    bytes.fill(0);
    std::hint::black_box(&bytes);
    settings
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Child, Command, Stdio};

    /// A Go program started with `GOGC=50 GOMEMLIMIT=1GiB SECRET_TOKEN=x` and nothing
    /// else in its environment, once it runs: the kernel fills the environment in after
    /// the parent's spawn returns, so its "ready" line is waited for.
    pub(crate) fn start_sleeper(dir: &tempfile::TempDir) -> Child {
        let exe = crate::sources::buildinfo::tests::build_go(
            dir.path(),
            "example.test/sleeper",
            "package main\n\nimport (\n\t\"fmt\"\n\t\"time\"\n)\n\n\
             func main() {\n\tfmt.Println(\"ready\")\n\ttime.Sleep(time.Minute)\n}\n",
            &[],
        );
        let mut child = Command::new(&exe)
            .env_clear()
            .env("GOGC", "50")
            .env("GOMEMLIMIT", "1GiB")
            .env("SECRET_TOKEN", "x")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        child
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keeps_only_the_runtime_settings() {
        let env = b"PATH=/usr/bin\0GOMEMLIMIT=1GiB\0SECRET_TOKEN=hunter2\0GOGC=50\0\
                    GOGCX=1\0XGOGC=2\0GODEBUG=madvdontneed=1,gctrace=1\0GOGC=off\0\
                    =empty\0noequals\0GOTRACEBACK=\0AWS_SECRET_ACCESS_KEY=GOGC=9\0";
        let got = parse(env, true);
        assert_eq!(
            got,
            pairs(&[
                ("GOGC", "50"),
                ("GOMEMLIMIT", "1GiB"),
                ("GODEBUG", "madvdontneed=1,gctrace=1"),
                ("GOTRACEBACK", ""),
            ])
        );
        let all: String = got.iter().map(|(k, v)| format!("{k}={v};")).collect();
        assert!(!all.contains("hunter2") && !all.contains("SECRET"), "{all}");
        assert!(parse(b"", true).is_empty());
    }

    #[test]
    fn an_entry_cut_by_the_cap_is_left_out() {
        assert_eq!(
            parse(b"GOGC=50\0GOMAXPROCS=1", false),
            pairs(&[("GOGC", "50")])
        );
        assert_eq!(
            parse(b"GOGC=50\0GOMAXPROCS=1", true),
            pairs(&[("GOGC", "50"), ("GOMAXPROCS", "1")])
        );
        assert_eq!(
            parse(b"GOGC=50\0GOMAXPROCS=1\0", false),
            pairs(&[("GOGC", "50"), ("GOMAXPROCS", "1")])
        );
    }

    #[test]
    fn long_and_odd_values_fit_a_label() {
        let mut env = b"GODEBUG=".to_vec();
        env.extend(std::iter::repeat_n(b'x', 5000));
        env.extend(b"\0GOGC=\xff\xfe\0");
        let got = parse(&env, true);
        assert_eq!(got[0].0, "GOGC");
        assert_eq!(got[0].1, "\u{fffd}\u{fffd}");
        assert_eq!(got[1].1.len(), goroscope_proto::rules::MAX_LABEL_VALUE);
    }

    #[test]
    fn reads_a_real_go_process_and_nothing_else_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = start_sleeper(&dir);
        let got = read(Path::new("/proc"), child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            got.unwrap(),
            pairs(&[("GOGC", "50"), ("GOMEMLIMIT", "1GiB")])
        );
        assert!(matches!(
            read(Path::new("/proc"), 4_194_305),
            Err(ProcError::Gone { pid: 4_194_305 })
        ));
    }
}
