//! The `Inbox` gRPC service: each recipient receives its own queue, chosen
//! by its certificate alone, as a push stream, and acknowledges on the same
//! stream. Unacknowledged entries are sent again on the next stream;
//! acknowledged ones are gone from the queue and are never sent again.
//!
//! A session sends while the recipient has fewer than `MAX_UNACKED`
//! deliveries outstanding and reads acknowledgements all the while, so a
//! backlog of millions flows with bounded memory on both sides. One session
//! per recipient: a new stream ends the previous one (two readers of one
//! queue would each get everything). Sessions end when the hub shuts down
//! and when the recipient's certificate stops being valid.

use crate::auth::{Auth, Caller};
use crate::store::Store;
use meldnet_core::limits::{
    MAX_ACKS, MAX_DELIVERY_BATCH, MAX_DELIVERY_BATCH_BYTES, MAX_REJECTIONS, MAX_REJECTION_REASON,
};
use meldnet_core::SpiffeId;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::inbox_server::Inbox;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Most deliveries sent and not yet acknowledged, per session.
pub const MAX_UNACKED: usize = 2048;

/// Deliveries in the first batch of a session. Each batch acknowledged
/// doubles the next one, up to `MAX_DELIVERY_BATCH`: on a link that drops
/// connections every few hundred kilobytes, a full batch (up to 4 MiB) might
/// never arrive whole, and a recipient with a backlog would never progress;
/// small first batches always get through and are acknowledged.
pub const FIRST_BATCH: usize = 8;

/// The current session of each recipient.
#[derive(Default)]
struct Sessions {
    next: AtomicU64,
    current: Mutex<HashMap<SpiffeId, watch::Sender<u64>>>,
}

impl Sessions {
    /// Registers a new session for `me`, ending any previous one; returns its
    /// id and a receiver that changes when a newer session replaces it.
    fn register(&self, me: &SpiffeId) -> (u64, watch::Receiver<u64>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let tx = map.entry(me.clone()).or_insert_with(|| watch::channel(0).0);
        tx.send_replace(id);
        (id, tx.subscribe())
    }
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct InboxService {
    store: Store,
    auth: Auth,
    sessions: Arc<Sessions>,
    stopping: watch::Receiver<bool>,
}

impl InboxService {
    /// Serves the queues kept in `store`; sessions end when `stopping` turns true.
    pub fn new(store: Store, auth: Auth, stopping: watch::Receiver<bool>) -> Self {
        InboxService {
            store,
            auth,
            sessions: Arc::default(),
            stopping,
        }
    }
}

type Out = mpsc::Sender<Result<pb::DeliveryBatch, Status>>;

struct Session {
    store: Store,
    auth: Auth,
    caller: Caller,
    tx: Out,
    cursor: u64,
    /// More may be queued after the cursor.
    pending: bool,
    /// The last batch sent said `caught_up` and nothing was sent since.
    announced_caught_up: bool,
    unacked: HashSet<u64>,
    /// The most deliveries of the next batch (slow start, `FIRST_BATCH`).
    window: usize,
}

impl Session {
    async fn send(&self, batch: pb::DeliveryBatch) -> bool {
        self.tx.send(Ok(batch)).await.is_ok()
    }

    /// Sends the next batch (at most `room` deliveries). False: client gone.
    async fn send_next(&mut self, room: usize) -> Result<bool, Status> {
        self.auth.still_valid(&self.caller.peer)?;
        let (store, me, cursor) = (self.store.clone(), self.caller.id.clone(), self.cursor);
        let limit = room.min(self.window);
        // Bytes grow with the window too (the first entry always fits).
        let bytes = MAX_DELIVERY_BATCH_BYTES / MAX_DELIVERY_BATCH * self.window;
        let (entries, more) =
            tokio::task::spawn_blocking(move || store.queue_after(&me, cursor, limit, bytes))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::from)?;
        self.pending = more;
        if entries.is_empty() {
            if self.announced_caught_up {
                return Ok(true);
            }
            self.announced_caught_up = true;
            return Ok(self
                .send(pb::DeliveryBatch {
                    deliveries: vec![],
                    caught_up: true,
                    acked: vec![],
                })
                .await);
        }
        let audit: Vec<_> = entries.iter().map(|e| (e.seq, e.report_id)).collect();
        let n = entries.len();
        let deliveries: Vec<pb::Delivery> = entries
            .into_iter()
            .map(|e| pb::Delivery {
                seq: e.seq,
                content: Some(match e.notification {
                    Some(n) => pb::delivery::Content::Notification(n),
                    None => pb::delivery::Content::Routed(pb::RoutedReport {
                        report: e.stored.report,
                        decision: e.stored.decision,
                    }),
                }),
            })
            .collect();
        self.cursor = deliveries.last().map_or(self.cursor, |d| d.seq);
        self.unacked.extend(deliveries.iter().map(|d| d.seq));
        self.announced_caught_up = !more;
        // Recorded before the batch is handed to the stream: the store's one
        // writer then commits this event before any acknowledgement of these
        // entries, so the audit log's order is the order things happened (a
        // delivery after its acknowledgement would show as one).
        self.store.record_delivered(&self.caller.id, audit);
        let sent = self
            .send(pb::DeliveryBatch {
                deliveries,
                caught_up: !more,
                acked: vec![],
            })
            .await;
        if sent {
            metrics::counter!("meldnet_deliveries_sent_total").increment(n as u64);
        }
        Ok(sent)
    }

    async fn apply_ack(&mut self, ack: pb::DeliveryAck) -> Result<bool, Status> {
        let refuse = |status: Status| {
            tracing::warn!(recipient = %self.caller.id, "refused: {}", status.message());
            status
        };
        if ack.seqs.len() > MAX_ACKS {
            return Err(refuse(Status::invalid_argument(format!(
                "delivery_ack.seqs: {} entries, at most {MAX_ACKS}",
                ack.seqs.len()
            ))));
        }
        if ack.rejected.len() > MAX_REJECTIONS {
            return Err(refuse(Status::invalid_argument(format!(
                "delivery_ack.rejected: {} entries, at most {MAX_REJECTIONS}",
                ack.rejected.len()
            ))));
        }
        let mut rejected = Vec::with_capacity(ack.rejected.len());
        for (i, r) in ack.rejected.into_iter().enumerate() {
            if r.reason.trim().is_empty() || r.reason.len() > MAX_REJECTION_REASON {
                return Err(refuse(Status::invalid_argument(format!(
                    "delivery_ack.rejected[{i}].reason: 1 to {MAX_REJECTION_REASON} bytes"
                ))));
            }
            if r.reason.chars().any(char::is_control) {
                return Err(refuse(Status::invalid_argument(format!(
                    "delivery_ack.rejected[{i}].reason: no control characters"
                ))));
            }
            rejected.push((r.seq, r.reason));
        }
        let applied = self
            .store
            .settle(&self.caller.id, ack.seqs, rejected)
            .await
            .map_err(Status::from)?;

        // The window grows only for deliveries of this session that the
        // acknowledgement really settled (not for seqs named twice).
        let mut settled_here = false;
        for s in &applied {
            settled_here |= self.unacked.remove(s);
        }
        if settled_here {
            self.window = (self.window * 2).min(MAX_DELIVERY_BATCH);
        }
        metrics::counter!("meldnet_deliveries_acked_total").increment(applied.len() as u64);
        Ok(self
            .send(pb::DeliveryBatch {
                deliveries: vec![],
                caught_up: self.announced_caught_up && !self.pending,
                acked: applied,
            })
            .await)
    }

    async fn run(
        mut self,
        mut acks: Streaming<pb::DeliveryAck>,
        session_id: u64,
        mut superseded: watch::Receiver<u64>,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), Status> {
        let mut generation = self.store.subscribe();
        generation.borrow_and_update();
        loop {
            let room = MAX_UNACKED.saturating_sub(self.unacked.len());
            let can_send = self.pending && room > 0;
            tokio::select! {
                biased;
                _ = stopping.changed() => {
                    return Err(Status::unavailable("the hub is shutting down; reconnect later"));
                }
                _ = superseded.changed() => {
                    if *superseded.borrow() != session_id {
                        return Err(Status::aborted(
                            "superseded: a newer delivery stream of the same recipient took over",
                        ));
                    }
                }
                ack = acks.next() => match ack {
                    Some(Ok(a)) => {
                        if !self.apply_ack(a).await? {
                            return Ok(());
                        }
                    }
                    // An acknowledgement that does not decode, or one over a
                    // limit, is the client's error, and it is told so.
                    Some(Err(status)) if status.code() != tonic::Code::Cancelled => {
                        tracing::warn!(recipient = %self.caller.id, "refused: {}", status.message());
                        return Err(status);
                    }
                    Some(Err(status)) => {
                        tracing::debug!(recipient = %self.caller.id, %status, "delivery stream closed by client");
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                changed = generation.changed(), if !self.pending => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    generation.borrow_and_update();
                    self.pending = true;
                }
                _ = self.tx.closed() => return Ok(()),
                _ = std::future::ready(()), if can_send => {
                    if !self.send_next(room).await? {
                        return Ok(());
                    }
                }
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
        let caller = self.auth.recipient(&request)?;
        tracing::info!(recipient = %caller.id, "delivery stream opened");
        let (session_id, superseded) = self.sessions.register(&caller.id);
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            store: self.store.clone(),
            auth: self.auth.clone(),
            caller,
            tx: tx.clone(),
            cursor: 0,
            pending: true,
            announced_caught_up: false,
            unacked: HashSet::new(),
            window: FIRST_BATCH,
        };
        let acks = request.into_inner();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            if let Err(status) = session.run(acks, session_id, superseded, stopping).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
