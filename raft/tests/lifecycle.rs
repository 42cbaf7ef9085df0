//! The image lifecycle layer through real openraft on real rocksdb: image records and sizes,
//! tag history, pull counts, retention commits that lose races on purpose, limits that concurrent
//! writers cannot overshoot, immutable tags, and counters that survive a reopen.

mod support;

use keelson_raft::lifecycle::*;
use keelson_raft::retention;
use keelson_raft::{Catalog, CatalogCommand, CatalogResponse, ManifestRecord, Rejection};
use support::open;

const DAY: u64 = DAY_MS;
const T0: u64 = 100 * DAY;

fn digest(tag: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(tag.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn ok(catalog: &Catalog, cmd: CatalogCommand) {
    let answer = catalog.propose(cmd.clone()).await.unwrap();
    assert_eq!(answer, CatalogResponse::Applied, "{cmd:?}");
}

async fn rejected(catalog: &Catalog, cmd: CatalogCommand) -> Rejection {
    match catalog.propose(cmd.clone()).await.unwrap() {
        CatalogResponse::Rejected(r) => r,
        CatalogResponse::Applied => panic!("applied: {cmd:?}"),
    }
}

fn link(repo: &str, blob: &str, size: u64, now_ms: u64) -> CatalogCommand {
    CatalogCommand::LinkBlob {
        repo: repo.into(),
        digest: digest(blob),
        size,
        holders: vec![1],
        now_ms,
    }
}

fn image_manifest(blobs: &[&str], body: &str, subject: Option<String>) -> ManifestRecord {
    ManifestRecord {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: body.as_bytes().to_vec(),
        blobs: blobs.iter().map(|b| digest(b)).collect(),
        manifests: vec![],
        subject,
        artifact_type: None,
        annotations: None,
        created_ms: 0,
    }
}

fn put(repo: &str, name: &str, manifest: ManifestRecord, tag: Option<&str>, now_ms: u64) -> CatalogCommand {
    CatalogCommand::PutManifest {
        repo: repo.into(),
        digest: digest(name),
        manifest,
        tag: tag.map(str::to_string),
        now_ms,
    }
}

/// Pushes an image of one config and one layer (sizes 10 and `layer`), optionally tagged.
async fn push_image(catalog: &Catalog, repo: &str, name: &str, layer: u64, tag: Option<&str>, now_ms: u64) {
    ok(catalog, link(repo, "config", 10, now_ms)).await;
    ok(catalog, link(repo, &format!("layer-{name}"), layer, now_ms)).await;
    let layer_name = format!("layer-{name}");
    let m = image_manifest(&["config", &layer_name], &format!("{{\"m\":\"{name}\"}}"), None);
    ok(catalog, put(repo, name, m, tag, now_ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_sizes_tags_and_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/app";
    push_image(&catalog, repo, "one", 1000, Some("v1"), T0).await;
    push_image(&catalog, repo, "two", 500, Some("v1"), T0 + DAY).await;
    // An index over both: its size counts the shared config once.
    let index = ManifestRecord {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        body: b"{\"index\":1}".to_vec(),
        blobs: vec![],
        manifests: vec![digest("one"), digest("two")],
        subject: None,
        artifact_type: None,
        annotations: None,
        created_ms: 0,
    };
    ok(&catalog, put(repo, "index", index, Some("multi"), T0 + DAY)).await;

    let reader = catalog.reader();
    let one = reader.image(repo, &digest("one")).unwrap().unwrap();
    let one_body = "{\"m\":\"one\"}".len() as u64;
    assert_eq!(one.size, one_body + 10 + 1000);
    // Re-tagging v1 left image one untagged, since the re-tag.
    assert_eq!(one.untagged_since_ms, Some(T0 + DAY));
    assert_eq!(one.last_untagged_ms, Some(T0 + DAY));
    assert_eq!(reader.image_tags(repo, &digest("one")).unwrap(), Vec::<String>::new());
    assert_eq!(reader.image_tags(repo, &digest("two")).unwrap(), vec!["v1".to_string()]);
    let two_body = "{\"m\":\"two\"}".len() as u64;
    let idx = reader.image(repo, &digest("index")).unwrap().unwrap();
    assert_eq!(idx.size, 11 + one_body + two_body + 10 + 1000 + 500);

    let usage = reader.repo_usage(repo).unwrap();
    assert_eq!(usage.images, 3);
    assert_eq!(usage.tags, 2);
    assert_eq!(usage.stored_bytes, 10 + 1000 + 500 + one_body + two_body + 11);
    assert_eq!(reader.tenancy_usage("acme").unwrap().repos, 1);

    // Pulls from two nodes' flushes add up; the latest time wins.
    let pulls = |seq, count, last_ms| CatalogCommand::RecordPulls {
        node: 1,
        seq,
        pulls: vec![PullCount {
            repo: repo.into(),
            digest: digest("two"),
            count,
            last_ms,
        }],
    };
    ok(&catalog, pulls(1, 3, T0 + 2 * DAY)).await;
    ok(&catalog, pulls(2, 4, T0 + DAY)).await;
    // A retried batch (its seq already applied) is not counted twice.
    ok(&catalog, pulls(2, 4, T0 + DAY)).await;
    ok(&catalog, pulls(1, 3, T0 + DAY)).await;
    let two = reader.image(repo, &digest("two")).unwrap().unwrap();
    assert_eq!((two.pulls, two.last_pulled_ms), (7, Some(T0 + 2 * DAY)));
    assert_eq!(reader.repo_usage(repo).unwrap().pulls, 7);
    let too_many = CatalogCommand::RecordPulls {
        node: 1,
        seq: 3,
        pulls: vec![
            PullCount {
                repo: repo.into(),
                digest: digest("two"),
                count: 1,
                last_ms: 1
            };
            MAX_PULLS_PER_ENTRY + 1
        ],
    };
    assert!(matches!(rejected(&catalog, too_many).await, Rejection::Invalid(_)));

    // Deleting a tag leaves the image, untagged from then.
    ok(
        &catalog,
        CatalogCommand::DeleteTag {
            repo: repo.into(),
            tag: "v1".into(),
            now_ms: T0 + 3 * DAY,
        },
    )
    .await;
    let two = reader.image(repo, &digest("two")).unwrap().unwrap();
    assert_eq!(two.untagged_since_ms, Some(T0 + 3 * DAY));
    assert_eq!(reader.repo_usage(repo).unwrap().tags, 1);

    // Everything is there after a restart.
    catalog.shutdown().await;
    drop(catalog);
    let catalog = open(dir.path()).await;
    let reader = catalog.reader();
    assert_eq!(reader.image(repo, &digest("two")).unwrap().unwrap().pulls, 7);
    let images = reader.images(repo).unwrap();
    assert_eq!(images.len(), 3);
    let index = images.iter().find(|i| i.digest == digest("index")).unwrap();
    assert_eq!(index.tags, vec!["multi".to_string()]);
    assert_eq!(reader.repo_usage(repo).unwrap().images, 3);
    catalog.shutdown().await;
}

fn policy(not_pulled_days: Option<u32>, untagged_days: Option<u32>) -> RetentionPolicy {
    RetentionPolicy {
        not_pulled_days,
        untagged_days,
        ..Default::default()
    }
}

async fn set_policy(catalog: &Catalog, repo: &str, p: RetentionPolicy) {
    ok(
        catalog,
        CatalogCommand::SetRetentionPolicy {
            namespace: tenancy_of(repo).into(),
            name: "cleanup".into(),
            policy: Some(p),
        },
    )
    .await;
    ok(
        catalog,
        CatalogCommand::AssignRetention {
            repo: repo.into(),
            policy: Some("cleanup".into()),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_commits_exactly_the_preview_and_loses_races() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/ci";
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        push_image(&catalog, repo, name, 100 + i as u64, Some(name), T0 + i as u64 * 1000).await;
    }
    // A signature of image a (a referrer), pushed later.
    ok(&catalog, link(repo, "sig-config", 3, T0)).await;
    let sig = image_manifest(&["sig-config"], "{\"sig\":1}", Some(digest("a")));
    ok(&catalog, put(repo, "sig", sig, None, T0 + 5000)).await;
    set_policy(&catalog, repo, policy(Some(30), None)).await;

    // Nothing is old enough yet.
    let now = T0 + 10 * DAY;
    assert!(retention::preview(catalog.reader(), repo, now)
        .unwrap()
        .units
        .is_empty());

    // 40 days on, all four are stale: the preview lists them, with the signature going with a.
    let now = T0 + 40 * DAY;
    let before = retention::preview(catalog.reader(), repo, now).unwrap();
    assert_eq!(before.units.len(), 4);
    let unit_a = before.units.iter().find(|u| u.image.digest == digest("a")).unwrap();
    assert_eq!(
        unit_a.with.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(),
        vec![digest("sig")]
    );
    assert_eq!(unit_a.rule, RuleKind::NotPulled);

    // The race: image b is pulled (and the pull flushed) between evaluation and commit; image c
    // is re-tagged; the commit of the stale plan saves both and deletes a (with its signature)
    // and d.
    ok(
        &catalog,
        CatalogCommand::RecordPulls {
            node: 2,
            seq: 1,
            pulls: vec![PullCount {
                repo: repo.into(),
                digest: digest("b"),
                count: 1,
                last_ms: now,
            }],
        },
    )
    .await;
    ok(
        &catalog,
        put(
            repo,
            "c",
            image_manifest(&["config", "layer-c"], "{\"m\":\"c\"}", None),
            Some("c2"),
            now,
        ),
    )
    .await;
    ok(
        &catalog,
        CatalogCommand::RetentionDelete {
            repo: repo.into(),
            policy: before.policy.clone(),
            rules: before.rules.clone(),
            units: before.units.clone(),
            now_ms: now,
        },
    )
    .await;
    let reader = catalog.reader();
    let left: Vec<String> = reader.images(repo).unwrap().into_iter().map(|i| i.digest).collect();
    let mut expect = vec![digest("b"), digest("c")];
    expect.sort();
    assert_eq!(left, expect);
    assert_eq!(reader.tag(repo, "a").unwrap(), None);
    assert!(reader.referrers(repo, &digest("a")).unwrap().is_empty());
    let (log, _) = reader.deletions("acme", 0, 100).unwrap();
    let mut logged: Vec<String> = log.iter().map(|d| d.digest.clone()).collect();
    logged.sort();
    let mut gone = vec![digest("a"), digest("d")];
    gone.sort();
    assert_eq!(logged, gone);
    assert!(log
        .iter()
        .all(|d| d.policy == "cleanup" && d.rule == RuleKind::NotPulled));
    assert_eq!(reader.repo_usage(repo).unwrap().images, 2);

    // Dry run, then the real run with nothing in between: the run deletes exactly the preview.
    let later = now + 40 * DAY;
    let dry = retention::preview(reader, repo, later).unwrap();
    let planned: Vec<String> = dry.units.iter().map(|u| u.image.digest.clone()).collect();
    assert_eq!(planned.len(), 2);
    let (ran, outcome) = retention::run(&catalog, repo, later).await.unwrap();
    assert_eq!(ran.units, dry.units);
    assert_eq!((outcome.planned, outcome.rejected_entries), (2, 0));
    assert!(reader.images(repo).unwrap().is_empty());
    let (log, _) = reader.deletions("acme", 0, 100).unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(reader.repo_usage(repo).unwrap().tags, 0);

    // A plan judged under another policy, or under this policy's earlier rules, is refused whole.
    let stale = CatalogCommand::RetentionDelete {
        repo: repo.into(),
        policy: "global".into(),
        rules: RetentionPolicy::default(),
        units: vec![],
        now_ms: later,
    };
    assert!(matches!(rejected(&catalog, stale).await, Rejection::Stale(_)));
    push_image(&catalog, repo, "e", 5, None, later).await;
    let plan = retention::preview(catalog.reader(), repo, later + 40 * DAY).unwrap();
    assert_eq!(plan.units.len(), 1);
    set_policy(&catalog, repo, policy(Some(30), Some(90))).await;
    let changed = CatalogCommand::RetentionDelete {
        repo: repo.into(),
        policy: plan.policy,
        rules: plan.rules,
        units: plan.units,
        now_ms: later + 40 * DAY,
    };
    assert!(matches!(rejected(&catalog, changed).await, Rejection::Stale(_)));
    assert_eq!(reader.images(repo).unwrap().len(), 1);
    catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_concurrent_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = std::sync::Arc::new(open(dir.path()).await);
    ok(
        &catalog,
        CatalogCommand::SetLimits {
            namespace: "tiny".into(),
            limits: Some(TenancyLimits {
                max_repos: 2,
                max_images_per_repo: 3,
                max_stored_bytes: Some(10_000),
                requests_per_second: None,
            }),
        },
    )
    .await;
    ok(&catalog, link("tiny/one", "x", 10, T0)).await;
    // Eight pushes race for the last repository slot: exactly one gets it.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.propose(link(&format!("tiny/race-{i}"), "x", 10, T0)).await })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.unwrap().unwrap() {
            CatalogResponse::Applied => won += 1,
            CatalogResponse::Rejected(Rejection::LimitExceeded(message)) => {
                assert!(message.contains("limit of 2 repositories"), "{message}");
                assert!(message.contains("it has 2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(catalog.reader().tenancy_usage("tiny").unwrap().repos, 2);
    let refused = rejected(
        &catalog,
        CatalogCommand::CreateRepo {
            repo: "tiny/explicit".into(),
            compartment: None,
            public: false,
            now_ms: T0,
        },
    )
    .await;
    assert!(matches!(refused, Rejection::LimitExceeded(_)));

    // Images per repository: eight different manifests race for the last of three slots.
    ok(&catalog, link("tiny/one", "config", 10, T0)).await;
    for name in ["m1", "m2"] {
        let m = image_manifest(&["config"], &format!("{{\"{name}\":1}}"), None);
        ok(&catalog, put("tiny/one", name, m, None, T0)).await;
    }
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let catalog = catalog.clone();
            let m = image_manifest(&["config"], &format!("{{\"r\":{i}}}"), None);
            let cmd = put("tiny/one", &format!("r{i}"), m, None, T0);
            tokio::spawn(async move { catalog.propose(cmd).await })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.unwrap().unwrap() {
            CatalogResponse::Applied => won += 1,
            CatalogResponse::Rejected(Rejection::LimitExceeded(m)) => assert!(m.contains("limit of 3 images"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    // Re-pushing an existing manifest takes no slot.
    let m = image_manifest(&["config"], "{\"m1\":1}", None);
    ok(&catalog, put("tiny/one", "m1", m, Some("again"), T0)).await;

    // Stored bytes: a blob that would pass the quota is refused and leaves nothing behind.
    let used = catalog.reader().tenancy_usage("tiny").unwrap().stored_bytes;
    let refused = rejected(&catalog, link("tiny/one", "huge", 10_000, T0)).await;
    let Rejection::LimitExceeded(message) = refused else {
        panic!()
    };
    assert!(message.contains("stored-bytes limit of 10000"), "{message}");
    assert_eq!(catalog.reader().tenancy_usage("tiny").unwrap().stored_bytes, used);
    assert!(catalog.reader().blob(&digest("huge")).unwrap().is_none());

    // Deleting a repository gives its slot and bytes back.
    ok(
        &catalog,
        CatalogCommand::DeleteRepo {
            repo: "tiny/one".into(),
        },
    )
    .await;
    let usage = catalog.reader().tenancy_usage("tiny").unwrap();
    assert_eq!(usage.repos, 1);
    assert_eq!(usage.stored_bytes, 10);
    catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_cannot_move_or_go() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/frozen";
    push_image(&catalog, repo, "one", 10, Some("v1"), T0).await;
    push_image(&catalog, repo, "dev", 10, Some("latest"), T0).await;
    ok(
        &catalog,
        CatalogCommand::SetImmutableTags {
            scope: Scope::Tenancy("acme".into()),
            setting: Some(ImmutableTags {
                enabled: true,
                exempt: vec!["latest".into()],
            }),
        },
    )
    .await;
    // Moving v1 is refused, naming the tag and the rule; the same manifest again is fine.
    let other = image_manifest(&["config"], "{\"other\":1}", None);
    let refused = rejected(&catalog, put(repo, "other", other, Some("v1"), T0)).await;
    assert!(
        refused.to_string().contains("tag v1 in acme/frozen is immutable")
            && refused.to_string().contains("exempt: latest"),
        "{refused}"
    );
    assert!(catalog.reader().image(repo, &digest("other")).unwrap().is_none());
    // Several tags in one PUT (`?tag=`) apply all or none: one immutable tag among them refuses
    // the whole entry, and the free tag it named does not move either.
    let many = CatalogCommand::PutManifestTags {
        repo: repo.into(),
        digest: digest("other"),
        manifest: image_manifest(&["config"], "{\"other\":1}", None),
        tags: vec!["fresh".into(), "v1".into()],
        now_ms: T0,
    };
    assert!(matches!(rejected(&catalog, many).await, Rejection::TagImmutable { .. }));
    assert_eq!(catalog.reader().tag(repo, "fresh").unwrap(), None);
    assert!(catalog.reader().image(repo, &digest("other")).unwrap().is_none());
    let many = CatalogCommand::PutManifestTags {
        repo: repo.into(),
        digest: digest("other"),
        manifest: image_manifest(&["config"], "{\"other\":1}", None),
        tags: vec!["fresh".into(), "latest".into()],
        now_ms: T0,
    };
    ok(&catalog, many).await;
    assert_eq!(catalog.reader().tag(repo, "fresh").unwrap(), Some(digest("other")));
    assert_eq!(catalog.reader().tag(repo, "latest").unwrap(), Some(digest("other")));
    let same = image_manifest(&["config", "layer-one"], "{\"m\":\"one\"}", None);
    ok(&catalog, put(repo, "one", same, Some("v1"), T0 + 1)).await;
    assert_eq!(catalog.reader().tag(repo, "v1").unwrap(), Some(digest("one")));
    // Deleting it, or its image, is refused too; the exempt tag moves freely.
    let delete_tag = CatalogCommand::DeleteTag {
        repo: repo.into(),
        tag: "v1".into(),
        now_ms: T0,
    };
    assert!(matches!(
        rejected(&catalog, delete_tag).await,
        Rejection::TagImmutable { .. }
    ));
    let delete_image = CatalogCommand::DeleteManifest {
        repo: repo.into(),
        digest: digest("one"),
    };
    assert!(matches!(
        rejected(&catalog, delete_image).await,
        Rejection::TagImmutable { .. }
    ));
    let moved = image_manifest(&["config", "layer-one"], "{\"m\":\"one\"}", None);
    ok(&catalog, put(repo, "one", moved, Some("latest"), T0 + 2)).await;
    // A repository's own setting wins over the tenancy default.
    ok(
        &catalog,
        CatalogCommand::SetImmutableTags {
            scope: Scope::Repo(repo.into()),
            setting: Some(ImmutableTags::default()),
        },
    )
    .await;
    let other = image_manifest(&["config"], "{\"other\":1}", None);
    ok(&catalog, put(repo, "other", other, Some("v1"), T0 + 3)).await;
    catalog.shutdown().await;
}
