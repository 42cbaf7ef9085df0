//! Region state through real openraft on real rocksdb: identity writes only at home, the home's
//! copy replacing identity elsewhere, conditional tag changes, and the replication queue that
//! a rule fills as commands apply and the worker drains.

mod support;

use keelson_raft::identity::{IdentityCommand, IdentityState};
use keelson_raft::regions::{RegionCommand, RegionPeer, RegionRejection, ReplicatedMark, ReplicationRule};
use keelson_raft::{Catalog, CatalogCommand, CatalogResponse, ManifestRecord, Rejection};
use support::open;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

async fn apply(catalog: &Catalog, cmd: CatalogCommand) -> CatalogResponse {
    catalog.propose(cmd).await.unwrap()
}

fn tenancy(ns: &str) -> CatalogCommand {
    CatalogCommand::Identity(IdentityCommand::CreateTenancy {
        namespace: ns.into(),
        now_ms: 1,
    })
}

fn region(cmd: RegionCommand) -> CatalogCommand {
    CatalogCommand::Regions(cmd)
}

fn peer(name: &str) -> RegionPeer {
    RegionPeer {
        name: name.into(),
        url: format!("https://{name}.example"),
        ca_pem: None,
        username: "keelson/admin".into(),
        secret: b"token".to_vec(),
    }
}

fn image(repo: &str, blob: char, tag: Option<&str>) -> CatalogCommand {
    CatalogCommand::PutManifest {
        repo: repo.into(),
        digest: digest(blob.to_ascii_uppercase()),
        manifest: ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: format!("{{\"b\":\"{blob}\"}}").into_bytes(),
            blobs: vec![digest(blob)],
            manifests: vec![],
            subject: None,
            artifact_type: None,
            annotations: None,
            created_ms: 1,
        },
        tag: tag.map(str::to_string),
        now_ms: 1,
    }
}

async fn link(catalog: &Catalog, repo: &str, blob: char) {
    let r = apply(
        catalog,
        CatalogCommand::LinkBlob {
            repo: repo.into(),
            digest: digest(blob),
            size: 1,
            holders: vec![1],
            now_ms: 1,
        },
    )
    .await;
    assert_eq!(r, CatalogResponse::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_written_only_at_home_and_copied_whole_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    // No regions set: identity writes as before; a copy from home is refused.
    assert_eq!(apply(&catalog, tenancy("acme")).await, CatalogResponse::Applied);
    let mut home_state = IdentityState::default();
    home_state
        .apply(IdentityCommand::CreateTenancy {
            namespace: "fromhome".into(),
            now_ms: 2,
        })
        .unwrap();
    let copy = CatalogCommand::Identity(IdentityCommand::ReplaceFromHome {
        state: Box::new(home_state.clone()),
    });
    assert!(matches!(
        apply(&catalog, copy.clone()).await,
        CatalogResponse::Rejected(Rejection::Region(RegionRejection::Invalid(_)))
    ));
    // This cluster is fra, home is iad: identity writes are refused naming iad.
    let set = region(RegionCommand::SetRegion {
        name: "fra".into(),
        home: "iad".into(),
    });
    assert_eq!(apply(&catalog, set).await, CatalogResponse::Applied);
    match apply(&catalog, tenancy("other")).await {
        CatalogResponse::Rejected(r @ Rejection::NotHome { .. }) => {
            assert!(r.to_string().contains("home region iad"), "{r}");
        }
        other => panic!("expected NotHome, got {other:?}"),
    }
    // Token-use bookkeeping stays local; the home's copy replaces the state.
    let touch = CatalogCommand::Identity(IdentityCommand::TouchTokens { uses: vec![] });
    assert_eq!(apply(&catalog, touch).await, CatalogResponse::Applied);
    assert_eq!(apply(&catalog, copy).await, CatalogResponse::Applied);
    let tenancies: Vec<String> = catalog
        .reader()
        .with_identity(|s| s.tenancies.keys().cloned().collect());
    assert_eq!(tenancies, vec!["fromhome".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_under_a_precondition_and_the_replication_queue() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/app/web";
    for blob in ['a', 'b'] {
        link(&catalog, repo, blob).await;
    }
    // If-None-Match: * creates the tag once.
    let tag_if = |expected: Option<String>, then: CatalogCommand| CatalogCommand::TagIf {
        repo: repo.into(),
        tag: "v1".into(),
        expected,
        then: Box::new(then),
    };
    assert_eq!(
        apply(&catalog, tag_if(None, image(repo, 'a', Some("v1")))).await,
        CatalogResponse::Applied
    );
    assert!(matches!(
        apply(&catalog, tag_if(None, image(repo, 'b', Some("v1")))).await,
        CatalogResponse::Rejected(Rejection::PreconditionFailed { .. })
    ));
    // If-Match on the wrong digest changes nothing; on the right one it moves the tag.
    assert!(matches!(
        apply(&catalog, tag_if(Some(digest('Z')), image(repo, 'b', Some("v1")))).await,
        CatalogResponse::Rejected(Rejection::PreconditionFailed { .. })
    ));
    assert_eq!(catalog.reader().tag(repo, "v1").unwrap(), Some(digest('A')));
    assert_eq!(
        apply(&catalog, tag_if(Some(digest('A')), image(repo, 'b', Some("v1")))).await,
        CatalogResponse::Applied
    );
    assert_eq!(catalog.reader().tag(repo, "v1").unwrap(), Some(digest('B')));
    // A condition must guard the tag it names.
    assert!(matches!(
        apply(&catalog, tag_if(Some(digest('B')), image(repo, 'a', Some("other")))).await,
        CatalogResponse::Rejected(Rejection::Invalid(_))
    ));

    // Nothing is queued while no rule covers the repository.
    assert!(catalog.reader().replication_changes(10).unwrap().is_empty());
    assert_eq!(
        apply(&catalog, region(RegionCommand::PutPeer(peer("fra")))).await,
        CatalogResponse::Applied
    );
    let rule = ReplicationRule {
        id: "r1".into(),
        namespace: "acme".into(),
        repos: "app/*".into(),
        tags: "*".into(),
        targets: vec!["fra".into()],
        deletes: true,
        bytes_per_second: None,
        created_ms: 1,
    };
    assert_eq!(
        apply(&catalog, region(RegionCommand::PutRule(rule))).await,
        CatalogResponse::Applied
    );
    assert_eq!(
        apply(&catalog, image(repo, 'a', Some("v2"))).await,
        CatalogResponse::Applied
    );
    link(&catalog, "acme/base", 'c').await;
    assert_eq!(
        apply(&catalog, image("acme/base", 'c', Some("v1"))).await,
        CatalogResponse::Applied
    );
    let queued = catalog.reader().replication_changes(10).unwrap();
    assert_eq!(queued.len(), 1, "only the covered repository is queued: {queued:?}");
    let (queued_repo, seq) = queued[0].clone();
    assert_eq!(queued_repo, repo);
    // A change after the worker read the queue keeps the repository queued.
    let delete = CatalogCommand::DeleteTag {
        repo: repo.into(),
        tag: "v2".into(),
        now_ms: 2,
    };
    assert_eq!(apply(&catalog, delete).await, CatalogResponse::Applied);
    let processed = |seq| region(RegionCommand::Processed { repo: repo.into(), seq });
    assert_eq!(apply(&catalog, processed(seq)).await, CatalogResponse::Applied);
    let again = catalog.reader().replication_changes(10).unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].1 > seq);
    assert_eq!(apply(&catalog, processed(again[0].1)).await, CatalogResponse::Applied);
    assert!(catalog.reader().replication_changes(10).unwrap().is_empty());

    // Marks record what the target acknowledged, and an unmark removes one.
    let mark = |digest: Option<String>| ReplicatedMark {
        rule: "r1".into(),
        target: "fra".into(),
        repo: repo.into(),
        key: "v1".into(),
        digest,
        at_ms: 3,
    };
    let marks = |m| region(RegionCommand::Replicated { marks: vec![m] });
    assert_eq!(
        apply(&catalog, marks(mark(Some(digest('B'))))).await,
        CatalogResponse::Applied
    );
    assert_eq!(
        catalog.reader().replication_marks("r1", "fra", repo).unwrap()["v1"].digest,
        digest('B')
    );
    assert_eq!(apply(&catalog, marks(mark(None))).await, CatalogResponse::Applied);
    assert!(catalog
        .reader()
        .replication_marks("r1", "fra", repo)
        .unwrap()
        .is_empty());
    // A peer a rule targets cannot be removed.
    assert!(matches!(
        apply(&catalog, region(RegionCommand::RemovePeer { name: "fra".into() })).await,
        CatalogResponse::Rejected(Rejection::Region(_))
    ));
}
