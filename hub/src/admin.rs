//! The `Admin` gRPC service, for operators only: state digests and audit
//! verification while the hub runs.

use crate::auth::Auth;
use crate::store::Store;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    store: Store,
    auth: Auth,
}

impl AdminService {
    /// Serves operators over `store`.
    pub fn new(store: Store, auth: Auth) -> Self {
        AdminService { store, auth }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn state_digest(
        &self,
        request: Request<pb::StateDigestRequest>,
    ) -> Result<Response<pb::StateDigestResponse>, Status> {
        self.auth.operator(&request)?;
        let store = self.store.clone();
        let d = tokio::task::spawn_blocking(move || store.state_digest())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::StateDigestResponse {
            digest: d.digest.to_vec(),
            entries: d.entries,
            reports: d.reports,
            queued: d.queued,
            audit_records: d.audit_records,
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.auth.operator(&request)?;
        let store = self.store.clone();
        let head = tokio::task::spawn_blocking(move || store.verify_audit())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::data_loss(format!("audit chain: {e}")))?;
        Ok(Response::new(pb::VerifyAuditResponse {
            records: head.next_seq,
            head: head.hash.to_vec(),
        }))
    }
}
