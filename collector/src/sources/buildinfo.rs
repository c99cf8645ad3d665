//! Go build info from an executable's `.go.buildinfo` ELF section.
//!
//! This is how the collector decides whether a process is a Go program at all, and where
//! it gets the Go version, main package and VCS stamp it labels the process with. It
//! reads only the ELF header, section headers and that one section, never the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::Endianness;
use object::elf::{FileHeader32, FileHeader64};
use object::read::ReadCache;
use object::read::elf::{FileHeader, SectionHeader};

/// What Go's `debug/buildinfo` found in one executable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// The toolchain that built the binary, e.g. `go1.26.8` (may carry a suffix such as
    /// ` X:nodwarf5` when built with a `GOEXPERIMENT`).
    pub go_version: String,
    /// The main package path; `""` if absent.
    pub path: String,
    /// The main module path from the `mod` line; `""` if absent.
    pub main_module: String,
    /// The main module version, `(devel)` or e.g. `v1.2.3`; `""` if absent.
    pub main_version: String,
    /// The `vcs.revision` build setting, if the binary was stamped from a VCS checkout.
    pub vcs_revision: Option<String>,
    /// Every `build` key=value setting, in the order the binary records them.
    pub settings: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildInfoError {
    #[error("read {}: {}", path.display(), lower_io(source))]
    Io { path: PathBuf, source: io::Error },
    // NotElf and NotGo carry no path: they are the answer for most processes on a host,
    // and the caller already knows which file it asked about.
    #[error("not an elf file")]
    NotElf,
    #[error("not a go program: no .go.buildinfo section")]
    NotGo,
    #[error("malformed go build info: {0}")]
    Malformed(String),
    #[error("unsupported go build info: {0}")]
    Unsupported(&'static str),
}

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAGS_OFFSET: usize = 15;
const FLAG_INLINE_STRINGS: u8 = 0x2;
const SECTION_NAME: &[u8] = b".go.buildinfo";
/// Module info of even very large programs is tens of kilobytes; anything near this is a
/// corrupt header, and we must not allocate whatever size it claims.
const MAX_SECTION_LEN: u64 = 16 << 20;
const MAX_SHSTRTAB_LEN: u64 = 1 << 20;

/// Reads the build info of the executable at `path` (normally `/proc/PID/exe`).
///
/// Returns [`BuildInfoError::NotElf`] or [`BuildInfoError::NotGo`] cheaply for the
/// common case of a process that is not a Go program.
pub fn read_build_info(path: &Path) -> Result<BuildInfo, BuildInfoError> {
    let io_err = |source| BuildInfoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;

    let mut ident = [0u8; 16];
    match file.read_exact_at(&mut ident, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(BuildInfoError::NotElf),
        Err(e) => return Err(io_err(e)),
    }
    if &ident[..4] != b"\x7fELF" {
        return Err(BuildInfoError::NotElf);
    }

    let cache = ReadCache::new(file);
    let found = match ident[4] {
        object::elf::ELFCLASS32 => find_section::<FileHeader32<Endianness>>(&cache),
        object::elf::ELFCLASS64 => find_section::<FileHeader64<Endianness>>(&cache),
        _ => Err("unknown elf class".to_string()),
    }
    .map_err(|reason| malformed_at(path, &reason))?;
    let (offset, size) = found.ok_or(BuildInfoError::NotGo)?;

    // Read the section with the plain file rather than the cache so that an I/O error
    // stays an I/O error instead of becoming ReadCache's opaque `()`.
    let file = cache.into_inner();
    let file_len = file.metadata().map_err(io_err)?.len();
    if size > MAX_SECTION_LEN || offset.checked_add(size).is_none_or(|end| end > file_len) {
        return Err(malformed_at(
            path,
            ".go.buildinfo section extends past the file",
        ));
    }
    let mut data = vec![0u8; size as usize];
    file.read_exact_at(&mut data, offset).map_err(io_err)?;

    parse_build_info_section(&data).map_err(|e| match e {
        BuildInfoError::Malformed(reason) => malformed_at(path, &reason),
        other => other,
    })
}

fn malformed_at(path: &Path, reason: &str) -> BuildInfoError {
    BuildInfoError::Malformed(format!("{}: {reason}", path.display()))
}

/// The file offset and size of `.go.buildinfo`, `None` if the ELF file has no such section.
fn find_section<Elf: FileHeader<Endian = Endianness>>(
    cache: &ReadCache<File>,
) -> Result<Option<(u64, u64)>, String> {
    let lower = |e: object::read::Error| lower_first(&e.to_string());
    let header = Elf::parse(cache).map_err(lower)?;
    let endian = header.endian().map_err(lower)?;
    let sections = header.section_headers(endian, cache).map_err(lower)?;
    if sections.is_empty() {
        return Ok(None);
    }
    let shstrndx = header.shstrndx(endian, cache).map_err(lower)? as usize;
    let shstrtab = sections
        .get(shstrndx)
        .ok_or_else(|| "section name table index out of range".to_string())?;
    // One read of the whole (small) name table, instead of object's StringTable which
    // would seek and read once per section name.
    let (_, names_len) = shstrtab.file_range(endian).unwrap_or((0, 0));
    if names_len > MAX_SHSTRTAB_LEN {
        return Err("section name table is implausibly large".to_string());
    }
    let names = shstrtab.data(endian, cache).map_err(lower)?;

    for section in sections {
        let start = section.sh_name(endian) as usize;
        let Some(name) = names.get(start..) else {
            continue;
        };
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == SECTION_NAME {
            return Ok(Some(section.file_range(endian).ok_or_else(|| {
                ".go.buildinfo section has no file data".to_string()
            })?));
        }
    }
    Ok(None)
}

/// Parses the bytes of a `.go.buildinfo` section (Go 1.18+ inline-string format).
pub fn parse_build_info_section(data: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    let malformed = |s: &str| BuildInfoError::Malformed(s.to_string());
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(malformed("bad magic"));
    }
    let flags = *data
        .get(FLAGS_OFFSET)
        .ok_or_else(|| malformed("truncated header"))?;
    if flags & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::Unsupported("pre-Go 1.18 buildinfo format"));
    }
    let body = data
        .get(HEADER_LEN..)
        .ok_or_else(|| malformed("truncated header"))?;
    let (version, rest) = read_string(body)?;
    let (modinfo, _) = read_string(rest)?;
    if version.is_empty() {
        return Err(malformed("empty go version"));
    }

    let mut info = BuildInfo {
        go_version: String::from_utf8_lossy(version).into_owned(),
        ..BuildInfo::default()
    };
    // Same rule as Go's debug/buildinfo: the text is framed by two 16-byte sentinels and
    // always ends in a newline, so the byte before the trailing sentinel is '\n'. A string
    // without that framing (e.g. a GOPATH-mode build) carries no module info.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        let text = String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]);
        parse_modinfo(&text, &mut info);
    }
    Ok(info)
}

/// One uvarint-length-prefixed string, and what follows it.
fn read_string(data: &[u8]) -> Result<(&[u8], &[u8]), BuildInfoError> {
    let (len, n) =
        uvarint(data).ok_or_else(|| BuildInfoError::Malformed("bad string length".to_string()))?;
    let rest = &data[n..];
    if len > rest.len() as u64 {
        return Err(BuildInfoError::Malformed(
            "string length past the end of the section".to_string(),
        ));
    }
    Ok(rest.split_at(len as usize))
}

/// Go's `binary.Uvarint`: the value and the number of bytes it took, `None` if the input
/// ends mid-varint or the value overflows 64 bits.
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The reverse of Go's `debug.BuildInfo.String`. Unlike Go we skip lines we cannot
/// parse instead of failing: the Go version alone is worth reporting.
fn parse_modinfo(text: &str, info: &mut BuildInfo) {
    for line in text.split('\n') {
        let Some((kind, rest)) = line.split_once('\t') else {
            continue;
        };
        match kind {
            "path" => info.path = rest.to_string(),
            "mod" => {
                let mut cols = rest.split('\t');
                info.main_module = cols.next().unwrap_or_default().to_string();
                info.main_version = cols.next().unwrap_or_default().to_string();
            }
            "build" => {
                if let Some((key, value)) = parse_setting(rest) {
                    if key == "vcs.revision" {
                        info.vcs_revision = Some(value.clone());
                    }
                    info.settings.push((key, value));
                }
            }
            _ => {}
        }
    }
}

/// `key=value`, where Go quotes (strconv.Quote) a key or value containing spaces, tabs,
/// quotes or newlines, e.g. `-ldflags="-s -w"`.
fn parse_setting(kv: &str) -> Option<(String, String)> {
    let (key, raw_value) = if kv.starts_with(['"', '`']) {
        let end = quoted_prefix_len(kv)?;
        let rest = kv[end..].strip_prefix('=')?;
        (go_unquote(&kv[..end])?, rest)
    } else {
        let (key, value) = kv.split_once('=')?;
        (key.to_string(), value)
    };
    if key.is_empty() {
        return None;
    }
    let value = if raw_value.starts_with(['"', '`']) {
        go_unquote(raw_value)?
    } else {
        raw_value.to_string()
    };
    Some((key, value))
}

/// Length of the Go quoted string at the start of `s` (which starts with `"` or `` ` ``).
fn quoted_prefix_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let quote = bytes[0];
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Go's `strconv.Unquote` for the forms `strconv.Quote` produces (plus raw strings).
fn go_unquote(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('`') {
        return raw.strip_suffix('`').map(str::to_string);
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            c @ (b'\\' | b'"' | b'\'') => out.push(c),
            // \x escapes are raw bytes (Quote uses them for invalid UTF-8).
            b'x' => out.push(u8::try_from(digits(&mut bytes, 2, 16)?).ok()?),
            b'u' => push_char(&mut out, char::from_u32(digits(&mut bytes, 4, 16)?)?),
            b'U' => push_char(&mut out, char::from_u32(digits(&mut bytes, 8, 16)?)?),
            d @ b'0'..=b'7' => {
                let v = u32::from(d - b'0') * 64 + digits(&mut bytes, 2, 8)?;
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The value of the next `n` digits in `radix`.
fn digits(bytes: &mut impl Iterator<Item = u8>, n: usize, radix: u32) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..n {
        v = v * radix + char::from(bytes.next()?).to_digit(radix)?;
    }
    Some(v)
}

fn push_char(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

impl BuildInfo {
    /// A short name for the program: the last element of the main package path (or of
    /// the main module path), like the name `go build` gives the executable.
    ///
    /// As in `go build`, a trailing major-version element (`.../server/v2`) is skipped,
    /// and `command-line-arguments` (a build of named `.go` files) falls back to the module.
    pub fn service_name(&self) -> String {
        let from = |p: &str| -> Option<String> {
            if p.is_empty() || p == "command-line-arguments" {
                return None;
            }
            let mut elems = p.rsplit('/').filter(|e| !e.is_empty());
            let last = elems.next()?;
            let name = if is_major_version(last) {
                elems.next().unwrap_or(last)
            } else {
                last
            };
            Some(name.to_string())
        };
        from(&self.path)
            .or_else(|| from(&self.main_module))
            .unwrap_or_default()
    }

    /// A version to show for the program: the module version if it is a real one, else
    /// the first 12 characters of the VCS revision, else whatever the module version is.
    pub fn version_label(&self) -> String {
        if !self.main_version.is_empty() && self.main_version != "(devel)" {
            return self.main_version.clone();
        }
        if let Some(rev) = self.vcs_revision.as_deref().filter(|r| !r.is_empty()) {
            return rev.chars().take(12).collect();
        }
        self.main_version.clone()
    }
}

/// `v2`, `v3`, ...: Go's semantic import versioning suffix.
fn is_major_version(elem: &str) -> bool {
    elem.strip_prefix('v').is_some_and(|n| {
        !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()) && n != "1"
    })
}

/// io::Error's Display is capitalised and carries "(os error N)"; our messages are
/// lower-case sentences.
fn lower_io(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => &text,
    };
    lower_first(text)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_START: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
    const INFO_END: &[u8; 16] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.push(8);
        data.push(FLAG_INLINE_STRINGS);
        data.resize(HEADER_LEN, 0);
        put_uvarint(&mut data, version.len() as u64);
        data.extend_from_slice(version.as_bytes());
        let mut framed = INFO_START.to_vec();
        framed.extend_from_slice(modinfo.as_bytes());
        framed.extend_from_slice(INFO_END);
        put_uvarint(&mut data, framed.len() as u64);
        data.extend_from_slice(&framed);
        while !data.len().is_multiple_of(16) {
            data.push(0);
        }
        data
    }

    const MODINFO: &str = "path\texample.com/acme/cmd/billing\n\
        mod\texample.com/acme\tv1.4.2\th1:abc=\n\
        dep\tgolang.org/x/sys\tv0.30.0\th1:def=\n\
        dep\texample.com/old\tv1.0.0\n\
        =>\texample.com/new\tv1.1.0\th1:ghi=\n\
        build\t-buildmode=exe\n\
        build\t-ldflags=\"-s -w -X main.v=\\\"q\\\"\"\n\
        build\tCGO_ENABLED=1\n\
        build\tGOEXPERIMENT=greenteagc\n\
        build\tvcs=git\n\
        build\tvcs.revision=0123456789abcdef0123456789abcdef01234567\n\
        build\tvcs.modified=false\n";

    #[test]
    fn parses_inline_section() {
        let info = parse_build_info_section(&section("go1.26.8", MODINFO)).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.path, "example.com/acme/cmd/billing");
        assert_eq!(info.main_module, "example.com/acme");
        assert_eq!(info.main_version, "v1.4.2");
        assert_eq!(
            info.vcs_revision.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        let settings: Vec<(&str, &str)> = info
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            settings,
            [
                ("-buildmode", "exe"),
                ("-ldflags", "-s -w -X main.v=\"q\""),
                ("CGO_ENABLED", "1"),
                ("GOEXPERIMENT", "greenteagc"),
                ("vcs", "git"),
                ("vcs.revision", "0123456789abcdef0123456789abcdef01234567"),
                ("vcs.modified", "false"),
            ]
        );
        assert_eq!(info.service_name(), "billing");
        assert_eq!(info.version_label(), "v1.4.2");
    }

    #[test]
    fn unframed_or_empty_modinfo_gives_only_the_version() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        data.resize(HEADER_LEN, 0);
        data.extend_from_slice(b"\x08go1.26.8\x00");
        let info = parse_build_info_section(&data).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.path, "");
        assert!(info.settings.is_empty());
        assert_eq!(info.service_name(), "");
        assert_eq!(info.version_label(), "");
    }

    #[test]
    fn rejects_bad_magic() {
        let mut data = section("go1.26.8", MODINFO);
        data[1] = b'X';
        assert!(matches!(
            parse_build_info_section(&data),
            Err(BuildInfoError::Malformed(_))
        ));
        assert!(matches!(
            parse_build_info_section(b""),
            Err(BuildInfoError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_truncated_section() {
        let data = section("go1.26.8", MODINFO);
        // Every prefix must fail cleanly (or, past the strings, succeed), never panic.
        for len in 0..data.len() {
            let _ = parse_build_info_section(&data[..len]);
        }
        for len in [15, 20, HEADER_LEN, HEADER_LEN + 3, data.len() - 40] {
            assert!(
                matches!(
                    parse_build_info_section(&data[..len]),
                    Err(BuildInfoError::Malformed(_))
                ),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn rejects_lengths_past_the_end() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        data.resize(HEADER_LEN, 0);
        put_uvarint(&mut data, u64::MAX);
        data.extend_from_slice(b"go1.26.8");
        let err = parse_build_info_section(&data).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");

        // A varint that never ends, and one that overflows 64 bits.
        let mut never_ends = data[..HEADER_LEN].to_vec();
        never_ends.extend_from_slice(&[0xff; 5]);
        assert!(matches!(
            parse_build_info_section(&never_ends),
            Err(BuildInfoError::Malformed(_))
        ));
        let mut overflows = data[..HEADER_LEN].to_vec();
        overflows.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            parse_build_info_section(&overflows),
            Err(BuildInfoError::Malformed(_))
        ));
    }

    #[test]
    fn pointer_format_is_unsupported() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, 0]);
        data.extend_from_slice(&0x4d_0000u64.to_le_bytes());
        data.extend_from_slice(&0x4d_0010u64.to_le_bytes());
        let err = parse_build_info_section(&data).unwrap_err();
        assert!(
            matches!(
                err,
                BuildInfoError::Unsupported("pre-Go 1.18 buildinfo format")
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unquotes_go_strings() {
        assert_eq!(go_unquote(r#""a b""#).as_deref(), Some("a b"));
        assert_eq!(
            go_unquote(r#""\t\"\\\x41\u00e9\U0001F600\101""#).as_deref(),
            Some("\t\"\\A\u{e9}\u{1F600}A")
        );
        assert_eq!(go_unquote("`raw \\n`").as_deref(), Some("raw \\n"));
        assert_eq!(go_unquote(r#""\x4""#), None);
        assert_eq!(go_unquote(r#""unterminated"#), None);
        assert_eq!(
            parse_setting(r#""we ird"="v=1""#),
            Some(("we ird".to_string(), "v=1".to_string()))
        );
        assert_eq!(parse_setting("=x"), None);
        assert_eq!(parse_setting("novalue"), None);
    }

    #[test]
    fn service_name_and_version_label() {
        let mut info = BuildInfo {
            path: "github.com/acme/server/v2".into(),
            main_module: "github.com/acme/server/v2".into(),
            main_version: "(devel)".into(),
            vcs_revision: Some("0123456789abcdef".into()),
            ..BuildInfo::default()
        };
        assert_eq!(info.service_name(), "server");
        assert_eq!(info.version_label(), "0123456789ab");

        info.path = "command-line-arguments".into();
        info.main_module = "example.com/tool".into();
        assert_eq!(info.service_name(), "tool");

        info.path = String::new();
        info.main_module = String::new();
        info.vcs_revision = None;
        assert_eq!(info.service_name(), "");
        assert_eq!(info.version_label(), "(devel)");
    }

    #[test]
    fn reads_a_real_go_binary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("go.mod"),
            "module example.test/hello\n\ngo 1.22\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("main.go"),
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
        )
        .unwrap();
        let exe = dir.path().join("hello");
        let output = std::process::Command::new("go")
            .args(["build", "-ldflags=-s -w", "-o"])
            .arg(&exe)
            .arg(".")
            .current_dir(dir.path())
            .output()
            .expect("run `go build` (is the Go toolchain on PATH?)");
        assert!(
            output.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        let info = read_build_info(&exe).unwrap();
        assert!(info.go_version.starts_with("go1."), "{info:?}");
        assert_eq!(info.path, "example.test/hello");
        assert_eq!(info.main_module, "example.test/hello");
        assert_eq!(info.service_name(), "hello");
        assert!(
            info.settings
                .contains(&("-ldflags".to_string(), "-s -w".to_string())),
            "{:?}",
            info.settings
        );
        assert!(info.settings.iter().any(|(k, _)| k == "GOARCH"));
    }

    #[test]
    fn non_go_files_are_cheap_misses() {
        assert!(matches!(
            read_build_info(Path::new("/bin/sh")),
            Err(BuildInfoError::NotGo)
        ));

        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "just some text, long enough to have an ident\n").unwrap();
        assert!(matches!(
            read_build_info(&text),
            Err(BuildInfoError::NotElf)
        ));
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, "\x7fEL").unwrap();
        assert!(matches!(
            read_build_info(&tiny),
            Err(BuildInfoError::NotElf)
        ));

        let err = read_build_info(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, BuildInfoError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with(": no such file or directory"),
            "{err}"
        );
    }
}
