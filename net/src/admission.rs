//! Admission of calls: who may call what, and what one call may cost, all
//! decided from the request's path and the connection's certificate before
//! a byte of the request body is read.
//!
//! Why here and not in the handlers: tonic decodes a request before the
//! handler runs, so a handler's role check came after the allocation. This
//! layer sits in front of every service: it asks the server's [`Gate`]
//! whether the caller's role may call the method (refusing with the gate's
//! status at once), then holds the call to the method's limits while its
//! body streams in:
//! - each gRPC message at most the method's `max_message` bytes, refused as
//!   `INVALID_ARGUMENT` naming the method from its 5-byte length prefix,
//!   before the message is buffered;
//! - the bytes of messages being received, and of single request messages
//!   until their call is answered, in all calls together, at most
//!   `max_inflight_mib` (`RESOURCE_EXHAUSTED` past it), and each message
//!   complete within `message_timeout_s` of its first byte;
//! - at most `max_calls` calls open at once (`RESOURCE_EXHAUSTED`).
//!
//! With the connection caps (`accept`), these bound what any client can
//! make a server hold: see the README's "What a client can cost the hub".

use crate::tls::PeerInfo;
use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::Status;

/// What the gate lets one call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// The largest gRPC message of its request, in bytes.
    pub max_message: usize,
    /// Whether its request is a stream of messages. A single request
    /// message holds its place in the budget until the call is answered (it
    /// lives, decoded, while the handler works); a stream's messages each
    /// give theirs back once received (the service bounds what it holds).
    pub streamed: bool,
}

/// Decides, per call, whether the caller may call the method (`path` is
/// `/package.Service/Method`) and with what limits; the refusal is the
/// status the client gets. The gate logs its refusals (it knows why); the
/// layer counts them and logs its own.
pub trait Gate: Send + Sync + 'static {
    /// Admits the call or refuses it.
    fn admit(&self, path: &str, peer: Option<&PeerInfo>) -> Result<Admit, Status>;
}

/// `[calls]`: the bounds on calls in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallLimits {
    /// Calls open at once, streams included.
    pub max_calls: usize,
    /// Calls one certificate identity may have open at once.
    pub max_calls_per_identity: usize,
    /// Mebibytes of request messages being received at once, in all calls.
    pub max_inflight_mib: usize,
    /// Seconds a request message may take from its first byte to its last.
    pub message_timeout_s: u64,
    /// Streamed batches a server works on at once, in all streams (the
    /// hub's submissions: each is up to one request message).
    pub max_stream_batches: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_calls: 4096,
            max_calls_per_identity: 512,
            max_inflight_mib: 256,
            message_timeout_s: 60,
            max_stream_batches: 32,
        }
    }
}

impl CallLimits {
    /// Whether these are the defaults (so configs need not spell them).
    pub fn is_default(&self) -> bool {
        self == &CallLimits::default()
    }

    /// Checks every value: the key of the first that is unusable, and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, value) in [
            ("max_calls", self.max_calls as u64),
            ("max_calls_per_identity", self.max_calls_per_identity as u64),
            ("max_inflight_mib", self.max_inflight_mib as u64),
            ("message_timeout_s", self.message_timeout_s),
            ("max_stream_batches", self.max_stream_batches as u64),
        ] {
            if value == 0 {
                return Err((format!("calls.{key}"), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// Bytes reserved by messages being received (and single request messages
/// until their call is answered).
struct Budget {
    used: AtomicUsize,
    max: usize,
}

/// Bytes a call holds until both its request body and its answer are gone.
struct Hold {
    budget: Arc<Budget>,
    bytes: AtomicUsize,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.release(self.bytes.load(Ordering::Acquire));
    }
}

impl Budget {
    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The tower layer (`Server::builder().layer(..)`).
#[derive(Clone)]
pub struct AdmissionLayer {
    gate: Arc<dyn Gate>,
    calls: Arc<Semaphore>,
    per_identity: Arc<crate::accept::Places<Option<meldnet_core::SpiffeId>>>,
    budget: Arc<Budget>,
    limits: CallLimits,
}

impl AdmissionLayer {
    /// Admission through `gate` under `limits`.
    pub fn new(gate: Arc<dyn Gate>, limits: CallLimits) -> Self {
        AdmissionLayer {
            gate,
            calls: Arc::new(Semaphore::new(limits.max_calls)),
            per_identity: Arc::default(),
            budget: Arc::new(Budget {
                used: AtomicUsize::new(0),
                max: limits.max_inflight_mib.saturating_mul(1 << 20),
            }),
            limits,
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

/// Counts a refusal (`meldnet_calls_refused_total`, by code).
fn count(status: Status) -> Status {
    metrics::counter!("meldnet_calls_refused_total", "code" => format!("{:?}", status.code()))
        .increment(1);
    status
}

/// Logs and counts one of the layer's own refusals.
fn refuse(path: &str, peer: Option<&PeerInfo>, status: Status) -> Status {
    let who = peer
        .and_then(|p| p.identity.as_ref().ok())
        .map(ToString::to_string)
        .unwrap_or_default();
    let remote = peer.and_then(|p| p.remote).map(|r| r.to_string());
    tracing::warn!(caller = %who, remote = ?remote, %path, code = ?status.code(), "refused: {}", status.message());
    count(status)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let peer = req.extensions().get::<PeerInfo>();
        let admitted = self
            .layer
            .gate
            .admit(&path, peer)
            .map_err(count)
            .and_then(|admit| {
                let permit = self.layer.calls.clone().try_acquire_owned().map_err(|_| {
                    refuse(
                        &path,
                        peer,
                        Status::resource_exhausted(format!(
                            "{} calls are open, the most this server takes; retry later",
                            self.layer.limits.max_calls
                        )),
                    )
                })?;
                let who = peer.and_then(|p| p.identity.clone().ok());
                let mine = self
                    .layer
                    .per_identity
                    .take(who, self.layer.limits.max_calls_per_identity)
                    .ok_or_else(|| {
                        refuse(
                            &path,
                            peer,
                            Status::resource_exhausted(format!(
                                "this caller has {} calls open, the most one may; retry later",
                                self.layer.limits.max_calls_per_identity
                            )),
                        )
                    })?;
                Ok((
                    admit,
                    Call {
                        _all: permit,
                        _mine: mine,
                    },
                ))
            });
        let (admit, permit) = match admitted {
            Ok(a) => a,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let permit = Arc::new(permit);
        let hold = (!admit.streamed).then(|| {
            Arc::new(Hold {
                budget: self.layer.budget.clone(),
                bytes: AtomicUsize::new(0),
            })
        });
        let (parts, body) = req.into_parts();
        let metered = Metered {
            inner: body,
            path: path.clone(),
            max: admit.max_message,
            header: [0; 5],
            have: 0,
            left: None,
            reserved: 0,
            budget: self.layer.budget.clone(),
            timeout: Duration::from_secs(self.layer.limits.message_timeout_s),
            deadline: None,
            ended: false,
            messages: 0,
            hold: hold.clone(),
            _call: permit.clone(),
        };
        let req = http::Request::from_parts(parts, Body::new(metered));
        // The service that was made ready is the one called; its clone
        // stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            Ok(resp.map(|b| {
                Body::new(Held {
                    inner: Box::pin(b),
                    _call: permit,
                    _hold: hold,
                })
            }))
        })
    }
}

/// A request body held to its method's limits, parsing the gRPC length
/// prefixes as the bytes pass.
struct Metered {
    inner: Body,
    path: String,
    max: usize,
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come (`None`: reading a header).
    left: Option<usize>,
    /// What the current message holds of the budget.
    reserved: usize,
    budget: Arc<Budget>,
    timeout: Duration,
    /// While the reader waits for more of a request: when it gives up.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The body has ended.
    ended: bool,
    /// For a single request message: where its bytes stay until answered.
    hold: Option<Arc<Hold>>,
    /// Messages received whole.
    messages: usize,
    _call: Arc<Call>,
}

/// A call's places: one of all calls, one of its caller's.
struct Call {
    _all: OwnedSemaphorePermit,
    _mine: crate::accept::Place<Option<meldnet_core::SpiffeId>>,
}

impl Metered {
    fn done_with_message(&mut self) {
        self.messages += 1;
        match &self.hold {
            Some(h) => {
                h.bytes.fetch_add(self.reserved, Ordering::AcqRel);
            }
            None => self.budget.release(self.reserved),
        }
        self.reserved = 0;
        self.left = None;
        self.have = 0;
    }

    /// Whether the reader is owed more: inside a message, or (for a single
    /// request message) anywhere before the body's end.
    fn in_progress(&self) -> bool {
        !self.ended && (self.hold.is_some() || self.have > 0 || self.left.is_some())
    }

    /// Follows the framing through `data`: refuses a message over the limit
    /// the moment its length is known, and takes each byte from the budget
    /// as it comes (a length alone reserves nothing).
    fn account(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            match self.left {
                None => {
                    if self.have == 0 && self.hold.is_some() && self.messages > 0 {
                        return Err(Status::invalid_argument(format!(
                            "{}: more than one request message",
                            self.path
                        )));
                    }
                    let take = (5 - self.have).min(data.len());
                    let (head, rest) = data.split_at(take);
                    if let Some(to) = self.header.get_mut(self.have..self.have + take) {
                        to.copy_from_slice(head);
                    }
                    self.have += take;
                    data = rest;
                    if self.have == 5 {
                        let len = u32::from_be_bytes([
                            self.header[1],
                            self.header[2],
                            self.header[3],
                            self.header[4],
                        ]) as usize;
                        if len > self.max {
                            return Err(Status::invalid_argument(format!(
                                "{}: a request message of {len} bytes; at most {} bytes",
                                self.path, self.max
                            )));
                        }
                        if len == 0 {
                            self.done_with_message();
                        } else {
                            self.left = Some(len);
                        }
                    }
                }
                Some(left) => {
                    let take = left.min(data.len());
                    if !self.budget.reserve(take) {
                        return Err(Status::resource_exhausted(format!(
                            "{}: the server is receiving as much as it takes at once; retry later",
                            self.path
                        )));
                    }
                    self.reserved += take;
                    data = data.get(take..).unwrap_or_default();
                    if take == left {
                        self.done_with_message();
                    } else {
                        self.left = Some(left - take);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Progress: the wait, if any, starts again from here.
                me.deadline = None;
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = me.account(data.chunk()) {
                        return Poll::Ready(Some(Err(refuse(&me.path, None, status))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(e.into())))),
            Poll::Ready(None) => {
                me.deadline = None;
                me.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Only time the reader spends waiting for bytes it is owed
                // counts: not time it spends elsewhere.
                if me.deadline.is_none() && me.in_progress() {
                    me.deadline = Some(Box::pin(tokio::time::sleep(me.timeout)));
                }
                if let Some(deadline) = me.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        let status = Status::invalid_argument(format!(
                            "{}: no more of the request within {} s",
                            me.path,
                            me.timeout.as_secs()
                        ));
                        return Poll::Ready(Some(Err(refuse(&me.path, None, status))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call's place until it ends.
struct Held<B> {
    inner: Pin<Box<B>>,
    _call: Arc<Call>,
    _hold: Option<Arc<Hold>>,
}

impl<B> http_body::Body for Held<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.get_mut().inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(max: usize, budget: usize) -> (Metered, Arc<Budget>) {
        let budget = Arc::new(Budget {
            used: AtomicUsize::new(0),
            max: budget,
        });
        let m = Metered {
            inner: Body::empty(),
            path: "/t.S/M".into(),
            max,
            header: [0; 5],
            have: 0,
            left: None,
            reserved: 0,
            budget: budget.clone(),
            timeout: Duration::from_secs(5),
            deadline: None,
            ended: false,
            messages: 0,
            hold: None,
            _call: Arc::new(Call {
                _all: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
                _mine: Arc::new(crate::accept::Places::default())
                    .take(None, 1)
                    .unwrap(),
            }),
        };
        (m, budget)
    }

    fn frame(len: u32, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[tokio::test]
    async fn messages_are_followed_across_frames_and_the_budget_comes_back() {
        let (mut m, budget) = metered(100, 150);
        let mut wire = frame(10, &[7; 10]);
        wire.extend(frame(0, &[]));
        wire.extend(frame(100, &[1; 100]));
        // Fed in pieces of 3 bytes, as frames may split anywhere.
        for chunk in wire.chunks(3) {
            m.account(chunk).unwrap();
        }
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
        m.account(&frame(60, &[1; 20])).unwrap();
        assert_eq!(
            budget.used.load(Ordering::Acquire),
            20,
            "what arrived is held while the message is incomplete"
        );
        drop(m);
        assert_eq!(budget.used.load(Ordering::Acquire), 0, "given back on drop");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_from_its_length_prefix() {
        let (mut m, _) = metered(100, 1000);
        let e = m.account(&frame(101, &[])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "/t.S/M: a request message of 101 bytes; at most 100 bytes"
        );
    }

    #[tokio::test]
    async fn a_single_request_holds_its_bytes_until_answered() {
        let (mut m, budget) = metered(100, 150);
        let hold = Arc::new(Hold {
            budget: budget.clone(),
            bytes: AtomicUsize::new(0),
        });
        m.hold = Some(hold.clone());
        m.account(&frame(40, &[0; 40])).unwrap();
        // A second message in a single-message call is refused.
        let e = m.account(&frame(1, &[0])).unwrap_err();
        assert!(
            e.message().contains("more than one request message"),
            "{e:?}"
        );
        drop(m);
        assert_eq!(
            budget.used.load(Ordering::Acquire),
            40,
            "the answer is not sent yet"
        );
        drop(hold);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn messages_over_the_budget_are_refused() {
        let (mut a, budget) = metered(100, 150);
        let (mut b, _) = metered(100, 0);
        b.budget = budget.clone();
        a.account(&frame(100, &[0; 99])).unwrap();
        // A length alone takes nothing; its bytes do.
        b.account(&frame(60, &[])).unwrap();
        let e = b.account(&[0; 60]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        drop(a);
        let (mut c, _) = metered(100, 0);
        c.budget = budget.clone();
        c.account(&frame(60, &[0; 60])).unwrap();
    }
}
