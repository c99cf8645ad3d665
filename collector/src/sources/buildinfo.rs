//! Go build info from an executable, found the way Go's own `debug/buildinfo` finds it.
//!
//! This is how the collector decides whether a process is a Go program at all, and where
//! it gets the Go version, main package and VCS stamp it labels the process with. It
//! reads the ELF and program headers, the section headers if any, at most 64 KiB of the
//! data segment and the two strings: every read is bounded, none is of the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::Endianness;
use object::elf::{FileHeader32, FileHeader64, PF_W, PF_X, PT_LOAD};
use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

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
    /// The main module's checksum (usually empty: the main module is not downloaded).
    pub main_sum: String,
    /// The main module's replacement, if any.
    pub main_replace: Option<Module>,
    /// Every dependency module (`dep` lines), with its replacement (`=>` lines).
    pub deps: Vec<Module>,
}

/// A module of a build: path, version, checksum, and what replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Module {
    pub path: String,
    pub version: String,
    pub sum: String,
    pub replace: Option<Box<Module>>,
}

impl Module {
    fn from_columns(rest: &str) -> Module {
        let mut cols = rest.split('\t');
        Module {
            path: cols.next().unwrap_or_default().to_string(),
            version: cols.next().unwrap_or_default().to_string(),
            sum: cols.next().unwrap_or_default().to_string(),
            replace: None,
        }
    }

    fn to_wire(&self) -> goroscope_proto::v1::Module {
        goroscope_proto::v1::Module {
            path: self.path.clone(),
            version: self.version.clone(),
            sum: self.sum.clone(),
            replace: self.replace.as_ref().map(|r| Box::new(r.to_wire())),
        }
    }
}

/// Modules and settings sent at most, and the longest string: what the aggregator
/// accepts (a build beyond them is cut, never refused).
const MAX_WIRE_DEPS: usize = 4096;
const MAX_WIRE_SETTINGS: usize = 256;
const MAX_WIRE_STRING: usize = 4096;

impl BuildInfo {
    /// The build as the wire carries it, cut to what the aggregator accepts.
    pub fn to_wire(&self) -> goroscope_proto::v1::BuildInfo {
        fn cut(s: &str) -> String {
            if s.len() <= MAX_WIRE_STRING {
                return s.to_owned();
            }
            let mut end = MAX_WIRE_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        }
        fn module(m: &Module) -> goroscope_proto::v1::Module {
            let mut w = m.to_wire();
            for s in [&mut w.path, &mut w.version, &mut w.sum] {
                *s = cut(s);
            }
            if let Some(r) = &mut w.replace {
                for s in [&mut r.path, &mut r.version, &mut r.sum] {
                    *s = cut(s);
                }
            }
            w
        }
        goroscope_proto::v1::BuildInfo {
            go_version: cut(&self.go_version),
            path: cut(&self.path),
            main: (!self.main_module.is_empty()).then(|| {
                module(&Module {
                    path: self.main_module.clone(),
                    version: self.main_version.clone(),
                    sum: self.main_sum.clone(),
                    replace: self.main_replace.clone().map(Box::new),
                })
            }),
            deps: self.deps.iter().take(MAX_WIRE_DEPS).map(module).collect(),
            settings: self
                .settings
                .iter()
                .take(MAX_WIRE_SETTINGS)
                .map(|(k, v)| goroscope_proto::v1::Label {
                    name: cut(k),
                    value: cut(v),
                })
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildInfoError {
    #[error("read {}: {}", path.display(), lower_io(source))]
    Io { path: PathBuf, source: io::Error },
    // NotElf and NotGo carry no path: they are the answer for most processes on a host,
    // and the caller already knows which file it asked about.
    #[error("not an elf file")]
    NotElf,
    #[error("not a go program: no go build info")]
    NotGo,
    #[error("malformed go build info: {0}")]
    Malformed(String),
}

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: u64 = 32;
/// The linker aligns the build info blob; the magic is looked for only there.
const ALIGN: u64 = 16;
const PTR_SIZE_OFFSET: usize = 14;
const FLAGS_OFFSET: usize = 15;
const POINTERS_OFFSET: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Set since Go 1.18: the strings follow the header. Unset, the header holds pointers
/// to the two Go string variables in the data segment.
const FLAG_INLINE_STRINGS: u8 = 0x2;
const SECTION_NAME: &[u8] = b".go.buildinfo";
/// How much of the data segment is searched for the magic when there is no
/// `.go.buildinfo` section. The linker puts the blob at the segment's start; this is
/// the bound Go's `debug/buildinfo` used before it read whole segments.
const SEARCH_LEN: u64 = 64 << 10;
/// Module info of even very large programs is tens of kilobytes; anything near this is a
/// corrupt length, and we must not allocate whatever size it claims.
const MAX_STRING_LEN: u64 = 16 << 20;
const MAX_HEADER_TABLE_LEN: u64 = 16 << 20;
const MAX_SHSTRTAB_LEN: u64 = 1 << 20;

/// Reads the build info of the executable at `path` (normally `/proc/PID/exe`).
///
/// Returns [`BuildInfoError::NotElf`] or [`BuildInfoError::NotGo`] for the common case
/// of a process that is not a Go program.
pub fn read_build_info(path: &Path) -> Result<BuildInfo, BuildInfoError> {
    let file = File::open(path).map_err(|source| BuildInfoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_build_info_from(&file, path)
}

/// [`read_build_info`] of a file already open; `path` names it in errors.
pub fn read_build_info_from(file: &File, path: &Path) -> Result<BuildInfo, BuildInfoError> {
    let io_err = |source| BuildInfoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut ident = [0u8; 16];
    match file.read_exact_at(&mut ident, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(BuildInfoError::NotElf),
        Err(e) => return Err(io_err(e)),
    }
    if &ident[..4] != b"\x7fELF" {
        return Err(BuildInfoError::NotElf);
    }
    let file_len = file.metadata().map_err(io_err)?.len();
    let image = match ident[4] {
        object::elf::ELFCLASS32 => ElfImage::parse::<FileHeader32<Endianness>>(file, file_len),
        object::elf::ELFCLASS64 => ElfImage::parse::<FileHeader64<Endianness>>(file, file_len),
        _ => Err("unknown elf class".to_string()),
    }
    .map_err(|reason| malformed_at(path, &reason))?;
    let (start, size) = image.data_start.ok_or(BuildInfoError::NotGo)?;
    let image = Located {
        image: &image,
        path,
    };
    let at = search_magic(&image, start, size).map_err(|e| in_file(e, path))?;
    decode_at(&image, at).map_err(|e| in_file(e, path))
}

fn malformed_at(path: &Path, reason: &str) -> BuildInfoError {
    BuildInfoError::Malformed(format!("{}: {reason}", path.display()))
}

fn in_file(e: BuildInfoError, path: &Path) -> BuildInfoError {
    match e {
        BuildInfoError::Malformed(reason) => malformed_at(path, &reason),
        other => other,
    }
}

/// A program's bytes by virtual address, as the loader maps them from its file.
trait Memory {
    /// Up to `len` bytes at `addr`: fewer where the file-backed part of the segment
    /// holding `addr` ends, none where no segment holds it.
    fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, BuildInfoError>;
}

/// A loadable segment's file-backed part.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

struct ElfImage<'f> {
    file: &'f File,
    file_len: u64,
    segments: Vec<Segment>,
    /// Where the build info is looked for (address, size): the `.go.buildinfo` section,
    /// else the first writable, non-executable loadable segment; `None` if neither.
    data_start: Option<(u64, u64)>,
}

impl<'f> ElfImage<'f> {
    fn parse<Elf: FileHeader<Endian = Endianness>>(
        file: &'f File,
        file_len: u64,
    ) -> Result<ElfImage<'f>, String> {
        let lower = |e: object::read::Error| lower_first(&e.to_string());
        let cache = ReadCache::new(file);
        let header = Elf::parse(&cache).map_err(lower)?;
        let endian = header.endian().map_err(lower)?;
        let phnum = header.phnum(endian, &cache).map_err(lower)? as u64;
        if phnum.saturating_mul(u64::from(header.e_phentsize(endian))) > MAX_HEADER_TABLE_LEN {
            return Err("program header table is implausibly large".to_string());
        }
        let mut segments = Vec::new();
        let mut first_data = None;
        for ph in header.program_headers(endian, &cache).map_err(lower)? {
            if ph.p_type(endian) != PT_LOAD {
                continue;
            }
            let vaddr: u64 = ph.p_vaddr(endian).into();
            segments.push(Segment {
                vaddr,
                offset: ph.p_offset(endian).into(),
                filesz: ph.p_filesz(endian).into(),
            });
            if first_data.is_none() && ph.p_flags(endian) & (PF_X | PF_W) == PF_W {
                first_data = Some((vaddr, ph.p_memsz(endian).into()));
            }
        }
        // A table we cannot read is treated like none at all, as for a binary stripped of
        // its section headers: the data segment is searched instead.
        let section = find_section(header, endian, &cache).unwrap_or(None);
        Ok(ElfImage {
            file,
            file_len,
            segments,
            data_start: section.or(first_data).filter(|&(_, size)| size > 0),
        })
    }
}

impl ElfImage<'_> {
    /// See [`Memory::read`].
    fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, io::Error> {
        // Go's debug/buildinfo reads through the program headers in this order too.
        let Some(seg) = self.segments.iter().find(|s| {
            addr >= s.vaddr && s.vaddr.checked_add(s.filesz).is_some_and(|end| addr < end)
        }) else {
            return Ok(Vec::new());
        };
        let start = seg.offset.saturating_add(addr - seg.vaddr);
        let in_segment = seg.vaddr + seg.filesz - addr;
        let in_file = self.file_len.saturating_sub(start);
        let n = len.min(in_segment).min(in_file);
        let mut buf = vec![0u8; n as usize];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(buf)
    }
}

/// An [`ElfImage`] whose I/O errors name its file.
struct Located<'a> {
    image: &'a ElfImage<'a>,
    path: &'a Path,
}

/// Bytes of a build info blob held in memory, at address `base`.
struct Bytes<'a> {
    base: u64,
    data: &'a [u8],
}

impl Memory for Bytes<'_> {
    fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, BuildInfoError> {
        let Some(start) = addr
            .checked_sub(self.base)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s < self.data.len())
        else {
            return Ok(Vec::new());
        };
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(self.data[start..end.min(self.data.len())].to_vec())
    }
}

impl Memory for Located<'_> {
    fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, BuildInfoError> {
        self.image
            .read(addr, len)
            .map_err(|source| BuildInfoError::Io {
                path: self.path.to_path_buf(),
                source,
            })
    }
}

/// The address and size of `.go.buildinfo`, `None` if the ELF file has no such section.
fn find_section<Elf: FileHeader<Endian = Endianness>>(
    header: &Elf,
    endian: Endianness,
    cache: &ReadCache<&File>,
) -> Result<Option<(u64, u64)>, String> {
    let lower = |e: object::read::Error| lower_first(&e.to_string());
    let shnum = header.shnum(endian, cache).map_err(lower)? as u64;
    if shnum.saturating_mul(u64::from(header.e_shentsize(endian))) > MAX_HEADER_TABLE_LEN {
        return Err("section header table is implausibly large".to_string());
    }
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
            return Ok(Some((
                section.sh_addr(endian).into(),
                section.sh_size(endian).into(),
            )));
        }
    }
    Ok(None)
}

/// The address of the first 16-byte aligned magic among the first [`SEARCH_LEN`] bytes
/// of `[start, start + size)`, as Go's `searchMagic` finds it.
fn search_magic(mem: &impl Memory, start: u64, size: u64) -> Result<u64, BuildInfoError> {
    let end = start
        .checked_add(size)
        .ok_or_else(|| BuildInfoError::Malformed("data segment wraps around".to_string()))?;
    // The magic cannot be in the unaligned head.
    let Some(aligned) = start.checked_add(ALIGN - 1).map(|a| a & !(ALIGN - 1)) else {
        return Err(BuildInfoError::NotGo);
    };
    if aligned >= end {
        return Err(BuildInfoError::NotGo);
    }
    let remaining = end - aligned;
    let data = mem.read(aligned, remaining.min(SEARCH_LEN))?;
    let found = data
        .chunks(ALIGN as usize)
        .position(|chunk| chunk.starts_with(MAGIC))
        .map(|i| i as u64 * ALIGN);
    match found {
        // Go refuses a magic without room for the whole header after it.
        Some(i) if remaining - i >= HEADER_LEN => Ok(aligned + i),
        _ => Err(BuildInfoError::NotGo),
    }
}

/// Parses the bytes of a `.go.buildinfo` section (either format; pointers of the
/// pre-1.18 format are taken as offsets into `data`).
pub fn parse_build_info_section(data: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    if !data.starts_with(MAGIC) {
        return Err(BuildInfoError::Malformed("bad magic".to_string()));
    }
    decode_at(&Bytes { base: 0, data }, 0)
}

/// Decodes the blob whose magic is at `addr`.
fn decode_at(mem: &impl Memory, addr: u64) -> Result<BuildInfo, BuildInfoError> {
    let malformed = |s: &str| BuildInfoError::Malformed(s.to_string());
    let header = mem.read(addr, HEADER_LEN)?;
    if header.len() < HEADER_LEN as usize {
        return Err(malformed("truncated header"));
    }
    let flags = header[FLAGS_OFFSET];
    let (version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
        let after = addr
            .checked_add(HEADER_LEN)
            .ok_or_else(|| malformed("truncated header"))?;
        let (version, next) = read_string(mem, after)?;
        let (modinfo, _) = read_string(mem, next)?;
        (version, modinfo)
    } else {
        // Before Go 1.18: pointers, of the target's size and byte order, to the two Go
        // string headers (data pointer, length) of runtime.buildVersion and
        // runtime.modinfo.
        let ptr_size = usize::from(header[PTR_SIZE_OFFSET]);
        if ptr_size != 4 && ptr_size != 8 {
            return Err(BuildInfoError::Malformed(format!(
                "pointer size {ptr_size} is neither 4 nor 8"
            )));
        }
        let ptr = Pointers {
            size: ptr_size,
            big_endian: flags & FLAG_BIG_ENDIAN != 0,
        };
        let version_at = ptr.get(&header[POINTERS_OFFSET..]);
        let modinfo_at = ptr.get(&header[POINTERS_OFFSET + ptr_size..]);
        let version = ptr
            .read_go_string(mem, version_at)?
            .ok_or_else(|| malformed("go version points outside the file's segments"))?;
        // As in Go: a module string that cannot be read leaves the version alone.
        let modinfo = ptr.read_go_string(mem, modinfo_at)?.unwrap_or_default();
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(malformed("empty go version"));
    }

    let mut info = BuildInfo {
        go_version: String::from_utf8_lossy(&version).into_owned(),
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

/// The pointer format of a pre-1.18 build info header.
struct Pointers {
    size: usize,
    big_endian: bool,
}

impl Pointers {
    /// The pointer at the start of `b` (which holds at least one).
    fn get(&self, b: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        let b = &b[..self.size];
        if self.big_endian {
            bytes[8 - self.size..].copy_from_slice(b);
            u64::from_be_bytes(bytes)
        } else {
            bytes[..self.size].copy_from_slice(b);
            u64::from_le_bytes(bytes)
        }
    }

    /// The Go string whose header (data pointer, length) is at `addr`; `None` if the
    /// header or the bytes it points to are not in the file.
    fn read_go_string(
        &self,
        mem: &impl Memory,
        addr: u64,
    ) -> Result<Option<Vec<u8>>, BuildInfoError> {
        let header = mem.read(addr, 2 * self.size as u64)?;
        if header.len() < 2 * self.size {
            return Ok(None);
        }
        let data_at = self.get(&header);
        let len = self.get(&header[self.size..]);
        if len > MAX_STRING_LEN {
            return Err(BuildInfoError::Malformed(format!(
                "string of {len} bytes is implausibly long"
            )));
        }
        let data = mem.read(data_at, len)?;
        Ok((data.len() as u64 == len).then_some(data))
    }
}

/// One uvarint-length-prefixed string at `addr`, and the address after it.
fn read_string(mem: &impl Memory, addr: u64) -> Result<(Vec<u8>, u64), BuildInfoError> {
    let malformed = |s: &str| BuildInfoError::Malformed(s.to_string());
    let prefix = mem.read(addr, 10)?;
    let (len, n) = uvarint(&prefix).ok_or_else(|| malformed("bad string length"))?;
    let past_the_end = || malformed("string length past the end of the section");
    let start = addr.checked_add(n as u64).ok_or_else(past_the_end)?;
    let data = mem.read(start, len.min(MAX_STRING_LEN))?;
    if (data.len() as u64) < len {
        return Err(past_the_end());
    }
    Ok((data, start + len))
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
                let m = Module::from_columns(rest);
                info.main_module = m.path;
                info.main_version = m.version;
                info.main_sum = m.sum;
            }
            "dep" => info.deps.push(Module::from_columns(rest)),
            // Replaces the module on the line before: the last dep, or the main module.
            "=>" => {
                let replacement = Module::from_columns(rest);
                match info.deps.last_mut() {
                    Some(dep) => dep.replace = Some(Box::new(replacement)),
                    None => info.main_replace = Some(replacement),
                }
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
pub(crate) mod tests {
    use super::*;

    const HEADER: usize = HEADER_LEN as usize;

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
        data.resize(HEADER, 0);
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
        assert_eq!(info.main_sum, "h1:abc=");
        assert_eq!(info.deps.len(), 2);
        assert_eq!(
            (
                info.deps[0].path.as_str(),
                info.deps[0].version.as_str(),
                info.deps[0].sum.as_str()
            ),
            ("golang.org/x/sys", "v0.30.0", "h1:def=")
        );
        let replaced = info.deps[1].replace.as_deref().unwrap();
        assert_eq!(
            (replaced.path.as_str(), replaced.version.as_str()),
            ("example.com/new", "v1.1.0")
        );
        let wire = info.to_wire();
        assert_eq!(wire.main.as_ref().unwrap().version, "v1.4.2");
        assert_eq!(
            wire.deps[1].replace.as_ref().unwrap().path,
            "example.com/new"
        );
        assert_eq!(wire.settings.len(), 7);
        assert_eq!(wire.settings[2].name, "CGO_ENABLED");
    }

    #[test]
    fn unframed_or_empty_modinfo_gives_only_the_version() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        data.resize(HEADER, 0);
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
        for len in [15, 20, HEADER, HEADER + 3, data.len() - 40] {
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
        data.resize(HEADER, 0);
        put_uvarint(&mut data, u64::MAX);
        data.extend_from_slice(b"go1.26.8");
        let err = parse_build_info_section(&data).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");

        // A varint that never ends, and one that overflows 64 bits.
        let mut never_ends = data[..HEADER].to_vec();
        never_ends.extend_from_slice(&[0xff; 5]);
        assert!(matches!(
            parse_build_info_section(&never_ends),
            Err(BuildInfoError::Malformed(_))
        ));
        let mut overflows = data[..HEADER].to_vec();
        overflows.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            parse_build_info_section(&overflows),
            Err(BuildInfoError::Malformed(_))
        ));
    }

    /// A pre-1.18 blob at `base` (as the linker lays it out: header, then the two
    /// string headers, then the bytes), with pointers of `ptr_size` bytes.
    fn pointer_blob(
        base: u64,
        ptr_size: usize,
        big_endian: bool,
        version: &str,
        modinfo: &[u8],
    ) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, v: u64| {
            let bytes = if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            if big_endian {
                out.extend_from_slice(&bytes[8 - ptr_size..]);
            } else {
                out.extend_from_slice(&bytes[..ptr_size]);
            }
        };
        let headers = base + HEADER_LEN;
        let strings = headers + 4 * ptr_size as u64;
        let mut data = MAGIC.to_vec();
        data.push(ptr_size as u8);
        data.push(u8::from(big_endian));
        put(&mut data, headers);
        put(&mut data, headers + 2 * ptr_size as u64);
        data.resize(HEADER_LEN as usize, 0);
        put(&mut data, strings);
        put(&mut data, version.len() as u64);
        put(&mut data, strings + version.len() as u64);
        put(&mut data, modinfo.len() as u64);
        data.extend_from_slice(version.as_bytes());
        data.extend_from_slice(modinfo);
        data
    }

    fn framed(modinfo: &str) -> Vec<u8> {
        let mut framed = INFO_START.to_vec();
        framed.extend_from_slice(modinfo.as_bytes());
        framed.extend_from_slice(INFO_END);
        framed
    }

    #[test]
    fn reads_the_pre_1_18_pointer_format() {
        for (ptr_size, big_endian) in [(8, false), (4, false), (8, true), (4, true)] {
            let data = pointer_blob(0, ptr_size, big_endian, "go1.17.13", &framed(MODINFO));
            let info = parse_build_info_section(&data).unwrap();
            assert_eq!(info.go_version, "go1.17.13", "{ptr_size} {big_endian}");
            assert_eq!(info.path, "example.com/acme/cmd/billing");
            assert_eq!(info.main_version, "v1.4.2");
            assert_eq!(info.service_name(), "billing");
        }
        // A GOPATH build: no framed module info, the version alone.
        let data = pointer_blob(0, 8, false, "go1.16.15", b"");
        let info = parse_build_info_section(&data).unwrap();
        assert_eq!(
            (info.go_version.as_str(), info.path.as_str()),
            ("go1.16.15", "")
        );
    }

    #[test]
    fn pointer_format_with_bad_pointers_is_malformed_not_a_panic() {
        let good = pointer_blob(0, 8, false, "go1.17.13", &framed(MODINFO));
        // The version's string header points past the end.
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        let err = parse_build_info_section(&bad).unwrap_err();
        assert!(
            err.to_string().contains("go version points outside"),
            "{err}"
        );
        // A length far beyond anything real is refused before anything is allocated.
        let mut huge = good.clone();
        huge[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = parse_build_info_section(&huge).unwrap_err();
        assert!(err.to_string().contains("implausibly long"), "{err}");
        // Only the module info unreadable: the version stays, as in Go.
        let mut no_mod = good.clone();
        no_mod[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let info = parse_build_info_section(&no_mod).unwrap();
        assert_eq!(
            (info.go_version.as_str(), info.path.as_str()),
            ("go1.17.13", "")
        );
        // A pointer size Go never wrote.
        let mut odd = good.clone();
        odd[PTR_SIZE_OFFSET] = 3;
        let err = parse_build_info_section(&odd).unwrap_err();
        assert!(err.to_string().contains("pointer size 3"), "{err}");
        // Every prefix fails cleanly or succeeds, never panics.
        for len in 0..good.len() {
            let _ = parse_build_info_section(&good[..len]);
        }
    }

    /// A minimal 64-bit little-endian ELF executable without section headers: a
    /// read-only segment holding `rodata` at 0x400000 and a writable one holding `data`
    /// at `data_vaddr`.
    fn elf_without_sections(rodata: &[u8], data_vaddr: u64, data: &[u8]) -> Vec<u8> {
        const RO_OFFSET: u64 = 0x1000;
        const RW_OFFSET: u64 = 0x3000;
        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF");
        f.extend_from_slice(&[2, 1, 1, 0]);
        f.resize(16, 0);
        f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f.extend_from_slice(&62u16.to_le_bytes()); // x86-64
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&0x40_1000u64.to_le_bytes()); // entry
        f.extend_from_slice(&64u64.to_le_bytes()); // program headers
        f.extend_from_slice(&0u64.to_le_bytes()); // no section headers
        f.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 2, 64, 0, 0] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        for (flags, offset, vaddr, len) in [
            (4u32, RO_OFFSET, 0x40_0000u64, rodata.len() as u64),
            (
                6u32,
                RW_OFFSET + (data_vaddr & 0xfff),
                data_vaddr,
                data.len() as u64,
            ),
        ] {
            f.extend_from_slice(&PT_LOAD.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            for v in [offset, vaddr, vaddr, len, len + 0x1000, 0x1000] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        f.resize(RO_OFFSET as usize, 0);
        f.extend_from_slice(rodata);
        f.resize((RW_OFFSET + (data_vaddr & 0xfff)) as usize, 0);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn finds_the_pointer_format_in_the_data_segment_of_a_binary_without_sections() {
        // As a pre-1.18 linker lays it out: the blob near the start of the data segment,
        // the string headers beside it, the bytes in the read-only segment.
        let version = "go1.17.13";
        let modinfo = framed(MODINFO);
        let data_vaddr = 0x60_1008;
        let blob_at = 0x60_1020u64;
        let mut rodata = version.as_bytes().to_vec();
        rodata.extend_from_slice(&modinfo);
        let mut data = vec![0u8; (blob_at - data_vaddr) as usize];
        // A copy of the magic off the 16-byte grid is not the blob.
        data[9..9 + MAGIC.len()].copy_from_slice(MAGIC);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&[8, 0]);
        for v in [blob_at + 32, blob_at + 48] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            0x40_0000u64,
            version.len() as u64,
            0x40_0000 + version.len() as u64,
            modinfo.len() as u64,
        ] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&[0x55; 4096]);

        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("old-go");
        std::fs::write(&exe, elf_without_sections(&rodata, data_vaddr, &data)).unwrap();
        let info = read_build_info(&exe).unwrap();
        assert_eq!(info.go_version, version);
        assert_eq!(info.path, "example.com/acme/cmd/billing");

        // The same layout without the blob: an ELF file, not a Go program.
        let plain = dir.path().join("plain");
        std::fs::write(
            &plain,
            elf_without_sections(&rodata, data_vaddr, &[0x55; 8192]),
        )
        .unwrap();
        assert!(matches!(
            read_build_info(&plain),
            Err(BuildInfoError::NotGo)
        ));

        // A blob past the first 64 KiB of the segment is not looked for.
        let mut far = vec![0u8; 80 << 10];
        far.extend_from_slice(&data[(blob_at - data_vaddr) as usize..]);
        std::fs::write(&plain, elf_without_sections(&rodata, 0x60_0000, &far)).unwrap();
        assert!(matches!(
            read_build_info(&plain),
            Err(BuildInfoError::NotGo)
        ));
    }

    #[test]
    fn search_is_aligned_and_bounded() {
        let mut data = vec![0u8; 64];
        data[16..16 + MAGIC.len()].copy_from_slice(MAGIC);
        let mem = Bytes {
            base: 0x1000,
            data: &data,
        };
        assert_eq!(search_magic(&mem, 0x1000, 64).unwrap(), 0x1010);
        // Starting mid-grid rounds up; a magic without room for its header is not one.
        assert_eq!(search_magic(&mem, 0x1001, 63).unwrap(), 0x1010);
        assert!(matches!(
            search_magic(&mem, 0x1000, 40),
            Err(BuildInfoError::NotGo)
        ));
        assert!(matches!(
            search_magic(&mem, u64::MAX - 4, 2),
            Err(BuildInfoError::NotGo)
        ));
        assert!(matches!(
            search_magic(&mem, u64::MAX, 2),
            Err(BuildInfoError::Malformed(_))
        ));
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

    /// Builds `source` as module `module` in `dir` with `flags`; returns the executable.
    pub(crate) fn build_go(dir: &Path, module: &str, source: &str, flags: &[&str]) -> PathBuf {
        std::fs::write(dir.join("go.mod"), format!("module {module}\n\ngo 1.22\n")).unwrap();
        std::fs::write(dir.join("main.go"), source).unwrap();
        let exe = dir.join(module.rsplit('/').next().unwrap_or("prog"));
        let output = std::process::Command::new("go")
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(".")
            .current_dir(dir)
            .output()
            .expect("run `go build` (is the Go toolchain on PATH?)");
        assert!(
            output.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        exe
    }

    #[test]
    fn reads_a_real_go_binary() {
        let dir = tempfile::tempdir().unwrap();
        let exe = build_go(
            dir.path(),
            "example.test/hello",
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
            &["-ldflags=-s -w"],
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

        // Without its section headers the program still runs, and is still Go: found in
        // its data segment, as Go's own debug/buildinfo finds it.
        let mut bytes = std::fs::read(&exe).unwrap();
        assert_eq!(bytes[4], object::elf::ELFCLASS64);
        bytes[0x28..0x30].fill(0); // e_shoff
        bytes[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
        let bare = dir.path().join("hello-bare");
        std::fs::write(&bare, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ran = std::process::Command::new(&bare).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello\n");
        assert_eq!(read_build_info(&bare).unwrap(), info);
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
