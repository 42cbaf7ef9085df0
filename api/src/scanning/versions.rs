//! Version order per ecosystem, as each ecosystem defines it: dpkg's for Debian (epoch,
//! upstream, revision; `~` sorts before everything), apk's for Alpine, PEP 440 for PyPI
//! (`pep440_rs`) and semver for npm, Go and crates.io (`semver`). A version that does not parse in its ecosystem
//! compares as unknown, and an advisory never matches on an unknown comparison.

use std::cmp::Ordering;

/// `a` against `b` in `ecosystem`'s order (OSV's ecosystem names, release suffix allowed).
pub fn compare(ecosystem: &str, a: &str, b: &str) -> Option<Ordering> {
    let base = ecosystem.split(':').next().unwrap_or(ecosystem);
    match base {
        "Debian" | "Ubuntu" => Some(debian(a, b)),
        "Alpine" => apk(a, b),
        "PyPI" => {
            let a: pep440_rs::Version = a.parse().ok()?;
            let b: pep440_rs::Version = b.parse().ok()?;
            Some(a.cmp(&b))
        }
        "npm" | "Go" | "crates.io" | "SEMVER" => semver(a, b),
        _ => None,
    }
}

/// semver's precedence (a leading `v` allowed).
pub fn semver(a: &str, b: &str) -> Option<Ordering> {
    let a = semver::Version::parse(a.trim_start_matches('v')).ok()?;
    let b = semver::Version::parse(b.trim_start_matches('v')).ok()?;
    Some(a.cmp_precedence(&b))
}

/// dpkg's version comparison (deb-version(7)).
pub fn debian(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_debian(a);
    let (eb, ub, rb) = split_debian(b);
    ea.cmp(&eb)
        .then_with(|| dpkg_part(ua, ub))
        .then_with(|| dpkg_part(ra, rb))
}

fn split_debian(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// The order of one non-digit character: `~` first, then the end, then letters, then the rest.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn dpkg_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefixes, character by character.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let order = dpkg_order(ca).cmp(&dpkg_order(cb));
            if order != Ordering::Equal {
                return order;
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Digit runs, numerically.
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let order = numeric(&a[..da], &b[..db]);
        if order != Ordering::Equal {
            return order;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

/// Two runs of ASCII digits compared as numbers of any length.
fn numeric(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
    let (a, b) = (&a[trim(a)..], &b[trim(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// apk's order for `1.2.3[letter][_suffix[N]...]-rN`.
pub fn apk(a: &str, b: &str) -> Option<Ordering> {
    let (va, ra) = a.rsplit_once("-r").unwrap_or((a, "0"));
    let (vb, rb) = b.rsplit_once("-r").unwrap_or((b, "0"));
    let (ra, rb): (u64, u64) = (ra.parse().ok()?, rb.parse().ok()?);
    let (na, sa) = va.split_once('_').unwrap_or((va, ""));
    let (nb, sb) = vb.split_once('_').unwrap_or((vb, ""));
    let order = dpkg_part(na, nb)
        .then_with(|| suffix_rank(sa).cmp(&suffix_rank(sb)))
        .then_with(|| dpkg_part(sa, sb))
        .then(ra.cmp(&rb));
    Some(order)
}

/// apk's suffixes: pre-releases before the release, `_p` (patch) after.
fn suffix_rank(suffix: &str) -> i32 {
    const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
    if suffix.is_empty() {
        return 0;
    }
    if let Some(i) = PRE.iter().position(|p| suffix.starts_with(p)) {
        return i as i32 - 10;
    }
    if ["cvs", "svn", "git", "hg", "p"].iter().any(|p| suffix.starts_with(p)) {
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_order_follows_deb_version() {
        assert_eq!(debian("1.0", "1.0"), Equal);
        assert_eq!(debian("1.0~rc1", "1.0"), Less);
        assert_eq!(debian("1:0.9", "2.0"), Greater);
        assert_eq!(debian("2.36-9+deb12u4", "2.36-9+deb12u10"), Less);
        assert_eq!(debian("1.2.3-1", "1.2.3-1.1"), Less);
        assert_eq!(debian("1.10", "1.9"), Greater);
        assert_eq!(debian("1.0a", "1.0+"), Less);
        assert_eq!(debian("5.2.15-2+b2", "5.2.15-2"), Greater);
        assert_eq!(debian("0:1.0", "1.0"), Equal);
    }

    #[test]
    fn ecosystems_have_their_own_orders() {
        assert_eq!(compare("PyPI", "1.0.post1", "1.0"), Some(Greater));
        assert_eq!(compare("PyPI", "1.0rc1", "1.0"), Some(Less));
        assert_eq!(compare("PyPI", "1!0.1", "2.0"), Some(Greater));
        assert_eq!(compare("PyPI", "2.0.dev1", "2.0a1"), Some(Less));
        assert_eq!(compare("npm", "4.17.20", "4.17.21"), Some(Less));
        assert_eq!(compare("npm", "1.0.0-beta.2", "1.0.0"), Some(Less));
        assert_eq!(compare("Debian:12", "1.0", "1.0~b"), Some(Greater));
        assert_eq!(compare("Alpine:v3.20", "1.2.3-r1", "1.2.3-r10"), Some(Less));
        assert_eq!(compare("Alpine:v3.20", "1.2.3_rc1-r0", "1.2.3-r0"), Some(Less));
        assert_eq!(compare("Alpine:v3.20", "1.2.3_p1-r0", "1.2.3-r0"), Some(Greater));
        assert_eq!(compare("npm", "not a version", "1.0.0"), None);
        assert_eq!(compare("Maven", "1", "2"), None);
    }
}
