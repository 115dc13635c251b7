//! The `Submission` gRPC service: nodes hand in signed reports, one at a
//! time or as a stream of batches.

use crate::auth::{Auth, Caller};
use crate::ingest::Ingest;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use meldnet_core::limits::MAX_BATCH_REPORTS;
use meldnet_core::{Refusal, RefusalKind};
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_server::Submission;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Semaphore;
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
    /// max_stream_batches`): each is at most one request message (16 MiB).
    /// A stream holds at most one more batch, decoded, while it waits for a
    /// place (at most 30 s; then that batch is refused with
    /// `RESOURCE_EXHAUSTED`, nothing of it stored), and reads no further
    /// batch meanwhile (HTTP/2 flow control then holds the sender back).
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
/// How long a batch read from a stream may wait for a place.
const PLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
            // order. A batch read from the stream waits (at most
            // PLACE_WAIT) for a place among the hub's batches in all
            // streams before it is worked on, and no further batch of the
            // stream is read meanwhile; an idle stream holds no place.
            type Answer = Pin<Box<dyn Future<Output = Result<pb::SubmitResults, Status>> + Send>>;
            let mut inbound = inbound;
            let mut pending: FuturesOrdered<Answer> = FuturesOrdered::new();
            let mut waiting: Option<(Result<pb::SubmitBatch, Status>, tokio::time::Instant)> = None;
            let mut open = true;
            loop {
                let room = open && waiting.is_none() && pending.len() < PIPELINE;
                let until = waiting.as_ref().map(|(_, t)| *t);
                tokio::select! {
                    batch = inbound.next(), if room => match batch {
                        Some(batch) => {
                            waiting = Some((batch, tokio::time::Instant::now() + PLACE_WAIT));
                        }
                        None => open = false,
                    },
                    place = tokio::time::timeout_at(
                        until.unwrap_or_else(tokio::time::Instant::now),
                        places.clone().acquire_owned(),
                    ), if until.is_some() => {
                        let Some((batch, _)) = waiting.take() else { return };
                        let held = match place {
                            Ok(Ok(p)) => p,
                            Ok(Err(_)) => return,
                            Err(_) => {
                                let busy = Status::resource_exhausted(format!(
                                    "the hub is working on as many batches as it takes; none had room for {} s: send again later (nothing of this batch was stored)",
                                    PLACE_WAIT.as_secs()
                                ));
                                pending.push_back(Box::pin(std::future::ready(Err(busy))));
                                open = false;
                                continue;
                            }
                        };
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
