//! Every way a request can fail, and how each failure looks on the wire.
//!
//! ACL clients read errors as OData `{"error":{"code","message"}}` (acl-api.md §1.5) and decide
//! what to do from the status and the code alone: azure-core retries any status that carries
//! `Retry-After`, and the Python poller stops at once on a 404 `InvalidTransactionId`. So the
//! status, code and `Retry-After` of each case are decided here, in one table, and nowhere
//! else; handlers only pick a variant and write a message a person can act on.
//!
//! Error responses carry no `x-ms-ccf-transaction-id`: like CCF, they are raised before (or
//! instead of) a transaction.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failed request. The message is shown to the client verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `MissingApiVersionParameter`.
    MissingApiVersion,
    /// 400 `UnsupportedApiVersion`.
    UnsupportedApiVersion(String),
    /// 400 `InvalidQueryParameterValue`: a query parameter that cannot be understood.
    InvalidQueryParameter(String),
    /// 400 `InvalidTransactionId`: a malformed transaction id in the query string.
    InvalidTransactionIdParameter(String),
    /// 404 `InvalidTransactionId`: the transaction id in the path cannot name a transaction
    /// (malformed, or its seqno belongs to another view). Permanent for the Python poller.
    InvalidTransactionId(String),
    /// 404 `TransactionPendingOrUnknown`: not committed (yet), or no such seqno yet.
    TransactionPendingOrUnknown(String),
    /// 404 `ResourceNotFound`.
    NotFound(String),
    /// 405 `MethodNotAllowed`.
    MethodNotAllowed(String),
    /// 400 `InvalidInput`: the request body is not what the operation takes.
    InvalidInput(String),
    /// 415 `UnsupportedMediaType`.
    UnsupportedMediaType(String),
    /// 413 `RequestBodyTooLarge`.
    BodyTooLarge { limit: usize },
    /// 400 `EntrySizeCapacityExceeded`.
    EntryTooLarge { size: usize, limit: usize },
    /// 400 `CollectionIdTooLong`.
    CollectionIdTooLong { size: usize, limit: usize },
    /// 400 `CollectionCapacityExceeded`.
    CollectionCapacityExceeded { limit: usize },
    /// 404 `ResourceNotFound`: the operation exists, but not in the requested version (so for
    /// a client of that version it is an unknown route, as it was before cledger had it).
    OperationNotInVersion(String),
    /// 400 `TagCapacityExceeded`: the collection already has `limit` distinct tags.
    TagCapacityExceeded { limit: usize },
    /// 400 with `code` (`EntrySizeCapacityExceeded`, `CollectionIdTooLong`, `InvalidInput`): the
    /// write exceeds a limit of the ledger's storage (`ledger_store::limits`). The HTTP limits
    /// are tighter and checked first, so this is a second line; nothing was written.
    StorageLimit { code: &'static str, message: String },
    /// 400 `LastAdministrator`: the change would leave the ledger without an administrator.
    LastAdministrator(String),
    /// 401 `InvalidAuthenticationInfo`.
    Unauthenticated,
    /// 401 `InvalidAuthenticationInfo` with the reason: credentials were presented but cannot
    /// be accepted (a client certificate outside its validity period).
    InvalidCredentials(String),
    /// 403 `NotAllowed`.
    NotAllowed(String),
    /// 403 `InsufficientPrivileges`: the caller may change users or roles, but not grant or
    /// take away a role or an action that its own roles do not allow.
    InsufficientPrivileges(String),
    /// 503 `ServiceBusy` with `Retry-After: 1`: the write queue is full; nothing was written.
    Busy,
    /// 503 `ServiceUnavailable` with `Retry-After: 1`: this node is part of a cluster that has
    /// no primary right now (an election is under way); nothing was written.
    NoPrimary,
    /// 503 `StorageUnavailable`, no `Retry-After`: the store failed or is closing.
    StorageUnavailable(String),
    /// 503 `StorageFull` (disk or quota full), `StorageReadOnly` (read-only filesystem) or
    /// `StorageUnavailable` (other I/O errors): a storage fault stopped writes and nothing was
    /// written. `transient`: the store retries by itself and writes resume when the condition
    /// clears, so the response carries `Retry-After: STORAGE_RETRY_AFTER_SECS`; otherwise the
    /// ledger must be restarted and there is no `Retry-After`.
    StorageFault {
        code: &'static str,
        message: String,
        transient: bool,
    },
    /// 409 `IdempotencyKeyReused`: the idempotency key was used for a different write.
    IdempotencyKeyReused(String),
    /// 429 `TooManyRequests` with `Retry-After`: the caller exceeded its rate limit.
    TooManyRequests { retry_after_secs: u64 },
    /// 414 `UriTooLong`.
    UriTooLong { limit: usize },
    /// 408 `RequestTimeout`: the request (usually its body) did not arrive in time.
    RequestTimeout { limit_secs: u64 },
    /// 500 `WriteIndeterminate`: the entry is on disk but could not be committed now.
    WriteIndeterminate(String),
    /// The request line and headers are larger than the node accepts.
    HeadersTooLarge { size: usize, limit: usize },
    /// An HTTP/1.1 request without a `Host` header.
    MissingHeader(&'static str),
    /// A header that may appear once appeared more than once.
    RepeatedHeader(&'static str),
    /// The caller already holds its share of the write budget with writes in progress.
    CallerBusy { held: usize, share: usize },
    /// The connection has this many bytes of earlier responses its client has not read yet.
    ResponseBacklog { unread: usize, limit: usize },
    /// A hook (a user-defined function run with a write) failed, so nothing was written:
    /// 500 `InternalError`, as ACL answers, with the function's error.
    HookFailed(String),
    /// 500 `InternalError`: a bug in this server, not in the request.
    Internal(String),
}

impl ApiError {
    /// The HTTP status and OData code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            MissingApiVersion => (StatusCode::BAD_REQUEST, "MissingApiVersionParameter"),
            UnsupportedApiVersion(_) => (StatusCode::BAD_REQUEST, "UnsupportedApiVersion"),
            InvalidQueryParameter(_) => (StatusCode::BAD_REQUEST, "InvalidQueryParameterValue"),
            InvalidTransactionIdParameter(_) => (StatusCode::BAD_REQUEST, "InvalidTransactionId"),
            InvalidTransactionId(_) => (StatusCode::NOT_FOUND, "InvalidTransactionId"),
            TransactionPendingOrUnknown(_) => {
                (StatusCode::NOT_FOUND, "TransactionPendingOrUnknown")
            }
            NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            InvalidInput(_) => (StatusCode::BAD_REQUEST, "InvalidInput"),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestBodyTooLarge"),
            EntryTooLarge { .. } => (StatusCode::BAD_REQUEST, "EntrySizeCapacityExceeded"),
            CollectionIdTooLong { .. } => (StatusCode::BAD_REQUEST, "CollectionIdTooLong"),
            CollectionCapacityExceeded { .. } => {
                (StatusCode::BAD_REQUEST, "CollectionCapacityExceeded")
            }
            LastAdministrator(_) => (StatusCode::BAD_REQUEST, "LastAdministrator"),
            OperationNotInVersion(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            TagCapacityExceeded { .. } => (StatusCode::BAD_REQUEST, "TagCapacityExceeded"),
            StorageLimit { code, .. } => (StatusCode::BAD_REQUEST, code),
            Unauthenticated | InvalidCredentials(_) => {
                (StatusCode::UNAUTHORIZED, "InvalidAuthenticationInfo")
            }
            NotAllowed(_) => (StatusCode::FORBIDDEN, "NotAllowed"),
            InsufficientPrivileges(_) => (StatusCode::FORBIDDEN, "InsufficientPrivileges"),
            Busy => (StatusCode::SERVICE_UNAVAILABLE, "ServiceBusy"),
            NoPrimary => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            IdempotencyKeyReused(_) => (StatusCode::CONFLICT, "IdempotencyKeyReused"),
            UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "UriTooLong"),
            RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
            StorageUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "StorageUnavailable"),
            StorageFault { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            WriteIndeterminate(_) => (StatusCode::INTERNAL_SERVER_ERROR, "WriteIndeterminate"),
            HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderFieldsTooLarge",
            ),
            MissingHeader(_) => (StatusCode::BAD_REQUEST, "MissingRequiredHeader"),
            RepeatedHeader(_) => (StatusCode::BAD_REQUEST, "InvalidHeaderValue"),
            ResponseBacklog { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ResponseBacklog"),
            CallerBusy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "ServiceBusy"),
            HookFailed(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    pub fn message(&self) -> String {
        use ApiError::*;
        match self {
            MissingApiVersion => "The api-version query parameter is required (for example \
                                  ?api-version=2022-05-13)."
                .into(),
            UnsupportedApiVersion(v) => format!(
                "api-version '{v}' is not supported. Supported versions: {}.",
                crate::version::ApiVersion::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            EntryTooLarge { size, limit } => {
                format!("Entry contents of {size} bytes exceed the limit of {limit} bytes.")
            }
            CollectionIdTooLong { size, limit } => format!(
                "The collection id is {size} bytes long (after URL decoding); the limit is {limit} bytes."
            ),
            CollectionCapacityExceeded { limit } => format!(
                "This ledger already has {limit} collections besides the default one; \
                 write to an existing collection instead."
            ),
            TagCapacityExceeded { limit } => format!(
                "The collection already has {limit} distinct tags, the most a collection may \
                 have; reuse existing tags."
            ),
            BodyTooLarge { limit } => {
                format!("The request body is larger than the limit of {limit} bytes.")
            }
            Unauthenticated => "The request is not authenticated: no client certificate or \
                                bearer token was presented."
                .into(),
            Busy => {
                "The ledger is busy; nothing was written. Retry after the Retry-After delay.".into()
            }
            NoPrimary => "The ledger has no primary right now (an election is under way); \
                          nothing was written. Retry after the Retry-After delay."
                .into(),
            TooManyRequests { retry_after_secs } => format!(
                "Too many requests from this caller; nothing was done. Retry in \
                 {retry_after_secs} s (Retry-After)."
            ),
            UriTooLong { limit } => {
                format!("The request URL is longer than the limit of {limit} bytes.")
            }
            RequestTimeout { limit_secs } => format!(
                "The request did not complete within {limit_secs} s (a slow or stalled request \
                 body); nothing was done."
            ),
            HeadersTooLarge { size, limit } => format!(
                "The request line and headers are {size} bytes; the limit is {limit} bytes."
            ),
            MissingHeader(name) => format!("An HTTP/1.1 request must have a {name} header."),
            RepeatedHeader(name) => {
                format!("The {name} header appears more than once; it may appear only once.")
            }
            CallerBusy { held, share } => format!(
                "This caller already has {held} bytes of writes in progress, and one caller may \
                 hold at most {share} bytes of the ledger's write budget; nothing was written. \
                 Retry after the Retry-After delay, or send fewer writes at once."
            ),
            ResponseBacklog { unread, limit } => format!(
                "This connection has {unread} bytes of earlier responses that its client has \
                 not read (the limit is {limit}); read them, or use another connection. Nothing \
                 was done."
            ),
            InvalidQueryParameter(m)
            | InvalidTransactionIdParameter(m)
            | InvalidTransactionId(m)
            | TransactionPendingOrUnknown(m)
            | NotFound(m)
            | MethodNotAllowed(m)
            | InvalidInput(m)
            | UnsupportedMediaType(m)
            | LastAdministrator(m)
            | IdempotencyKeyReused(m)
            | OperationNotInVersion(m)
            | NotAllowed(m)
            | InvalidCredentials(m)
            | InsufficientPrivileges(m)
            | StorageUnavailable(m)
            | StorageFault { message: m, .. }
            | StorageLimit { message: m, .. }
            | WriteIndeterminate(m)
            | HookFailed(m)
            | Internal(m) => m.clone(),
        }
    }
}

impl ApiError {
    /// Seconds a client should wait before retrying, for the conditions that clear by
    /// themselves; `None` for everything a retry would not fix.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Busy
            | ApiError::NoPrimary
            | ApiError::ResponseBacklog { .. }
            | ApiError::CallerBusy { .. } => Some(1),
            ApiError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            ApiError::StorageFault {
                transient: true, ..
            } => Some(STORAGE_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

/// `Retry-After` of a storage fault expected to clear (the store probes every second).
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

/// Attached to every error response's extensions, so the transport can log and count failures
/// (authentication failures above all) without parsing bodies.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({"error": {"code": code, "message": self.message()}});
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Only transient conditions carry Retry-After: azure-core retries anything that does.
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(ErrorInfo {
            code,
            message: self.message(),
        });
        response
    }
}

impl From<ledger_store::LimitError> for ApiError {
    fn from(limit: ledger_store::LimitError) -> Self {
        use ledger_store::LimitError::*;
        let code = match &limit {
            EntryTooLarge { .. } | FrameTooLarge { .. } => "EntrySizeCapacityExceeded",
            CollectionIdTooLong { .. } => "CollectionIdTooLong",
            TagTooLong { .. } | TooManyTags { .. } | WriteSet(_) => "InvalidInput",
        };
        ApiError::StorageLimit {
            code,
            message: format!(
                "The ledger's storage refuses this write: {limit}. Nothing was written."
            ),
        }
    }
}

impl From<ledger_store::StoreError> for ApiError {
    fn from(e: ledger_store::StoreError) -> Self {
        match e {
            // A file derived from the ledger, not the ledger: say which, and that it heals.
            ledger_store::StoreError::DerivedDamaged { file, reason } => {
                ApiError::StorageUnavailable(format!(
                    "A file derived from the ledger is damaged: {} ({reason}). Nothing was served \
                     from it; the ledger itself is intact, and the file is rebuilt from it when \
                     the server restarts.",
                    derived_file_name(&file)
                ))
            }
            other => ApiError::StorageUnavailable(format!("The ledger storage failed: {other}")),
        }
    }
}

/// A derived file as it is named inside the data directory (`index.redb`, `tree/frames.idx`,
/// `tree/level-04.hashes`, or `tree/` for the tree files together), without the server's path.
pub fn derived_file_name(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_tree = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == "tree");
    match (name.as_str(), in_tree) {
        ("tree", _) => "tree/".into(),
        (_, true) => format!("tree/{name}"),
        _ => name,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_limits_are_client_errors_with_acl_codes() {
        use ledger_store::LimitError;
        for (limit, code) in [
            (
                LimitError::EntryTooLarge {
                    size: 70_000_100,
                    limit: 67_108_864,
                },
                "EntrySizeCapacityExceeded",
            ),
            (
                LimitError::FrameTooLarge {
                    size: 67_108_865,
                    limit: 67_108_864,
                },
                "EntrySizeCapacityExceeded",
            ),
            (
                LimitError::CollectionIdTooLong {
                    len: 2000,
                    limit: 1024,
                },
                "CollectionIdTooLong",
            ),
            (
                LimitError::TooManyTags {
                    count: 300,
                    limit: 256,
                },
                "InvalidInput",
            ),
            (
                LimitError::TagTooLong {
                    index: 2,
                    len: 1025,
                    limit: 1024,
                },
                "InvalidInput",
            ),
        ] {
            let error = ApiError::from(limit.clone());
            assert_eq!(error.status_and_code(), (StatusCode::BAD_REQUEST, code));
            let message = error.message();
            assert!(message.contains(&limit.to_string()), "{message}");
            assert!(message.contains("Nothing was written"), "{message}");
            let response = error.into_response();
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn a_damaged_derived_file_is_a_503_naming_it_not_a_corrupt_ledger() {
        let e: ApiError = ledger_store::StoreError::DerivedDamaged {
            file: "/srv/cledger/tree/frames.idx".into(),
            reason: "bytes 0..4096 do not match their checksum".into(),
        }
        .into();
        let (status, code) = e.status_and_code();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code, "StorageUnavailable");
        let message = e.message();
        assert!(message.contains("tree/frames.idx"), "{message}");
        assert!(!message.contains("/srv/cledger"), "{message}");
        assert!(!message.contains("corrupt"), "{message}");
        assert_eq!(derived_file_name("/d/index.redb".as_ref()), "index.redb");
        assert_eq!(derived_file_name("/d/tree".as_ref()), "tree/");
        assert_eq!(
            derived_file_name("/d/tree/level-04.hashes".as_ref()),
            "tree/level-04.hashes"
        );
    }

    #[test]
    fn only_busy_says_retry() {
        let busy = ApiError::Busy.into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let limited = ApiError::TooManyRequests {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
        for (code, transient) in [
            ("StorageFull", true),
            ("StorageReadOnly", true),
            ("StorageUnavailable", true),
        ] {
            let full = ApiError::StorageFault {
                code,
                message: "x".into(),
                transient,
            }
            .into_response();
            assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(full.headers()[header::RETRY_AFTER], "5");
        }
        for permanent in [
            ApiError::StorageUnavailable("x".into()),
            ApiError::StorageFault {
                code: "StorageUnavailable",
                message: "x".into(),
                transient: false,
            },
            ApiError::WriteIndeterminate("x".into()),
            ApiError::NotAllowed("x".into()),
            ApiError::InvalidTransactionId("x".into()),
            ApiError::EntryTooLarge { size: 2, limit: 1 },
        ] {
            assert!(
                permanent
                    .into_response()
                    .headers()
                    .get(header::RETRY_AFTER)
                    .is_none()
            );
        }
    }
}
