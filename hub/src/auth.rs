//! Who is calling, from the certificate read at the TLS handshake (see
//! `meldnet_net::incoming`), checked again at every call against the
//! current CRLs and clock: a connection opened before a revocation or an
//! expiry keeps no rights. No request field is ever consulted. Every refusal
//! here is logged.

use crate::registry::Registry;
use meldnet_core::{Role, SpiffeId};
use meldnet_net::{PeerInfo, ReloadingVerifier};
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
        self.peer_caller(req.extensions().get::<PeerInfo>())
    }

    /// The caller of a connection, or `UNAUTHENTICATED`.
    pub fn peer_caller(&self, peer: Option<&PeerInfo>) -> Result<Caller, Status> {
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

    /// The caller of a connection, if its role has `access`; else
    /// `PERMISSION_DENIED`.
    fn peer_with_access(&self, peer: Option<&PeerInfo>, access: Access) -> Result<Caller, Status> {
        let c = self.peer_caller(peer)?;
        if access.allows(c.id.role()) {
            Ok(c)
        } else {
            Err(refuse(
                Some(&c.peer),
                Status::permission_denied(format!("caller: {} {}", c.id, access.refusal())),
            ))
        }
    }

    /// The caller, if its role has `access`; else `PERMISSION_DENIED`.
    pub fn with_access<T>(&self, req: &Request<T>, access: Access) -> Result<Caller, Status> {
        self.peer_with_access(req.extensions().get::<PeerInfo>(), access)
    }

    /// The caller, if it is a node; else `PERMISSION_DENIED`.
    pub fn node<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_access(req, Access::Nodes)
    }

    /// The caller, if it has a delivery queue (a node or an agency).
    pub fn recipient<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_access(req, Access::Recipients)
    }

    /// The caller, if it is a police agency (series, proceedings).
    pub fn agency<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_access(req, Access::Agencies)
    }

    /// The caller, if it is a victim's representative (preferences).
    pub fn representative<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_access(req, Access::Representatives)
    }

    /// The caller, if it is an operator.
    pub fn operator<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.with_access(req, Access::Operators)
    }
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nodes (hotlines).
    Nodes,
    /// Every party with a delivery queue.
    Recipients,
    /// Police agencies.
    Agencies,
    /// Victims' representatives.
    Representatives,
    /// Operators.
    Operators,
    /// Any party of the federation (health, reflection).
    Anyone,
}

impl Access {
    /// Whether `role` has this access.
    pub fn allows(self, role: &Role) -> bool {
        match self {
            Access::Nodes => role.submits(),
            Access::Recipients => role.has_queue(),
            Access::Agencies => matches!(role, Role::Agency { .. }),
            Access::Representatives => matches!(role, Role::Representative { .. }),
            Access::Operators => matches!(role, Role::Operator(_)),
            Access::Anyone => true,
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Access::Nodes => {
                "is not a node; only nodes submit reports, follow the list and record case steps"
            }
            Access::Recipients => "has no delivery queue",
            Access::Agencies => "is not a police agency",
            Access::Representatives => {
                "is not a representative; only a series' representative sets its preference"
            }
            Access::Operators => "is not an operator",
            Access::Anyone => "",
        }
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A method the hub serves: who may call it, its largest request message,
/// and whether its request is a stream.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The largest request message, in bytes.
    pub max_message: usize,
    /// Whether the request is a stream of messages.
    pub streamed: bool,
}

const fn method(path: &'static str, access: Access, max_message: usize, streamed: bool) -> Method {
    Method {
        path,
        access,
        max_message,
        streamed,
    }
}

const fn unary(path: &'static str, access: Access, max_message: usize) -> Method {
    method(path, access, max_message, false)
}

const fn stream(path: &'static str, access: Access, max_message: usize) -> Method {
    method(path, access, max_message, true)
}

/// Every method the hub serves. The one table of the identity matrix
/// (tested role by role and method by method in `tests/tests/identity.rs`,
/// limits in `tests/tests/hostile.rs`); a method missing here is refused.
pub const METHODS: &[Method] = &[
    unary("/meldnet.v1.Submission/Submit", Access::Nodes, MIB),
    stream(
        "/meldnet.v1.Submission/SubmitStream",
        Access::Nodes,
        meldnet_core::limits::MAX_MESSAGE_BYTES,
    ),
    // 4,096 sequence numbers and 256 refusals of 512-byte reasons fit.
    stream("/meldnet.v1.Inbox/Receive", Access::Recipients, 256 * KIB),
    unary("/meldnet.v1.Cases/RecordStep", Access::Nodes, 16 * KIB),
    unary("/meldnet.v1.HashList/Sync", Access::Nodes, KIB),
    unary("/meldnet.v1.HashList/Contribute", Access::Nodes, 2 * MIB),
    unary("/meldnet.v1.Series/Register", Access::Agencies, MIB),
    unary("/meldnet.v1.Series/AddHashes", Access::Agencies, MIB),
    unary("/meldnet.v1.Series/Link", Access::Agencies, 4 * KIB),
    unary(
        "/meldnet.v1.Series/MarkProceedings",
        Access::Agencies,
        4 * KIB,
    ),
    unary(
        "/meldnet.v1.Series/SetPreference",
        Access::Representatives,
        4 * KIB,
    ),
    unary("/meldnet.v1.Series/Linked", Access::Representatives, KIB),
    unary("/meldnet.v1.Admin/StateDigest", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/VerifyAudit", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/ListAdd", Access::Operators, 2 * MIB),
    unary("/meldnet.v1.Admin/ListWithdraw", Access::Operators, 4 * KIB),
    unary("/meldnet.v1.Admin/ListStatus", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/AdvanceClock", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/GetRules", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/SetRules", Access::Operators, MIB),
    unary("/meldnet.v1.Admin/Explain", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/Stats", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/ExportStats", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/Register", Access::Operators, 16 * KIB),
    unary("/meldnet.v1.Admin/Revoke", Access::Operators, 4 * KIB),
    unary("/meldnet.v1.Admin/ListRegistry", Access::Operators, KIB),
    unary("/meldnet.v1.Admin/SplitReport", Access::Operators, 4 * KIB),
    unary("/grpc.health.v1.Health/Check", Access::Anyone, KIB),
    unary("/grpc.health.v1.Health/Watch", Access::Anyone, KIB),
    stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Anyone,
        64 * KIB,
    ),
    stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Anyone,
        64 * KIB,
    ),
];

/// The hub's gate (`net::admission`): the caller's certificate
/// checked again, its role against [`METHODS`], and nodes and agencies
/// known to the registry (`keyring.toml`, `hub.toml` or an operator's
/// registration), all before a byte of the request is decoded. A node or
/// agency the CA certified but the hub does not know gets nothing, not even
/// an empty queue or the known-hash list. Regulators and representatives
/// are not registered: they read only their own queue, and only police
/// link a representative to a series.
pub struct HubGate {
    auth: Auth,
}

impl HubGate {
    /// A gate through `auth`.
    pub fn new(auth: Auth) -> Self {
        HubGate { auth }
    }

    fn known(&self, id: &SpiffeId) -> bool {
        !id.role().must_be_registered() || self.auth.registry.get(id).is_some()
    }
}

impl meldnet_net::Gate for HubGate {
    fn admit(&self, path: &str, peer: Option<&PeerInfo>) -> Result<meldnet_net::Admit, Status> {
        let Some(m) = METHODS.iter().find(|m| m.path == path) else {
            return Err(refuse(
                peer,
                Status::unimplemented(format!("{path}: no such method")),
            ));
        };
        let caller = self.auth.peer_with_access(peer, m.access)?;
        if !self.known(&caller.id) {
            return Err(refuse(
                peer,
                Status::permission_denied(format!(
                    "caller: {} is not registered with this hub",
                    caller.id
                )),
            ));
        }
        Ok(meldnet_net::Admit {
            max_message: m.max_message,
            streamed: m.streamed,
        })
    }
}
