//! Repository names, tags and references, validated by the distribution spec's grammar plus
//! Keelson's rule that a repository lives under a tenancy namespace (`<namespace>/<repo…>`).

use keelson_storage::Digest;

use crate::error::{ApiError, ErrorCode};

/// Longest repository name accepted (Docker's limit, counting the namespace).
pub const MAX_NAME_LEN: usize = 255;

/// Checks a repository name; returns it unchanged when valid.
pub fn validate_repo(name: &str) -> Result<&str, ApiError> {
    let invalid = |why: &str| ApiError::new(ErrorCode::NameInvalid, format!("invalid repository name: {why}"));
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 255 characters"));
    }
    let mut components = 0;
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(invalid(
                "components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            ));
        }
        components += 1;
    }
    if components < 2 {
        return Err(invalid("a repository is named <tenancy-namespace>/<repo>"));
    }
    Ok(name)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or "-+", followed by an alphanumeric
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= bytes.len() || !alnum(bytes[i]) {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ApiError> {
        if text.contains(':') {
            return Ok(Reference::Digest(Digest::parse(text)?));
        }
        if valid_tag(text) {
            Ok(Reference::Tag(text.to_string()))
        } else {
            Err(ApiError::new(ErrorCode::TagInvalid, "invalid tag"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in ["acme/app", "acme/team/web", "a-b/c.d", "a__b/c_d", "a---b/x", "0/1"] {
            assert!(validate_repo(ok).is_ok(), "{ok}");
        }
        let long = format!("acme/{}", "a".repeat(251));
        for bad in [
            "app",
            "Acme/app",
            "acme//app",
            "acme/app/",
            "/acme/app",
            "acme/.app",
            "acme/a..b",
            "acme/a___b",
            "acme/-a",
            "acme/a-",
            "acme/../x",
            long.as_str(),
        ] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag("v1.2-rc_3") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a/b") && !valid_tag(&"a".repeat(129))
        );
    }
}
