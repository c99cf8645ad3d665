//! Readers for one process's files under `/proc`: stat, status, fds, its executable's
//! identity and listening sockets.
//!
//! The parsers take borrowed text so they can be tested on samples and run every
//! sampling interval for every process without allocating per field; the `read_*`
//! functions around them turn "the process exited meanwhile" into [`ProcError::Gone`].
//! Every function here blocks: callers run them off the async runtime's thread.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited between discovery and this read (ENOENT or ESRCH).
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("read {}: {}", path.display(), lower_io(source))]
    Io { path: PathBuf, source: io::Error },
    #[error("parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// Work that did not end within its deadline. It goes on in the background (a
    /// thread in a hung read cannot be stopped); no more of it starts until it ends.
    #[error("{what}: no answer within {}", humantime::format_duration(*limit))]
    Late { what: String, limit: Duration },
    /// Work that ended without a result (it panicked, or the runtime is stopping).
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
}

const ESRCH: i32 = 3;

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH)
}

/// Maps an error reading one of `pid`'s files: a vanished process is expected, not a fault.
pub(crate) fn pid_err(pid: u32, path: PathBuf, e: io::Error) -> ProcError {
    if is_gone(&e) {
        ProcError::Gone { pid }
    } else {
        ProcError::Io { path, source: e }
    }
}

fn pid_dir(root: &Path, pid: u32) -> PathBuf {
    root.join(pid.to_string())
}

/// Reads a whole /proc file. Bytes, not `read_to_string`: a comm may be any bytes a
/// process gave prctl(PR_SET_NAME), and one odd name must not fail the read.
fn read_pid_file(root: &Path, pid: u32, name: &str) -> Result<(PathBuf, Vec<u8>), ProcError> {
    let path = pid_dir(root, pid).join(name);
    match fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => Err(pid_err(pid, path, e)),
    }
}

/// The PIDs in `root` (normally `/proc`), in directory order.
pub fn list_pids(root: &Path) -> Result<Vec<u32>, ProcError> {
    let io_err = |source| ProcError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut pids = Vec::new();
    for entry in fs::read_dir(root).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The fields of `/proc/PID/stat` the collector uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// User CPU time, in clock ticks ([`clock_ticks_per_second`]).
    pub utime_ticks: u64,
    /// System CPU time, in clock ticks.
    pub stime_ticks: u64,
    pub num_threads: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    /// Resident set size, in pages ([`page_size`]).
    pub rss_pages: u64,
}

impl Stat {
    /// A zombie (`Z`) or a dead process (`X`, `x`): it has exited and waits to be reaped;
    /// what /proc still shows of it is not a running program.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/PID/stat` (see proc(5)).
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    // comm may itself contain spaces, parentheses and even newlines, so it runs from the
    // first '(' to the LAST ')'; everything after is space-separated numbers.
    let open = text.find('(').ok_or("no '(' before comm")?;
    let close = text.rfind(')').ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('".to_string());
    }
    let comm = &text[open + 1..close];
    let mut fields = text[close + 1..].split_ascii_whitespace();

    // Field numbers as in proc(5); comm is field 2, so the iterator starts at field 3.
    let mut at = 3;
    let mut field = |n: usize| -> Result<&str, String> {
        debug_assert!(n >= at);
        let value = fields
            .nth(n - at)
            .ok_or_else(|| format!("truncated: no field {n}"))?;
        at = n + 1;
        Ok(value)
    };
    fn num<T: std::str::FromStr>(n: usize, s: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("field {n}: not a number: {s:?}"))
    }

    let mut state_chars = field(3)?.chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => return Err("field 3: state is not one character".to_string()),
    };
    let ppid = num(4, field(4)?)?;
    let utime_ticks = num(14, field(14)?)?;
    let stime_ticks = num(15, field(15)?)?;
    let num_threads = num(20, field(20)?)?;
    let start_ticks = num(22, field(22)?)?;
    let vsize_bytes = num(23, field(23)?)?;
    let rss_pages = num(24, field(24)?)?;
    Ok(Stat {
        comm: comm.to_string(),
        state,
        ppid,
        utime_ticks,
        stime_ticks,
        num_threads,
        start_ticks,
        vsize_bytes,
        rss_pages,
    })
}

pub fn read_stat(root: &Path, pid: u32) -> Result<Stat, ProcError> {
    let (path, bytes) = read_pid_file(root, pid, "stat")?;
    parse_stat(&String::from_utf8_lossy(&bytes)).map_err(|reason| ProcError::Parse { path, reason })
}

/// The fields of `/proc/PID/status` the collector uses, memory in bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub rss_bytes: u64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub vm_size_bytes: u64,
    pub threads: u64,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
}

/// Parses `/proc/PID/status`. Memory fields absent for kernel threads stay 0; `Threads`
/// is always present, so its absence means this is not a status file.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let mut status = Status::default();
    let mut saw_threads = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let target = match key {
            "VmRSS" => &mut status.rss_bytes,
            "RssAnon" => &mut status.rss_anon_bytes,
            "RssFile" => &mut status.rss_file_bytes,
            "VmSize" => &mut status.vm_size_bytes,
            "Threads" => {
                saw_threads = true;
                &mut status.threads
            }
            "voluntary_ctxt_switches" => &mut status.voluntary_ctxt_switches,
            "nonvoluntary_ctxt_switches" => &mut status.nonvoluntary_ctxt_switches,
            _ => continue,
        };
        let value = value.trim();
        *target = match value.strip_suffix(" kB") {
            Some(kb) => kb
                .trim_end()
                .parse::<u64>()
                .map(|kb| kb.saturating_mul(1024)),
            None => value.parse(),
        }
        .map_err(|_| format!("{key}: not a number: {value:?}"))?;
    }
    if !saw_threads {
        return Err("no Threads line".to_string());
    }
    Ok(status)
}

pub fn read_status(root: &Path, pid: u32) -> Result<Status, ProcError> {
    let (path, bytes) = read_pid_file(root, pid, "status")?;
    parse_status(&String::from_utf8_lossy(&bytes))
        .map_err(|reason| ProcError::Parse { path, reason })
}

/// What `/proc/PID/smaps_rollup` says of a process's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmapsRollup {
    /// Anonymous memory mapped in (the heap, stacks, cgo allocations).
    pub anon_bytes: u64,
    /// Anonymous memory the process gave back with MADV_FREE: still counted in RSS,
    /// reclaimed by the kernel at will (the "RSS that is not really used").
    pub lazyfree_bytes: u64,
    pub swap_bytes: u64,
}

/// Parses `/proc/PID/smaps_rollup` (`Key:  N kB` lines after a header line). The
/// three fields are in every kernel that has the file; a file without them is refused.
pub fn parse_smaps_rollup(text: &str) -> Result<SmapsRollup, String> {
    let mut out = SmapsRollup::default();
    let mut seen = 0u8;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (target, bit) = match key {
            "Anonymous" => (&mut out.anon_bytes, 1),
            "LazyFree" => (&mut out.lazyfree_bytes, 2),
            "Swap" => (&mut out.swap_bytes, 4),
            _ => continue,
        };
        let value = value.trim();
        let kb = value
            .strip_suffix(" kB")
            .and_then(|kb| kb.trim_end().parse::<u64>().ok())
            .ok_or_else(|| format!("{key}: not a size in kB: {value:?}"))?;
        *target = kb.saturating_mul(1024);
        seen |= bit;
    }
    if seen != 7 {
        return Err("no Anonymous, LazyFree and Swap lines".to_string());
    }
    Ok(out)
}

pub fn read_smaps_rollup(root: &Path, pid: u32) -> Result<SmapsRollup, ProcError> {
    let (path, bytes) = read_pid_file(root, pid, "smaps_rollup")?;
    parse_smaps_rollup(&String::from_utf8_lossy(&bytes))
        .map_err(|reason| ProcError::Parse { path, reason })
}

/// The number of open file descriptors (entries of `/proc/PID/fd`).
pub fn count_fds(root: &Path, pid: u32) -> Result<u64, ProcError> {
    let path = pid_dir(root, pid).join("fd");
    let dir = fs::read_dir(&path).map_err(|e| pid_err(pid, path.clone(), e))?;
    let mut n = 0;
    for entry in dir {
        entry.map_err(|e| pid_err(pid, path.clone(), e))?;
        n += 1;
    }
    Ok(n)
}

/// The identity of a file: what a process runs, as its device and inode. An `exec`
/// changes it while the pid and start time stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeId {
    pub dev: u64,
    pub ino: u64,
}

impl ExeId {
    pub fn of(metadata: &fs::Metadata) -> ExeId {
        ExeId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// The identity of the executable `pid` runs now: `stat` through the `/proc/PID/exe`
/// link. Fails for kernel threads (no executable) and for processes the collector may
/// not inspect; the error is the raw one, since ENOENT here does not mean the process
/// is gone.
pub fn exe_identity(root: &Path, pid: u32) -> io::Result<ExeId> {
    fs::metadata(pid_dir(root, pid).join("exe")).map(|m| ExeId::of(&m))
}

/// System boot time in seconds since the Unix epoch (`btime` in `/proc/stat`): with it,
/// a process's start ticks become a wall-clock start time.
pub fn boot_time_secs(root: &Path) -> Result<u64, ProcError> {
    let path = root.join("stat");
    let bytes = fs::read(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let parse_err = |reason: &str| ProcError::Parse {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .ok_or_else(|| parse_err("no btime line"))?;
    value
        .trim()
        .parse()
        .map_err(|_| parse_err("btime is not a number"))
}

/// The unit of [`Stat`]'s tick fields (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The unit of [`Stat::rss_pages`].
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// `st` value of a TCP socket in LISTEN state (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 0x0A;

/// TCP sockets in LISTEN state owned by this process: [`socket_inodes`] matched
/// against [`listening_sockets`] of its network namespace.
pub fn listening_tcp(root: &Path, pid: u32) -> Result<Vec<SocketAddr>, ProcError> {
    let inodes = socket_inodes(root, pid)?;
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let table = listening_sockets(root, pid)?;
    Ok(owned_listeners(&inodes, &table))
}

/// The listeners of `table` whose socket inode is among `inodes` (sorted).
pub fn owned_listeners(inodes: &[u64], table: &ListeningSockets) -> Vec<SocketAddr> {
    inodes
        .iter()
        .filter_map(|i| table.get(i).copied())
        .collect()
}

/// The inodes of the sockets this process has open, sorted: from the /proc/PID/fd
/// symlinks (`socket:[12345]`).
pub fn socket_inodes(root: &Path, pid: u32) -> Result<Vec<u64>, ProcError> {
    let fd_dir = pid_dir(root, pid).join("fd");
    let entries = fs::read_dir(&fd_dir).map_err(|e| pid_err(pid, fd_dir.clone(), e))?;
    let mut inodes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| pid_err(pid, fd_dir.clone(), e))?;
        // An fd closed since readdir is not a vanished process: just skip it.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(inode) = inode {
            inodes.push(inode);
        }
    }
    inodes.sort_unstable();
    Ok(inodes)
}

/// The network namespace of a process, as the inode of /proc/PID/ns/net. Processes
/// with the same one share their TCP tables.
pub fn net_namespace(root: &Path, pid: u32) -> Result<u64, ProcError> {
    let path = pid_dir(root, pid).join("ns/net");
    let target = fs::read_link(&path).map_err(|e| pid_err(pid, path.clone(), e))?;
    parse_namespace_link(path, &target)
}

/// The network namespace the collector itself runs in. Read from the kernel's own
/// /proc, not `proc_root`: another procfs mount may belong to another pid namespace,
/// where `self` names nobody.
pub fn own_net_namespace() -> Result<u64, ProcError> {
    let path = PathBuf::from("/proc/self/ns/net");
    let target = fs::read_link(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    parse_namespace_link(path, &target)
}

/// The inode of a namespace link's target, `net:[4026531840]`.
fn parse_namespace_link(path: PathBuf, target: &Path) -> Result<u64, ProcError> {
    target
        .to_str()
        .and_then(|t| t.strip_prefix("net:["))
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| ProcError::Parse {
            path,
            reason: format!("not a namespace link: {}", target.display()),
        })
}

/// The addresses other hosts reach a network namespace at: the local IPv4 addresses
/// (`/32 host LOCAL` in /proc/PID/net/fib_trie) and the global-scope IPv6 addresses
/// (/proc/PID/net/if_inet6), loopback excluded. For a process in another namespace
/// than the collector's (a pod), these stand in for its wildcard listeners.
pub fn namespace_addresses(root: &Path, pid: u32) -> Result<Vec<IpAddr>, ProcError> {
    let dir = pid_dir(root, pid);
    let mut addrs = Vec::new();
    for (name, parse) in [
        (
            "net/fib_trie",
            parse_fib_trie_locals as fn(&str) -> Vec<IpAddr>,
        ),
        ("net/if_inet6", parse_if_inet6_globals),
    ] {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => addrs.extend(parse(&String::from_utf8_lossy(&bytes))),
            // No IPv6 (or no IPv4 routing) in this kernel: nothing of that family.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !is_gone_pid(root, pid) => {}
            Err(e) => return Err(pid_err(pid, path, e)),
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

fn is_gone_pid(root: &Path, pid: u32) -> bool {
    !pid_dir(root, pid).exists()
}

/// The non-loopback addresses marked `/32 host LOCAL` in a fib_trie dump.
pub fn parse_fib_trie_locals(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take()
                && !ip.is_loopback()
            {
                out.push(IpAddr::V4(ip));
            }
        } else if !line.starts_with('/') {
            last = None;
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The global-scope (scope 00), non-loopback addresses of an if_inet6 dump.
pub fn parse_if_inet6_globals(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[3] != "00" || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            let ip = Ipv6Addr::from(bits);
            (!ip.is_loopback()).then_some(IpAddr::V6(ip))
        })
        .collect()
}

/// Listening TCP sockets by inode.
pub type ListeningSockets = std::collections::HashMap<u64, SocketAddr>;

/// Every TCP socket in LISTEN state in the network namespace of `pid`, by inode, from
/// /proc/PID/net/tcp and tcp6. The kernel builds these files by walking all of the
/// namespace's sockets, so read them once per namespace, not once per process.
pub fn listening_sockets(root: &Path, pid: u32) -> Result<ListeningSockets, ProcError> {
    let dir = pid_dir(root, pid);
    let mut table = ListeningSockets::new();
    for (name, ipv6) in [("net/tcp", false), ("net/tcp6", true)] {
        let path = dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // A kernel without IPv6 has no tcp6 file; the process is still there.
            Err(e) if ipv6 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(pid_err(pid, path, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        table.extend(
            parse_net_tcp(&text, ipv6)
                .into_iter()
                .filter(|&(_, _, state)| state == TCP_LISTEN)
                .map(|(addr, inode, _)| (inode, addr)),
        );
    }
    Ok(table)
}

/// Parses `/proc/net/tcp` (or `tcp6` when `ipv6`) into (local address, inode, state)
/// rows, skipping the header and anything malformed.
pub fn parse_net_tcp(text: &str, ipv6: bool) -> Vec<(SocketAddr, u64, u8)> {
    text.lines()
        .filter_map(|line| parse_tcp_row(line, ipv6))
        .collect()
}

fn parse_tcp_row(line: &str, ipv6: bool) -> Option<(SocketAddr, u64, u8)> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = fields.next()?;
    let state = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
    let inode = fields.nth(5)?.parse().ok()?;

    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if ipv6 {
        if ip.len() != 32 {
            return None;
        }
        let mut octets = [0u8; 16];
        for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&hex_word(ip.get(i * 8..i * 8 + 8)?)?);
        }
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(hex_word(ip)?))
    };
    Some((SocketAddr::new(ip, port), inode, state))
}

/// The kernel prints each 32-bit word of a network-order address as a host-order
/// integer, so the address bytes are that integer's native-endian bytes.
fn hex_word(hex: &str) -> Option<[u8; 4]> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// io::Error's Display is capitalised and carries "(os error N)"; our messages are
/// lower-case sentences.
fn lower_io(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "/proc";

    #[test]
    fn parses_stat_with_odd_comm() {
        let text = "1234 (my (weird) prog) S 1 1234 1234 0 -1 4194560 2849 0 0 0 \
                    157 42 0 0 20 0 12 0 98765 1272406016 3456 18446744073709551615 \
                    1 1 0 0 0 0 0 0 2143420159 0 0 0 17 3 0 0 0 0 0\n";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                comm: "my (weird) prog".to_string(),
                state: 'S',
                ppid: 1,
                utime_ticks: 157,
                stime_ticks: 42,
                num_threads: 12,
                start_ticks: 98765,
                vsize_bytes: 1272406016,
                rss_pages: 3456,
            }
        );

        let stat = parse_stat("7 () ) R 0 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 6 7\n").unwrap();
        assert_eq!(stat.comm, ") ");
        assert_eq!((stat.state, stat.rss_pages), ('R', 7));
    }

    #[test]
    fn rejects_bad_stat() {
        let truncated = "1234 (prog) S 1 1234 1234 0 -1 4194560 2849 0 0 0 157 42 0 0 20 0 12";
        let err = parse_stat(truncated).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1234 prog S 1").is_err());
        assert!(parse_stat("1 ) (x").is_err());
        let bad = "1 (x) S one 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 6 7";
        assert!(parse_stat(bad).unwrap_err().contains("field 4"));
    }

    const STATUS: &str = "Name:\tgoroscope-test\n\
        Umask:\t0022\n\
        State:\tS (sleeping)\n\
        Tgid:\t4242\n\
        Ngid:\t0\n\
        Pid:\t4242\n\
        PPid:\t1\n\
        TracerPid:\t0\n\
        Uid:\t1000\t1000\t1000\t1000\n\
        Gid:\t1000\t1000\t1000\t1000\n\
        FDSize:\t64\n\
        Groups:\t4 24 27 1000 \n\
        NStgid:\t4242\n\
        NSpid:\t4242\n\
        NSpgid:\t4242\n\
        NSsid:\t4242\n\
        Kthread:\t0\n\
        VmPeak:\t 1319524 kB\n\
        VmSize:\t 1253988 kB\n\
        VmLck:\t       0 kB\n\
        VmPin:\t       0 kB\n\
        VmHWM:\t   38412 kB\n\
        VmRSS:\t   36120 kB\n\
        RssAnon:\t   21504 kB\n\
        RssFile:\t   14616 kB\n\
        RssShmem:\t       0 kB\n\
        VmData:\t  120540 kB\n\
        VmStk:\t     132 kB\n\
        VmExe:\t    5832 kB\n\
        VmLib:\t       4 kB\n\
        VmPTE:\t     196 kB\n\
        VmSwap:\t       0 kB\n\
        HugetlbPages:\t       0 kB\n\
        CoreDumping:\t0\n\
        THP_enabled:\t1\n\
        untag_mask:\t0xffffffffffffffff\n\
        Threads:\t11\n\
        SigQ:\t0/63378\n\
        SigPnd:\t0000000000000000\n\
        ShdPnd:\t0000000000000000\n\
        SigBlk:\t0000000000000000\n\
        SigIgn:\t0000000000000000\n\
        SigCgt:\tfffffffd7fc1feff\n\
        CapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\n\
        CapAmb:\t0000000000000000\n\
        NoNewPrivs:\t0\n\
        Seccomp:\t0\n\
        Seccomp_filters:\t0\n\
        Speculation_Store_Bypass:\tthread vulnerable\n\
        SpeculationIndirectBranch:\tconditional enabled\n\
        Cpus_allowed:\tffff\n\
        Cpus_allowed_list:\t0-15\n\
        Mems_allowed:\t00000000,00000001\n\
        Mems_allowed_list:\t0\n\
        voluntary_ctxt_switches:\t1523\n\
        nonvoluntary_ctxt_switches:\t87\n";

    #[test]
    fn parses_smaps_rollup_and_refuses_what_is_not() {
        let text = "55df9d97f000-7ffd084cc000 ---p 00000000 00:00 0   [rollup]\n\
                    Rss:                1720 kB\nAnonymous:           112 kB\n\
                    LazyFree:             8 kB\nAnonHugePages:         0 kB\n\
                    Swap:                  4 kB\nSwapPss:               0 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Ok(SmapsRollup {
                anon_bytes: 112 * 1024,
                lazyfree_bytes: 8 * 1024,
                swap_bytes: 4 * 1024,
            })
        );
        assert!(parse_smaps_rollup("Rss: 1 kB\n").is_err());
        assert!(parse_smaps_rollup("Anonymous: lots\nLazyFree: 0 kB\nSwap: 0 kB\n").is_err());
        let own = read_smaps_rollup(Path::new("/proc"), std::process::id()).unwrap();
        assert!(own.anon_bytes > 0, "{own:?}");
    }

    #[test]
    fn parses_status() {
        assert_eq!(
            parse_status(STATUS).unwrap(),
            Status {
                rss_bytes: 36120 * 1024,
                rss_anon_bytes: 21504 * 1024,
                rss_file_bytes: 14616 * 1024,
                vm_size_bytes: 1253988 * 1024,
                threads: 11,
                voluntary_ctxt_switches: 1523,
                nonvoluntary_ctxt_switches: 87,
            }
        );
    }

    #[test]
    fn status_of_kernel_thread_and_bad_status() {
        let kthread = "Name:\tkworker/0:1\nState:\tI (idle)\nThreads:\t1\n\
                       voluntary_ctxt_switches:\t9\nnonvoluntary_ctxt_switches:\t0\n";
        let status = parse_status(kthread).unwrap();
        assert_eq!((status.rss_bytes, status.threads), (0, 1));
        assert!(parse_status("Name:\tx\n").unwrap_err().contains("Threads"));
        assert!(parse_status("Threads:\t1\nVmRSS:\tlots kB\n").is_err());
    }

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0\n\
   2: 0F02000A:D6A4 2E1A0B8E:01BB 01 00000000:00000000 02:000005E2 00000000  1000        0 3333 2 0000000000000000 20 4 30 10 -1\n\
   garbage line\n\
   3: ZZ00007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 55555 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 66666 1 0000000000000000 100 0 0 10 0\n\
   2: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 77777 1 0000000000000000 20 4 30 10 -1\n";

    // The samples are what a little-endian kernel prints.
    #[cfg(target_endian = "little")]
    #[test]
    fn parses_net_tcp() {
        let rows = parse_net_tcp(TCP4, false);
        assert_eq!(
            rows,
            [
                ("127.0.0.1:8080".parse().unwrap(), 123456, 0x0A),
                ("0.0.0.0:22".parse().unwrap(), 2222, 0x0A),
                ("10.0.2.15:54948".parse().unwrap(), 3333, 0x01),
            ]
        );

        let rows = parse_net_tcp(TCP6, true);
        assert_eq!(
            rows,
            [
                ("[::]:8080".parse().unwrap(), 55555, 0x0A),
                ("[::1]:8080".parse().unwrap(), 66666, 0x0A),
                ("[::ffff:127.0.0.1]:80".parse().unwrap(), 77777, 0x01),
            ]
        );

        // Wrong family for the text: every row's address has the wrong length.
        assert!(parse_net_tcp(TCP4, true).is_empty());
        assert!(parse_net_tcp(TCP6, false).is_empty());
        assert!(parse_net_tcp("", false).is_empty());
    }

    #[test]
    fn reads_own_process() {
        let root = Path::new(PROC);
        let pid = std::process::id();
        let stat = read_stat(root, pid).unwrap();
        assert!(stat.num_threads >= 1);
        assert!(stat.rss_pages > 0);
        assert!(matches!(stat.state, 'R' | 'S'), "{stat:?}");
        let status = read_status(root, pid).unwrap();
        assert!(status.threads >= 1);
        assert!(status.rss_bytes > 0);
        assert!(count_fds(root, pid).unwrap() >= 3);
        assert!(list_pids(root).unwrap().contains(&pid));
        assert!(boot_time_secs(root).unwrap() > 1_000_000_000);
        assert!(clock_ticks_per_second() > 0);
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn finds_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let found = listening_tcp(Path::new(PROC), std::process::id()).unwrap();
        assert!(found.contains(&addr), "{addr} not in {found:?}");

        // The namespace's table holds every listener; ours are the ones we own.
        let root = Path::new(PROC);
        let me = std::process::id();
        let table = listening_sockets(root, me).unwrap();
        assert!(table.values().any(|a| *a == addr), "{table:?}");
        let connected = std::net::TcpStream::connect(addr).unwrap();
        let inodes = socket_inodes(root, me).unwrap();
        assert!(inodes.len() >= 2 && inodes.is_sorted(), "{inodes:?}");
        assert!(owned_listeners(&inodes, &table).contains(&addr));
        drop(connected);
        assert!(net_namespace(root, me).unwrap() > 0);
        // With the kernel's own /proc as the root, the collector's namespace is its
        // process's.
        assert_eq!(
            own_net_namespace().unwrap(),
            net_namespace(root, me).unwrap()
        );
        assert!(matches!(
            net_namespace(root, 4_194_305),
            Err(ProcError::Gone { .. })
        ));
    }

    #[test]
    fn namespace_addresses_from_fib_trie_and_if_inet6() {
        let trie = "Main:\n  +-- 0.0.0.0/1 2 0 2\n     +-- 10.231.0.0/30 2 0 1\n        |-- 10.231.0.0\n           /30 link UNICAST\n        |-- 10.231.0.2\n           /32 host LOCAL\n        |-- 10.231.0.3\n           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\nLocal:\n        |-- 10.231.0.2\n           /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie_locals(trie),
            vec![IpAddr::from([10, 231, 0, 2])]
        );
        let inet6 = "fe80000000000000684151fffe0caa0a 05 40 20 c0     eth0\n\
                     00000000000000000000000000000001 01 80 10 80       lo\n\
                     20010db8000000000000000000000005 05 40 00 80     eth0\n\
                     garbage\n";
        assert_eq!(
            parse_if_inet6_globals(inet6),
            vec!["2001:db8::5".parse::<IpAddr>().unwrap()]
        );
        // This process's own namespace has at least loopback, which is excluded.
        let own = namespace_addresses(Path::new(PROC), std::process::id()).unwrap();
        assert!(own.iter().all(|ip| !ip.is_loopback()), "{own:?}");
    }

    #[test]
    fn missing_process_is_gone() {
        // Above the kernel's maximum pid_max (2^22), so never a live process.
        let pid = 4_194_305;
        let root = Path::new(PROC);
        for result in [
            read_stat(root, pid).map(drop),
            read_status(root, pid).map(drop),
            count_fds(root, pid).map(drop),
            listening_tcp(root, pid).map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, ProcError::Gone { pid: 4_194_305 }), "{err:?}");
            assert_eq!(err.to_string(), "process 4194305 is gone");
        }
    }

    #[test]
    fn zombies_and_dead_processes_are_dead() {
        let stat = |state: char| {
            parse_stat(&format!(
                "7 (x) {state} 0 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 6 7\n"
            ))
            .unwrap()
        };
        for state in ['Z', 'X', 'x'] {
            assert!(stat(state).is_dead(), "{state}");
        }
        for state in ['R', 'S', 'D', 'T', 't', 'I'] {
            assert!(!stat(state).is_dead(), "{state}");
        }
    }

    #[test]
    fn exe_identity_is_the_executable_file() {
        let me = std::process::id();
        let exe = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(exe_identity(Path::new(PROC), me).unwrap(), ExeId::of(&exe));
        assert!(exe_identity(Path::new(PROC), 4_194_305).is_err());
    }

    #[test]
    fn io_error_message_is_lower_case() {
        let err = ProcError::Io {
            path: PathBuf::from("/proc/42/status"),
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(err.to_string(), "read /proc/42/status: permission denied");
    }
}
