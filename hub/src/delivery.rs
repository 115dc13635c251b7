//! The `Inbox` gRPC service: each recipient receives its own queue, chosen
//! by its certificate alone, as a push stream, and acknowledges on the same
//! stream. Unacknowledged entries are sent again on the next stream;
//! acknowledged ones are gone from the queue and are never sent again.

use crate::auth;
use crate::store::{Store, StoreError};
use meldnet_core::identity::SpiffeId;
use meldnet_core::limits::MAX_DELIVERY_BATCH;
use meldnet_core::report::Report;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::inbox_server::Inbox;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Most sequence numbers in one acknowledgement message.
const MAX_ACKS: usize = 4096;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct InboxService {
    store: Store,
}

impl InboxService {
    /// Serves the queues kept in `store`.
    pub fn new(store: Store) -> Self {
        InboxService { store }
    }
}

type Out = mpsc::Sender<Result<pb::DeliveryBatch, Status>>;

struct Session {
    store: Store,
    me: SpiffeId,
    tx: Out,
    cursor: u64,
    announced_caught_up: bool,
}

fn storage(e: StoreError) -> Status {
    Status::unavailable(format!("storage: {e}"))
}

impl Session {
    /// Sends everything queued after the cursor. Returns false when the client is gone.
    async fn fill(&mut self) -> Result<bool, Status> {
        loop {
            let (store, me, cursor) = (self.store.clone(), self.me.clone(), self.cursor);
            let (entries, more) = tokio::task::spawn_blocking(move || {
                store.queue_after(&me, cursor, MAX_DELIVERY_BATCH)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(storage)?;
            if entries.is_empty() {
                if !self.announced_caught_up {
                    self.announced_caught_up = true;
                    let batch = pb::DeliveryBatch {
                        deliveries: vec![],
                        caught_up: true,
                        acked: vec![],
                    };
                    return Ok(self.tx.send(Ok(batch)).await.is_ok());
                }
                return Ok(true);
            }
            let mut audit = Vec::with_capacity(entries.len());
            let deliveries: Vec<pb::Delivery> = entries
                .into_iter()
                .map(|(seq, stored)| {
                    if let Some(id) = stored
                        .report
                        .as_ref()
                        .and_then(|r| Report::decode(&r.report).ok())
                        .map(|r| r.id)
                    {
                        audit.push((seq, id));
                    }
                    pb::Delivery {
                        seq,
                        report: stored.report,
                        decision: stored.decision,
                    }
                })
                .collect();
            self.cursor = deliveries.last().map(|d| d.seq).unwrap_or(self.cursor);
            let n = deliveries.len();
            self.store.record_delivered(&self.me, audit);
            self.announced_caught_up = !more;
            let batch = pb::DeliveryBatch {
                deliveries,
                caught_up: !more,
                acked: vec![],
            };
            if self.tx.send(Ok(batch)).await.is_err() {
                return Ok(false);
            }
            metrics::counter!("meldnet_deliveries_sent_total").increment(n as u64);
            if !more {
                return Ok(true);
            }
        }
    }

    async fn run(mut self, mut acks: Streaming<pb::DeliveryAck>) -> Result<(), Status> {
        let mut generation = self.store.subscribe();
        generation.borrow_and_update();
        if !self.fill().await? {
            return Ok(());
        }
        loop {
            tokio::select! {
                changed = generation.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    generation.borrow_and_update();
                    if !self.fill().await? {
                        return Ok(());
                    }
                }
                ack = acks.next() => {
                    let ack = match ack {
                        Some(Ok(a)) => a,
                        Some(Err(status)) => {
                            tracing::debug!(recipient = %self.me, %status, "delivery stream closed by client");
                            return Ok(());
                        }
                        None => return Ok(()),
                    };
                    if ack.seqs.len() > MAX_ACKS {
                        return Err(Status::invalid_argument(format!(
                            "delivery_ack.seqs: {} entries, at most {MAX_ACKS}", ack.seqs.len()
                        )));
                    }
                    let applied = self.store.ack(&self.me, ack.seqs).await.map_err(storage)?;
                    metrics::counter!("meldnet_deliveries_acked_total").increment(applied.len() as u64);
                    let batch = pb::DeliveryBatch {
                        deliveries: vec![],
                        caught_up: self.announced_caught_up,
                        acked: applied,
                    };
                    if self.tx.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
                _ = self.tx.closed() => return Ok(()),
            }
        }
    }
}

#[tonic::async_trait]
impl Inbox for InboxService {
    type ReceiveStream =
        Pin<Box<dyn Stream<Item = Result<pb::DeliveryBatch, Status>> + Send + 'static>>;

    async fn receive(
        &self,
        request: Request<Streaming<pb::DeliveryAck>>,
    ) -> Result<Response<Self::ReceiveStream>, Status> {
        let me = auth::recipient(&request)?;
        tracing::info!(recipient = %me, "delivery stream opened");
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            store: self.store.clone(),
            me,
            tx: tx.clone(),
            cursor: 0,
            announced_caught_up: false,
        };
        let acks = request.into_inner();
        tokio::spawn(async move {
            if let Err(status) = session.run(acks).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
