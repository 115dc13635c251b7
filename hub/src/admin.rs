//! The `Admin` gRPC service, for operators only: state digests, audit
//! verification and the known-hash list while the hub runs.

use crate::auth::Auth;
use crate::hash_list::parse_entries;
use crate::hash_list::HashList;
use crate::store::Store;
use meldnet_core::time::{Clock, ClockError};
use meldnet_core::Refusal;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::admin_server::Admin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    store: Store,
    list: Arc<HashList>,
    clock: Arc<Clock>,
    auth: Auth,
}

impl AdminService {
    /// Serves operators over `store`, `list` and the hub's `clock`.
    pub fn new(store: Store, list: Arc<HashList>, clock: Arc<Clock>, auth: Auth) -> Self {
        AdminService {
            store,
            list,
            clock,
            auth,
        }
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

    async fn list_add(
        &self,
        request: Request<pb::ListAddRequest>,
    ) -> Result<Response<pb::ListAddResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let entries = parse_entries(&request.get_ref().entries, None)?;
        Ok(Response::new(
            self.list.add_answer(&caller.id, entries).await?,
        ))
    }

    async fn list_withdraw(
        &self,
        request: Request<pb::ListWithdrawRequest>,
    ) -> Result<Response<pb::ListWithdrawResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let r = request.into_inner();
        if r.reason.trim().is_empty() || r.reason.len() > 512 {
            return Err(Refusal::invalid("reason", "say why, in at most 512 bytes").into());
        }
        self.list
            .withdraw(&caller.id, r.entry_version, r.reason)
            .await?;
        Ok(Response::new(pb::ListWithdrawResponse {
            head: Some(self.list.signed_head()),
        }))
    }

    async fn list_status(
        &self,
        request: Request<pb::ListStatusRequest>,
    ) -> Result<Response<pb::SignedListHead>, Status> {
        self.auth.operator(&request)?;
        Ok(Response::new(self.list.signed_head()))
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let by_ms = request.get_ref().by_ms;
        let now_ms = self.clock.advance(by_ms).map_err(|e| match e {
            ClockError::NotAdjustable => Status::failed_precondition(e.to_string()),
            ClockError::NotForward(_) => Status::invalid_argument(e.to_string()),
        })?;
        tracing::warn!(caller = %caller.id, by_ms, now_ms, "clock moved forward");
        self.store
            .audit(
                "clock",
                &caller.id,
                "clock".into(),
                format!("moved forward by {by_ms} ms to {now_ms}"),
                now_ms,
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::AdvanceClockResponse { now_ms }))
    }
}
