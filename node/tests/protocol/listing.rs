//! Tags list (end-8a/8b) and `_catalog` pagination.

use serde_json::json;

use crate::common::*;

/// Follows `Link: <…>; rel="next"` from `first` to the end, checking each Link against the page
/// it follows; returns all pages. `list_key` is `tags` or `repositories`.
async fn follow_links(reg: &Reg, first: &str, list_key: &str, n: usize, path: &str) -> Vec<Vec<String>> {
    let mut pages = vec![];
    let mut url = first.to_string();
    loop {
        let r = reg.get(&url).await;
        r.expect(200);
        let page = string_list(&r.json()[list_key], &r);
        assert!(page.len() <= n, "page larger than n={n}: {page:?}");
        let link = r.header("link");
        pages.push(page.clone());
        assert!(pages.len() < 100, "pagination does not terminate");
        match link {
            None => return pages,
            Some(l) => {
                let next = link_next(&l);
                let (p, q) = split_url(&next);
                assert_eq!(p, path, "Link path: {l}");
                let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
                assert_eq!(get("n").as_deref(), Some(n.to_string().as_str()), "Link `n`: {l}");
                assert_eq!(
                    get("last").as_deref(),
                    page.last().map(|s| s.as_str()),
                    "Link `last` must be the last entry of this page: {l}"
                );
                assert_eq!(page.len(), n, "a page with a Link must be full: {page:?} {l}");
                url = next;
            }
        }
    }
}

/// Tags are sorted; `n` limits with a Link to the next page; following the Links (or `last`)
/// visits every tag exactly once; no Link on the last page; `n=0` is empty without Link.
#[tokio::test]
async fn tags_list_sorted_and_paginated() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/app";
    let (_, body) = reg.push_image(repo, "latest").await;
    let mut want: Vec<String> = [
        "v1.0", "alpha", "beta", "1.0", "v2", "zeta", "0.9-rc", "beta.2", "v1.0_x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for t in &want {
        reg.put_manifest_ok(repo, t, OCI_MANIFEST, &body).await;
    }
    want.push("latest".into());
    want.sort(); // ASCII order (== case-insensitive order: all lowercase)

    // Everything, sorted.
    let (tags, link) = reg.tags(repo, "").await;
    assert_eq!(tags, want);
    assert!(link.is_none(), "unexpected Link on a complete list: {link:?}");

    // n=2, following Links.
    let pages = follow_links(
        &reg,
        &format!("/v2/{repo}/tags/list?n=2"),
        "tags",
        2,
        &format!("/v2/{repo}/tags/list"),
    )
    .await;
    assert!(pages.len() >= 5, "10 tags at n=2 need 5 pages: {pages:?}");
    let flat: Vec<String> = pages.concat();
    assert_eq!(flat, want, "pages: {pages:?}");
    let first = reg.get(&format!("/v2/{repo}/tags/list?n=2")).await;
    let l = first.must_header("link");
    assert!(l.contains(&format!("/v2/{repo}/tags/list?")), "Link: {l}");

    // n=3 with `last` by hand.
    let mut got = vec![];
    let mut last: Option<String> = None;
    loop {
        let q = match &last {
            None => "?n=3".to_string(),
            Some(l) => format!("?n=3&last={}", pct(l)),
        };
        let (page, _) = reg.tags(repo, &q).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        last = page.last().cloned();
        got.extend(page);
        assert!(got.len() <= want.len(), "duplicates while paging by `last`: {got:?}");
    }
    assert_eq!(got, want);

    // `last` alone.
    let (page, _) = reg.tags(repo, "?last=latest").await;
    let after: Vec<String> = want.iter().filter(|t| t.as_str() > "latest").cloned().collect();
    assert_eq!(page, after);
    let (page, link) = reg.tags(repo, "?last=zeta").await;
    assert!(page.is_empty() && link.is_none(), "{page:?} {link:?}");

    // n=0: empty, no Link.
    let (page, link) = reg.tags(repo, "?n=0").await;
    assert!(page.is_empty(), "n=0 returned {page:?}");
    assert!(link.is_none(), "n=0 must not have a Link: {link:?}");

    // n ≥ count: everything, no Link.
    let (page, link) = reg.tags(repo, "?n=10").await;
    assert_eq!(page, want);
    if let Some(l) = &link {
        // A Link is allowed only if it leads to an empty page.
        let r = reg.get(&link_next(l)).await;
        r.expect(200);
        assert!(
            string_list(&r.json()["tags"], &r).is_empty(),
            "Link after the full list led to more tags"
        );
    }
    let (page, link) = reg.tags(repo, "?n=1000").await;
    assert_eq!(page, want);
    assert!(link.is_none(), "Link with n > count: {link:?}");
}

/// A repository whose only manifest was untagged lists no tags (200, empty list) — or, if the
/// registry forgets repositories without tags, 404 NAME_UNKNOWN; never a stale tag.
#[tokio::test]
async fn tags_list_after_untag() {
    let node = Node::start();
    let reg = node.reg();
    reg.push_image("acme/app", "only").await;
    reg.delete("/v2/acme/app/manifests/only").await.expect(202);
    let r = reg.get("/v2/acme/app/tags/list").await;
    if r.status == 200 {
        assert!(string_list(&r.json()["tags"], &r).is_empty(), "{}", r.describe());
    } else {
        assert_error(&r, 404, "NAME_UNKNOWN");
    }
}

/// Unknown repository → 404 NAME_UNKNOWN.
#[tokio::test]
async fn tags_list_unknown_repo() {
    let node = Node::start();
    let reg = node.reg();
    assert_error(&reg.get("/v2/acme/nothing/tags/list").await, 404, "NAME_UNKNOWN");
    reg.push_image("acme/app", "v1").await;
    assert_error(&reg.get("/v2/acme/nothing/tags/list").await, 404, "NAME_UNKNOWN");
    assert_error(&reg.get("/v2/other/app/tags/list").await, 404, "NAME_UNKNOWN");
}

/// `_catalog`: sorted repositories, the same `n`/`last`/Link pagination.
#[tokio::test]
async fn catalog_paginated() {
    let node = Node::start();
    let reg = node.reg();
    let mut repos: Vec<String> = ["zeta/y", "acme/b", "acme/team/web", "beta/x", "acme/a", "acme/a-b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in &repos {
        reg.push_image(r, "v1").await;
    }
    repos.sort();

    let r = reg.get("/v2/_catalog").await;
    r.expect(200);
    let all = string_list(&r.json()["repositories"], &r);
    assert_eq!(all, repos);
    assert!(r.header("link").is_none());

    let pages = follow_links(&reg, "/v2/_catalog?n=2", "repositories", 2, "/v2/_catalog").await;
    assert_eq!(pages.concat(), repos, "pages: {pages:?}");
    assert!(pages.len() >= 3);

    let r = reg.get(&format!("/v2/_catalog?n=2&last={}", pct("acme/b"))).await;
    r.expect(200);
    let page = string_list(&r.json()["repositories"], &r);
    assert_eq!(page, vec!["acme/team/web".to_string(), "beta/x".to_string()]);

    let r = reg.get("/v2/_catalog?n=0").await;
    r.expect(200);
    assert!(string_list(&r.json()["repositories"], &r).is_empty());
    assert!(
        r.header("link").is_none(),
        "n=0 must not have a Link:\n{}",
        r.describe()
    );

    let r = reg.get("/v2/_catalog?n=100").await;
    r.expect(200);
    assert_eq!(string_list(&r.json()["repositories"], &r), repos);
    assert!(r.header("link").is_none(), "{}", r.describe());
    let _ = json!({});
}

/// Mixed-case tags: either ASCII order or case-insensitive order (both allowed by the spec),
/// and pagination agrees with the full listing.
#[tokio::test]
async fn tags_list_mixed_case_order() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/cases";
    let (_, body) = reg.push_image(repo, "delta").await;
    for t in ["Beta", "alpha", "Gamma"] {
        reg.put_manifest_ok(repo, t, OCI_MANIFEST, &body).await;
    }
    let ascii: Vec<String> = ["Beta", "Gamma", "alpha", "delta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let lexical: Vec<String> = ["alpha", "Beta", "delta", "Gamma"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (tags, _) = reg.tags(repo, "").await;
    assert!(
        tags == ascii || tags == lexical,
        "tags neither ASCII- nor case-insensitively sorted: {tags:?}"
    );
    let pages = follow_links(
        &reg,
        &format!("/v2/{repo}/tags/list?n=1"),
        "tags",
        1,
        &format!("/v2/{repo}/tags/list"),
    )
    .await;
    assert_eq!(
        pages.concat(),
        tags,
        "paging with n=1 disagrees with the full list: {pages:?}"
    );
}
