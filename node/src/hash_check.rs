//! Hash checks for the hosting providers of the node's country: "is this
//! upload known?", from hashes alone, batched, over gRPC (`HashCheck.Check`)
//! and the same as HTTP/JSON (`POST /v1/check`) on one mTLS port.
//!
//! Who may ask comes only from the client certificate: a provider
//! (`spiffe://<federation>/provider/<CC>/<name>`) of this node's country,
//! issued by this node's provider CA. Members of the federation (their CA is
//! trusted too) are refused by role, with the reason. The answer is known or
//! not, the kind of match and its distance: never the classification, the
//! series or where an entry came from. Every check is counted per provider
//! (Prometheus `meldnet_hash_checks_total{provider}`).

use crate::list::NodeList;
use meldnet_core::CountryCode;
use meldnet_core::Known;
use meldnet_core::Refusal;
use meldnet_core::{Role, SpiffeId};
use meldnet_list::{Query, MAX_CHECK_BATCH};
use meldnet_net::{PeerInfo, ReloadingVerifier};
use meldnet_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::RwLock;

/// What answers checks: the node's list, its country, the TLS verifier
/// (to re-check certificates against the current CRLs at every call).
#[derive(Clone)]
pub struct Checker {
    list: Arc<RwLock<NodeList>>,
    country: CountryCode,
    verifier: Arc<ReloadingVerifier>,
}

/// Why a call was refused: a gRPC code (and HTTP status) and a message.
#[derive(Debug)]
pub struct Denied {
    pub(crate) code: tonic::Code,
    pub(crate) message: String,
}

impl Denied {
    /// A refusal with its code.
    pub fn new(code: tonic::Code, message: String) -> Self {
        Denied { code, message }
    }
}

/// The caller, if it is a hosting provider of `country` with a certificate
/// still valid now (re-checked against the current CRLs): what a provider's
/// services (`what`, for messages) ask first.
pub fn authorize_provider(
    verifier: &ReloadingVerifier,
    country: CountryCode,
    peer: Option<&PeerInfo>,
    what: &str,
) -> Result<SpiffeId, Denied> {
    let denied = |code, message: String| {
        tracing::warn!(%message, "{what} refused");
        Denied { code, message }
    };
    let Some(peer) = peer else {
        return Err(denied(
            tonic::Code::Unauthenticated,
            "client certificate: none presented".into(),
        ));
    };
    let id = peer.identity.as_ref().map_err(|e| {
        denied(
            tonic::Code::Unauthenticated,
            format!("client certificate: {e}"),
        )
    })?;
    verifier.recheck(&peer.chain).map_err(|e| {
        denied(
            tonic::Code::Unauthenticated,
            format!("client certificate: no longer valid: {e}"),
        )
    })?;
    match id.role() {
        Role::Provider { country: c, .. } if *c == country => Ok(id.clone()),
        _ => Err(denied(
            tonic::Code::PermissionDenied,
            format!("caller: {id} is not a hosting provider of {country}; {what} here are for them only"),
        )),
    }
}

impl From<Refusal> for Denied {
    fn from(r: Refusal) -> Self {
        let s: tonic::Status = r.into();
        Denied {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> Self {
        tonic::Status::new(d.code, d.message)
    }
}

impl Checker {
    /// Checks against `list` for the providers of `country`.
    pub fn new(
        list: Arc<RwLock<NodeList>>,
        country: CountryCode,
        verifier: Arc<ReloadingVerifier>,
    ) -> Self {
        Checker {
            list,
            country,
            verifier,
        }
    }

    fn provider(&self, peer: Option<&PeerInfo>) -> Result<SpiffeId, Denied> {
        authorize_provider(&self.verifier, self.country, peer, "hash checks").inspect_err(|_| {
            metrics::counter!("meldnet_hash_check_refused_total").increment(1);
        })
    }

    /// Answers a batch, one answer per query in order; a malformed query
    /// refuses the whole call, naming it.
    pub async fn check(
        &self,
        peer: Option<&PeerInfo>,
        queries: &[pb::HashQuery],
    ) -> Result<Vec<Option<Known>>, Denied> {
        let caller = self.provider(peer)?;
        if queries.len() > MAX_CHECK_BATCH {
            return Err(Refusal::invalid(
                "queries",
                format!(
                    "{} hashes, at most {MAX_CHECK_BATCH} per call",
                    queries.len()
                ),
            )
            .into());
        }
        let parsed = queries
            .iter()
            .enumerate()
            .map(|(i, q)| Query::from_proto(q).map_err(|r| r.under(&format!("queries[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        // PDQ searches take CPU time: off the async threads.
        let list = self.list.clone().read_owned().await;
        let answers: Vec<Option<Known>> = tokio::task::spawn_blocking(move || {
            parsed.iter().map(|q| list.check(q).found).collect()
        })
        .await
        .map_err(|e| Denied {
            code: tonic::Code::Internal,
            message: format!("check: {e}"),
        })?;
        let name = match caller.role() {
            Role::Provider { name, .. } => name.clone(),
            _ => String::new(),
        };
        let known = answers.iter().filter(|a| a.is_some()).count();
        metrics::counter!("meldnet_hash_checks_total", "provider" => name.clone())
            .increment(answers.len() as u64);
        metrics::counter!("meldnet_hash_checks_known_total", "provider" => name)
            .increment(known as u64);
        tracing::info!(provider = %caller, hashes = answers.len(), known, "hash check");
        Ok(answers)
    }
}

/// `HashCheck` over gRPC.
#[tonic::async_trait]
impl pb::hash_check_server::HashCheck for Checker {
    async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let answers = Checker::check(self, peer.as_ref(), &request.get_ref().queries).await?;
        Ok(tonic::Response::new(pb::CheckResponse {
            answers: answers
                .into_iter()
                .map(|a| match a {
                    Some(k) => pb::CheckAnswer {
                        known: true,
                        kind: k.kind.to_proto() as i32,
                        distance: k.distance,
                    },
                    None => pb::CheckAnswer::default(),
                })
                .collect(),
        }))
    }
}

/// One query in HTTP/JSON: the same fields as the gRPC `HashQuery`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonQuery {
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    md5: String,
    #[serde(default)]
    sha1: String,
    #[serde(default)]
    pdq: String,
    #[serde(default)]
    pdq_quality: u32,
}

/// An HTTP/JSON request: `{"queries": [{"sha256": "..."}, ...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRequest {
    queries: Vec<JsonQuery>,
}

/// One answer in HTTP/JSON: known, and for a match its kind and distance.
#[derive(Debug, Serialize)]
pub struct JsonAnswer {
    known: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance: Option<u32>,
}

pub(crate) fn json_error(code: tonic::Code, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = match code {
        tonic::Code::InvalidArgument => axum::http::StatusCode::BAD_REQUEST,
        tonic::Code::PermissionDenied => axum::http::StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => axum::http::StatusCode::UNAUTHORIZED,
        tonic::Code::NotFound => axum::http::StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists => axum::http::StatusCode::CONFLICT,
        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The caller's TLS facts and the request body as JSON of `T`, at most
/// `max` bytes; a body too large or not `T` is a 400 naming the body.
pub(crate) async fn body_json<T: serde::de::DeserializeOwned>(
    request: axum::extract::Request,
    max: usize,
) -> Result<(Option<PeerInfo>, T), axum::response::Response> {
    let peer = request.extensions().get::<PeerInfo>().cloned();
    let body = axum::body::to_bytes(request.into_body(), max)
        .await
        .map_err(|e| json_error(tonic::Code::InvalidArgument, format!("body: {e}")))?;
    let v = serde_json::from_slice(&body)
        .map_err(|e| json_error(tonic::Code::InvalidArgument, format!("body: {e}")))?;
    Ok((peer, v))
}

async fn http_check(
    axum::extract::State(checker): axum::extract::State<Checker>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (peer, req) = match body_json::<JsonRequest>(request, 8 << 20).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let queries: Vec<pb::HashQuery> = req
        .queries
        .into_iter()
        .map(|q| pb::HashQuery {
            sha256: q.sha256,
            md5: q.md5,
            sha1: q.sha1,
            pdq: q.pdq,
            pdq_quality: q.pdq_quality,
        })
        .collect();
    match checker.check(peer.as_ref(), &queries).await {
        Ok(answers) => {
            let answers: Vec<JsonAnswer> = answers
                .iter()
                .map(|a| JsonAnswer {
                    known: a.is_some(),
                    kind: a.map(|k| k.kind.name()),
                    distance: a.map(|k| k.distance),
                })
                .collect();
            axum::Json(serde_json::json!({ "answers": answers })).into_response()
        }
        Err(d) => json_error(d.code, d.message),
    }
}

/// The HTTP/JSON routes: `POST /v1/check`.
pub fn http_routes(checker: Checker) -> axum::Router {
    axum::Router::new()
        .route("/v1/check", axum::routing::post(http_check))
        .with_state(checker)
}
