//! The API's one error type, [`ApiError`], and its one JSON envelope, [`ErrorBody`]:
//! `{"error": "<what failed, for a person>", "code": "<what failed, for a program>"}`.
//! Every handler that refuses answers with an `ApiError`; the `cacheflow rollout` and
//! `cacheflow drift --server` clients read the same envelope.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::flow::runtime::Stopped;

/// Why a request was refused; its status and code follow from the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or not the right ones (a signature, a node or admin token).
    #[error("{0}")]
    Unauthorized(String),
    /// The request or its body is not what the route takes.
    #[error("{0}")]
    BadRequest(String),
    /// The node, cluster or action named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The command does not apply to the rollout as it is.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is (or says it is) larger than the route takes.
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive in time.
    #[error("the body did not arrive within {} s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// The bodies arriving at this moment already hold the server's budget.
    #[error("the server is receiving {budget} bytes of request bodies already: retry later")]
    Busy { budget: usize },
    /// The reconciler's task has ended (its journal could not be written).
    #[error("the reconciler has stopped")]
    Stopped,
    /// Nothing to answer with yet (no revision taken, a drift run failed).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What failed, in words.
    pub error: String,
    /// What failed, for a program: `unauthorized`, `bad_request`, `not_found`,
    /// `conflict`, `unsupported_media_type`, `too_large`, `timeout`, `busy`, `stopped`,
    /// `unavailable`, `internal`. Absent from servers before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorBody {
    /// The reason in an error answer's body, whatever the body is.
    pub fn reason(body: &[u8]) -> String {
        serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.error)
            .unwrap_or_else(|_| "no reason given".to_owned())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy { .. } | ApiError::Stopped | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::BodyTimeout(_) => "timeout",
            ApiError::Busy { .. } => "busy",
            ApiError::Stopped => "stopped",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<Stopped> for ApiError {
    fn from(_: Stopped) -> Self {
        ApiError::Stopped
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
            code: Some(self.code().to_owned()),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Busy { .. }) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
