//! Signing keys and verification policies through real openraft on real rocksdb: a policy names
//! only registered keys; a key a policy names cannot be removed; bounds hold; replacing keeps one
//! record; resealing replaces a held private key only while it is still what the pass read;
//! everything survives a reopen.

mod support;

use keelson_raft::signing::*;
use keelson_raft::{CatalogCommand, CatalogResponse, Rejection};
use support::open;

fn key(scope: TrustScope, private: Option<&[u8]>) -> TrustedKey {
    TrustedKey {
        scope,
        material: KeyMaterial::PublicKey,
        pem: "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n".into(),
        private: private.map(<[u8]>::to_vec),
        created_ms: 1,
    }
}

fn put_key(ns: &str, name: &str, key: TrustedKey) -> CatalogCommand {
    CatalogCommand::Signing(SigningCommand::PutKey {
        ns: ns.into(),
        name: name.into(),
        key,
    })
}

fn put_policy(ns: &str, name: &str, keys: &[&str]) -> CatalogCommand {
    CatalogCommand::Signing(SigningCommand::PutPolicy {
        ns: ns.into(),
        name: name.into(),
        policy: VerificationPolicy {
            scope: TrustScope::Repository(format!("{ns}/app")),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            refuse_severity: None,
            created_ms: 2,
        },
    })
}

fn rejected(answer: CatalogResponse) -> String {
    match answer {
        CatalogResponse::Rejected(Rejection::Invalid(why))
        | CatalogResponse::Rejected(Rejection::LimitExceeded(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn keys_and_policies_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    {
        let catalog = open(dir.path()).await;
        let why = rejected(catalog.propose(put_policy("acme", "p", &["ci"])).await.unwrap());
        assert!(why.contains("no signing key ci"), "{why}");
        assert_eq!(
            catalog
                .propose(put_key("acme", "ci", key(TrustScope::Tenancy, None)))
                .await
                .unwrap(),
            CatalogResponse::Applied
        );
        assert_eq!(
            catalog.propose(put_policy("acme", "p", &["ci"])).await.unwrap(),
            CatalogResponse::Applied
        );
        let why = rejected(
            catalog
                .propose(CatalogCommand::Signing(SigningCommand::DeleteKey {
                    ns: "acme".into(),
                    name: "ci".into(),
                }))
                .await
                .unwrap(),
        );
        assert!(why.contains("policy p requires key ci"), "{why}");
        // Another tenancy sees none of it.
        assert!(catalog.reader().signing_keys("beta").unwrap().keys.is_empty());
        let policies = catalog.reader().verification_policies("acme").unwrap();
        let chain = vec!["acme".to_string()];
        assert_eq!(policies.applying("acme/app", &chain).count(), 1);
        assert_eq!(policies.applying("acme/web", &chain).count(), 0);

        // Bounds: empty or oversized policies, bad names, oversized PEM, too many keys.
        rejected(catalog.propose(put_policy("acme", "empty", &[])).await.unwrap());
        let many: Vec<String> = (0..=MAX_KEYS_PER_POLICY).map(|_| "ci".to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        rejected(catalog.propose(put_policy("acme", "many", &many)).await.unwrap());
        rejected(
            catalog
                .propose(put_key("acme", "Bad Name", key(TrustScope::Tenancy, None)))
                .await
                .unwrap(),
        );
        let mut huge = key(TrustScope::Tenancy, None);
        huge.pem = "x".repeat(MAX_PEM_LEN + 1);
        rejected(catalog.propose(put_key("acme", "huge", huge)).await.unwrap());
        for i in 1..MAX_KEYS_PER_TENANCY {
            let answer = catalog
                .propose(put_key("acme", &format!("k{i}"), key(TrustScope::Tenancy, None)))
                .await
                .unwrap();
            assert_eq!(answer, CatalogResponse::Applied);
        }
        let why = rejected(
            catalog
                .propose(put_key("acme", "one-more", key(TrustScope::Tenancy, None)))
                .await
                .unwrap(),
        );
        assert!(why.contains("the most it may have"), "{why}");
        // Replacing an existing key is not one more.
        assert_eq!(
            catalog
                .propose(put_key("acme", "k1", key(TrustScope::Tenancy, Some(b"plain"))))
                .await
                .unwrap(),
            CatalogResponse::Applied
        );

        // Resealing replaces the held key only while it is what the pass read.
        let reseal = |was: &[u8], sealed: &[u8]| {
            CatalogCommand::Signing(SigningCommand::ResealKeys {
                keys: vec![ResealedImageKey {
                    ns: "acme".into(),
                    name: "k1".into(),
                    was_sha256: keelson_raft::identity::stored_sha256(was),
                    sealed: sealed.to_vec(),
                }],
            })
        };
        catalog.propose(reseal(b"something else", b"lost")).await.unwrap();
        catalog.propose(reseal(b"plain", b"sealed")).await.unwrap();
        let keys = catalog.reader().signing_keys("acme").unwrap();
        assert_eq!(keys.keys["k1"].private.as_deref(), Some(&b"sealed"[..]));
        assert_eq!(catalog.reader().all_signing_keys().unwrap().len(), 1);
        catalog.shutdown().await;
    }
    let catalog = open(dir.path()).await;
    let keys = catalog.reader().signing_keys("acme").unwrap();
    assert_eq!(keys.keys.len(), MAX_KEYS_PER_TENANCY);
    assert_eq!(
        catalog.reader().verification_policies("acme").unwrap().policies["p"].keys,
        vec!["ci".to_string()]
    );
    assert_eq!(
        catalog
            .propose(CatalogCommand::Signing(SigningCommand::DeletePolicy {
                ns: "acme".into(),
                name: "p".into(),
            }))
            .await
            .unwrap(),
        CatalogResponse::Applied
    );
    assert_eq!(
        catalog
            .propose(CatalogCommand::Signing(SigningCommand::DeleteKey {
                ns: "acme".into(),
                name: "ci".into(),
            }))
            .await
            .unwrap(),
        CatalogResponse::Applied
    );
}
