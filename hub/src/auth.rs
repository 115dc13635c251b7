//! Who is calling, from the certificate read at the TLS handshake (see
//! `meldnet_core::tls::incoming`), checked again at every call against the
//! current CRLs and clock: a connection opened before a revocation or an
//! expiry keeps no rights. No request field is ever consulted. Every refusal
//! here is logged.

use crate::registry::Registry;
use meldnet_core::identity::{Role, SpiffeId};
use meldnet_core::tls::{PeerInfo, ReloadingVerifier};
use std::sync::Arc;
use tonic::{Request, Status};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Its identity, from its certificate.
    pub id: SpiffeId,
    /// Its connection, to check again during long streams.
    pub peer: PeerInfo,
}

/// The hub's authentication: the verifier that also checks each handshake,
/// and the registry, whose revocations apply at once.
#[derive(Clone)]
pub struct Auth {
    verifier: Arc<ReloadingVerifier>,
    registry: Arc<Registry>,
}

fn refuse(peer: Option<&PeerInfo>, status: Status) -> Status {
    let remote = peer
        .and_then(|p| p.remote)
        .map(|r| r.to_string())
        .unwrap_or_default();
    let who = peer
        .and_then(|p| p.identity.as_ref().ok())
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::warn!(caller = %who, %remote, code = ?status.code(), "refused: {}", status.message());
    status
}

impl Auth {
    /// Authentication with `verifier` (the one the TLS server uses) and
    /// the registry's revocations.
    pub fn new(verifier: Arc<ReloadingVerifier>, registry: Arc<Registry>) -> Self {
        Auth { verifier, registry }
    }

    /// Checks that a connection's certificate is still valid now and that
    /// no operator revoked its party.
    pub fn still_valid(&self, peer: &PeerInfo) -> Result<(), Status> {
        self.verifier.recheck(&peer.chain).map_err(|e| {
            refuse(
                Some(peer),
                Status::unauthenticated(format!("client certificate: no longer valid: {e}")),
            )
        })?;
        if let Ok(id) = &peer.identity {
            if let Some(reason) = self.registry.revoked(id) {
                return Err(refuse(
                    Some(peer),
                    Status::permission_denied(format!(
                        "caller: {id} was revoked by an operator: {reason}"
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The caller, or `UNAUTHENTICATED`.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let peer = req.extensions().get::<PeerInfo>();
        match peer {
            Some(
                p @ PeerInfo {
                    identity: Ok(id), ..
                },
            ) => {
                self.still_valid(p)?;
                Ok(Caller {
                    id: id.clone(),
                    peer: p.clone(),
                })
            }
            Some(
                p @ PeerInfo {
                    identity: Err(e), ..
                },
            ) => Err(refuse(
                Some(p),
                Status::unauthenticated(format!("client certificate: {e}")),
            )),
            None => Err(refuse(
                None,
                Status::unauthenticated("client certificate: none presented"),
            )),
        }
    }

    fn with_role<T>(
        &self,
        req: &Request<T>,
        allowed: impl Fn(&Role) -> bool,
        why: &str,
    ) -> Result<Caller, Status> {
        let c = self.caller(req)?;
        if allowed(c.id.role()) {
            Ok(c)
        } else {
            Err(refuse(
                Some(&c.peer),
                Status::permission_denied(format!("caller: {} {why}", c.id)),
            ))
        }
    }

    /// The caller, if it is a node; else `PERMISSION_DENIED`.
    pub fn node<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_role(
            req,
            |r| matches!(r, Role::Node(_)),
            "is not a node; only nodes submit reports",
        )
    }

    /// The caller, if it has a delivery queue (a node or an agency).
    pub fn recipient<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_role(
            req,
            |r| {
                matches!(
                    r,
                    Role::Node(_)
                        | Role::Agency { .. }
                        | Role::Regulator { .. }
                        | Role::Representative { .. }
                )
            },
            "has no delivery queue",
        )
    }

    /// The caller, if it is a police agency (series, proceedings).
    pub fn agency<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_role(
            req,
            |r| matches!(r, Role::Agency { .. }),
            "is not a police agency",
        )
    }

    /// The caller, if it is a victim's representative (preferences).
    pub fn representative<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_role(
            req,
            |r| matches!(r, Role::Representative { .. }),
            "is not a representative; only a series' representative sets its preference",
        )
    }

    /// The caller, if it is an operator.
    pub fn operator<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_role(
            req,
            |r| matches!(r, Role::Operator(_)),
            "is not an operator",
        )
    }
}
