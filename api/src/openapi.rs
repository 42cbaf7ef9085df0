//! The management API (`/api/v1/…`, `/api/v1/cluster/…`) described in OpenAPI 3.1 and served
//! at `GET /api/v1/openapi.json`, so clients and tools can be written against a document
//! instead of the CLI's source.
//!
//! The routes are hand-written match arms over path segments (repository names hold slashes,
//! so no router or annotation framework fits them), so nothing can generate the description
//! from them. Instead one table (`table.rs`) describes every route: method, path template, tag,
//! parameters, body, answer and who may call it; [`document`] builds the document from it with
//! utoipa's builder types, once per process. Request bodies are the schemas of the handlers'
//! own body types (`#[derive(utoipa::ToSchema)]`); answers are described by hand from the
//! handlers (`schemas.rs`). A unit test (`coverage.rs`) reads the dispatchers' sources and
//! fails when a routing arm has no row in the table, or a row has no arm.

mod schemas;
mod table;

#[cfg(test)]
mod coverage;

use std::sync::OnceLock;

use http::{Response, StatusCode};
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, Schema};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder,
};
use utoipa::ToSchema;

use self::schemas::{error_schema, named, string};
use crate::body::{self, Body};
use crate::handlers::Reply;

/// The document, built on first use.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as JSON, serialised once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Plain data with string keys: serialising it cannot fail (the unit tests check it).
        serde_json::to_string(document()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialise");
            "{}".into()
        })
    })
}

/// `GET /api/v1/openapi.json`: answered to anyone, credentials or not.
pub(crate) fn response() -> Response<Body> {
    let text = json();
    Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", text.len())
        .body(body::full(text))
}

/// Who may call a route: its security requirements, and the sentence its description ends with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No credentials needed.
    Anyone,
    /// `cluster init`: the bootstrap token, or a caller on the node's own host.
    Bootstrap,
    /// The cluster administrator.
    Cluster,
    /// The administrators of the tenancy the route names, and the cluster administrator.
    Tenancy,
    /// Any user of the tenancy the route names, and the cluster administrator.
    Member,
    /// The user the route names, the tenancy's administrators and the cluster administrator.
    Account,
    /// Users the policies allow `verb` on the repository, and registry tokens granting
    /// `token`; `public`: also anyone when the repository is public.
    Repository {
        verb: &'static str,
        token: &'static str,
        public: bool,
    },
}

impl Access {
    fn sentence(self) -> String {
        match self {
            Access::Anyone => "Needs no credentials.".into(),
            Access::Bootstrap => "On a pristine node: the bootstrap token the node was given \
                (`KEELSON_BOOTSTRAP_TOKEN`, as the Basic password of `keelson/admin` or as a Bearer value), \
                or, when it was given none, any caller on the node's own host. Once initialised: the \
                cluster administrator."
                .into(),
            Access::Cluster => "Who may: the cluster administrator (`keelson/admin`).".into(),
            Access::Tenancy => "Who may: the tenancy's administrators (group `Administrators`) and the \
                cluster administrator."
                .into(),
            Access::Member => "Who may: any user of the tenancy, and the cluster administrator.".into(),
            Access::Account => "Who may: the user themself, the tenancy's administrators and the cluster \
                administrator."
                .into(),
            Access::Repository { verb, token, public } => {
                let mut s = format!(
                    "Who may: users whose policies allow `{verb}` on the repository, registry tokens \
                     granting `{token}` on it, and the cluster administrator."
                );
                if public {
                    s.push_str(" Anyone may when the repository is public.");
                }
                s
            }
        }
    }

    fn security(self) -> Vec<SecurityRequirement> {
        let scheme = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
        let anonymous = SecurityRequirement::default();
        match self {
            Access::Anyone => Vec::new(),
            Access::Bootstrap => vec![anonymous, scheme(BASIC), scheme(BEARER)],
            Access::Cluster | Access::Tenancy | Access::Member | Access::Account => {
                vec![scheme(BASIC), scheme(SESSION)]
            }
            Access::Repository { public, .. } => {
                let mut list = vec![scheme(BASIC), scheme(BEARER), scheme(SESSION)];
                if public {
                    list.push(anonymous);
                }
                list
            }
        }
    }
}

const BASIC: &str = "basic";
const BEARER: &str = "bearer";
const SESSION: &str = "session";

/// One route's description: a row of the table.
pub(crate) struct Op {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    tag: &'static str,
    summary: &'static str,
    about: Option<&'static str>,
    params: Vec<Parameter>,
    body: Option<(RefOr<Schema>, bool, &'static str)>,
    schemas: Vec<(String, RefOr<Schema>)>,
    answer: Option<(u16, &'static str, Option<RefOr<Schema>>)>,
    answer_headers: Vec<(&'static str, &'static str)>,
    more: Vec<(u16, &'static str, Option<RefOr<Schema>>)>,
    access: Option<Access>,
}

/// A row: `method` and `path` (OpenAPI `{param}` syntax), its tag and one-line summary.
pub(crate) fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        about: None,
        params: Vec::new(),
        body: None,
        schemas: Vec::new(),
        answer: None,
        answer_headers: Vec::new(),
        more: Vec::new(),
        access: None,
    }
}

impl Op {
    /// What the route does beyond its summary.
    pub(crate) fn about(mut self, text: &'static str) -> Op {
        self.about = Some(text);
        self
    }

    pub(crate) fn access(mut self, access: Access) -> Op {
        self.access = Some(access);
        self
    }

    /// An optional query parameter.
    pub(crate) fn query(self, name: &str, schema: RefOr<Schema>, description: &str) -> Op {
        self.param(ParameterIn::Query, name, schema, Required::False, description)
    }

    /// A query parameter the route refuses to do without.
    pub(crate) fn query_required(self, name: &str, schema: RefOr<Schema>, description: &str) -> Op {
        self.param(ParameterIn::Query, name, schema, Required::True, description)
    }

    /// An optional request header.
    pub(crate) fn header(self, name: &str, description: &str) -> Op {
        self.param(ParameterIn::Header, name, string(), Required::False, description)
    }

    fn param(mut self, at: ParameterIn, name: &str, schema: RefOr<Schema>, required: Required, about: &str) -> Op {
        self.params.push(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(at)
                .required(required)
                .description(Some(about))
                .schema(Some(schema))
                .build(),
        );
        self
    }

    /// A JSON body of the handler's own type `T`, which must be sent.
    pub(crate) fn body<T: ToSchema>(self, description: &'static str) -> Op {
        self.uses::<T>().body_schema(named(&T::name()), true, description)
    }

    /// A JSON body of type `T` that may be left out (an empty body reads as `{}`).
    pub(crate) fn optional_body<T: ToSchema>(self, description: &'static str) -> Op {
        self.uses::<T>().body_schema(named(&T::name()), false, description)
    }

    /// A JSON body described by `schema`.
    pub(crate) fn body_schema(mut self, schema: RefOr<Schema>, required: bool, description: &'static str) -> Op {
        self.body = Some((schema, required, description));
        self
    }

    /// Adds `T`'s schema (and those it refers to) to the document's components.
    pub(crate) fn uses<T: ToSchema>(mut self) -> Op {
        self.schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.schemas);
        self
    }

    /// The success status and its JSON answer.
    pub(crate) fn answer(mut self, status: u16, description: &'static str, schema: RefOr<Schema>) -> Op {
        self.answer = Some((status, description, Some(schema)));
        self
    }

    /// A header of the success answer.
    pub(crate) fn answer_header(mut self, name: &'static str, description: &'static str) -> Op {
        self.answer_headers.push((name, description));
        self
    }

    /// Another answer without a body (e.g. 304).
    pub(crate) fn also(mut self, status: u16, description: &'static str) -> Op {
        self.more.push((status, description, None));
        self
    }

    /// Another answer with a JSON body.
    pub(crate) fn also_json(mut self, status: u16, description: &'static str, schema: RefOr<Schema>) -> Op {
        self.more.push((status, description, Some(schema)));
        self
    }

    fn http_method(&self) -> HttpMethod {
        match self.method {
            "GET" => HttpMethod::Get,
            "PUT" => HttpMethod::Put,
            "POST" => HttpMethod::Post,
            "DELETE" => HttpMethod::Delete,
            "PATCH" => HttpMethod::Patch,
            other => panic!("{other} {}: not a method the management API uses", self.path),
        }
    }

    /// The operation; panics on a row that is incomplete (the unit tests build every row).
    fn operation(&self) -> Operation {
        let what = format!("{} {}", self.method, self.path);
        let access = self.access.unwrap_or_else(|| panic!("{what}: no access given"));
        let (status, answered, schema) = self
            .answer
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no answer given"));
        let mut description = self.about.map(str::to_string).unwrap_or_default();
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&access.sentence());
        let mut success = answer(answered, schema.as_ref());
        for (name, about) in &self.answer_headers {
            success = success.header(
                *name,
                HeaderBuilder::new().schema(string()).description(Some(*about)).build(),
            );
        }
        let mut builder = OperationBuilder::new()
            .tag(self.tag)
            .summary(Some(self.summary))
            .description(Some(description))
            .operation_id(Some(operation_id(self.method, self.path)))
            .parameters(Some(
                path_parameters(self.path)
                    .into_iter()
                    .chain(self.params.iter().cloned()),
            ))
            .securities(Some(access.security()))
            .response(status.to_string(), success.build());
        for (status, about, schema) in &self.more {
            builder = builder.response(status.to_string(), answer(about, schema.as_ref()).build());
        }
        builder = builder
            .response("4XX", Ref::from_response_name(CLIENT_ERROR))
            .response("5XX", Ref::from_response_name(SERVER_ERROR));
        if let Some((schema, required, about)) = &self.body {
            let required = if *required { Required::True } else { Required::False };
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(*about))
                    .required(Some(required))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema.clone())).build(),
                    )
                    .build(),
            ));
        }
        builder.build()
    }
}

/// A response: `description`, and a JSON body when `schema` is given.
fn answer(description: &str, schema: Option<&RefOr<Schema>>) -> ResponseBuilder {
    let builder = ResponseBuilder::new().description(description);
    match schema {
        Some(schema) => builder.content(
            "application/json",
            ContentBuilder::new().schema(Some(schema.clone())).build(),
        ),
        None => builder,
    }
}

const CLIENT_ERROR: &str = "ClientError";
const SERVER_ERROR: &str = "ServerError";

/// `get_api_v1_tenancies_ns_users`: unique per method and template.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for c in path.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => id.push(c.to_ascii_lowercase()),
            '{' | '}' => {}
            _ if !id.ends_with('_') => id.push('_'),
            _ => {}
        }
    }
    id.trim_end_matches('_').to_string()
}

/// The path parameters of a template, each described by the table's dictionary.
fn path_parameters(path: &str) -> Vec<Parameter> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (schema, about) = schemas::path_parameter(name)
                .unwrap_or_else(|| panic!("{path}: path parameter {{{name}}} is not described"));
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(about))
                .schema(Some(schema))
                .build()
        })
        .collect()
}

fn build() -> OpenApi {
    let ops = table::operations();
    let mut paths = PathsBuilder::new();
    let mut components = ComponentsBuilder::new();
    for op in &ops {
        paths = paths.path(op.path, PathItem::new(op.http_method(), op.operation()));
        components = components.schemas_from_iter(op.schemas.iter().cloned());
    }
    components = components
        .schemas_from_iter(schemas::shared_schemas())
        .schema("Error", error_schema())
        .response(
            CLIENT_ERROR,
            ResponseBuilder::new()
                .description(
                    "The request was refused, with the OCI error body. 400 BAD_REQUEST (or UNSUPPORTED, \
                     NAME_INVALID, DIGEST_INVALID, TAG_INVALID): malformed; 401 UNAUTHORIZED, with a Bearer \
                     challenge in `WWW-Authenticate`: credentials missing or refused; 403 DENIED: not allowed; \
                     404 NOT_FOUND, NAME_UNKNOWN or MANIFEST_UNKNOWN: no such object (the message \
                     `no such management route` means no such route); 409 CONFLICT: exists already or \
                     conflicts; 412: a precondition failed; 413 SIZE_INVALID: too large; 429 \
                     TOOMANYREQUESTS: rate limited, with `Retry-After`.",
                )
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(named("Error"))).build(),
                )
                .build(),
        )
        .response(
            SERVER_ERROR,
            ResponseBuilder::new()
                .description(
                    "503 UNAVAILABLE: the catalog or storage cannot answer now (no leader, a node removed \
                     from the cluster); retry, after `Retry-After` when given.",
                )
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(named("Error"))).build(),
                )
                .build(),
        )
        .security_scheme(
            BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "`<namespace>/<user>` (or `keelson/admin`, the cluster administrator) with one of \
                         the user's auth tokens as the password.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A registry access token from `/token` (Docker's token flow); it grants only the \
                         repository actions in its `access` claim, so it serves the repository routes.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::COOKIE,
                "The web console's session, set by signing in to the console. A change (any method but \
                 GET) must also carry the session's CSRF token in the `X-Keelson-CSRF` header.",
            ))),
        );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Keelson management API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Tenancies, users, groups, policies and auth tokens; repositories, their images, \
                     settings and retention; regions, replication and pull-through caches; webhooks; the \
                     audit log; and the cluster itself. Every node serves the whole API. Bodies and answers \
                     are JSON; a refused request answers the OCI error body \
                     `{\"errors\":[{\"code\",\"message\",\"detail\"}]}`. The registry protocol itself \
                     (`/v2/`) and Docker's token endpoint (`/token`) are described by their own \
                     specifications, not here.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .tags(Some(table::TAGS.iter().map(|(name, about)| {
            TagBuilder::new().name(*name).description(Some(*about)).build()
        })))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_builds_and_the_document_serialises() {
        let doc: serde_json::Value = serde_json::from_str(json()).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.contains_key("/api/v1/openapi.json"));
        assert!(
            paths.keys().all(|p| p.starts_with("/api/v1/")),
            "only /api/v1 is described"
        );
    }

    #[test]
    fn operations_are_unique_and_their_ids_too() {
        let mut seen = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for op in table::operations() {
            assert!(
                seen.insert((op.method, op.path)),
                "{} {} twice in the table",
                op.method,
                op.path
            );
            assert!(
                ids.insert(operation_id(op.method, op.path)),
                "{} {}: id clash",
                op.method,
                op.path
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let text = json();
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut rest = text;
        while let Some(at) = rest.find("\"$ref\":\"#/components/") {
            let tail = &rest[at + "\"$ref\":\"#/components/".len()..];
            let end = tail.find('"').unwrap();
            let (kind, name) = tail[..end].split_once('/').unwrap();
            assert!(
                !doc["components"][kind][name].is_null(),
                "#/components/{kind}/{name} is missing"
            );
            rest = &tail[end..];
        }
    }
}
