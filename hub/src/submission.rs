//! The `Submission` gRPC service: nodes hand in signed reports, one at a
//! time or as a stream of batches.

use crate::auth::{Auth, Caller};
use crate::ingest::Ingest;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use meldnet_core::error::{Refusal, RefusalKind};
use meldnet_core::limits::MAX_BATCH_REPORTS;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_server::Submission;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct SubmissionService {
    ingest: Ingest,
    auth: Auth,
    /// Streamed batches taken in and not yet answered, in all streams.
    batches: Arc<Semaphore>,
}

impl SubmissionService {
    /// Serves submissions into `ingest`, working on at most `max_batches`
    /// streamed batches at once in all streams together (`[calls]
    /// max_stream_batches`): each is at most one request message (16 MiB),
    /// so what submissions hold decoded is bounded however many streams are
    /// open. A stream waits for a place before its next batch is even read
    /// (HTTP/2 flow control then holds the sender back).
    pub fn new(ingest: Ingest, auth: Auth, max_batches: usize) -> Self {
        SubmissionService {
            ingest,
            auth,
            batches: Arc::new(Semaphore::new(max_batches)),
        }
    }
}

/// Batches of one stream in progress at once.
const PIPELINE: usize = 8;

/// The answer to one batch of a stream. The caller's certificate and
/// registration are checked again for every batch: a stream opened before
/// a revocation or an expiry gets nothing more through.
async fn answer(
    ingest: &Ingest,
    auth: &Auth,
    caller: &Caller,
    batch: Result<pb::SubmitBatch, Status>,
) -> Result<pb::SubmitResults, Status> {
    let batch = batch.inspect_err(|status| {
        tracing::warn!(caller = %caller.id, %status, "submission stream broke");
    })?;
    auth.still_valid(&caller.peer)?;
    let caller = &caller.id;
    if batch.reports.len() > MAX_BATCH_REPORTS {
        let r = Refusal::new(
            RefusalKind::InvalidArgument,
            "submit_batch.reports",
            format!(
                "{} reports, at most {MAX_BATCH_REPORTS}",
                batch.reports.len()
            ),
        );
        tracing::warn!(caller = %caller, "refused: {r}");
        return Err(Status::from(r));
    }
    let results = ingest
        .submit(caller, batch.reports)
        .await
        .map_err(Status::from)?;
    Ok(pb::SubmitResults {
        results: results
            .into_iter()
            .enumerate()
            .map(|(i, r)| pb::SubmitResult {
                index: i as u32,
                outcome: Some(match r {
                    Ok(receipt) => pb::submit_result::Outcome::Receipt(receipt),
                    Err(refusal) => pb::submit_result::Outcome::Refusal(refusal.to_proto()),
                }),
            })
            .collect(),
    })
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
            .map_err(Status::from)?;
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
        let caller = self.auth.node(&request)?;
        let inbound = request.into_inner();
        let ingest = self.ingest.clone();
        let auth = self.auth.clone();
        let places = self.batches.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // Up to PIPELINE batches of one stream are verified and committed
            // at once (group commit joins them); answers keep the stream's
            // order. Each batch first takes a place among the hub's
            // batches in all streams: only then is it read.
            type Answer = Pin<Box<dyn Future<Output = Result<pb::SubmitResults, Status>> + Send>>;
            let mut inbound = inbound;
            let mut pending: FuturesOrdered<Answer> = FuturesOrdered::new();
            let mut place: Option<OwnedSemaphorePermit> = None;
            let mut open = true;
            loop {
                let room = open && pending.len() < PIPELINE;
                tokio::select! {
                    p = places.clone().acquire_owned(), if room && place.is_none() => {
                        match p {
                            Ok(p) => place = Some(p),
                            Err(_) => return,
                        }
                    }
                    batch = inbound.next(), if room && place.is_some() => match batch {
                        Some(batch) => {
                            let held = place.take();
                            let (ingest, auth, caller) = (ingest.clone(), auth.clone(), caller.clone());
                            // Its own task: the batch is worked on (and its
                            // place given back) even while this loop waits
                            // for a client that does not read its answers.
                            let work = tokio::spawn(async move {
                                let out = answer(&ingest, &auth, &caller, batch).await;
                                drop(held);
                                out
                            });
                            pending.push_back(Box::pin(async move {
                                work.await
                                    .unwrap_or_else(|e| Err(Status::internal(format!("batch: {e}"))))
                            }));
                        }
                        None => open = false,
                    },
                    Some(out) = pending.next(), if !pending.is_empty() => {
                        let stop = out.is_err();
                        if tx.send(out).await.is_err() || stop {
                            return;
                        }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
