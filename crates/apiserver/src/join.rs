//! Joining nodes. `rkube agent --token TOKEN` gets its own credentials here; it never sees the
//! admin's. The token is `rk1::<sha256 of the CA certificate, hex>::<secret>`, as k3s's
//! `K10<hash>::server:<secret>`: the hash lets the agent trust the CA it downloads from
//! `/rkube/v1/ca` before it trusts anything else, and the secret is a bearer token for
//! `/rkube/v1/join` only (the group `system:bootstrappers`, which may call nothing else). The
//! agent sends two certificate requests; the cluster CA signs them with names chosen here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::status::ApiError;
use crate::{Error, pki};

/// The group a join token's holder is in.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers";
pub const BOOTSTRAP_USER: &str = "system:bootstrap:rkube";
/// Paths a join token may call.
pub const JOIN_PATH: &str = "/rkube/v1/join";
pub const CA_PATH: &str = "/rkube/v1/ca";
const PREFIX: &str = "rk1";

/// The SHA-256 of a CA certificate PEM, in hex: what a token pins.
pub fn ca_hash(ca_pem: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token's (CA hash, secret), or why it is not one.
pub fn parse_token(token: &str) -> Result<(&str, &str), String> {
    match token.trim().split("::").collect::<Vec<_>>()[..] {
        [PREFIX, hash, secret] if hash.len() == 64 && !secret.is_empty() => Ok((hash, secret)),
        _ => Err(format!("a join token looks like {PREFIX}::<64 hex digits>::<secret>; see `rkube token`")),
    }
}

/// `DATA/token`: loaded, or made on first start.
pub fn token(data_dir: &Path, ca_pem: &str) -> Result<String, Error> {
    let path = token_path(data_dir);
    // A token names its CA: one left from an earlier PKI is replaced.
    let kept = std::fs::read_to_string(&path).ok().filter(|t| parse_token(t).is_ok_and(|(h, _)| h == ca_hash(ca_pem)));
    if let Some(token) = kept {
        return Ok(token.trim().to_owned());
    }
    let mut secret = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Error::Pki("no randomness for the join token".into()))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{PREFIX}::{}::{secret}", ca_hash(ca_pem));
    pki::write_file(&path, format!("{token}\n").as_bytes(), true)?;
    Ok(token)
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

#[derive(Clone)]
pub(crate) struct JoinState {
    pub data_dir: PathBuf,
    pub ca_pem: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest {
    node_name: String,
    #[serde(default, rename = "nodeIPs")]
    node_ips: Vec<String>,
    client_csr: String,
    serving_csr: String,
}

pub(crate) fn router(state: JoinState) -> axum::Router {
    axum::Router::new()
        .route(CA_PATH, axum::routing::get(|State(s): State<JoinState>| async move { s.ca_pem }))
        .route(JOIN_PATH, axum::routing::post(join))
        .with_state(state)
}

async fn join(
    State(state): State<JoinState>,
    user: Option<axum::Extension<crate::User>>,
    body: axum::body::Bytes,
) -> Response {
    // Only the join token, or an administrator, makes node identities.
    let allowed = user.is_some_and(|u| u.groups.iter().any(|g| g == BOOTSTRAP_GROUP || g == "system:masters"));
    if !allowed {
        return ApiError::ForbiddenRequest(format!("forbidden: only a join token may use {JOIN_PATH}")).into_response();
    }
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::BadRequest(format!("join request: {e}")).into_response(),
    };
    // A node's serving certificate comes from the cluster CA: it must never carry a name
    // clients use for the API server.
    let reserved = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"];
    if reserved.contains(&request.node_name.as_str()) || request.node_name.starts_with("kubernetes.default.svc.") {
        return ApiError::BadRequest(format!("node name {:?} is reserved for the API server", request.node_name))
            .into_response();
    }
    if let Some(message) =
        crate::api::kinds::check_name(crate::api::kinds::NameRule::Dns1123Subdomain, &request.node_name)
    {
        return ApiError::BadRequest(format!("node name: {message}")).into_response();
    }
    let mut ips = Vec::new();
    for ip in &request.node_ips {
        match ip.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => return ApiError::BadRequest(format!("node IP {ip:?} is not an IP address")).into_response(),
        }
    }
    match pki::sign_node_requests(&state.data_dir, &request.node_name, &ips, &request.client_csr, &request.serving_csr)
    {
        Ok((client, serving)) => {
            tracing::info!("node {} joined", request.node_name);
            let body = serde_json::json!({"ca": state.ca_pem, "clientCert": client, "servingCert": serving});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => ApiError::BadRequest(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_pin_the_ca_and_are_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = token(dir.path(), "CA").unwrap();
        assert_eq!(token(dir.path(), "CA").unwrap(), first);
        // A new CA gets a new token.
        let other = token(dir.path(), "other").unwrap();
        assert_ne!(other, first);
        assert_eq!(parse_token(&other).unwrap().0, ca_hash("other"));
        let (hash, secret) = parse_token(&first).unwrap();
        assert_eq!(hash, ca_hash("CA"));
        assert_eq!(secret.len(), 32);
        for bad in ["", "rk1::abc::x", "K10::x::y", &format!("rk1::{hash}::")] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }
}
