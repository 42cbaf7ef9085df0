//! The one place that decides which images a retention policy deletes: a pure function of a
//! repository's images, its policy, its immutable-tag setting and the time, so the preview, the
//! leader's scheduled run and the tests all get the same answer for the same state.
//!
//! Rules (any combination; an image goes when at least one matches and nothing protects it):
//! untagged for N days, not pulled for N days (from the push when never pulled), outside the
//! newest K. Protected: an image carrying an exempt or immutable tag, and anything pushed, tagged
//! or pulled within the cooling period. Only top-level images are judged: children of an index go
//! with it when no other index uses them (children of a kept index are kept), and referrers
//! (signatures, SBOMs) go with their subject. Every deletion is a [`DeletionUnit`] that carries
//! the generation each member was judged at, so the commit deletes it only if nothing changed.

use std::collections::{HashMap, HashSet};

use crate::catalog::{CatalogReader, ReadError};
use crate::lifecycle::*;
use crate::{Catalog, CatalogCommand, CatalogError, CatalogResponse};

/// What a policy would delete from one repository now (the dry run).
#[derive(Debug, Clone)]
pub struct Preview {
    pub repo: String,
    pub policy: String,
    /// The policy's rules as judged.
    pub rules: RetentionPolicy,
    pub units: Vec<DeletionUnit>,
}

/// Evaluates `repo`'s policy against the local catalog at `now_ms`.
pub fn preview(reader: &CatalogReader, repo: &str, now_ms: u64) -> Result<Preview, ReadError> {
    let (policy_name, policy) = reader.effective_retention(repo)?;
    let units = if policy.keeps_everything() {
        Vec::new()
    } else {
        let immutable = reader.effective_immutability(repo)?;
        evaluate(&policy, immutable.as_ref(), &reader.images(repo)?, now_ms)
    };
    Ok(Preview {
        repo: repo.to_string(),
        policy: policy_name,
        rules: policy,
        units,
    })
}

/// What one run of a policy over a repository did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    /// Units the evaluation chose.
    pub planned: usize,
    /// Entries committed (each at most [`MAX_UNITS_PER_ENTRY`] units).
    pub entries: usize,
    /// Units that stayed because something changed between evaluation and commit.
    pub rejected_entries: usize,
}

/// Evaluates `repo`'s policy at `now_ms` (after catching up with the leader) and commits the
/// deletions in bounded entries; each unit is deleted only if its images did not change since.
pub async fn run(catalog: &Catalog, repo: &str, now_ms: u64) -> Result<(Preview, RunOutcome), RunError> {
    catalog.linearizable().await?;
    let plan = preview(catalog.reader(), repo, now_ms)?;
    let mut outcome = RunOutcome {
        planned: plan.units.len(),
        ..Default::default()
    };
    for chunk in plan.units.chunks(MAX_UNITS_PER_ENTRY) {
        let cmd = CatalogCommand::RetentionDelete {
            repo: repo.to_string(),
            policy: plan.policy.clone(),
            rules: plan.rules.clone(),
            units: chunk.to_vec(),
            now_ms,
        };
        outcome.entries += 1;
        if let CatalogResponse::Rejected(_) = catalog.propose(cmd).await? {
            outcome.rejected_entries += 1;
        }
    }
    Ok((plan, outcome))
}

/// Why a retention run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// One image of a repository as the evaluator sees it.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub digest: String,
    pub record: ImageRecord,
    pub tags: Vec<String>,
}

/// Why an image that a rule matched is kept.
fn protected(policy: &RetentionPolicy, immutable: Option<&ImmutableTags>, image: &ImageFacts, now_ms: u64) -> bool {
    let exempt = image.tags.iter().any(|t| matches_any(&policy.exempt_tags, t));
    let frozen = immutable.is_some_and(|s| image.tags.iter().any(|t| s.freezes(t)));
    let cooling = now_ms.saturating_sub(image.record.last_activity_ms()) < policy.cooling_ms;
    exempt || frozen || cooling
}

/// The first rule that matches a top-level image ranked `rank` (0 = newest push).
fn matching_rule(policy: &RetentionPolicy, image: &ImageFacts, rank: usize, now_ms: u64) -> Option<RuleKind> {
    let older_than = |since: u64, days: u32| now_ms.saturating_sub(since) >= u64::from(days).saturating_mul(DAY_MS);
    let r = &image.record;
    if let Some(days) = policy.untagged_days {
        if image.tags.is_empty() && older_than(r.untagged_since_ms.unwrap_or(r.last_pushed_ms), days) {
            return Some(RuleKind::Untagged);
        }
    }
    if let Some(days) = policy.not_pulled_days {
        if older_than(r.last_pulled_ms.unwrap_or(r.last_pushed_ms), days) {
            return Some(RuleKind::NotPulled);
        }
    }
    if let Some(k) = policy.keep_newest {
        if rank >= k as usize {
            return Some(RuleKind::KeepNewest);
        }
    }
    None
}

/// The images `policy` deletes from a repository holding `images`, at `now_ms`.
pub fn evaluate(
    policy: &RetentionPolicy,
    immutable: Option<&ImmutableTags>,
    images: &[ImageFacts],
    now_ms: u64,
) -> Vec<DeletionUnit> {
    if policy.keeps_everything() {
        return Vec::new();
    }
    let index: HashMap<&str, usize> = images.iter().enumerate().map(|(i, m)| (m.digest.as_str(), i)).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
    let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
    for (i, image) in images.iter().enumerate() {
        for child in &image.record.children {
            if let Some(&c) = index.get(child.as_str()) {
                if c != i && !parents[c].contains(&i) {
                    parents[c].push(i);
                }
            }
        }
        if let Some(&s) = image.record.subject.as_deref().and_then(|s| index.get(s)) {
            if s != i {
                referrers[s].push(i);
            }
        }
    }
    let is_referrer = |i: usize| {
        images[i]
            .record
            .subject
            .as_deref()
            .is_some_and(|s| index.contains_key(s))
    };
    let mut top: Vec<usize> = (0..images.len())
        .filter(|&i| parents[i].is_empty() && !is_referrer(i))
        .collect();
    top.sort_by(|&a, &b| {
        let (ra, rb) = (&images[a].record, &images[b].record);
        rb.last_pushed_ms
            .cmp(&ra.last_pushed_ms)
            .then_with(|| images[a].digest.cmp(&images[b].digest))
    });

    // Which top-level images go, then what goes with each of them.
    let mut deleted = vec![false; images.len()];
    let mut units: Vec<(usize, RuleKind, Vec<usize>)> = Vec::new();
    for (rank, &i) in top.iter().enumerate() {
        if let Some(rule) = matching_rule(policy, &images[i], rank, now_ms) {
            if !protected(policy, immutable, &images[i], now_ms) {
                deleted[i] = true;
                units.push((i, rule, Vec::new()));
            }
        }
    }
    for (root, _, with) in units.iter_mut() {
        // Children used by this index alone and not protected themselves; then the referrers of
        // everything going. A child with several parents waits until it is top-level, so one
        // unit never decides for another.
        let mut stack = vec![*root];
        while let Some(i) = stack.pop() {
            for child in &images[i].record.children {
                let Some(&c) = index.get(child.as_str()) else { continue };
                if !deleted[c] && parents[c] == [i] && !protected(policy, immutable, &images[c], now_ms) {
                    deleted[c] = true;
                    with.push(c);
                    stack.push(c);
                }
            }
            for &r in &referrers[i] {
                if !deleted[r] {
                    deleted[r] = true;
                    with.push(r);
                    stack.push(r);
                }
            }
        }
        if with.len() + 1 > MAX_UNIT_MEMBERS {
            // Too big to commit in one entry: leave it (and its members) for an administrator.
            for &m in with.iter() {
                deleted[m] = false;
            }
            deleted[*root] = false;
            with.clear();
        }
    }
    units.retain(|(root, _, _)| deleted[*root]);

    let kept_blobs: HashSet<&str> = images
        .iter()
        .enumerate()
        .filter(|(i, _)| !deleted[*i])
        .flat_map(|(_, m)| m.record.blobs.iter().map(|(d, _)| d.as_str()))
        .collect();
    let mut counted: HashSet<&str> = HashSet::new();
    units
        .into_iter()
        .map(|(root, rule, with)| {
            let mut bytes_freed = 0u64;
            for &m in std::iter::once(&root).chain(with.iter()) {
                bytes_freed = bytes_freed.saturating_add(images[m].record.manifest_bytes);
                for (blob, size) in &images[m].record.blobs {
                    if !kept_blobs.contains(blob.as_str()) && counted.insert(blob.as_str()) {
                        bytes_freed = bytes_freed.saturating_add(*size);
                    }
                }
            }
            let judged = |i: usize| JudgedImage {
                digest: images[i].digest.clone(),
                generation: images[i].record.generation,
            };
            DeletionUnit {
                image: judged(root),
                rule,
                with: with.into_iter().map(judged).collect(),
                tags: images[root].tags.clone(),
                bytes_freed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000 * DAY_MS;

    fn image(digest: &str, pushed_days_ago: u64, tags: &[&str]) -> ImageFacts {
        let pushed = NOW - pushed_days_ago * DAY_MS;
        ImageFacts {
            digest: digest.into(),
            record: ImageRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                blobs: vec![(format!("blob-{digest}"), 100)],
                manifest_bytes: 10,
                size: 110,
                pushed_ms: pushed,
                last_pushed_ms: pushed,
                last_tagged_ms: (!tags.is_empty()).then_some(pushed),
                untagged_since_ms: tags.is_empty().then_some(pushed),
                ..Default::default()
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn deleted(units: &[DeletionUnit]) -> Vec<String> {
        let mut out: Vec<String> = units
            .iter()
            .flat_map(|u| std::iter::once(u.image.digest.clone()).chain(u.with.iter().map(|w| w.digest.clone())))
            .collect();
        out.sort();
        out
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy::default()
    }

    struct Case {
        name: &'static str,
        policy: RetentionPolicy,
        images: Vec<ImageFacts>,
        expect: Vec<&'static str>,
    }

    #[test]
    fn rules_and_traps() {
        let never_pulled_fresh = image("fresh", 2, &["v2"]);
        let mut pulled_recently = image("pulled", 100, &["v1"]);
        pulled_recently.record.last_pulled_ms = Some(NOW - 2 * DAY_MS);
        let mut pulled_long_ago = image("stale", 100, &["v0"]);
        pulled_long_ago.record.last_pulled_ms = Some(NOW - 40 * DAY_MS);
        let mut untagged_late = image("lost-tag", 100, &[]);
        untagged_late.record.untagged_since_ms = Some(NOW - 3 * DAY_MS);
        let mut in_cooling = image("cool", 100, &[]);
        in_cooling.record.last_pulled_ms = Some(NOW - 3_600_000);
        let mut index = image("index", 50, &["multi"]);
        index.record.children = vec!["child-a".into(), "child-b".into()];
        index.record.blobs.clear();
        let mut subject = image("signed", 50, &[]);
        subject.record.untagged_since_ms = Some(NOW - 50 * DAY_MS);
        let mut signature = image("sig", 1, &[]);
        signature.record.subject = Some("signed".into());

        let cases = vec![
            Case {
                name: "not pulled for 30 days: a never-pulled image counts from its push, not the epoch",
                policy: RetentionPolicy {
                    not_pulled_days: Some(30),
                    ..policy()
                },
                images: vec![
                    never_pulled_fresh.clone(),
                    pulled_recently.clone(),
                    pulled_long_ago.clone(),
                    image("old", 31, &["x"]),
                ],
                expect: vec!["old", "stale"],
            },
            Case {
                name: "untagged for 7 days counts from when the last tag went",
                policy: RetentionPolicy {
                    untagged_days: Some(7),
                    ..policy()
                },
                images: vec![
                    untagged_late.clone(),
                    image("never-tagged", 8, &[]),
                    image("tagged", 90, &["t"]),
                ],
                expect: vec!["never-tagged"],
            },
            Case {
                name: "the cooling period protects a recent pull whatever the rules say",
                policy: RetentionPolicy {
                    untagged_days: Some(1),
                    not_pulled_days: Some(1),
                    ..policy()
                },
                images: vec![in_cooling.clone(), image("cold", 100, &[])],
                expect: vec!["cold"],
            },
            Case {
                name: "a longer cooling period protects a push 2 days old",
                policy: RetentionPolicy {
                    not_pulled_days: Some(1),
                    cooling_ms: 3 * DAY_MS,
                    ..policy()
                },
                images: vec![image("two-days", 2, &["a"]), image("four-days", 4, &["b"])],
                expect: vec!["four-days"],
            },
            Case {
                name: "exempt globs keep their images",
                policy: RetentionPolicy {
                    not_pulled_days: Some(10),
                    exempt_tags: vec!["release-*".into(), "stable".into()],
                    ..policy()
                },
                images: vec![
                    image("r", 100, &["release-1.0"]),
                    image("s", 100, &["stable", "x"]),
                    image("d", 100, &["dev-1"]),
                ],
                expect: vec!["d"],
            },
            Case {
                name: "keep the newest 2 pushes",
                policy: RetentionPolicy {
                    keep_newest: Some(2),
                    ..policy()
                },
                images: vec![
                    image("a", 10, &["a"]),
                    image("b", 20, &["b"]),
                    image("c", 30, &["c"]),
                    image("d", 40, &[]),
                ],
                expect: vec!["c", "d"],
            },
            Case {
                name: "children of a kept index are kept; a deleted index takes its children",
                policy: RetentionPolicy {
                    untagged_days: Some(5),
                    not_pulled_days: Some(40),
                    ..policy()
                },
                images: vec![index.clone(), image("child-a", 50, &[]), image("child-b", 50, &[])],
                expect: vec!["child-a", "child-b", "index"],
            },
            Case {
                name: "an index in its cooling period keeps its old untagged children",
                policy: RetentionPolicy {
                    untagged_days: Some(5),
                    ..policy()
                },
                images: vec![
                    {
                        let mut i = index.clone();
                        i.record.last_pulled_ms = Some(NOW - 1000);
                        i
                    },
                    image("child-a", 50, &[]),
                    image("child-b", 50, &[]),
                ],
                expect: vec![],
            },
            Case {
                name: "referrers go with their subject, even fresh ones",
                policy: RetentionPolicy {
                    untagged_days: Some(30),
                    ..policy()
                },
                images: vec![subject.clone(), signature.clone()],
                expect: vec!["sig", "signed"],
            },
            Case {
                name: "a referrer of a kept subject stays, however old",
                policy: RetentionPolicy {
                    untagged_days: Some(1),
                    ..policy()
                },
                images: vec![image("kept", 100, &["v"]), {
                    let mut s = image("old-sig", 90, &[]);
                    s.record.subject = Some("kept".into());
                    s
                }],
                expect: vec![],
            },
            Case {
                name: "the global policy keeps everything",
                policy: policy(),
                images: vec![image("a", 1000, &[])],
                expect: vec![],
            },
        ];
        for case in cases {
            let units = evaluate(&case.policy, None, &case.images, NOW);
            let mut expect: Vec<String> = case.expect.iter().map(|s| s.to_string()).collect();
            expect.sort();
            assert_eq!(deleted(&units), expect, "{}", case.name);
        }
    }

    #[test]
    fn immutable_tags_are_never_deleted() {
        let setting = ImmutableTags {
            enabled: true,
            exempt: vec!["latest".into()],
        };
        let p = RetentionPolicy {
            not_pulled_days: Some(1),
            ..policy()
        };
        let images = vec![image("frozen", 10, &["v1"]), image("mutable", 10, &["latest"])];
        assert_eq!(deleted(&evaluate(&p, Some(&setting), &images, NOW)), vec!["mutable"]);
    }

    #[test]
    fn a_child_shared_by_two_indexes_waits() {
        let p = RetentionPolicy {
            not_pulled_days: Some(1),
            ..policy()
        };
        let mut i1 = image("i1", 10, &["a"]);
        i1.record.children = vec!["shared".into()];
        let mut i2 = image("i2", 10, &["b"]);
        i2.record.children = vec!["shared".into()];
        let units = evaluate(&p, None, &[i1, i2, image("shared", 10, &[])], NOW);
        assert_eq!(deleted(&units), vec!["i1", "i2"]);
    }

    #[test]
    fn bytes_freed_count_shared_blobs_once_and_never_kept_ones() {
        let p = RetentionPolicy {
            untagged_days: Some(1),
            ..policy()
        };
        let mut a = image("a", 10, &[]);
        a.record.blobs = vec![("base".into(), 1000), ("only-a".into(), 7)];
        let mut b = image("b", 10, &[]);
        b.record.blobs = vec![("base".into(), 1000), ("only-b".into(), 5)];
        let mut kept = image("kept", 10, &["v"]);
        kept.record.blobs = vec![("only-b".into(), 5)];
        let units = evaluate(&p, None, &[a, b, kept], NOW);
        let total: u64 = units.iter().map(|u| u.bytes_freed).sum();
        // a: 10 + 1000 + 7; b: 10 (base counted once, only-b still used by the kept image).
        assert_eq!(total, 1027);
        assert_eq!(
            units.iter().find(|u| u.image.digest == "a").map(|u| u.rule),
            Some(RuleKind::Untagged)
        );
    }
}
