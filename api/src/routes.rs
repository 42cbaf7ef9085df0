//! Maps a request path onto a distribution-API route. Repository names contain slashes, so each
//! route is recognised by its suffix (`/manifests/<ref>`, `/blobs/uploads/<id>`, …) and the name
//! is whatever precedes it.

/// A recognised route (names and references not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags {
        name: &'a str,
    },
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    Uploads {
        name: &'a str,
    },
    Upload {
        name: &'a str,
        id: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    /// `/api/v1/cluster/<rest>`
    Cluster {
        rest: &'a str,
    },
    /// `/api/v1/<rest>`: tenancies, users, groups, policies, tokens, repositories.
    Manage {
        rest: &'a str,
    },
    /// `/token`: Docker's token endpoint.
    Token,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/healthz`: the process serves.
    Healthz,
    /// `/readyz`: the node is a caught-up member with writable storage.
    Readyz,
    /// `/console` and `/console/<rest>`: the web console's pages, assets and session.
    Console {
        rest: &'a str,
    },
    NotFound,
}

pub fn parse(path: &str) -> Route<'_> {
    if path == "/v2/" || path == "/v2" {
        return Route::Base;
    }
    if let Some(rest) = path.strip_prefix("/api/v1/cluster/") {
        return Route::Cluster { rest };
    }
    if let Some(rest) = path.strip_prefix("/api/v1/") {
        return Route::Manage { rest };
    }
    if path == "/token" || path == "/token/" {
        return Route::Token;
    }
    match path {
        "/metrics" => return Route::Metrics,
        "/healthz" => return Route::Healthz,
        "/readyz" => return Route::Readyz,
        _ => {}
    }
    if path == "/console" {
        return Route::Console { rest: "" };
    }
    if let Some(rest) = path.strip_prefix("/console/") {
        return Route::Console { rest };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::NotFound;
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags { name };
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Route::Uploads { name };
    }
    if let Some((name, id)) = split_last(rest, "/blobs/uploads/") {
        return Route::Upload { name, id };
    }
    if let Some((name, reference)) = split_last(rest, "/manifests/") {
        return Route::Manifest { name, reference };
    }
    if let Some((name, digest)) = split_last(rest, "/blobs/") {
        return Route::Blob { name, digest };
    }
    if let Some((name, digest)) = split_last(rest, "/referrers/") {
        return Route::Referrers { name, digest };
    }
    Route::NotFound
}

/// Splits at the last `marker` when what follows is one non-empty path segment.
fn split_last<'a>(rest: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let at = rest.rfind(marker)?;
    let (name, tail) = (&rest[..at], &rest[at + marker.len()..]);
    (!name.is_empty() && !tail.is_empty() && !tail.contains('/')).then_some((name, tail))
}

/// Decoded `key=value` pairs of a query string.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `key`.
pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `value` encoded for a query string.
pub fn percent_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Route::Base);
        assert_eq!(parse("/v2/_catalog"), Route::Catalog);
        assert_eq!(parse("/v2/a/b/tags/list"), Route::Tags { name: "a/b" });
        assert_eq!(
            parse("/v2/a/manifests/b/manifests/latest"),
            Route::Manifest {
                name: "a/manifests/b",
                reference: "latest"
            }
        );
        assert_eq!(parse("/v2/a/b/blobs/uploads/"), Route::Uploads { name: "a/b" });
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/x-1"),
            Route::Upload { name: "a/b", id: "x-1" }
        );
        assert_eq!(
            parse("/v2/a/b/blobs/sha256:ab"),
            Route::Blob {
                name: "a/b",
                digest: "sha256:ab"
            }
        );
        assert_eq!(
            parse("/v2/a/b/referrers/sha256:ab"),
            Route::Referrers {
                name: "a/b",
                digest: "sha256:ab"
            }
        );
        assert_eq!(parse("/v2/a/b/manifests/"), Route::NotFound);
        assert_eq!(parse("/v1/x"), Route::NotFound);
    }

    #[test]
    fn queries() {
        let q = query_pairs(Some("digest=sha256%3Aab&n=10&x"));
        assert_eq!(query_get(&q, "digest"), Some("sha256:ab"));
        assert_eq!(query_get(&q, "n"), Some("10"));
        assert_eq!(query_get(&q, "x"), Some(""));
        let odd = query_pairs(Some("a=%zz%4&b=%41"));
        assert_eq!(query_get(&odd, "a"), Some("%zz%4"));
        assert_eq!(query_get(&odd, "b"), Some("A"));
        assert_eq!(percent_encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
