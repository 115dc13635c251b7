//! The `Submission` gRPC service: nodes hand in signed reports, one at a
//! time or as a stream of batches.

use crate::auth::Auth;
use crate::ingest::Ingest;
use meldnet_core::error::{Refusal, RefusalKind};
use meldnet_core::limits::MAX_BATCH_REPORTS;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_server::Submission;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct SubmissionService {
    ingest: Ingest,
    auth: Auth,
}

impl SubmissionService {
    /// Serves submissions into `ingest`.
    pub fn new(ingest: Ingest, auth: Auth) -> Self {
        SubmissionService { ingest, auth }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "storage: {e}; nothing was acknowledged, retrying is safe"
    ))
}

#[tonic::async_trait]
impl Submission for SubmissionService {
    async fn submit(
        &self,
        request: Request<pb::SignedReport>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let caller = self.auth.node(&request)?.id;
        let mut results = self
            .ingest
            .submit(&caller, vec![request.into_inner()])
            .await
            .map_err(unavailable)?;
        match results.pop() {
            Some(Ok(receipt)) => Ok(Response::new(receipt)),
            Some(Err(refusal)) => Err(refusal.into()),
            None => Err(Status::internal("no result")),
        }
    }

    type SubmitStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::SubmitResults, Status>> + Send + 'static>>;

    async fn submit_stream(
        &self,
        request: Request<Streaming<pb::SubmitBatch>>,
    ) -> Result<Response<Self::SubmitStreamStream>, Status> {
        let caller = self.auth.node(&request)?.id;
        let mut inbound = request.into_inner();
        let ingest = self.ingest.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(batch) = inbound.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(status) => {
                        tracing::warn!(caller = %caller, %status, "submission stream broke");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let out = if batch.reports.len() > MAX_BATCH_REPORTS {
                    let r = Refusal::new(
                        RefusalKind::InvalidArgument,
                        "submit_batch.reports",
                        format!(
                            "{} reports, at most {MAX_BATCH_REPORTS}",
                            batch.reports.len()
                        ),
                    );
                    tracing::warn!(caller = %caller, "refused: {r}");
                    Err(Status::from(r))
                } else {
                    match ingest.submit(&caller, batch.reports).await {
                        Ok(results) => Ok(pb::SubmitResults {
                            results: results
                                .into_iter()
                                .enumerate()
                                .map(|(i, r)| pb::SubmitResult {
                                    index: i as u32,
                                    outcome: Some(match r {
                                        Ok(receipt) => pb::submit_result::Outcome::Receipt(receipt),
                                        Err(refusal) => {
                                            pb::submit_result::Outcome::Refusal(refusal.to_proto())
                                        }
                                    }),
                                })
                                .collect(),
                        }),
                        Err(e) => Err(unavailable(e)),
                    }
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
