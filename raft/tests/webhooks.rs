//! Webhook queues through real openraft on real rocksdb: attributed pushes and deletions queue
//! events for the endpoints that want them (and no others), in the same entry as the change; a
//! refused change queues nothing; pull batches apply once per number; acknowledgements drop
//! exactly what was delivered; failures back off; a full queue drops its oldest events and
//! counts them; a deleted endpoint takes its queue with it; queues survive a reopen.

mod support;

use keelson_raft::webhooks::*;
use keelson_raft::{CatalogCommand, CatalogResponse, ManifestRecord};
use support::open;

fn digest(name: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn origin() -> EventOrigin {
    EventOrigin {
        actor: "acme/ann".into(),
        addr: "10.0.0.9".into(),
        host: "registry.test".into(),
        scheme: "https".into(),
        method: "PUT".into(),
        user_agent: "test".into(),
        request_id: String::new(),
        node: 1,
        time_ms: 1_000,
    }
}

fn endpoint(events: &[EventKind], repositories: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        url: "http://hooks.test/".into(),
        events: events.to_vec(),
        repositories: repositories.iter().map(|r| r.to_string()).collect(),
        secret: b"secret".to_vec(),
        enabled: true,
        created_ms: 0,
    }
}

fn push(repo: &str, name: &str, tag: Option<&str>) -> CatalogCommand {
    CatalogCommand::Attributed {
        origin: origin(),
        then: Box::new(CatalogCommand::PutManifest {
            repo: repo.into(),
            digest: digest(name),
            manifest: ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: name.as_bytes().to_vec(),
                blobs: vec![],
                manifests: vec![],
                subject: None,
                artifact_type: None,
                annotations: None,
                created_ms: 0,
            },
            tag: tag.map(str::to_string),
            now_ms: 1_000,
        }),
    }
}

fn hooks(cmd: WebhookCommand) -> CatalogCommand {
    CatalogCommand::Webhooks(cmd)
}

fn put_endpoint(name: &str, e: WebhookEndpoint) -> CatalogCommand {
    hooks(WebhookCommand::Put {
        ns: "acme".into(),
        name: name.into(),
        endpoint: e,
    })
}

fn attempt(first: u64, last: u64, status: Option<u16>) -> DeliveryAttempt {
    DeliveryAttempt {
        at_ms: 2_000,
        node: 1,
        first_seq: first,
        last_seq: last,
        status,
        error: status.is_none().then(|| "refused".to_string()),
        duration_ms: 1,
    }
}

#[tokio::test]
async fn queues_follow_changes_deliveries_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let applied = |r: CatalogResponse| assert_eq!(r, CatalogResponse::Applied);
    applied(
        catalog
            .propose(put_endpoint(
                "all",
                endpoint(
                    &[EventKind::Push, EventKind::Tag, EventKind::Delete, EventKind::Pull],
                    &[],
                ),
            ))
            .await
            .unwrap(),
    );
    applied(
        catalog
            .propose(put_endpoint("team", endpoint(&[EventKind::Push], &["acme/team/"])))
            .await
            .unwrap(),
    );
    // Hostile settings are refused by apply too.
    let bad = put_endpoint("bad", endpoint(&[EventKind::Push], &["other/x"]));
    assert!(matches!(
        catalog.propose(bad).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));

    // A push by tag: push and tag events for "all", nothing for "team".
    applied(catalog.propose(push("acme/app", "m1", Some("v1"))).await.unwrap());
    let reader = catalog.reader();
    let queue = reader.webhook_queue("acme", "all", 100, 1 << 20).unwrap();
    let kinds: Vec<EventKind> = queue.iter().map(|(_, e)| e.kind).collect();
    assert_eq!(kinds, [EventKind::Push, EventKind::Tag]);
    assert_eq!(queue[0].1.id, queue[1].1.id - 1, "ids are given in order");
    assert_eq!(queue[0].1.tag.as_deref(), Some("v1"));
    assert_eq!(queue[0].1.digest, digest("m1"));
    assert_eq!(queue[0].1.origin.actor, "acme/ann");
    assert!(reader.webhook_queue("acme", "team", 100, 1 << 20).unwrap().is_empty());
    applied(catalog.propose(push("acme/team/x", "m2", None)).await.unwrap());
    let team = reader.webhook_queue("acme", "team", 100, 1 << 20).unwrap();
    assert_eq!(team.len(), 1);
    // The same event (same id) goes to both endpoints.
    let all = reader.webhook_queue("acme", "all", 100, 1 << 20).unwrap();
    assert_eq!(all.last().unwrap().1.id, team[0].1.id);

    // A refused change queues nothing: deleting a tag that does not exist.
    let before = reader.webhook("acme", "all").unwrap().unwrap().state.next_seq;
    let missing = CatalogCommand::Attributed {
        origin: origin(),
        then: Box::new(CatalogCommand::DeleteTag {
            repo: "acme/app".into(),
            tag: "nope".into(),
            now_ms: 1_000,
        }),
    };
    assert!(matches!(
        catalog.propose(missing).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));
    assert_eq!(reader.webhook("acme", "all").unwrap().unwrap().state.next_seq, before);
    // Only pushes and deletions carry an origin.
    let odd = CatalogCommand::Attributed {
        origin: origin(),
        then: Box::new(CatalogCommand::DeleteRepo {
            repo: "acme/app".into(),
        }),
    };
    assert!(matches!(
        catalog.propose(odd).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));
    // A tag deletion names the digest the tag pointed at.
    applied(
        catalog
            .propose(CatalogCommand::Attributed {
                origin: origin(),
                then: Box::new(CatalogCommand::DeleteTag {
                    repo: "acme/app".into(),
                    tag: "v1".into(),
                    now_ms: 1_000,
                }),
            })
            .await
            .unwrap(),
    );
    let all = reader.webhook_queue("acme", "all", 100, 1 << 20).unwrap();
    let deleted = &all.last().unwrap().1;
    assert_eq!(
        (deleted.kind, deleted.digest.clone()),
        (EventKind::Delete, digest("m1"))
    );

    // Pull batches apply once per number.
    let pull = WebhookEvent {
        id: 0,
        kind: EventKind::Pull,
        repository: "acme/app".into(),
        digest: digest("m1"),
        media_type: String::new(),
        size: 2,
        tag: None,
        origin: origin(),
    };
    let batch = hooks(WebhookCommand::RecordPulls {
        node: 2,
        seq: 10,
        events: vec![pull.clone(), pull.clone()],
    });
    applied(catalog.propose(batch.clone()).await.unwrap());
    applied(catalog.propose(batch).await.unwrap());
    let state = reader.webhook("acme", "all").unwrap().unwrap().state;
    assert_eq!(state.queued(), 6, "push, tag, push, delete and two pulls: {state:?}");

    // A failure backs off and is logged; a delivery drops exactly what it carried.
    applied(
        catalog
            .propose(hooks(WebhookCommand::Failed {
                ns: "acme".into(),
                name: "all".into(),
                attempt: attempt(0, 1, None),
                next_attempt_ms: 9_000,
            }))
            .await
            .unwrap(),
    );
    let state = reader.webhook("acme", "all").unwrap().unwrap().state;
    assert_eq!((state.failures, state.next_attempt_ms), (1, 9_000));
    applied(
        catalog
            .propose(hooks(WebhookCommand::Delivered {
                ns: "acme".into(),
                name: "all".into(),
                through_seq: 1,
                attempt: attempt(0, 1, Some(200)),
            }))
            .await
            .unwrap(),
    );
    let state = reader.webhook("acme", "all").unwrap().unwrap().state;
    assert_eq!(
        (state.queued(), state.delivered, state.failures, state.next_attempt_ms),
        (4, 2, 0, 0)
    );
    assert_eq!(state.attempts.len(), 2);
    assert_eq!(reader.webhook_queue("acme", "all", 100, 1 << 20).unwrap()[0].0, 2);
    // A repeated acknowledgement (another leader's) changes nothing more; one beyond the queue
    // is refused.
    applied(
        catalog
            .propose(hooks(WebhookCommand::Delivered {
                ns: "acme".into(),
                name: "all".into(),
                through_seq: 1,
                attempt: attempt(0, 1, Some(200)),
            }))
            .await
            .unwrap(),
    );
    assert_eq!(reader.webhook("acme", "all").unwrap().unwrap().state.delivered, 2);
    let beyond = hooks(WebhookCommand::Delivered {
        ns: "acme".into(),
        name: "all".into(),
        through_seq: 1_000,
        attempt: attempt(0, 1_000, Some(200)),
    });
    assert!(matches!(
        catalog.propose(beyond).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));

    // A full queue drops its oldest and counts them.
    // (Proposed many at a time: the log group-commits them.)
    let pings: Vec<u64> = (0..MAX_QUEUED_PER_ENDPOINT + 3).collect();
    for chunk in pings.chunks(500) {
        let answers = futures_util::future::join_all(chunk.iter().map(|i| {
            catalog.propose(hooks(WebhookCommand::Ping {
                ns: "acme".into(),
                name: "team".into(),
                origin: EventOrigin {
                    time_ms: *i,
                    ..origin()
                },
            }))
        }))
        .await;
        for answer in answers {
            applied(answer.unwrap());
        }
    }
    let state = reader.webhook("acme", "team").unwrap().unwrap().state;
    assert_eq!(state.queued(), MAX_QUEUED_PER_ENDPOINT);
    assert_eq!(state.dropped, 4, "the push and three pings: {state:?}");
    let oldest = &reader.webhook_queue("acme", "team", 1, 1 << 20).unwrap()[0];
    assert_eq!(oldest.0, 4);
    assert_eq!(oldest.1.kind, EventKind::Ping);

    // Queues survive a reopen; a deleted endpoint takes its queue.
    catalog.shutdown().await;
    drop(catalog);
    let catalog = open(dir.path()).await;
    let reader = catalog.reader();
    assert_eq!(reader.webhook("acme", "all").unwrap().unwrap().state.queued(), 4);
    applied(
        catalog
            .propose(hooks(WebhookCommand::Delete {
                ns: "acme".into(),
                name: "team".into(),
            }))
            .await
            .unwrap(),
    );
    assert!(reader.webhook("acme", "team").unwrap().is_none());
    assert!(reader.webhook_queue("acme", "team", 10, 1 << 20).unwrap().is_empty());
    assert_eq!(reader.webhooks("acme").unwrap().len(), 1);
    assert_eq!(reader.all_webhooks().unwrap().len(), 1);
}
