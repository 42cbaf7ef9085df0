//! The test that keeps the OpenAPI table honest: it reads the `/api/v1` dispatchers' sources,
//! turns every routing arm into (method, path template) and requires the document to describe
//! exactly those routes. An arm added without a row, a row left after its arm went, a
//! dispatcher the test does not know, or an arm it cannot read all fail it, with a message
//! saying which and where.
//!
//! The arms it reads are the ones the dispatchers are written with:
//! `(&Method::GET, ["tenancies", ns, "users"]) =>` (literals, bindings, `..` and `rest @ ..`),
//! `(&Method::GET | &Method::DELETE, [.., "images", d]) if … =>`, and `(_, [pattern]) => { … }`
//! whose block either matches on the method (`Method::GET => …`) or hands over to another
//! dispatcher of the table below.

use std::collections::BTreeSet;
use std::path::Path;

use super::document;

/// A function whose match arms are routes.
struct Dispatcher {
    /// Under `src/handlers/`.
    file: &'static str,
    function: &'static str,
    /// The path its patterns continue (`{}` for a parameter).
    prefix: &'static str,
    /// What a bare `..` in its patterns stands for.
    dots: &'static str,
    /// How the dispatcher that hands requests to it calls it; `None` for the two that
    /// `server.rs` calls.
    reached_as: Option<&'static str>,
    /// Whether its fallback arm is `ApiError::no_route()` (`repo_resource` answers `None`
    /// instead, and the repository routes take the request).
    answers_no_route: bool,
}

const DISPATCHERS: &[Dispatcher] = &[
    Dispatcher {
        file: "admin.rs",
        function: "cluster",
        prefix: "/api/v1/cluster",
        dots: "",
        reached_as: None,
        answers_no_route: true,
    },
    Dispatcher {
        file: "identity.rs",
        function: "route",
        prefix: "/api/v1",
        // `["repos", ..]`: a repository name, slashes and all.
        dots: "/{}",
        reached_as: None,
        answers_no_route: true,
    },
    Dispatcher {
        file: "regions.rs",
        function: "route",
        prefix: "/api/v1",
        dots: "",
        reached_as: Some("super::regions::route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "audit.rs",
        function: "route",
        prefix: "/api/v1/audit",
        dots: "",
        reached_as: Some("super::audit::route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "webhooks.rs",
        function: "route",
        prefix: "/api/v1/tenancies/{}/webhooks",
        dots: "",
        reached_as: Some("super::webhooks::route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "vulndb.rs",
        function: "route",
        prefix: "/api/v1/vulndb",
        dots: "",
        reached_as: Some("super::vulndb::route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "signing.rs",
        function: "keys_route",
        prefix: "/api/v1/tenancies/{}/signing-keys",
        dots: "",
        reached_as: Some("super::signing::keys_route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "signing.rs",
        function: "policies_route",
        prefix: "/api/v1/tenancies/{}/verification-policies",
        dots: "",
        reached_as: Some("super::signing::policies_route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "lifecycle.rs",
        function: "repo_resource",
        // `[.., "images"]`: the leading `..` is `repos/<name…>`, already in the prefix.
        prefix: "/api/v1/repos/{}",
        dots: "",
        reached_as: Some("lifecycle::repo_route"),
        answers_no_route: false,
    },
    Dispatcher {
        file: "lifecycle.rs",
        function: "tenancy_route",
        prefix: "/api/v1/tenancies/{}",
        dots: "",
        reached_as: Some("lifecycle::tenancy_route"),
        answers_no_route: true,
    },
    Dispatcher {
        file: "lifecycle.rs",
        function: "policy_route",
        prefix: "/api/v1/tenancies/{}/retention-policies/{}",
        dots: "",
        reached_as: Some("policy_route"),
        answers_no_route: true,
    },
];

/// Functions of dispatcher files that match on methods without being routes themselves.
const NOT_ROUTES: &[(&str, &str)] = &[
    // Serves the resources `repo_resource` recognised (its arms match that enum, not paths).
    ("lifecycle.rs", "repo_route"),
];

/// Handler files that serve no `/api/v1` route (the distribution API, `/token`, helpers).
const OUTSIDE: &[&str] = &[
    "mod.rs",
    "blobs.rs",
    "uploads.rs",
    "manifests.rs",
    "listing.rs",
    "token.rs",
];

fn source(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `src` with comments blanked and the insides of string and char literals blanked, byte for
/// byte, so structure can be scanned at the same offsets as the source.
fn mask(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(b.len())] {
            *byte = b' ';
        }
    };
    let mut i = 0;
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if b[i..].starts_with(b"//") {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'r' && !ident_before && matches!(b.get(i + 1), Some(b'"' | b'#')) {
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            let open = i + 1 + hashes;
            if b.get(open) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[open + 1..].find(&close).map_or(b.len(), |n| open + 1 + n);
            blank(&mut out, open + 1, end);
            i = end + close.len();
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '…'), or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                src[i + 2..].find('\'').map(|n| i + 2 + n)
            } else {
                src[i + 1..]
                    .chars()
                    .next()
                    .map(|c| i + 1 + c.len_utf8())
                    .filter(|e| b.get(*e) == Some(&b'\''))
            };
            match end {
                Some(end) => {
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("masking keeps UTF-8")
}

/// The offset just past the bracket that closes the one at `open` (`masked[open]`).
fn closing(masked: &str, open: usize) -> usize {
    let mut depth = 0i32;
    for (i, c) in masked[open..].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets from offset {open}")
}

/// One source file, read and masked.
struct File {
    name: &'static str,
    src: String,
    masked: String,
}

impl File {
    fn read(name: &'static str) -> File {
        let src = source(&format!("handlers/{name}"));
        let masked = mask(&src);
        File { name, src, masked }
    }

    fn line(&self, offset: usize) -> usize {
        self.src[..offset].matches('\n').count() + 1
    }

    fn at(&self, offset: usize) -> String {
        format!("handlers/{}:{}", self.name, self.line(offset))
    }

    /// The span of `function`'s body (inside its braces).
    fn body(&self, function: &str) -> (usize, usize) {
        let starts: Vec<usize> = [format!("fn {function}("), format!("fn {function}<")]
            .iter()
            .flat_map(|needle| self.masked.match_indices(needle.as_str()).map(|(at, _)| at))
            .collect();
        assert_eq!(
            starts.len(),
            1,
            "handlers/{}: expected one `fn {function}`, found {}",
            self.name,
            starts.len()
        );
        let open = starts[0]
            + self.masked[starts[0]..]
                .find('{')
                .unwrap_or_else(|| panic!("handlers/{}: fn {function} has no body", self.name));
        (open + 1, closing(&self.masked, open) - 1)
    }
}

/// What a dispatcher's arms say.
#[derive(Default)]
struct Arms {
    /// (method, path shape with `{}` for parameters, where).
    routes: Vec<(String, String, String)>,
    /// The dispatchers its wildcard arms hand over to, with the shape they hand over at.
    handed: Vec<(&'static str, String, String)>,
}

/// The `(&Method::…, […])`, `(Method::…, […])` and `(_, […])` arms in `from..to`.
fn arms(file: &File, d: &Dispatcher, (from, to): (usize, usize)) -> Arms {
    let mut found = Arms::default();
    let mut starts: Vec<usize> = ["(&Method::", "(Method::", "(_, ["]
        .iter()
        .flat_map(|needle| {
            file.masked[from..to]
                .match_indices(needle)
                .map(move |(at, _)| from + at)
        })
        .collect();
    starts.sort_unstable();
    for open in starts {
        let at = file.at(open);
        let close = closing(&file.masked, open);
        let inner = (open + 1, close - 1);
        let comma = top_level(&file.masked, inner, ',');
        let [method_end] = comma[..] else {
            panic!("{at}: cannot read this arm (expected `(<method>, [<segments>])`)");
        };
        let methods = methods(&file.src[inner.0..method_end], &at);
        let pattern = &file.src[method_end + 1..inner.1];
        let slice = pattern.trim();
        let slice_at = method_end + 1 + (pattern.len() - pattern.trim_start().len());
        assert!(
            slice.starts_with('[') && slice.ends_with(']'),
            "{at}: cannot read this arm's path pattern {slice:?} (expected a slice pattern)"
        );
        let (shape, rest) = shape(file, d, (slice_at + 1, slice_at + slice.len() - 1), &at);
        // After the pattern: an optional guard, then `=>`.
        let after = file.masked[close..].trim_start();
        let arrow = if after.starts_with("if ") {
            close
                + file.masked[close..]
                    .find("=>")
                    .unwrap_or_else(|| panic!("{at}: guard without `=>`"))
        } else if after.starts_with("=>") {
            close + (file.masked[close..].len() - after.len())
        } else {
            panic!("{at}: cannot read this arm (no `=>` after the pattern)")
        };
        match methods {
            Some(methods) => {
                assert!(
                    !rest,
                    "{at}: `rest @ ..` in an arm of a route (only a hand-over may take the rest)"
                );
                for m in methods {
                    found.routes.push((m, shape.clone(), at.clone()));
                }
            }
            None => {
                // `(_, [pattern]) => { … }`: the block matches on the method, or hands over.
                let tail = &file.masked[arrow + 2..];
                let block = arrow + 2 + (tail.len() - tail.trim_start().len());
                assert!(
                    file.masked[block..].starts_with('{'),
                    "{at}: an arm for any method must have a block body"
                );
                let body = (block, closing(&file.masked, block));
                let inner = inner_methods(file, body);
                let handed: Vec<&Dispatcher> = DISPATCHERS
                    .iter()
                    .filter(|o| o.reached_as.is_some_and(|r| calls(&file.masked[body.0..body.1], r)))
                    .collect();
                match (inner.is_empty(), handed.as_slice()) {
                    (false, []) if !rest => {
                        for m in inner {
                            found.routes.push((m, shape.clone(), at.clone()));
                        }
                    }
                    (true, [one]) => found.handed.push((one.function, shape.clone(), at.clone())),
                    _ => panic!(
                        "{at}: an arm for any method must either match on `Method::…` inside (without \
                         `rest @ ..`) or hand over to exactly one dispatcher the coverage test knows"
                    ),
                }
            }
        }
    }
    found
}

/// Offsets of `sep` at bracket depth 0 in `masked[from..to]`.
fn top_level(masked: &str, (from, to): (usize, usize), sep: char) -> Vec<usize> {
    let mut depth = 0i32;
    let mut out = Vec::new();
    for (i, c) in masked[from..to].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => out.push(from + i),
            _ => {}
        }
    }
    out
}

/// `&Method::GET | &Method::DELETE` → the methods; `_` → None (any method).
fn methods(text: &str, at: &str) -> Option<Vec<String>> {
    if text.trim() == "_" {
        return None;
    }
    Some(
        text.split('|')
            .map(|m| {
                let name = m.trim().trim_start_matches('&').strip_prefix("Method::");
                match name {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_uppercase()) => n.to_string(),
                    _ => panic!("{at}: cannot read the method pattern {:?}", m.trim()),
                }
            })
            .collect(),
    )
}

/// The path shape of a slice pattern's elements in `src[from..to]`, and whether it ends in
/// `rest @ ..`.
fn shape(file: &File, d: &Dispatcher, (from, to): (usize, usize), at: &str) -> (String, bool) {
    let mut path = shape_of(d.prefix);
    if file.src[from..to].trim().is_empty() {
        return (path, false); // `[]`: the prefix itself
    }
    let mut rest = false;
    let mut bounds = vec![from];
    bounds.extend(top_level(&file.masked, (from, to), ',').into_iter().map(|c| c + 1));
    for (n, start) in bounds.iter().enumerate() {
        let end = bounds.get(n + 1).map_or(to, |next| next - 1);
        let element = file.src[*start..end].trim();
        assert!(!rest, "{at}: `rest @ ..` must end the pattern");
        if element.is_empty() && n + 1 == bounds.len() && n > 0 {
            continue; // a trailing comma
        }
        if let Some(literal) = element.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            assert!(
                !literal.is_empty() && !literal.contains(['/', '"', '\\', '{', '}']),
                "{at}: cannot use the segment {element}"
            );
            path.push('/');
            path.push_str(literal);
        } else if element == ".." {
            path.push_str(d.dots);
        } else if element.ends_with("@ ..") {
            rest = true;
        } else if !element.is_empty() && element.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            path.push_str("/{}");
        } else {
            panic!("{at}: cannot read the path element {element:?}");
        }
    }
    (path, rest)
}

/// A path template with every `{param}` as `{}`.
fn shape_of(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The methods of `Method::X =>` arms in `masked[from..to]` (a match on the method alone).
fn inner_methods(file: &File, (from, to): (usize, usize)) -> Vec<String> {
    let text = &file.masked[from..to];
    let mut out = Vec::new();
    for (i, _) in text.match_indices("Method::") {
        let before = text[..i].trim_end().chars().last();
        let name: String = text[i + 8..].chars().take_while(|c| c.is_ascii_uppercase()).collect();
        let after = text[i + 8 + name.len()..].trim_start();
        if !matches!(before, Some('&' | '(' | '|')) && after.starts_with("=>") {
            out.push(name);
        }
    }
    out
}

/// Whether `text` calls `path(` (not as the tail of a longer path).
fn calls(text: &str, path: &str) -> bool {
    text.match_indices(&format!("{path}(")).any(|(i, _)| {
        !text[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

/// `return <path>(` calls in `text` whose path has `::` (a hand-over to another module).
fn returns_to(text: &str) -> Vec<String> {
    text.match_indices("return ")
        .filter_map(|(i, _)| {
            let path: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            (path.contains("::") && text[i + 7 + path.len()..].starts_with('(')).then_some(path)
        })
        .collect()
}

/// Every (method, shape) the document describes.
fn described() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(document()).expect("the document serialises");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options", "trace"] {
            if item.get(method).is_some() {
                out.insert((method.to_ascii_uppercase(), shape_of(path)));
            }
        }
    }
    out
}

#[test]
fn every_route_is_described_and_every_description_is_a_route() {
    // Every handler file is a known dispatcher or known to serve no /api/v1 route.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/handlers");
    for entry in std::fs::read_dir(&dir).expect("src/handlers") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            OUTSIDE.contains(&name.as_str()) || DISPATCHERS.iter().any(|d| d.file == name),
            "handlers/{name} is neither a dispatcher the OpenAPI coverage test knows nor listed as \
             serving no /api/v1 route: add it to DISPATCHERS or OUTSIDE in api/src/openapi/coverage.rs"
        );
    }
    // server.rs hands /api/v1/cluster/… and /api/v1/… to the two roots.
    let server = source("server.rs");
    for root in ["handlers::admin::cluster(", "handlers::identity::route("] {
        assert!(
            server.contains(root),
            "server.rs no longer calls {root}…): update the coverage test"
        );
    }

    let mut routes: Vec<(String, String, String)> = Vec::new();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let files: Vec<&'static str> = DISPATCHERS
        .iter()
        .map(|d| d.file)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for name in files {
        let file = File::read(name);
        let mut spans = Vec::new();
        for d in DISPATCHERS.iter().filter(|d| d.file == name) {
            let span = file.body(d.function);
            spans.push(span);
            let body = &file.masked[span.0..span.1];
            if d.answers_no_route {
                assert!(
                    file.src[span.0..span.1].contains("ApiError::no_route()"),
                    "handlers/{name}: fn {} must answer an unknown route with ApiError::no_route()",
                    d.function
                );
            }
            for target in returns_to(body) {
                let known = DISPATCHERS.iter().any(|o| o.reached_as == Some(target.as_str()));
                assert!(
                    known,
                    "handlers/{name}: fn {} hands requests to {target}, a dispatcher the OpenAPI coverage test \
                     does not know: add it to DISPATCHERS in api/src/openapi/coverage.rs",
                    d.function
                );
            }
            for other in DISPATCHERS {
                if other.reached_as.is_some_and(|r| calls(body, r)) {
                    reached.insert(other.function);
                }
            }
            let found = arms(&file, d, span);
            for (function, shape, at) in found.handed {
                let target = DISPATCHERS.iter().find(|o| o.function == function).expect("known");
                assert_eq!(
                    shape_of(target.prefix),
                    shape,
                    "{at}: hands over at {shape}, but the coverage test mounts fn {function} at {}",
                    target.prefix
                );
            }
            routes.extend(found.routes);
        }
        for (_, function) in NOT_ROUTES.iter().filter(|(f, _)| *f == name) {
            spans.push(file.body(function));
        }
        // No arm outside the functions the test reads.
        for needle in ["(&Method::", "(Method::", "(_, ["] {
            for (at, _) in file.masked.match_indices(needle) {
                assert!(
                    spans.iter().any(|(from, to)| (*from..*to).contains(&at)),
                    "{}: a routing arm outside the dispatchers the OpenAPI coverage test reads",
                    file.at(at)
                );
            }
        }
    }
    for d in DISPATCHERS.iter().filter(|d| d.reached_as.is_some()) {
        assert!(
            reached.contains(d.function),
            "fn {} ({}) is reached by no dispatcher as {}",
            d.function,
            d.file,
            d.reached_as.unwrap_or_default()
        );
    }

    let in_sources: BTreeSet<(String, String)> = routes.iter().map(|(m, s, _)| (m.clone(), s.clone())).collect();
    let in_document = described();
    let undescribed: Vec<String> = routes
        .iter()
        .filter(|(m, s, _)| !in_document.contains(&(m.clone(), s.clone())))
        .map(|(m, s, at)| format!("{m} {s} ({at})"))
        .collect();
    assert!(
        undescribed.is_empty(),
        "routes without a description in api/src/openapi/table.rs:\n  {}",
        undescribed.join("\n  ")
    );
    let unrouted: Vec<String> = in_document
        .difference(&in_sources)
        .map(|(m, s)| format!("{m} {s}"))
        .collect();
    assert!(
        unrouted.is_empty(),
        "descriptions in api/src/openapi/table.rs of routes no dispatcher has:\n  {}",
        unrouted.join("\n  ")
    );
    assert!(
        routes.len() >= 60,
        "only {} routes read: the reading is broken",
        routes.len()
    );
}

#[test]
fn the_reader_reads_what_it_should_and_refuses_the_rest() {
    let masked = mask("let a = \"(&Method::GET, [x])\"; // (&Method::PUT\nlet c = '{'; fn f<'a>() {}");
    assert!(!masked.contains("Method"), "{masked}");
    assert!(masked.contains("fn f<'a>() {}"), "{masked}");
    assert_eq!(
        shape_of("/api/v1/repos/{repository}/images/{digest}"),
        "/api/v1/repos/{}/images/{}"
    );
    assert_eq!(
        returns_to("return super::regions::route(cx); return Err(x); return a(b)"),
        vec!["super::regions::route"]
    );
    assert!(calls("x; policy_route(cx)", "policy_route"));
    assert!(!calls("x; lifecycle::policy_route(cx)", "policy_route"));
    assert_eq!(
        methods("&Method::GET | &Method::DELETE", "here"),
        Some(vec!["GET".into(), "DELETE".into()])
    );
    assert_eq!(methods("_", "here"), None);
    let refused = std::panic::catch_unwind(|| methods("m if m == Method::GET", "here"));
    assert!(refused.is_err(), "a method pattern it cannot read fails");
}
