//! Fuzz targets for everything that parses bytes from outside: the route and query parser,
//! `Range` and `Content-Range`, manifest validation, the policy language, Basic credentials and
//! JWTs, and peer messages. Each target is a proptest property run for a fixed budget
//! (`KEELSON_FUZZ_CASES`, 2,000 by default) inside the test suite, on stable Rust: its inputs are
//! random bytes and mutations (byte edits, truncation, splicing) of the seed corpus in
//! `api/fuzz/corpus/<target>/`. An input that once broke a parser is added to the corpus, so it
//! is replayed on every run from then on.
//!
//! The properties: nothing panics (the test profile has overflow checks on), and each parser's
//! answer is internally consistent (a satisfiable range lies inside the blob, an error's position
//! lies inside the text).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// The seed inputs of `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds.sort();
    seeds
}

/// Random bytes, or a seed mutated by byte edits, a cut and a splice of another seed.
fn inputs(target: &str) -> BoxedStrategy<Vec<u8>> {
    let seeds = corpus(target);
    let n = seeds.len();
    let mutated = (
        0..n,
        0..n,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(a, b, edits, cut, splice)| {
            let mut bytes = seeds[a].clone();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            if splice && !bytes.is_empty() {
                let i = cut.index(bytes.len());
                bytes.truncate(i);
                bytes.extend_from_slice(&seeds[b]);
            }
            bytes
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..600), mutated].boxed()
}

fn text(target: &str) -> BoxedStrategy<String> {
    inputs(target)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
        .boxed()
}

fn budget() -> Config {
    let cases = std::env::var("KEELSON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    Config {
        cases,
        // Failures are kept in the corpus by hand, not in proptest's regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(budget())]

    #[test]
    fn routes_and_queries(path in text("routes")) {
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let _ = crate::routes::parse(path);
        let pairs = crate::routes::query_pairs(Some(query));
        prop_assert!(pairs.len() <= query.len() + 1);
    }

    #[test]
    fn range_lies_inside_the_blob(header in text("range"), size in prop_oneof![0u64..4096, any::<u64>()]) {
        use crate::handlers::blobs::{parse_range, RangeRequest};
        if let RangeRequest::Part { start, end } = parse_range(Some(&header), size) {
            prop_assert!(start <= end && end < size, "{header:?} of {size}: {start}-{end}");
        }
    }

    #[test]
    fn content_range_describes_the_body(header in text("content_range"), len in prop_oneof![0u64..4096, any::<u64>()]) {
        let len = len.to_string();
        if let Ok(start) = crate::handlers::uploads::content_range_start(&header, Some(&len)) {
            prop_assert!(header.contains(&start.to_string()));
        }
        let _ = crate::handlers::uploads::content_range_start(&header, None);
    }

    #[test]
    fn manifest_validation(body in inputs("manifest"), kind in 0usize..4) {
        let content_type = [
            None,
            Some("application/vnd.oci.image.manifest.v1+json"),
            Some("application/vnd.oci.image.index.v1+json"),
            Some("application/vnd.docker.distribution.manifest.v2+json"),
        ][kind];
        let _ = crate::manifest::validate(&body, content_type, 0, Default::default());
    }

    #[test]
    fn policy_errors_point_into_the_text(policy in text("policy")) {
        let statements: Vec<String> = policy.split('\u{1e}').map(str::to_string).collect();
        if let Err(e) = crate::auth::policy::parse_policy(&statements) {
            let lines: Vec<&str> = statements.iter().flat_map(|s| s.lines()).collect();
            prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{e}");
            let line_len = lines.get(e.line - 1).map_or(0, |l| l.chars().count());
            prop_assert!(e.column >= 1 && e.column <= line_len + 1, "{e}");
        }
    }

    #[test]
    fn credentials(value in text("credentials")) {
        let state = keelson_raft::identity::IdentityState::default();
        let _ = crate::auth::basic_credentials(&value);
        let _ = crate::auth::authenticate(&state, Some(&value));
        let _ = crate::auth::jwt::verify(&state, &value);
        let _ = crate::auth::split_username(&value);
    }

    #[test]
    fn peer_messages(data in inputs("peer")) {
        use keelson_raft::network::decode;
        use keelson_raft::proto::Payload;
        let payload = Payload { data };
        let _ = decode::<keelson_raft::CatalogCommand>(&payload);
        let _ = decode::<keelson_raft::peer::Forwarded>(&payload);
        let _ = decode::<openraft::raft::VoteRequest<keelson_raft::types::NodeId>>(&payload);
        let _ = decode::<openraft::raft::AppendEntriesRequest<keelson_raft::types::TypeConfig>>(&payload);
    }
}
