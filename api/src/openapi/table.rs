//! The table the OpenAPI document is built from: one row per route of `/api/v1`, written from
//! the handlers (`handlers/*.rs`). A route added to a dispatcher without a row here fails the
//! coverage test (`coverage.rs`).

use utoipa::openapi::{RefOr, Schema};

use super::schemas::{
    any, array, boolean, describe, extend, integer, integer_or_null, named, obj, one_of, string, string_or_null,
};
use super::{op, Access, Op};
use crate::handlers::{admin, identity, lifecycle, regions, signing, vulndb};

/// The tags, in the order a reader meets them.
pub(super) const TAGS: &[(&str, &str)] = &[
    ("meta", "This document."),
    (
        "cluster",
        "Members, initialisation, redundancy and the cluster's own passes.",
    ),
    (
        "tenancies",
        "Tenancies and what they hold: compartments, users, groups, policies, auth tokens.",
    ),
    (
        "repositories",
        "Repositories: creation, settings, visibility, deletion.",
    ),
    (
        "images",
        "A repository's images and tags, as the lifecycle views show them.",
    ),
    (
        "retention",
        "Retention policies, their previews and runs, tenancy limits and immutable tags.",
    ),
    ("regions", "This cluster's region and its peer regions."),
    (
        "replication",
        "Replication rules towards other regions and their progress.",
    ),
    ("pull-through", "Repository prefixes that cache an upstream registry."),
    ("webhooks", "A tenancy's webhook endpoints and their delivery state."),
    (
        "signing",
        "Keys trusted for image signatures, verification policies and server-side signing.",
    ),
    (
        "scanning",
        "Image inventories (SBOMs), their vulnerability findings and the OSV database.",
    ),
    ("audit", "The replicated audit log."),
];

/// `{"<key>": "<what the route acted on>"}`, the answer of most deletions.
fn done(key: &'static str) -> RefOr<Schema> {
    obj([(key, string())])
}

/// Every route of `/api/v1`.
pub(super) fn operations() -> Vec<Op> {
    let admin = Access::Cluster;
    let tenancy = Access::Tenancy;
    let inspect = Access::Repository {
        verb: "inspect",
        token: "pull",
        public: true,
    };
    let delete = Access::Repository {
        verb: "manage",
        token: "delete",
        public: false,
    };
    let push = Access::Repository {
        verb: "use",
        token: "push",
        public: false,
    };
    let manage = Access::Repository {
        verb: "manage",
        token: "*",
        public: false,
    };
    let mut ops =
        vec![
        // --- meta ----------------------------------------------------------------------------------
        op("GET", "/api/v1/openapi.json", "meta", "This document")
            .access(Access::Anyone)
            .answer(200, "The OpenAPI document.", any()),
        // --- cluster (handlers/admin.rs) -----------------------------------------------------------
        op(
            "GET",
            "/api/v1/cluster/status",
            "cluster",
            "The cluster's status as this node sees it",
        )
        .about("Answered even by a node removed from the cluster, so it can say so.")
        .access(admin)
        .answer(
            200,
            "Roles, term, log positions, members, blob jobs and region.",
            named("ClusterStatus"),
        ),
        op("POST", "/api/v1/cluster/init", "cluster", "Initialise the cluster")
            .about(
                "Starts the cluster with the given members (absent or empty: this node alone), creates the \
                 cluster administrator `keelson/admin` and commits the bootstrap redundancy default. A \
                 node already initialised (a node without peers initialises itself) answers 400.",
            )
            .access(Access::Bootstrap)
            .uses::<admin::MemberSpec>()
            .body_schema(array(named("MemberSpec")), false, "The initial members.")
            .answer(
                200,
                "Initialised.",
                obj([
                    ("initialized", boolean()),
                    ("admin_user", string()),
                    (
                        "admin_token?",
                        describe(
                            string(),
                            "The administrator's auth token, when this call generated it (shown once).",
                        ),
                    ),
                ]),
            ),
        op(
            "GET",
            "/api/v1/cluster/redundancy",
            "cluster",
            "The cluster's default redundancy",
        )
        .access(admin)
        .answer(
            200,
            "The policy and whether it is committed (else the node's own flags).",
            obj([("redundancy", string()), ("committed", boolean())]),
        ),
        op(
            "PUT",
            "/api/v1/cluster/redundancy",
            "cluster",
            "Set the cluster's default redundancy",
        )
        .about("An erasure-coded policy wider than the cluster's fault domains is refused.")
        .access(admin)
        .body::<admin::RedundancyBody>("The new default.")
        .answer(
            200,
            "Committed.",
            obj([("redundancy", string()), ("committed", boolean())]),
        ),
        op("PUT", "/api/v1/cluster/clock", "cluster", "Move a test clock ahead")
            .about("Only on a node started with `--test-clock true`; any other answers 400.")
            .access(admin)
            .body::<admin::ClockBody>("How far ahead of real time the node's clock runs.")
            .answer(
                200,
                "The offset and the node's time now.",
                obj([("offset_ms", integer()), ("now_ms", integer())]),
            ),
        op(
            "POST",
            "/api/v1/cluster/pulls/flush",
            "cluster",
            "Flush this node's pull counts now",
        )
        .access(admin)
        .answer(
            200,
            "How many images' pull counts were flushed.",
            obj([("flushed", integer())]),
        ),
        op(
            "POST",
            "/api/v1/cluster/retention/run",
            "cluster",
            "Run a retention pass now",
        )
        .about("Runs on the leader only; a follower answers 400.")
        .access(admin)
        .answer(
            200,
            "What the pass did.",
            obj([
                ("repos_judged", integer()),
                ("images_planned", integer()),
                ("entries", integer()),
                ("entries_refused", integer()),
            ]),
        ),
        op("POST", "/api/v1/cluster/members", "cluster", "Add a member")
            .about("Adds the node as a learner, waits until it has caught up and promotes it to voter.")
            .access(admin)
            .body::<admin::MemberSpec>("The node to add.")
            .answer(200, "Added.", obj([("added", integer())])),
        op(
            "DELETE",
            "/api/v1/cluster/members/{node_id}",
            "cluster",
            "Remove a member",
        )
        .about("Changes the membership, then tells the removed node, which stops serving.")
        .access(admin)
        .answer(
            200,
            "Removed.",
            obj([
                ("removed", integer()),
                ("told", describe(boolean(), "Whether the node was told.")),
            ]),
        ),
        // --- tenancies (handlers/identity.rs) ------------------------------------------------------
        op("POST", "/api/v1/tenancies", "tenancies", "Create a tenancy")
            .access(admin)
            .body::<identity::NamespaceBody>("The tenancy's namespace.")
            .answer(201, "Created.", obj([("namespace", string())])),
        op("GET", "/api/v1/tenancies/{namespace}", "tenancies", "A tenancy")
            .access(tenancy)
            .answer(200, "Its compartments, users, groups and policies.", named("Tenancy")),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/compartments",
            "tenancies",
            "Create a compartment",
        )
        .access(tenancy)
        .body::<identity::NameBody>("The compartment and its parent.")
        .answer(201, "Created.", obj([("compartment", string())])),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/users",
            "tenancies",
            "Create a user",
        )
        .access(tenancy)
        .body::<identity::NameBody>("The user's name (`parent` is not used).")
        .answer(
            201,
            "Created.",
            obj([("user", describe(string(), "`<namespace>/<user>`."))]),
        ),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/users/{user}",
            "tenancies",
            "Delete a user",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/users/{user}/tokens",
            "tenancies",
            "Create an auth token",
        )
        .about("A user holds at most a set number of tokens (2 by default).")
        .access(Access::Account)
        .optional_body::<identity::TokenBody>("A description of the token.")
        .answer(
            201,
            "Created; the only time the secret is shown.",
            obj([("id", string()), ("token", string()), ("username", string())]),
        ),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/users/{user}/tokens",
            "tenancies",
            "A user's auth tokens",
        )
        .access(Access::Account)
        .answer(
            200,
            "The tokens, without their secrets.",
            obj([(
                "tokens",
                array(obj([
                    ("id", string()),
                    ("description", string()),
                    ("created_ms", integer()),
                    ("last_used_ms", integer_or_null()),
                ])),
            )]),
        ),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/users/{user}/tokens/{token_id}",
            "tenancies",
            "Revoke an auth token",
        )
        .access(Access::Account)
        .answer(200, "Revoked.", done("revoked")),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/groups",
            "tenancies",
            "Create a group",
        )
        .access(tenancy)
        .body::<identity::NameBody>("The group's name (`parent` is not used).")
        .answer(201, "Created.", obj([("group", string())])),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/groups/{group}/members/{user}",
            "tenancies",
            "Add a user to a group",
        )
        .about("Takes no body.")
        .access(tenancy)
        .answer(200, "Added.", obj([("group", string()), ("added", string())])),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/groups/{group}/members/{user}",
            "tenancies",
            "Remove a user from a group",
        )
        .access(tenancy)
        .answer(200, "Removed.", obj([("group", string()), ("removed", string())])),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/policies/{policy}",
            "tenancies",
            "Create or replace a policy",
        )
        .about("Statements that do not parse are refused with 400, the parse error in `detail`.")
        .access(tenancy)
        .body::<identity::PolicyBody>("The policy.")
        .answer(200, "Saved.", obj([("policy", string())])),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/policies/{policy}",
            "tenancies",
            "Delete a policy",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/policy-check",
            "tenancies",
            "Check policy statements",
        )
        .about("Parses the statements without saving them; a parse error is a 400 with it in `detail`.")
        .access(tenancy)
        .body::<identity::PolicyBody>("The statements to check (`compartment` is not used).")
        .answer(
            200,
            "They parse.",
            obj([("statements", describe(integer(), "How many."))]),
        ),
        op(
            "POST",
            "/api/v1/signing-keys/rotate",
            "tenancies",
            "Rotate the token-signing key",
        )
        .about("The new key signs from now on; the last three verify.")
        .access(admin)
        .answer(200, "The new key's id.", obj([("kid", string())])),
        // --- repositories (handlers/identity.rs) ---------------------------------------------------
        op("POST", "/api/v1/repos", "repositories", "Create a repository")
            .about("Private and in the tenancy's root compartment unless the body says otherwise.")
            .access(manage)
            .body::<identity::RepoBody>("The repository (`name` required) and its first settings.")
            .answer(201, "Created.", obj([("repo", string()), ("redundancy", string())])),
        op("GET", "/api/v1/repos/{repository}", "repositories", "A repository")
            .access(inspect)
            .answer(200, "The repository with its usage and settings.", named("Repository")),
        op(
            "PATCH",
            "/api/v1/repos/{repository}",
            "repositories",
            "Change a repository's settings",
        )
        .about("Only the fields sent change.")
        .access(manage)
        .optional_body::<identity::RepoBody>("The settings to change (`name` is not used).")
        .answer(200, "Changed.", obj([("repo", string()), ("redundancy", string())])),
        op(
            "DELETE",
            "/api/v1/repos/{repository}",
            "repositories",
            "Delete a repository",
        )
        .access(delete)
        .answer(200, "Deleted.", done("deleted")),
        // --- images and retention of one repository (handlers/lifecycle.rs) -------------------------
        op(
            "GET",
            "/api/v1/repos/{repository}/images",
            "images",
            "A repository's images",
        )
        .access(inspect)
        .query(
            "sort",
            one_of(&["pushed", "pulled", "size", "pulls"]),
            "Order (default `pushed`): newest, latest or largest first.",
        )
        .query("order", one_of(&["desc", "asc"]), "`asc` reverses the order.")
        .query(
            "tagged",
            one_of(&["true", "false"]),
            "Only tagged, or only untagged, images.",
        )
        .query(
            "n",
            integer(),
            "Page size (default 100, at most the node's page limit).",
        )
        .query("last", string(), "The last digest of the previous page.")
        .answer(
            200,
            "A page of images.",
            obj([
                ("repo", string()),
                ("total", integer()),
                ("images", array(named("ImageEntry"))),
            ]),
        )
        .answer_header("Link", "The next page (`rel=\"next\"`), when there is one."),
        op(
            "GET",
            "/api/v1/repos/{repository}/images/{digest}",
            "images",
            "An image",
        )
        .access(inspect)
        .answer(
            200,
            "The image with its layers, config, children and referrers.",
            named("ImageDetail"),
        ),
        op(
            "POST",
            "/api/v1/repos/{repository}/images/{digest}/sign",
            "signing",
            "Sign an image with a key the cluster holds",
        )
        .about(
            "Adds a cosign-format signature (under the `<algorithm>-<hex>.sig` tag) of the image and, for an \
             index, of each of its manifests. The key must be held by the cluster and trusted for the repository.",
        )
        .access(push)
        .body::<signing::SignBody>("The held key to sign with.")
        .answer(
            201,
            "Signed.",
            obj([
                ("key", string()),
                (
                    "signed",
                    array(obj([("digest", string()), ("signature_manifest", string()), ("tag", string())])),
                ),
            ]),
        ),
        op(
            "DELETE",
            "/api/v1/repos/{repository}/images/{digest}",
            "images",
            "Delete an image",
        )
        .about("Deletes the manifest with its tags.")
        .access(delete)
        .answer(200, "Deleted.", obj([("deleted", string()), ("tags", array(string()))])),
        op(
            "DELETE",
            "/api/v1/repos/{repository}/tags/{tag}",
            "images",
            "Remove a tag",
        )
        .about("The image stays. Refused for an immutable tag.")
        .access(delete)
        .answer(200, "Untagged.", done("untagged")),
        op(
            "GET",
            "/api/v1/repos/{repository}/retention/preview",
            "retention",
            "What retention would delete now",
        )
        .access(inspect)
        .answer(
            200,
            "The images the repository's policy would delete.",
            named("RetentionPreview"),
        ),
        op(
            "POST",
            "/api/v1/repos/{repository}/retention/run",
            "retention",
            "Run the repository's retention now",
        )
        .access(manage)
        .answer(
            200,
            "The plan and what it deleted.",
            extend(
                "RetentionPreview",
                [
                    ("deleted", array(string())),
                    (
                        "kept_changed_meanwhile",
                        describe(
                            array(string()),
                            "Planned images that changed before deletion and were kept.",
                        ),
                    ),
                    ("entries", integer()),
                ],
            ),
        ),
        // --- tenancy lifecycle (handlers/lifecycle.rs) ---------------------------------------------
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/summary",
            "repositories",
            "A tenancy's repositories and usage",
        )
        .about("Lists the repositories the caller may see.")
        .access(Access::Member)
        .answer(
            200,
            "The tenancy's summary.",
            obj([
                ("namespace", string()),
                (
                    "administrator",
                    describe(boolean(), "Whether the caller administers the tenancy."),
                ),
                ("may_create_repos", boolean()),
                (
                    "repositories",
                    array(obj([
                        ("name", string()),
                        ("public", boolean()),
                        ("compartment", string_or_null()),
                        ("images", integer()),
                        ("tags", integer()),
                        ("stored_bytes", integer()),
                        ("last_push_ms", integer_or_null()),
                        ("pulls", integer()),
                    ])),
                ),
                ("usage", named("Usage")),
                ("limits", named("Limits")),
            ]),
        ),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/limits",
            "retention",
            "A tenancy's limits and usage",
        )
        .access(Access::Member)
        .answer(
            200,
            "The limits and what is used.",
            extend("Limits", [("usage", named("Usage"))]),
        ),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/limits",
            "retention",
            "Set a tenancy's limits",
        )
        .access(admin)
        .optional_body::<lifecycle::LimitsBody>("The limits to change.")
        .answer(200, "The limits now.", named("Limits")),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/limits",
            "retention",
            "Return a tenancy to the default limits",
        )
        .access(admin)
        .answer(200, "The default limits.", named("Limits")),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/retention-policies",
            "retention",
            "A tenancy's retention policies",
        )
        .access(tenancy)
        .answer(
            200,
            "The policies, `global` first.",
            obj([("policies", array(named("RetentionPolicy")))]),
        ),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/retention-policies/{retention_policy}",
            "retention",
            "A retention policy",
        )
        .access(tenancy)
        .answer(
            200,
            "The policy and the repositories assigned it.",
            named("RetentionPolicy"),
        ),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/retention-policies/{retention_policy}",
            "retention",
            "Create or replace a retention policy",
        )
        .access(tenancy)
        .optional_body::<lifecycle::PolicyBody>("The rules; an empty policy keeps everything.")
        .answer(200, "Saved.", named("RetentionPolicy")),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/retention-policies/{retention_policy}",
            "retention",
            "Delete a retention policy",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/retention-policies/{retention_policy}/preview",
            "retention",
            "What a retention policy would delete now",
        )
        .about("Over every repository of the tenancy that follows the policy.")
        .access(tenancy)
        .answer(200, "The images it would delete.", named("RetentionPreview")),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/retention-deletions",
            "retention",
            "What retention deleted",
        )
        .access(tenancy)
        .query("skip", integer(), "Records to skip (default 0).")
        .query(
            "n",
            integer(),
            "Page size (default 100, at most the node's page limit).",
        )
        .answer(
            200,
            "Deletions, newest first.",
            obj([
                (
                    "deletions",
                    array(obj([
                        ("repo", string()),
                        ("policy", string()),
                        ("rule", one_of(&["untagged", "not-pulled", "keep-newest"])),
                        ("digest", string()),
                        ("tags", array(string())),
                        ("with", array(string())),
                        ("bytes_freed", integer()),
                        ("deleted_ms", integer()),
                    ])),
                ),
                ("more", boolean()),
            ]),
        ),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/immutable-tags",
            "retention",
            "The tenancy's immutable-tag default",
        )
        .access(Access::Member)
        .answer(200, "The setting.", named("ImmutableTags")),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/immutable-tags",
            "retention",
            "Set the tenancy's immutable-tag default",
        )
        .access(tenancy)
        .optional_body::<lifecycle::ImmutableBody>("The setting (`inherit` drops it).")
        .answer(200, "The setting now.", named("ImmutableTags")),
        // --- regions, replication, pull-through (handlers/regions.rs) ------------------------------
        op("GET", "/api/v1/regions", "regions", "This region and its peers")
            .access(admin)
            .answer(
                200,
                "The region, its home and its peers.",
                obj([
                    ("name", string_or_null()),
                    ("home", string_or_null()),
                    ("identity_version", string_or_null()),
                    (
                        "peers",
                        array(obj([
                            ("name", string()),
                            ("url", string()),
                            ("username", string()),
                            ("custom_ca", boolean()),
                        ])),
                    ),
                ]),
            ),
        op(
            "PUT",
            "/api/v1/regions/self",
            "regions",
            "Name this cluster's region and its home",
        )
        .access(admin)
        .body::<regions::SelfBody>("The region and its home.")
        .answer(200, "Saved.", obj([("name", string()), ("home", string())])),
        op(
            "PUT",
            "/api/v1/regions/peers/{region}",
            "regions",
            "Add or replace a peer region",
        )
        .about("The token is kept sealed under the cluster's master key when encryption at rest is on.")
        .access(admin)
        .body::<regions::PeerBody>("The peer's URL and the credentials used there.")
        .answer(200, "Saved.", obj([("name", string())])),
        op(
            "DELETE",
            "/api/v1/regions/peers/{region}",
            "regions",
            "Remove a peer region",
        )
        .access(admin)
        .answer(200, "Removed.", done("removed")),
        op(
            "GET",
            "/api/v1/regions/identity",
            "regions",
            "The identity state other regions copy",
        )
        .about(
            "The home region's export: tenancies, users, groups, policies, token hashes and signing keys, \
                 private keys opened. Its shape is the catalog's identity state and is read by other Keelson \
                 regions only.",
        )
        .access(admin)
        .header("If-None-Match", "The ETag of a copy already held.")
        .answer(
            200,
            "The export.",
            obj([("version", string()), ("region", string_or_null()), ("state", any())]),
        )
        .answer_header("ETag", "The export's version.")
        .also(304, "The copy held is current."),
        op(
            "POST",
            "/api/v1/replication/rules",
            "replication",
            "Create a replication rule",
        )
        .about("Needs administration of the tenancy the body names.")
        .access(tenancy)
        .body::<regions::RuleBody>("The rule.")
        .answer(201, "Created.", named("ReplicationRule")),
        op("GET", "/api/v1/replication/rules", "replication", "Replication rules")
            .about("Without `namespace`: every rule, for the cluster administrator only.")
            .access(tenancy)
            .query("namespace", string(), "Only this tenancy's rules.")
            .answer(200, "The rules.", obj([("rules", array(named("ReplicationRule")))])),
        op(
            "DELETE",
            "/api/v1/replication/rules/{rule_id}",
            "replication",
            "Delete a replication rule",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("removed")),
        op(
            "GET",
            "/api/v1/replication/status",
            "replication",
            "Replication progress per rule and target",
        )
        .about(
            "A follower asks the leader, whose replicator counts the bytes. Without `namespace`: every \
                 rule, for the cluster administrator only.",
        )
        .access(tenancy)
        .query("namespace", string(), "Only this tenancy's rules.")
        .answer(
            200,
            "Each rule's state towards each target.",
            obj([
                ("region", string_or_null()),
                (
                    "targets",
                    array(obj([
                        ("rule", string()),
                        ("namespace", string()),
                        ("target", string()),
                        ("pending_images", integer()),
                        ("pending_bytes", integer()),
                        ("lag_ms", integer()),
                        ("bytes_sent", integer()),
                        ("last_error", string_or_null()),
                        ("last_error_ms", integer_or_null()),
                    ])),
                ),
            ]),
        ),
        op(
            "POST",
            "/api/v1/pull-through",
            "pull-through",
            "Create or replace a pull-through cache",
        )
        .about("Needs administration of the tenancy the body names.")
        .access(tenancy)
        .body::<regions::CacheBody>("The cache.")
        .answer(201, "Saved.", named("PullThroughCache")),
        op(
            "GET",
            "/api/v1/pull-through",
            "pull-through",
            "A tenancy's pull-through caches",
        )
        .access(tenancy)
        .query_required("namespace", string(), "The tenancy.")
        .answer(200, "The caches.", obj([("caches", array(named("PullThroughCache")))])),
        op(
            "DELETE",
            "/api/v1/pull-through",
            "pull-through",
            "Remove a pull-through cache",
        )
        .access(tenancy)
        .query_required("namespace", string(), "The tenancy.")
        .query_required("prefix", string(), "The cache's prefix.")
        .answer(200, "Removed.", done("removed")),
        // --- webhooks (handlers/webhooks.rs) -------------------------------------------------------
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/webhooks",
            "webhooks",
            "A tenancy's webhook endpoints",
        )
        .access(tenancy)
        .answer(
            200,
            "The endpoints and their delivery state.",
            obj([("webhooks", array(named("Webhook")))]),
        ),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/webhooks/{webhook}",
            "webhooks",
            "Create or replace an endpoint",
        )
        .about("Unknown fields are refused.")
        .access(tenancy)
        .body_schema(named("WebhookBody"), true, "The endpoint.")
        .answer(
            201,
            "Created (200 when it replaced one).",
            extend(
                "Webhook",
                [(
                    "secret?",
                    describe(string(), "The secret, when this call made it (shown once)."),
                )],
            ),
        )
        .also_json(200, "Replaced.", named("Webhook")),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/webhooks/{webhook}",
            "webhooks",
            "An endpoint",
        )
        .access(tenancy)
        .answer(
            200,
            "The endpoint, its delivery state and its last attempts.",
            extend(
                "Webhook",
                [(
                    "attempts",
                    describe(
                        array(obj([
                            ("at_ms", integer()),
                            ("node", integer()),
                            ("first_seq", integer()),
                            ("last_seq", integer()),
                            ("events", integer()),
                            (
                                "status",
                                describe(integer_or_null(), "The endpoint's HTTP status, when it answered."),
                            ),
                            ("error", string_or_null()),
                            ("duration_ms", integer()),
                        ])),
                        "The last delivery attempts, newest first.",
                    ),
                )],
            ),
        ),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/webhooks/{webhook}",
            "webhooks",
            "Delete an endpoint",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        op(
            "POST",
            "/api/v1/tenancies/{namespace}/webhooks/{webhook}/ping",
            "webhooks",
            "Queue a ping event",
        )
        .access(tenancy)
        .answer(202, "Queued.", obj([("queued", one_of(&["ping"]))])),
        // --- scanning (handlers/vulndb.rs, handlers/lifecycle.rs) ----------------------------------
        op(
            "GET",
            "/api/v1/repos/{repository}/images/{digest}/vulnerabilities",
            "scanning",
            "An image's vulnerabilities",
        )
        .about(
            "The image's inventory (its SBOM referrer, made in the background after the push) matched against \
             the active database; `state` is `queued` until the inventory exists.",
        )
        .access(inspect)
        .answer(
            200,
            "The findings.",
            obj([
                ("state", one_of(&["scanned", "queued", "not_scanned"])),
                ("sbom", string_or_null()),
                ("database_generation", integer()),
                ("database_imported_ms", integer()),
                ("packages", integer()),
                ("counts", describe(any(), "Findings per severity name.")),
                (
                    "findings",
                    array(obj([
                        ("id", string()),
                        ("severity", one_of(&["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"])),
                        ("ecosystem", string()),
                        ("package", string()),
                        ("installed", string()),
                        ("fixed", string_or_null()),
                        ("summary", string()),
                        ("location", string()),
                    ])),
                ),
            ]),
        ),
        op("GET", "/api/v1/vulndb", "scanning", "The active vulnerability database")
            .access(admin)
            .answer(200, "Its generation and size.", named("VulnDb")),
        op("POST", "/api/v1/vulndb/imports", "scanning", "Start an import")
            .about("Answers a new generation; batches go under it and nothing changes until it is activated.")
            .access(admin)
            .answer(201, "Started.", obj([("generation", integer())])),
        op(
            "POST",
            "/api/v1/vulndb/imports/{generation}",
            "scanning",
            "Add a batch of packages to an import",
        )
        .about("At most 5,000 packages, each with its OSV advisories as `keelson vulndb import` converts them.")
        .access(admin)
        .body_schema(obj([("packages", array(any()))]), true, "The batch.")
        .answer(200, "Added.", obj([("generation", integer()), ("packages", integer())])),
        op(
            "POST",
            "/api/v1/vulndb/imports/{generation}/activate",
            "scanning",
            "Make an import the active database",
        )
        .access(admin)
        .body::<vulndb::ActivateBody>("What the import holds.")
        .answer(200, "Active.", named("VulnDb")),
        op("POST", "/api/v1/vulndb/prune", "scanning", "Delete older generations")
            .about("At most 10,000 keys per call; call again until a call deletes nothing.")
            .access(admin)
            .answer(200, "Pruned.", obj([("pruned", boolean())])),
        // --- signing (handlers/signing.rs) ---------------------------------------------------------
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/signing-keys",
            "signing",
            "The keys a tenancy trusts",
        )
        .access(tenancy)
        .answer(200, "The keys.", obj([("keys", array(named("SigningKey")))])),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/signing-keys/{key}",
            "signing",
            "A trusted key",
        )
        .access(tenancy)
        .answer(200, "The key (never a private part).", named("SigningKey")),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/signing-keys/{key}",
            "signing",
            "Register, make or replace a key",
        )
        .about(
            "One of `public_key` (PEM, checks cosign signatures), `certificate` (PEM trust anchor, checks \
             notation signatures) or `generate: true` (an ECDSA P-256 key the cluster holds, sealed at rest, for \
             server-side signing; its public PEM is answered). Unknown fields are refused.",
        )
        .access(tenancy)
        .body::<signing::KeyBody>("The key.")
        .answer(201, "Created (200 when it replaced one).", named("SigningKey"))
        .also_json(200, "Replaced.", named("SigningKey")),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/signing-keys/{key}",
            "signing",
            "Remove a key",
        )
        .about("Refused while a verification policy names it.")
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/verification-policies",
            "signing",
            "A tenancy's verification policies",
        )
        .access(tenancy)
        .answer(200, "The policies.", obj([("policies", array(named("VerificationPolicy")))])),
        op(
            "GET",
            "/api/v1/tenancies/{namespace}/verification-policies/{verification_policy}",
            "signing",
            "A verification policy",
        )
        .access(tenancy)
        .answer(200, "The policy.", named("VerificationPolicy")),
        op(
            "PUT",
            "/api/v1/tenancies/{namespace}/verification-policies/{verification_policy}",
            "signing",
            "Create or replace a verification policy",
        )
        .about(
            "Manifest GETs of images in the scope are refused (403 DENIED, naming the policy) unless one of the keys \
             verifies a signature of the image. Every key must be registered.",
        )
        .access(tenancy)
        .body::<signing::PolicyBody>("The policy.")
        .answer(201, "Created (200 when it replaced one).", named("VerificationPolicy"))
        .also_json(200, "Replaced.", named("VerificationPolicy")),
        op(
            "DELETE",
            "/api/v1/tenancies/{namespace}/verification-policies/{verification_policy}",
            "signing",
            "Delete a verification policy",
        )
        .access(tenancy)
        .answer(200, "Deleted.", done("deleted")),
        // --- audit (handlers/audit.rs) -------------------------------------------------------------
        op("GET", "/api/v1/audit", "audit", "The audit log, newest first")
            .about("Without `namespace`: the records of any tenancy and of none, for the cluster administrator only.")
            .access(tenancy)
            .query("namespace", string(), "Only this tenancy's records.")
            .query(
                "actor",
                string(),
                "Only this actor's (`<namespace>/<user>`, `keelson/admin`, `anonymous`).",
            )
            .query(
                "action",
                string(),
                "An action (`manifest.put`), or a prefix ending in `.` (`manifest.`).",
            )
            .query("since", integer(), "Not before this time (ms since the epoch).")
            .query("until", integer(), "Not after this time (ms since the epoch).")
            .query("failed", one_of(&["true", "false"]), "Only refused requests.")
            .query("n", integer(), "Page size (default 100, at most 1,000).")
            .query("after", string(), "The `next` cursor of the previous page.")
            .answer(
                200,
                "A page of records.",
                obj([
                    ("namespace", string_or_null()),
                    (
                        "events",
                        array(obj([
                            ("time_ms", integer()),
                            ("node", integer()),
                            ("actor", string()),
                            ("namespace", string()),
                            ("action", string()),
                            ("target", string()),
                            ("status", integer()),
                            ("source", string()),
                        ])),
                    ),
                    (
                        "next",
                        describe(string_or_null(), "The cursor of the next page, when there is one."),
                    ),
                ]),
            )
            .answer_header("Link", "The next page (`rel=\"next\"`), when there is one."),
    ];
    ops.shrink_to_fit();
    ops
}
