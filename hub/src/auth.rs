//! Who is calling, from the certificate read at the TLS handshake (see
//! `meldnet_core::tls::incoming`). No request field is ever consulted.

use meldnet_core::identity::{Role, SpiffeId};
use meldnet_core::tls::PeerInfo;
use tonic::{Request, Status};

/// The caller's identity, or `UNAUTHENTICATED`.
pub fn caller<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    match req.extensions().get::<PeerInfo>() {
        Some(PeerInfo {
            identity: Ok(id), ..
        }) => Ok(id.clone()),
        Some(PeerInfo {
            identity: Err(e), ..
        }) => Err(Status::unauthenticated(format!("client certificate: {e}"))),
        None => Err(Status::unauthenticated(
            "client certificate: none presented",
        )),
    }
}

/// The caller, if it is a node; else `PERMISSION_DENIED`.
pub fn node<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    let id = caller(req)?;
    match id.role() {
        Role::Node(_) => Ok(id),
        _ => Err(Status::permission_denied(format!(
            "caller: {id} is not a node; only nodes submit reports"
        ))),
    }
}

/// The caller, if it has a delivery queue (a node or an agency).
pub fn recipient<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    let id = caller(req)?;
    match id.role() {
        Role::Node(_) | Role::Agency { .. } => Ok(id),
        _ => Err(Status::permission_denied(format!(
            "caller: {id} has no delivery queue"
        ))),
    }
}

/// The caller, if it is an operator.
pub fn operator<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    let id = caller(req)?;
    match id.role() {
        Role::Operator(_) => Ok(id),
        _ => Err(Status::permission_denied(format!(
            "caller: {id} is not an operator"
        ))),
    }
}
