//! The one error type of runledger. Each error maps to one [`ErrorCode`], which alone decides the
//! gRPC code and the HTTP status (each front renders it, in `api::status`), so a rule about which
//! failure gets which status changes in one place. Internal causes are logged once here and never
//! sent to clients.

/// Everything that can go wrong in a request, by what the caller should do about it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field and what is wrong with it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task, pipeline or route does not exist for this caller.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (a task reported under another pipeline).
    #[error("{0}")]
    Conflict(String),
    /// No valid credentials: missing, unknown, expired or revoked token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the scope the request needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// Too much at once; the caller should retry after the given number of seconds.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u32,
    },
    /// The route exists, but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A request or message over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The service cannot do this now: shutting down, or storage full or read-only. Reads may
    /// still work.
    #[error("{0}")]
    Unavailable(String),
    /// Cluster mode: the cluster's log did not store a write in time (no quorum reachable).
    /// Such a write is never applied once [`NO_QUORUM_RETRY_SECS`] have passed, so the caller
    /// may retry then, through any node, and keep its order.
    #[error("{0}")]
    NoQuorum(String),
    /// A token-endpoint failure, reported as RFC 6749 says.
    #[error("{0}")]
    OAuth(OAuthError),
    /// A bug or an unexpected storage failure. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The error codes of RFC 6749 section 5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthErrorKind {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    InvalidScope,
    /// Too many failed attempts: RFC 8628's `slow_down`, answered with 429 and Retry-After.
    SlowDown,
}

/// A token-endpoint error: `{"error": kind, "error_description": description}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", kind.as_str())]
pub struct OAuthError {
    pub kind: OAuthErrorKind,
    pub description: String,
    /// For `slow_down`: seconds before another attempt may succeed.
    pub retry_after_secs: Option<u32>,
}

impl OAuthErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorKind::InvalidRequest => "invalid_request",
            OAuthErrorKind::InvalidClient => "invalid_client",
            OAuthErrorKind::InvalidGrant => "invalid_grant",
            OAuthErrorKind::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorKind::InvalidScope => "invalid_scope",
            OAuthErrorKind::SlowDown => "slow_down",
        }
    }
}

impl OAuthError {
    fn new(kind: OAuthErrorKind, description: impl Into<String>) -> OAuthError {
        OAuthError {
            kind,
            description: description.into(),
            retry_after_secs: None,
        }
    }

    pub fn slow_down(retry_after_secs: u32) -> OAuthError {
        OAuthError {
            retry_after_secs: Some(retry_after_secs),
            ..OAuthError::new(
                OAuthErrorKind::SlowDown,
                format!("too many failed attempts for this client; retry in {retry_after_secs} s"),
            )
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidClient, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidGrant, description)
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::UnsupportedGrantType, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidScope, description)
    }
}

impl From<OAuthError> for Error {
    fn from(error: OAuthError) -> Error {
        Error::OAuth(error)
    }
}

/// The RFC 6749 error body.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Retry-After of [`Error::NoQuorum`]: past it, the refused write cannot be applied any
/// more (see `crate::cluster::publisher`).
pub const NO_QUORUM_RETRY_SECS: u32 = 4;

/// How many characters of an offending input an error message quotes at most.
pub const QUOTED_CHARS: usize = 100;

/// Offending input as error messages quote it: in backquotes, control characters replaced, and
/// cut after [`QUOTED_CHARS`] characters (saying how long it was), so that a huge or binary
/// input cannot make a huge answer or a forged log line.
pub fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars
        .by_ref()
        .take(QUOTED_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if chars.next().is_none() {
        format!("`{head}`")
    } else {
        format!("`{head}...` ({} bytes)", text.len())
    }
}

/// The closed set of outcomes that decides the gRPC code and the HTTP status of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    Conflict,
    Unauthenticated,
    PermissionDenied,
    MethodNotAllowed,
    TooManyRequests,
    PayloadTooLarge,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The code as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TooManyRequests => "overloaded",
            ErrorCode::PayloadTooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::BadRequest,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Error::Overloaded { .. } => ErrorCode::TooManyRequests,
            Error::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::Unavailable(_) | Error::NoQuorum(_) => ErrorCode::Unavailable,
            Error::OAuth(e) if e.kind == OAuthErrorKind::InvalidClient => {
                ErrorCode::Unauthenticated
            }
            Error::OAuth(e) if e.kind == OAuthErrorKind::SlowDown => ErrorCode::TooManyRequests,
            Error::OAuth(_) => ErrorCode::BadRequest,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// An invalid argument, prefixed with the field it concerns.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Error {
        Error::InvalidArgument(format!("{field}: {reason}"))
    }

    /// The same error with `context` (a field path, a batch number) put before its message.
    pub fn prefixed(self, context: &str) -> Error {
        let wrap = |message: String| format!("{context}: {message}");
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(wrap(m)),
            Error::NotFound(m) => Error::NotFound(wrap(m)),
            Error::Conflict(m) => Error::Conflict(wrap(m)),
            Error::Unauthenticated(m) => Error::Unauthenticated(wrap(m)),
            Error::PermissionDenied(m) => Error::PermissionDenied(wrap(m)),
            Error::MethodNotAllowed(m) => Error::MethodNotAllowed(wrap(m)),
            Error::Overloaded {
                message,
                retry_after_secs,
            } => Error::Overloaded {
                message: wrap(message),
                retry_after_secs,
            },
            Error::TooLarge(m) => Error::TooLarge(wrap(m)),
            Error::Unavailable(m) => Error::Unavailable(wrap(m)),
            Error::NoQuorum(m) => Error::NoQuorum(wrap(m)),
            Error::OAuth(e) => Error::OAuth(e),
            Error::Internal(m) => Error::Internal(m),
        }
    }

    /// What the client is told: the message, except for internal errors, which are logged here
    /// (once, where the error leaves the process) and replaced by a generic sentence.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the failure was logged on the server".to_string()
            }
            other => other.to_string(),
        }
    }

    /// Seconds the caller should wait before retrying, for the errors that have a hint.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Error::Overloaded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Error::Unavailable(_) => Some(1),
            Error::NoQuorum(_) => Some(NO_QUORUM_RETRY_SECS),
            Error::OAuth(e) => e.retry_after_secs,
            _ => None,
        }
    }
}

/// The JSON error body of every non-OAuth REST error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    pub errors: Vec<String>,
}

/// Storage failures: a full disk, a file that may not grow, a read-only file, or a database
/// reopening after one of those refuses the request with a clear message (nothing was applied);
/// anything else is internal.
fn from_storage(error: redb::Error) -> Error {
    use std::io::ErrorKind;
    let io = match &error {
        redb::Error::Io(io) => io,
        redb::Error::PreviousIo => {
            return Error::Unavailable(
                "the database is recovering from a failed write; nothing was applied, retry in a moment"
                    .to_string(),
            );
        }
        _ => return Error::Internal(format!("storage: {error}")),
    };
    let why = match io.kind() {
        ErrorKind::StorageFull => "the data volume is full",
        ErrorKind::FileTooLarge => "the database file may not grow (file size limit)",
        ErrorKind::QuotaExceeded => "the disk quota is exhausted",
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            "the database file is read-only"
        }
        _ => return Error::Internal(format!("storage: {error}")),
    };
    Error::Unavailable(format!(
        "{why} ({io}); the write was not applied and writes are refused until an operator frees space; reads keep working"
    ))
}

macro_rules! from_redb {
    ($($source:ty),*) => {$(
        impl From<$source> for Error {
            fn from(error: $source) -> Error {
                from_storage(error.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_field_and_map_to_one_code() {
        let error = Error::invalid("period", "must be one of day, week");
        assert_eq!(error.to_string(), "period: must be one of day, week");
        assert_eq!(error.code(), ErrorCode::BadRequest);
        assert_eq!(
            Error::invalid("n", "too big")
                .prefixed("batch 2")
                .to_string(),
            "batch 2: n: too big"
        );
        let internal = Error::Internal("page 7 checksum".into());
        assert!(!internal.client_message().contains("page 7"));
        assert_eq!(internal.code(), ErrorCode::Internal);
    }

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote("abc"), "`abc`");
        assert_eq!(quote("a\nb"), "`a\u{fffd}b`");
        let long = "x".repeat(10_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 130, "{quoted}");
        assert!(quoted.ends_with("...` (10000 bytes)"), "{quoted}");
    }
}
