//! API errors, answered as Kubernetes `Status` objects with upstream's codes and reasons.
//! This is the only place a `Status` is built.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rkube_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    NotFound {
        resource: &'static str,
        name: String,
    },
    /// A path that names no resource.
    NotFoundPath(String),
    AlreadyExists {
        resource: &'static str,
        name: String,
    },
    /// A stale resourceVersion.
    Conflict {
        resource: &'static str,
        name: String,
    },
    Invalid {
        kind: &'static str,
        name: String,
        causes: Vec<(String, String)>,
    },
    /// A write the rules forbid, such as new content in a terminating namespace.
    Forbidden {
        resource: &'static str,
        name: String,
        message: String,
    },
    /// A request this user may not make at all, explained.
    ForbiddenRequest(String),
    /// A write that conflicts with the object's state, explained.
    Conflicting {
        resource: String,
        name: String,
        message: String,
    },
    /// A request refused for now, such as an eviction a disruption budget forbids.
    TooManyRequests(String),
    MethodNotAllowed(String),
    /// A compacted resourceVersion.
    Gone(String),
    TooLarge(String),
    UnsupportedMediaType(String),
    /// A resourceVersion the store has not reached.
    Timeout(String),
    Internal(String),
}

impl ApiError {
    /// Maps a store error for one object. Only a fault of ours becomes a 500.
    pub fn from_store(e: StoreError, resource: &'static str, name: &str) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound { resource, name: name.to_owned() },
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists { resource, name: name.to_owned() },
            StoreError::Conflict { .. } => ApiError::Conflict { resource, name: name.to_owned() },
            StoreError::Compacted { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => {
                ApiError::Timeout(format!("Too large resource version: {requested}, current: {current}"))
            }
            StoreError::ValueTooLarge { .. } => ApiError::TooLarge("request entity too large".into()),
            StoreError::InvalidKey { .. } | StoreError::InvalidRevision(_) | StoreError::InvalidArgument(_) => {
                ApiError::BadRequest(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, serde_json::Value) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BadRequest", m.clone(), json!(null)),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into(), json!(null)),
            ApiError::NotFound { resource, name } => {
                (StatusCode::NOT_FOUND, "NotFound", format!("{resource} \"{name}\" not found"), details(resource, name))
            }
            ApiError::NotFoundPath(m) => (StatusCode::NOT_FOUND, "NotFound", m.clone(), json!(null)),
            ApiError::AlreadyExists { resource, name } => (
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
                details(resource, name),
            ),
            ApiError::Conflict { resource, name } => (
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
                details(resource, name),
            ),
            ApiError::Conflicting { resource, name, message } => (
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {resource} \"{name}\": {message}"),
                details(resource, name),
            ),
            ApiError::Forbidden { resource, name, message } => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{resource} \"{name}\" is forbidden: {message}"),
                details(resource, name),
            ),
            ApiError::ForbiddenRequest(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone(), json!(null)),
            ApiError::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", m.clone(), json!(null)),
            ApiError::Invalid { kind, name, causes } => {
                let mut details = match kind.split_once('.') {
                    Some((kind, group)) => json!({"name": name, "group": group, "kind": kind}),
                    None => json!({"name": name, "kind": kind}),
                };
                details["causes"] = causes
                    .iter()
                    .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!(
                        "{kind} \"{name}\" is invalid: {}",
                        causes.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join(", ")
                    ),
                    details,
                )
            }
            ApiError::MethodNotAllowed(m) => {
                (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", m.clone(), json!(null))
            }
            ApiError::Gone(m) => (StatusCode::GONE, "Expired", m.clone(), json!(null)),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", m.clone(), json!(null)),
            ApiError::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", m.clone(), json!(null))
            }
            ApiError::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, "Timeout", m.clone(), json!(null)),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m.clone(), json!(null)),
        }
    }

    /// The Status object, also sent inside a watch as an ERROR event.
    pub fn status(&self) -> serde_json::Value {
        let (code, reason, message, details) = self.parts();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        });
        if !details.is_null() {
            status["details"] = details;
        }
        status
    }
}

/// A Status's details: the name, and the resource split into kind (plural) and group, as
/// upstream fills them from a qualified resource such as `deployments.apps`.
fn details(resource: &str, name: &str) -> serde_json::Value {
    match resource.split_once('.') {
        Some((plural, group)) => json!({"name": name, "group": group, "kind": plural}),
        None => json!({"name": name, "kind": resource}),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(m) = &self {
            tracing::error!("internal error: {m}");
        }
        let code = self.parts().0;
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_upstream_codes_and_reasons() {
        let s = ApiError::NotFound { resource: "configmaps", name: "x".into() }.status();
        assert_eq!((s["code"].as_u64(), s["reason"].as_str()), (Some(404), Some("NotFound")));
        assert_eq!(s["message"], "configmaps \"x\" not found");
        let s = ApiError::from_store(StoreError::Compacted { requested: 3, compacted: 9 }, "configmaps", "x").status();
        assert_eq!((s["code"].as_u64(), s["reason"].as_str()), (Some(410), Some("Expired")));
        let s = ApiError::Invalid {
            kind: "ConfigMap",
            name: "X".into(),
            causes: vec![("metadata.name".into(), "bad".into())],
        }
        .status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    }
}
