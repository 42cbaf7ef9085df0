//! Registry authentication, the parts that need no network: Basic credentials, parsing
//! `WWW-Authenticate` challenges, building the token-endpoint URL of Docker's Bearer
//! flow and reading its answer. The client module does the HTTP round trips.

use base64::Engine;
use http::HeaderValue;

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the registry asks for credentials ({0}); pass --user and --password")]
    NeedCredentials(String),
    #[error("unsupported or malformed WWW-Authenticate challenge {0:?}")]
    BadChallenge(String),
    #[error("token endpoint answered without a token: {0}")]
    NoToken(String),
    #[error("credentials or token contain characters not allowed in a header")]
    BadHeader,
    #[error("still 401 after authenticating{}: {request}", if *.anonymous { " anonymously (pass --user and --password)" } else { "" })]
    Rejected { request: String, anonymous: bool },
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn basic_header(&self) -> Result<HeaderValue, AuthError> {
        let raw = format!("{}:{}", self.user, self.password);
        let enc = base64::engine::general_purpose::STANDARD.encode(raw);
        HeaderValue::from_str(&format!("Basic {enc}")).map_err(|_| AuthError::BadHeader)
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Result<Challenge, AuthError> {
        let bad = || AuthError::BadChallenge(header.to_string());
        let h = header.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let params = parse_params(rest).ok_or_else(bad)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Ok(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Challenge::Bearer {
                realm: get("realm").ok_or_else(bad)?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            Err(bad())
        }
    }
}

/// `k1="v1",k2=v2` (values may be quoted and contain commas) into pairs.
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.push(chars.next()?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        out.push((key.to_string(), val.trim().to_string()));
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token request URL for a Bearer challenge, with the scope we need.
pub fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&query_escape(service));
        sep = '&';
    }
    url.push(sep);
    url.push_str("scope=");
    url.push_str(&query_escape(scope));
    url
}

/// Reads `{"token": ...}` or `{"access_token": ...}` and makes the header value.
pub fn bearer_from_response(body: &[u8]) -> Result<HeaderValue, AuthError> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let excerpt = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| AuthError::NoToken(excerpt()))?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::NoToken(excerpt()))?;
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| AuthError::BadHeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("valid challenge");
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#).expect("basic"), Challenge::Basic);
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_err());
        assert!(Challenge::parse("Negotiate").is_err());
    }

    #[test]
    fn token_url_escapes() {
        assert_eq!(
            token_url("http://h/token", Some("reg"), "repository:a/b:pull,push"),
            "http://h/token?service=reg&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn token_response() {
        let h = bearer_from_response(br#"{"token":"abc"}"#).expect("token");
        assert_eq!(h, "Bearer abc");
        let h = bearer_from_response(br#"{"access_token":"xyz"}"#).expect("token");
        assert_eq!(h, "Bearer xyz");
        assert!(bearer_from_response(b"{}").is_err());
    }

    #[test]
    fn basic() {
        let c = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        assert_eq!(c.basic_header().expect("header"), "Basic dTpw");
    }
}
