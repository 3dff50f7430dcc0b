//! The one mapping from every failure to an HTTP answer: `AppError` → problem+json (RFC 9457).
//!
//! Handlers return `Result<_, AppError>`. Store errors convert here and nowhere else, so a
//! constraint violation becomes 409/422 the same way on every route. Internal details are
//! logged with the request's span and never written into a response body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// One invalid field of a request body or query, as reported in a 422 problem.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the client sent it (`title`, `tags[2]`, …).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Deliberately carries no detail: a missing workspace, a workspace the caller is not a
    /// member of and a ticket of another workspace must be indistinguishable.
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// An upload that would take the workspace past its storage limit (413, with the figures).
    #[error("storage quota exceeded")]
    QuotaExceeded { used: u64, limit: u64, requested: u64 },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service unavailable")]
    Unavailable,
    /// This instance is at a capacity limit: come back after `retry_after_secs`.
    #[error("overloaded")]
    Overloaded { retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge | Self::QuotaExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::QuotaExceeded { .. } => "quota-exceeded",
            Self::RangeNotSatisfiable => "range-not-satisfiable",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Validation(_) => "validation",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::Unavailable | Self::Overloaded { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// What the client may read. Internal and unavailable errors say nothing specific.
    fn detail(&self) -> Option<String> {
        match self {
            Self::BadRequest(d) | Self::Forbidden(d) | Self::Conflict(d) => Some(d.clone()),
            Self::UnsupportedMediaType(d) => Some(d.clone()),
            Self::Unauthorized => Some("a valid session or API token is required".into()),
            Self::Validation(errors) => Some(match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid", errors.len()),
            }),
            Self::TooManyRequests { retry_after_secs } => Some(format!("too many at once; retry after {retry_after_secs} s")),
            Self::Overloaded { retry_after_secs } => Some(format!("this server is at capacity; retry after {retry_after_secs} s")),
            Self::PayloadTooLarge => Some("the request body exceeds the size limit".into()),
            Self::QuotaExceeded { used, limit, requested } => {
                Some(format!("the workspace's storage is {used} of {limit} bytes; {requested} more would pass the limit"))
            }
            Self::MethodNotAllowed => Some("this route does not accept that method".into()),
            Self::RangeNotSatisfiable => Some("the range lies outside the file".into()),
            Self::NotFound | Self::Unavailable | Self::Internal(_) => None,
        }
    }
}

/// The body of every error response (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Storage quota refusals: bytes used, the limit, and what the upload asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(msg) => tracing::error!(error = %msg, "internal error"),
            Self::Unavailable => tracing::warn!("store unavailable"),
            _ => tracing::debug!(error = %self, "request rejected"),
        }
        let problem = Problem {
            kind: format!("urn:edgedesk:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match &self {
                Self::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
            used: None,
            limit: None,
            requested: None,
        };
        let problem = match self {
            Self::QuotaExceeded { used, limit, requested } => {
                Problem { used: Some(used), limit: Some(limit), requested: Some(requested), ..problem }
            }
            _ => problem,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            Self::TooManyRequests { retry_after_secs } | Self::Overloaded { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // The store is overloaded or unreachable: a short wait before retrying.
            Self::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(msg) => Self::Conflict(msg),
            StoreError::Invalid { field, message } => Self::invalid(field, message),
            StoreError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "store unavailable");
                Self::Unavailable
            }
            StoreError::Internal(msg) => Self::Internal(msg),
            StoreError::QuotaExceeded { used, limit, requested } => Self::QuotaExceeded { used, limit, requested },
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
