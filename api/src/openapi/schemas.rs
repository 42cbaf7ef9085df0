//! The schemas the OpenAPI table is written with: small constructors over utoipa's builder
//! types (`obj`, `array`, `integer_or_null`, …), the OCI error body, the answers several routes
//! share (named components) and the description of every path parameter.

use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};

/// The description (and schema) of a path parameter, by the name the templates use.
pub(super) fn path_parameter(name: &str) -> Option<(RefOr<Schema>, &'static str)> {
    Some(match name {
        "namespace" => (
            string(),
            "A tenancy's namespace: the first component of its repository names.",
        ),
        "user" => (string(), "A user of the tenancy, without the namespace."),
        "token_id" => (
            string(),
            "An auth token's id as the token list shows it (never the secret).",
        ),
        "group" => (string(), "A group of the tenancy (`Administrators` always exists)."),
        "policy" => (string(), "A policy's name."),
        "repository" => (
            string(),
            "The repository's full name, namespace first, sent with its slashes as they are \
             (`acme/team/app`, not percent-encoded): the server finds the name by the path's \
             suffix, so it spans as many segments as it has. OpenAPI has no syntax for a \
             parameter over several segments; a tool that encodes the slashes sends a name the \
             server refuses as invalid.",
        ),
        "digest" => (
            string(),
            "An image's manifest digest, `sha256:<64 hex>` or `sha512:<128 hex>`.",
        ),
        "key" => (string(), "A trusted signing key's name: 1 to 64 of `a-z 0-9 - _ .`."),
        "generation" => (
            integer(),
            "A vulnerability database generation, as its import's start answered it.",
        ),
        "verification_policy" => (string(), "A verification policy's name: 1 to 64 of `a-z 0-9 - _ .`."),
        "tag" => (string(), "A tag of the repository."),
        "retention_policy" => (
            string(),
            "A retention policy of the tenancy: letters, digits, `.`, `_`, `-`. `global` is the \
             policy every repository follows unless assigned another (it keeps everything until set).",
        ),
        "region" => (
            string(),
            "A region's name: lower-case letters, digits and `-`, at most 40.",
        ),
        "rule_id" => (string(), "A replication rule's id, as its creation answered it."),
        "node_id" => (integer(), "A member's node id."),
        "webhook" => (
            string(),
            "An endpoint's name in its tenancy: 1 to 64 of `a-z 0-9 - _ .`.",
        ),
        _ => return None,
    })
}

/// Answers several routes share, by name.
pub(super) fn shared_schemas() -> Vec<(&'static str, RefOr<Schema>)> {
    vec![
        (
            "ClusterStatus",
            describe(
                obj([
                    ("node_id", integer()),
                    (
                        "state",
                        describe(
                            string(),
                            "This node's Raft role: Leader, Follower, Candidate, Learner or Shutdown.",
                        ),
                    ),
                    ("leader", integer_or_null()),
                    ("term", integer()),
                    ("last_log_index", integer_or_null()),
                    ("committed_index", integer_or_null()),
                    ("applied_index", integer_or_null()),
                    ("snapshot_index", integer_or_null()),
                    ("purged_index", integer_or_null()),
                    ("members", array(named("MemberStatus"))),
                    (
                        "under_replicated",
                        describe(
                            integer_or_null(),
                            "Blobs with fewer live copies than the cluster keeps, as of the leader's last repair pass.",
                        ),
                    ),
                    ("bytes_to_move", integer_or_null()),
                    (
                        "blob_jobs",
                        describe(map(integer()), "Counters of this node's blob jobs since it started."),
                    ),
                    ("region", string_or_null()),
                    ("home_region", string_or_null()),
                ]),
                "The cluster as the answering node sees it.",
            ),
        ),
        (
            "MemberStatus",
            obj([
                ("id", integer()),
                ("api_addr", string()),
                ("peer_addr", string()),
                ("fault_domain", string()),
                ("voter", boolean()),
                (
                    "lag",
                    describe(
                        integer_or_null(),
                        "Entries not yet replicated to it (the leader's view only).",
                    ),
                ),
                ("capacity_bytes", integer_or_null()),
                ("free_bytes", integer_or_null()),
            ]),
        ),
        (
            "Tenancy",
            obj([
                ("namespace", string()),
                (
                    "compartments",
                    array(obj([("name", string()), ("parent", string_or_null())])),
                ),
                ("users", array(string())),
                (
                    "groups",
                    describe(map(array(string())), "Group name → member user names."),
                ),
                (
                    "policies",
                    array(obj([
                        ("name", string()),
                        ("compartment", string_or_null()),
                        ("statements", array(string())),
                    ])),
                ),
            ]),
        ),
        (
            "Repository",
            describe(
                obj([
                    ("name", string()),
                    ("public", boolean()),
                    ("compartment", string_or_null()),
                    ("created_ms", integer()),
                    (
                        "redundancy",
                        describe(string(), "The policy pushes use: `replicas=N` or `rs=k+m`."),
                    ),
                    ("redundancy_source", one_of(&["repo", "cluster"])),
                    ("images", integer()),
                    ("tags", integer()),
                    ("stored_bytes", integer()),
                    ("last_push_ms", integer_or_null()),
                    ("pulls", integer()),
                    ("last_pull_ms", integer_or_null()),
                    ("description", string()),
                    ("readme", describe(string(), "Markdown.")),
                    (
                        "readme_html",
                        describe(string(), "The readme rendered, raw HTML shown as text."),
                    ),
                    (
                        "retention_policy",
                        describe(string(), "The retention policy the repository follows."),
                    ),
                    ("immutable_tags", named("ImmutableTags")),
                    (
                        "may",
                        describe(
                            obj([
                                ("pull", boolean()),
                                ("push", boolean()),
                                ("delete", boolean()),
                                ("administer", boolean()),
                            ]),
                            "What the caller may do with the repository.",
                        ),
                    ),
                ]),
                "A repository with its usage and settings.",
            ),
        ),
        (
            "ImmutableTags",
            obj([
                ("enabled", boolean()),
                (
                    "exempt",
                    describe(array(string()), "Tag names or globs that stay mutable."),
                ),
                (
                    "source",
                    describe(one_of(&["repo", "tenancy", "default"]), "Where the setting comes from."),
                ),
            ]),
        ),
        (
            "ImageEntry",
            describe(
                obj([
                    ("digest", string()),
                    ("media_type", string()),
                    ("artifact_type", string_or_null()),
                    (
                        "subject",
                        describe(string_or_null(), "The image this one refers to, when it is a referrer."),
                    ),
                    ("tags", array(string())),
                    (
                        "size",
                        describe(
                            integer(),
                            "Manifest, config and layers (an index: with its children's).",
                        ),
                    ),
                    ("pushed_ms", integer()),
                    ("last_pushed_ms", integer()),
                    ("last_tagged_ms", integer_or_null()),
                    ("last_untagged_ms", integer_or_null()),
                    ("untagged_since_ms", integer_or_null()),
                    ("last_pulled_ms", integer_or_null()),
                    ("pulls", integer()),
                    (
                        "platforms",
                        describe(array(string()), "`os/arch[/variant]` of an index's children."),
                    ),
                    (
                        "referrers",
                        describe(integer(), "How many referrers (signatures, SBOMs, …) it has."),
                    ),
                    (
                        "signature",
                        describe(
                            one_of(&["signed", "invalid", "unsigned"]),
                            "Whether a key its tenancy trusts verifies one of its signatures.",
                        ),
                    ),
                ]),
                "An image as a listing shows it.",
            ),
        ),
        (
            "VulnDb",
            obj([
                ("generation", describe(integer(), "0 when none was imported.")),
                ("advisories", integer()),
                ("packages", integer()),
                ("imported_ms", integer()),
            ]),
        ),
        (
            "SigningKey",
            obj([
                ("name", string()),
                (
                    "scope",
                    describe(string(), "`tenancy`, `compartment:<name>` or `repository:<name>`."),
                ),
                ("kind", one_of(&["public_key", "certificate"])),
                ("pem", string()),
                ("fingerprint_sha256", string()),
                (
                    "held_by_cluster",
                    describe(boolean(), "Whether the cluster holds its private key."),
                ),
                ("created_ms", integer()),
            ]),
        ),
        (
            "VerificationPolicy",
            obj([
                ("name", string()),
                ("scope", string()),
                ("keys", array(string())),
                ("refuse_severity", string_or_null()),
                ("created_ms", integer()),
            ]),
        ),
        (
            "Descriptor",
            obj([
                ("digest", string_or_null()),
                ("media_type", string_or_null()),
                ("size", integer_or_null()),
            ]),
        ),
        (
            "ImageDetail",
            describe(
                extend(
                    "ImageEntry",
                    [
                        ("manifest_bytes", integer()),
                        (
                            "config",
                            describe(any(), "The config's descriptor (`Descriptor`), or null."),
                        ),
                        ("layers", array(named("Descriptor"))),
                        (
                            "signatures",
                            describe(
                                array(obj([
                                    ("format", one_of(&["cosign", "notation"])),
                                    ("manifest", string()),
                                    ("verified_by", array(string())),
                                    ("problem", string_or_null()),
                                ])),
                                "Its signature manifests, each checked against the trusted keys.",
                            ),
                        ),
                        (
                            "children",
                            describe(
                                array(extend("Descriptor", [("platform", string_or_null())])),
                                "An index's manifests.",
                            ),
                        ),
                        (
                            "referrers",
                            array(obj([
                                ("digest", string()),
                                ("media_type", string()),
                                ("artifact_type", string_or_null()),
                                ("size", integer()),
                                ("annotations", any()),
                            ])),
                        ),
                    ],
                ),
                "An image with its config, layers, children and referrers (here `referrers` lists them).",
            ),
        ),
        (
            "RetentionPreview",
            describe(
                obj([
                    (
                        "repo",
                        describe(string_or_null(), "The repository, when the preview is of one."),
                    ),
                    ("policy", string_or_null()),
                    (
                        "images",
                        array(obj([
                            ("repo", string()),
                            ("policy", string()),
                            ("digest", string()),
                            ("tags", array(string())),
                            ("rule", one_of(&["untagged", "not-pulled", "keep-newest"])),
                            ("bytes_freed", integer()),
                            (
                                "with",
                                describe(array(string()), "Children and referrers deleted with it."),
                            ),
                        ])),
                    ),
                    ("bytes_freed", integer()),
                ]),
                "The images a policy would delete now, and why.",
            ),
        ),
        (
            "RetentionPolicy",
            obj([
                ("name", string()),
                ("not_pulled_days", integer_or_null()),
                ("untagged_days", integer_or_null()),
                ("keep_newest", integer_or_null()),
                ("exempt_tags", array(string())),
                ("cooling_hours", integer()),
                ("cooling_ms", integer()),
                ("repos", describe(array(string()), "Repositories assigned this policy.")),
            ]),
        ),
        (
            "Limits",
            obj([
                ("max_repos", integer()),
                ("max_images_per_repo", integer()),
                ("max_stored_bytes", describe(integer_or_null(), "null: unlimited.")),
                (
                    "requests_per_second",
                    describe(integer_or_null(), "null: the node's default."),
                ),
            ]),
        ),
        ("Usage", obj([("repos", integer()), ("stored_bytes", integer())])),
        (
            "ReplicationRule",
            obj([
                ("id", string()),
                ("namespace", string()),
                ("repos", string()),
                ("tags", string()),
                ("targets", array(string())),
                ("deletes", boolean()),
                ("bytes_per_second", integer_or_null()),
                ("created_ms", integer()),
            ]),
        ),
        (
            "PullThroughCache",
            describe(
                obj([
                    ("namespace", string()),
                    ("prefix", string()),
                    ("upstream", string()),
                    ("upstream_prefix", string()),
                    ("username", string_or_null()),
                    ("custom_ca", boolean()),
                    ("ttl_seconds", integer()),
                ]),
                "A pull-through cache as the API shows it (never its password).",
            ),
        ),
        (
            "Webhook",
            describe(
                obj([
                    ("name", string()),
                    ("url", string()),
                    ("events", array(one_of(&["push", "pull", "delete", "tag", "retention"]))),
                    ("repositories", array(string())),
                    ("enabled", boolean()),
                    ("created_ms", integer()),
                    ("queued", describe(integer(), "Events waiting for delivery.")),
                    ("delivered", integer()),
                    (
                        "dropped",
                        describe(integer(), "Events dropped because the queue was full."),
                    ),
                    (
                        "failures",
                        describe(integer(), "Failed attempts since the last delivery."),
                    ),
                    (
                        "next_attempt_ms",
                        describe(integer(), "No attempt before this time, after a failure."),
                    ),
                ]),
                "An endpoint and its delivery state (never its secret).",
            ),
        ),
        (
            "WebhookBody",
            describe(
                closed(obj([
                    ("url", describe(string(), "`http://` or `https://` with a host.")),
                    (
                        "events",
                        describe(
                            array(one_of(&["push", "pull", "delete", "tag", "retention"])),
                            "At least one.",
                        ),
                    ),
                    (
                        "repositories?",
                        describe(
                            array(string()),
                            "Repository names or prefixes ending in `/`, each in the tenancy; empty or \
                             absent: every repository.",
                        ),
                    ),
                    (
                        "secret?",
                        describe(
                            string(),
                            "The HMAC key deliveries are signed with (1 to 256 bytes); absent: kept, or made \
                             for a new endpoint and answered once.",
                        ),
                    ),
                    ("enabled?", describe(boolean(), "Default true.")),
                ])),
                "An endpoint to create or replace.",
            ),
        ),
    ]
}

/// An object schema that refuses unknown properties (`#[serde(deny_unknown_fields)]`).
fn closed(mut schema: RefOr<Schema>) -> RefOr<Schema> {
    if let RefOr::T(Schema::Object(o)) = &mut schema {
        o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    }
    schema
}

/// `{"errors":[{"code","message","detail"}]}`.
pub(super) fn error_schema() -> RefOr<Schema> {
    let codes = [
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "RANGE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "UNAVAILABLE",
        "NOT_FOUND",
        "CONFLICT",
        "BAD_REQUEST",
    ];
    let entry = obj([
        (
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes))
                .into(),
        ),
        ("message", string()),
        (
            "detail?",
            describe(
                any(),
                "More about the error, when there is more (e.g. the digest concerned).",
            ),
        ),
    ]);
    describe(obj([("errors", array(entry))]), "The OCI error body.")
}

pub(super) fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

/// A non-negative integer (counts, bytes, milliseconds since the epoch).
pub(super) fn integer() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .into()
}

pub(super) fn boolean() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Boolean).into()
}

/// A string or `null`.
pub(super) fn string_or_null() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .into()
}

/// A non-negative integer or `null`.
pub(super) fn integer_or_null() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .into()
}

/// One of the given strings.
pub(super) fn one_of(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .into()
}

/// Any JSON value.
pub(super) fn any() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).into()
}

pub(super) fn array(items: RefOr<Schema>) -> RefOr<Schema> {
    ArrayBuilder::new().items(items).into()
}

/// An object whose keys are free (names) and whose values are `values`.
pub(super) fn map(values: RefOr<Schema>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(values)))
        .into()
}

/// An object with these properties; each is always present unless its name ends in `?`.
pub(super) fn obj(fields: impl IntoIterator<Item = (&'static str, RefOr<Schema>)>) -> RefOr<Schema> {
    let mut builder = ObjectBuilder::new().schema_type(Type::Object);
    for (name, schema) in fields {
        match name.strip_suffix('?') {
            Some(optional) => builder = builder.property(optional, schema),
            None => builder = builder.property(name, schema).required(name),
        }
    }
    builder.into()
}

/// A reference to a schema of the components.
pub(super) fn named(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// `schema` with a description.
pub(super) fn describe(mut schema: RefOr<Schema>, text: &str) -> RefOr<Schema> {
    match &mut schema {
        RefOr::Ref(r) => r.description = text.to_string(),
        RefOr::T(Schema::Object(o)) => o.description = Some(text.to_string()),
        RefOr::T(Schema::Array(a)) => a.description = Some(text.to_string()),
        RefOr::T(Schema::AllOf(a)) => a.description = Some(text.to_string()),
        RefOr::T(Schema::OneOf(a)) => a.description = Some(text.to_string()),
        RefOr::T(Schema::AnyOf(a)) => a.description = Some(text.to_string()),
        RefOr::T(_) => {}
    }
    schema
}

/// `base`'s properties and these further ones.
pub(super) fn extend(base: &str, fields: impl IntoIterator<Item = (&'static str, RefOr<Schema>)>) -> RefOr<Schema> {
    AllOfBuilder::new().item(named(base)).item(obj(fields)).into()
}
