//! net/http/pprof's index page, `/debug/pprof/`: the goroutine count from its table of
//! profiles.
//!
//! The index prints each profile's count, which for goroutines is a number the runtime
//! keeps; `goroutine?debug=1` would instead walk and print every goroutine's stack,
//! which costs the target about a tenth of a second of CPU per request at 100k
//! goroutines.

pub const INDEX_PATH: &str = "/debug/pprof/";
/// The table of profiles ends here; the descriptions after it are not read.
pub const TABLE_END: &[u8] = b"</table>";
/// Bytes of the index page read at most: a standard page is about 2 KiB, and a program
/// that registers profiles of its own adds a short row for each.
pub const MAX_INDEX_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PprofError {
    #[error("/debug/pprof/ has no goroutine row in its table of profiles")]
    NoGoroutineRow,
    #[error("/debug/pprof/ goroutine count is not a number: {0:?}")]
    BadCount(String),
}

/// The goroutine count from the index page's row for the `goroutine` profile.
///
/// Go releases print that row differently, but once the tags are dropped each is the
/// count, then the profile's name:
/// - current (and Go 1.19, as Debian's Prometheus serves it):
///   `<tr><td>42</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>`
/// - the earlier html/template page: `<tr>` and `</tr>` on lines of their own around
///   `<td>42</td><td><a href=goroutine?debug=1>goroutine</a></td>`
/// - the earliest: `<tr><td align=right>42<td><a href="goroutine?debug=1">goroutine</a>`
pub fn parse_goroutine_count(page: &[u8]) -> Result<u64, PprofError> {
    parse_index(page).map(|i| i.goroutines)
}

/// What the index page tells of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub goroutines: u64,
    /// The Go 1.26+ `goroutineleak` profile is served (a program built with
    /// `GOEXPERIMENT=goroutineleakprofile`, or a Go release where it is on by default).
    pub leak_profile: bool,
}

/// The goroutine count, and whether the goroutineleak profile has a row.
pub fn parse_index(page: &[u8]) -> Result<Index, PprofError> {
    let page = String::from_utf8_lossy(page);
    let mut goroutines = None;
    let mut leak_profile = false;
    // Whatever precedes the first row (the head, the table's header) is not a row.
    for row in page.split("<tr").skip(1) {
        let row = row.split("</table").next().unwrap_or(row);
        let mut cells = texts(row);
        let (Some(count), Some(name)) = (cells.next(), cells.next()) else {
            continue;
        };
        match name {
            "goroutine" if goroutines.is_none() => {
                goroutines = Some(
                    count
                        .parse()
                        .map_err(|_| PprofError::BadCount(count.chars().take(40).collect()))?,
                );
            }
            "goroutineleak" => leak_profile = true,
            _ => {}
        }
    }
    Ok(Index {
        goroutines: goroutines.ok_or(PprofError::NoGoroutineRow)?,
        leak_profile,
    })
}

/// The non-blank texts between the tags of an HTML fragment, trimmed. The fragment may
/// start inside a tag (`<tr` has been split off), whose rest is skipped.
fn texts(fragment: &str) -> impl Iterator<Item = &str> {
    let body = fragment.split_once('>').map_or("", |(_, rest)| rest);
    body.split('<')
        .filter_map(|piece| piece.split_once('>').map_or(Some(piece), |(_, t)| Some(t)))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's Prometheus (built with Go 1.19) serves, up to the table's end.
    const GO_1_19: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n<style>\n.profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}\n</style>\n</head>\n<body>\n/debug/pprof/<br>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
<tr><td>5</td><td><a href='allocs?debug=1'>allocs</a></td></tr>\n\
<tr><td>0</td><td><a href='block?debug=1'>block</a></td></tr>\n\
<tr><td>0</td><td><a href='cmdline?debug=1'>cmdline</a></td></tr>\n\
<tr><td>4</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>\n\
<tr><td>5</td><td><a href='heap?debug=1'>heap</a></td></tr>\n\
<tr><td>6</td><td><a href='threadcreate?debug=1'>threadcreate</a></td></tr>\n\
</table>";

    /// The current page (net/http/pprof's indexTmplExecute), with a profile of the
    /// program's own sorted before `goroutine`.
    const CURRENT: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n<br>\n<p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
<tr><td>14</td><td><a href='allocs?debug=1'>allocs</a></td></tr>\n\
<tr><td>3</td><td><a href='app.goroutines?debug=1'>app.goroutines</a></td></tr>\n\
<tr><td>103456</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>\n\
<tr><td>0</td><td><a href='trace?debug=1'>trace</a></td></tr>\n\
</table>\n<a href=\"goroutine?debug=2\">full goroutine stack dump</a>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n\
<li><div class=profile-name>goroutine: </div> Stack traces of all current goroutines.</li>\n</ul>\n</p>\n</body>\n</html>";

    /// The html/template page.
    const TEMPLATE: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/<br>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\n\
\t<tr>\n\t<td>12</td><td><a href=allocs?debug=1>allocs</a></td>\n\t</tr>\n\n\
\t<tr>\n\t<td>77</td><td><a href=goroutine?debug=1>goroutine</a></td>\n\t</tr>\n\n\
</table>\n<a href=\"goroutine?debug=2\">full goroutine stack dump</a>\n";

    /// The earliest page: no closing tags in the rows.
    const EARLIEST: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n/debug/pprof/<br>\n<br>\n<body>\nprofiles:<br>\n<table>\n\
<tr><td align=right>1<td><a href=\"block?debug=1\">block</a>\n\
<tr><td align=right>8<td><a href=\"goroutine?debug=1\">goroutine</a>\n\
<tr><td align=right>2<td><a href=\"heap?debug=1\">heap</a>\n\
</table>\n<br>\n<a href=\"goroutine?debug=2\">full goroutine stack dump</a><br>\n</body>\n</html>";

    #[test]
    fn reads_the_goroutine_row_of_every_layout() {
        assert_eq!(parse_goroutine_count(GO_1_19.as_bytes()), Ok(4));
        assert_eq!(parse_goroutine_count(CURRENT.as_bytes()), Ok(103456));
        assert_eq!(parse_goroutine_count(TEMPLATE.as_bytes()), Ok(77));
        assert_eq!(parse_goroutine_count(EARLIEST.as_bytes()), Ok(8));
    }

    #[test]
    fn a_page_cut_after_the_row_is_enough() {
        let cut = &CURRENT[..CURRENT.find("<tr><td>0</td>").unwrap()];
        assert_eq!(parse_goroutine_count(cut.as_bytes()), Ok(103456));
    }

    #[test]
    fn rejects_anything_else() {
        for page in [
            &b"404 page not found\n"[..],
            b"",
            b"\xff\xfe<tr",
            b"<table><tr><td>5</td><td>heap</td></tr></table>",
            // The row cut before its name: no row yet.
            b"<table><tr><td>5</td><td><a href='goroutine?debug=1'>",
        ] {
            assert_eq!(
                parse_goroutine_count(page),
                Err(PprofError::NoGoroutineRow),
                "{}",
                String::from_utf8_lossy(page)
            );
        }
        let err =
            parse_goroutine_count(b"<tr><td>lots</td><td><a>goroutine</a></td></tr>").unwrap_err();
        assert_eq!(err, PprofError::BadCount("lots".into()));
        assert!(parse_goroutine_count(b"<tr><td>-1</td><td>goroutine</td>").is_err());
    }
}
