//! How each front renders the one [`Error`]: a `tonic::Status` for gRPC, the contract's JSON body
//! (or RFC 6749's, for the token endpoint) for REST, both decided by the error's [`ErrorCode`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, ErrorBody, ErrorCode, OAuthErrorBody, OAuthErrorKind};

/// The HTTP status of an error code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code of an error code.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::BadRequest => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Conflict => tonic::Code::FailedPrecondition,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::MethodNotAllowed => tonic::Code::Unimplemented,
        ErrorCode::TooManyRequests | ErrorCode::PayloadTooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let mut status = tonic::Status::new(grpc_code(error.code()), error.client_message());
        if let Some(seconds) = error.retry_after_secs()
            && let Ok(value) = seconds.to_string().parse()
        {
            status.metadata_mut().insert("retry-after", value);
        }
        status
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = http_status(self.code());
        let mut response = match &self {
            Error::OAuth(oauth) => {
                let body = OAuthErrorBody {
                    error: oauth.kind.as_str().to_string(),
                    error_description: oauth.description.clone(),
                };
                let mut response = (status, axum::Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if oauth.kind == OAuthErrorKind::InvalidClient {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"runledger\""),
                    );
                }
                response
            }
            _ => {
                let body = ErrorBody {
                    code: status.as_u16(),
                    message: status.canonical_reason().unwrap_or("error").to_lowercase(),
                    errors: vec![self.client_message()],
                };
                (status, axum::Json(body)).into_response()
            }
        };
        if let Error::Unauthenticated(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runledger\""),
            );
        }
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_code_decides_both_renderings() {
        let status = tonic::Status::from(Error::invalid("n", "too big"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "n: too big");
        let response = Error::NotFound("pipeline x".into()).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn internal_details_stay_on_the_server() {
        let status = tonic::Status::from(Error::Internal("page 7 checksum".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("page 7"));
    }

    #[test]
    fn overload_carries_a_retry_hint() {
        let error = Error::Overloaded {
            message: "write queue is full".into(),
            retry_after_secs: 2,
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
