//! The OCI error model: every failure a client can see is an [`ApiError`] rendered as
//! `{"errors":[{"code","message","detail"}]}` with the status the spec gives its code.

use http::StatusCode;
use keelson_raft::identity::IdentityRejection;
use keelson_raft::regions::RegionRejection;
use keelson_raft::{CatalogError, Rejection};
use keelson_storage::{DigestError, StorageError};
use serde_json::json;

/// Error codes of the distribution spec (plus Docker's TAG_INVALID and RANGE_INVALID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    /// Management API: the named object does not exist.
    NotFound,
    /// Management API: the object exists already, or a limit is reached.
    Conflict,
    /// Management API: the request is malformed (including policy parse errors).
    BadRequest,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::BadRequest => "BAD_REQUEST",
        }
    }

    /// The status the spec pairs with the code.
    pub fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The message of [`ApiError::no_route`].
pub const NO_ROUTE: &str = "no such management route";

/// A client-visible failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?} ({status}): {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra response headers (e.g. `Range` on a 416 for an upload).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// The answer of every `/api/v1` dispatcher to a path or method it has no route for: one
    /// constructor, so a client (and `node/tests/openapi.rs`) can tell "no such route" from a
    /// route's own 404 for an object that does not exist.
    pub fn no_route() -> ApiError {
        ApiError::new(ErrorCode::NotFound, NO_ROUTE)
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let mut entry = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = &self.detail {
            entry["detail"] = detail.clone();
        }
        json!({ "errors": [entry] }).to_string().into_bytes()
    }
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> ApiError {
        match e {
            DigestError::UnsupportedAlgorithm(_) => {
                ApiError::new(ErrorCode::Unsupported, e.to_string()).with_status(StatusCode::BAD_REQUEST)
            }
            DigestError::Malformed => ApiError::new(ErrorCode::DigestInvalid, e.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match &e {
            StorageError::UploadUnknown | StorageError::UploadOtherRepo(_) => {
                ApiError::new(ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
            }
            StorageError::OutOfOrder { offset, .. } => ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header("Range", upload_range(*offset)),
            StorageError::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestInvalid, e.to_string()),
            StorageError::Body(_) => ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string()),
            StorageError::TooManyUploads(_) => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string()).with_header("Retry-After", "60".into())
            }
            StorageError::BlobMissing(_) | StorageError::Corrupt(_) | StorageError::Io(_) | StorageError::Peer(_) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(ErrorCode::Unavailable, "storage temporarily unavailable")
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        if let CatalogError::TooLarge { .. } = e {
            return ApiError::new(ErrorCode::SizeInvalid, e.to_string()).with_status(StatusCode::PAYLOAD_TOO_LARGE);
        }
        tracing::warn!(error = %e, "catalog unavailable");
        ApiError::new(ErrorCode::Unavailable, "catalog temporarily unavailable; retry")
            .with_header("Retry-After", "1".into())
    }
}

impl From<keelson_raft::catalog::ReadError> for ApiError {
    fn from(e: keelson_raft::catalog::ReadError) -> ApiError {
        ApiError::from(CatalogError::from(e))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        match &r {
            Rejection::BlobUnknown(d) => {
                ApiError::new(ErrorCode::ManifestBlobUnknown, r.to_string()).with_detail(json!({ "digest": d }))
            }
            Rejection::ManifestUnknown(d) => {
                ApiError::new(ErrorCode::ManifestUnknown, r.to_string()).with_detail(json!({ "digest": d }))
            }
            Rejection::TagUnknown(_) => ApiError::new(ErrorCode::ManifestUnknown, r.to_string()),
            Rejection::RepoUnknown => ApiError::new(ErrorCode::NameUnknown, r.to_string()),
            Rejection::RepoExists | Rejection::Stale(_) => ApiError::new(ErrorCode::Conflict, r.to_string()),
            Rejection::LimitExceeded(_) | Rejection::TagImmutable { .. } => {
                ApiError::new(ErrorCode::Denied, r.to_string())
            }
            Rejection::Invalid(_) => ApiError::new(ErrorCode::BadRequest, r.to_string()),
            Rejection::Identity(i) => match i {
                IdentityRejection::NoTenancy(_) | IdentityRejection::Missing(_) => {
                    ApiError::new(ErrorCode::NotFound, r.to_string())
                }
                IdentityRejection::OutOfScope(_) => ApiError::new(ErrorCode::BadRequest, r.to_string()),
                _ => ApiError::new(ErrorCode::Conflict, r.to_string()),
            },
            Rejection::Region(RegionRejection::Missing(_)) => ApiError::new(ErrorCode::NotFound, r.to_string()),
            Rejection::Region(RegionRejection::Invalid(_)) => ApiError::new(ErrorCode::BadRequest, r.to_string()),
            Rejection::NotHome { home } => {
                ApiError::new(ErrorCode::Denied, r.to_string()).with_detail(json!({ "home_region": home }))
            }
            // RFC 9110 §13.1.1: If-Match failed.
            Rejection::PreconditionFailed { .. } => {
                ApiError::new(ErrorCode::Denied, r.to_string()).with_status(StatusCode::PRECONDITION_FAILED)
            }
        }
    }
}

/// The `Range` header value for an upload holding `offset` bytes (`0-<last byte>`).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}
