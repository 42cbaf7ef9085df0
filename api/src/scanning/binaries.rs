//! What compiled programs say they were built from. A Go program (Go 1.18 and later) carries
//! its build information in its data: the Go version it was built with (its standard library)
//! and, when built in module mode, every module it links. Static binaries installed outside any
//! package manager are invisible to package databases; this is how a scanner still sees them.
//!
//! The build information is found by streaming: an executable's bytes pass through once (they
//! are read anyway, the layer being one compressed stream) and a 16-byte-aligned
//! `\xff Go buildinf:` header is searched for, so no binary is held in memory. What is kept is
//! the version and the module list, bounded by [`MAX_MODINFO`].

use std::io::{self, Read};

use super::inventory::Package;

/// The build information header's magic, at a 16-byte-aligned offset of the file.
const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// The header: magic, pointer size, flags, padding to 32 bytes.
const HEADER: usize = 32;
/// Flag bit: version and module info follow the header inline (Go 1.18+).
const INLINE_STRINGS: u8 = 0x2;
/// Largest module list kept (a large program links a few hundred modules, ~100 bytes each).
pub const MAX_MODINFO: usize = 1 << 20;
/// Largest version string (`go1.22.5 X:boringcrypto`).
const MAX_VERSION: usize = 128;
/// What [`sniff`] stores for a Go program begins with this, so the inventory knows it.
pub const GO_TAG: &[u8] = b"\0go-buildinfo\0";

/// The Go build information of an executable read from `file`, tagged with [`GO_TAG`]:
/// `<tag><version>\n<module info>`. `None` when it is not a Go 1.18+ program.
pub fn sniff(mut file: impl Read) -> io::Result<Option<Vec<u8>>> {
    let finder = memchr::memmem::Finder::new(GO_MAGIC);
    let mut buf = vec![0u8; 256 << 10];
    let (mut filled, mut base) = (0usize, 0u64);
    let mut first = true;
    loop {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(None);
        }
        filled += n;
        if first && filled >= 4 {
            if !buf.starts_with(b"\x7fELF") {
                return Ok(None);
            }
            first = false;
        }
        let mut from = 0;
        while let Some(i) = finder.find(&buf[from..filled]) {
            let at = from + i;
            if (base + at as u64).is_multiple_of(16) {
                let mut rest = buf[at..filled].to_vec();
                return inline_strings(&mut rest, &mut file);
            }
            from = at + 1;
        }
        // Keep the tail a magic could start in.
        let keep = filled.min(GO_MAGIC.len() - 1);
        buf.copy_within(filled - keep..filled, 0);
        base += (filled - keep) as u64;
        filled = keep;
    }
}

/// Reads the version and module info after a header found at the start of `head` (more bytes
/// come from `rest` as needed).
fn inline_strings(head: &mut Vec<u8>, rest: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let want = HEADER + 10 + MAX_VERSION + 10 + MAX_MODINFO;
    if head.len() < want {
        rest.take((want - head.len()) as u64).read_to_end(head)?;
    }
    if head.len() < HEADER || head[GO_MAGIC.len() + 1] & INLINE_STRINGS == 0 {
        return Ok(None); // before Go 1.18 the strings sit elsewhere, behind pointers
    }
    let mut at = HEADER;
    let Some(version) = varint_string(head, &mut at, MAX_VERSION) else {
        return Ok(None);
    };
    let modinfo = varint_string(head, &mut at, MAX_MODINFO).unwrap_or_default();
    Ok(Some([GO_TAG, version, b"\n", modinfo].concat()))
}

/// A string prefixed with its length as an unsigned varint, at most `max` bytes.
fn varint_string<'a>(bytes: &'a [u8], at: &mut usize, max: usize) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    if len > max {
        return None;
    }
    let s = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(s)
}

/// The packages a tagged build information names: the standard library (`stdlib` at the Go
/// version) and every module, a replaced module under its replacement.
pub fn go_packages(tagged: &[u8], path: &str) -> Vec<Package> {
    let Some(body) = tagged.strip_prefix(GO_TAG) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines();
    let mut out = Vec::new();
    let go = |name: &str, version: &str, purl_version: &str| Package {
        ecosystem: "Go".into(),
        name: name.to_string(),
        version: version.to_string(),
        installed_name: name.to_string(),
        installed_version: version.to_string(),
        location: path.to_string(),
        purl: format!("pkg:golang/{name}@{purl_version}"),
    };
    if let Some(stdlib) = lines
        .next()
        .and_then(|v| v.split_whitespace().next())
        .and_then(go_release)
    {
        out.push(go("stdlib", &stdlib, &stdlib));
    }
    // The module info sits between two 16-byte sentinels, one line per field.
    let mut module_before = false;
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let module = match fields.as_slice() {
            ["mod" | "dep" | "=>", name, version, ..] if version.starts_with('v') => {
                Some(go(name, version.trim_start_matches('v'), version))
            }
            _ => None,
        };
        if fields.first() == Some(&"=>") && module_before {
            out.pop(); // a replacement stands for the module on the line before
        }
        module_before = module.is_some();
        out.extend(module);
    }
    out
}

/// `go1.19.8` → `1.19.8`; a first release (`go1.21`) gets its `.0`; a release candidate
/// (`go1.21rc2`) becomes the prerelease `1.21.0-rc2`, as OSV's Go advisories write them.
pub fn go_release(version: &str) -> Option<String> {
    let v = version.strip_prefix("go")?;
    let (numbers, pre) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let mut parts: Vec<&str> = numbers.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        || parts.len() > 3
    {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    let mut out = parts.join(".");
    if let Some(pre) = pre {
        out.push('-');
        out.push_str(pre);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF-looking file with a build information header at `offset`.
    fn program(offset: usize, flags: u8, version: &str, modinfo: &str) -> Vec<u8> {
        let mut file = b"\x7fELF".to_vec();
        file.resize(offset, 0x90);
        file.extend_from_slice(GO_MAGIC);
        file.extend_from_slice(&[8, flags]);
        file.resize(offset + HEADER, 0);
        for s in [version, modinfo] {
            let mut len = s.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                file.push(if len > 0 { b | 0x80 } else { b });
                if len == 0 {
                    break;
                }
            }
            file.extend_from_slice(s.as_bytes());
        }
        file.extend_from_slice(&[0u8; 4096]);
        file
    }

    /// Reads in small pieces, so the magic straddles reads.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    const MODINFO: &str = "0w\u{af}\u{c}path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
        dep\tgolang.org/x/net\tv0.7.0\th1:abc=\ndep\tgithub.com/old/yaml\tv1.0.0\th1:def=\n\
        =>\tgithub.com/new/yaml\tv1.2.3\th1:ghi=\nbuild\tGOOS=linux\n";

    #[test]
    fn finds_build_information_at_an_aligned_offset_across_reads() {
        let file = program(300_000, INLINE_STRINGS, "go1.19.8", MODINFO);
        let tagged = sniff(Trickle(&file)).unwrap().expect("a Go program");
        let packages = go_packages(&tagged, "usr/bin/app");
        let named: Vec<(&str, &str)> = packages.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(
            named,
            vec![
                ("stdlib", "1.19.8"),
                ("golang.org/x/net", "0.7.0"),
                ("github.com/new/yaml", "1.2.3")
            ]
        );
        assert_eq!(packages[1].purl, "pkg:golang/golang.org/x/net@v0.7.0");
        assert!(packages
            .iter()
            .all(|p| p.ecosystem == "Go" && p.location == "usr/bin/app"));
    }

    #[test]
    fn ignores_what_is_not_a_go_program() {
        // A magic off the 16-byte grid, an old (pointer) layout, a file that is not ELF.
        assert_eq!(
            sniff(&program(1000 + 3, INLINE_STRINGS, "go1.20", "")[..]).unwrap(),
            None
        );
        assert_eq!(sniff(&program(1024, 0, "go1.20", "")[..]).unwrap(), None);
        let mut script = program(1024, INLINE_STRINGS, "go1.20", "");
        script[..4].copy_from_slice(b"#!/b");
        assert_eq!(sniff(&script[..]).unwrap(), None);
        // A length past the end or over the bound is no build information, not a panic.
        let mut cut = program(1024, INLINE_STRINGS, "go1.20", "");
        cut.truncate(1024 + HEADER + 1);
        cut[1024 + HEADER] = 0xff;
        assert_eq!(sniff(&cut[..]).unwrap(), None);
    }

    #[test]
    fn go_releases_read_as_osv_writes_them() {
        assert_eq!(go_release("go1.19.8").as_deref(), Some("1.19.8"));
        assert_eq!(go_release("go1.21").as_deref(), Some("1.21.0"));
        assert_eq!(go_release("go1.21rc2").as_deref(), Some("1.21.0-rc2"));
        assert_eq!(go_release("devel +abc"), None);
        assert_eq!(go_release("go1..2"), None);
    }
}
