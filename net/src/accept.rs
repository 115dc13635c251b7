//! Accepting connections: what a connection may cost a server before and
//! after its TLS handshake, whoever sends it.
//!
//! Why: any holder of a certificate the CA signed (or anyone at all, before
//! the handshake) could otherwise open connections that never send a byte
//! and hold file descriptors and memory for ever. So: at most
//! `max_pending` connections not yet through their handshake
//! (`max_pending_per_address` from one address), each through it within
//! `handshake_timeout_s` of its accept; at most `max_handshakes` handshakes
//! at once (others wait their turn); after it,
//! at most `max_connections` connections in all and `max_per_identity` per
//! certificate identity; the first byte of HTTP/2 within
//! `first_byte_timeout_s` of the handshake; and every connection's
//! certificate checked again every `recheck_s` (a revoked or expired
//! certificate loses its connection, open streams and all). Connections over
//! a cap are closed at once, and counted (`meldnet_connections_refused_total`).

use crate::tls::PeerInfo;
use meldnet_core::{SpiffeId, TrustDomain};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[connections]`: the caps and timeouts above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections of one certificate identity (certificates without
    /// a usable identity count as one).
    pub max_per_identity: usize,
    /// TLS handshakes in progress at once (others wait their turn).
    pub max_handshakes: usize,
    /// Connections not yet through their handshake, in all (over it a new
    /// one is closed at once): what anyone, certificate or not, can hold.
    pub max_pending: usize,
    /// Connections not yet through their handshake from one address.
    pub max_pending_per_address: usize,
    /// Seconds a TLS handshake may take.
    pub handshake_timeout_s: u64,
    /// Seconds from the handshake to the end of the client's HTTP/2
    /// preface: a connection that says nothing, or too little, is closed.
    pub first_byte_timeout_s: u64,
    /// Seconds between checks of a connection's certificate against the
    /// current CRLs, the clock and the server's revocations.
    pub recheck_s: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_per_identity: 32,
            max_handshakes: 64,
            max_pending: 512,
            max_pending_per_address: 64,
            handshake_timeout_s: 10,
            first_byte_timeout_s: 10,
            recheck_s: 10,
        }
    }
}

impl ConnectionLimits {
    /// Whether these are the defaults (so configs need not spell them).
    pub fn is_default(&self) -> bool {
        self == &ConnectionLimits::default()
    }

    /// Checks every value: the key (`connections.<key>`) of the first that
    /// is unusable, and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let checks: [(&str, u64, u64); 8] = [
            ("max_pending", self.max_pending as u64, 1),
            (
                "max_pending_per_address",
                self.max_pending_per_address as u64,
                1,
            ),
            ("max_connections", self.max_connections as u64, 1),
            ("max_per_identity", self.max_per_identity as u64, 1),
            ("max_handshakes", self.max_handshakes as u64, 1),
            ("handshake_timeout_s", self.handshake_timeout_s, 1),
            ("first_byte_timeout_s", self.first_byte_timeout_s, 1),
            ("recheck_s", self.recheck_s, 1),
        ];
        for (key, value, min) in checks {
            if value < min {
                return Err((
                    format!("connections.{key}"),
                    format!("must be at least {min}"),
                ));
            }
        }
        if self.max_per_identity > self.max_connections {
            return Err((
                "connections.max_per_identity".into(),
                format!(
                    "{} exceeds max_connections ({})",
                    self.max_per_identity, self.max_connections
                ),
            ));
        }
        Ok(())
    }
}

/// The length of the client's HTTP/2 connection preface: a connection that
/// has not sent it whole within `first_byte_timeout_s` is closed.
const HTTP2_PREFACE: usize = 24;

/// Checks a connection's peer again (certificate still valid, party not
/// revoked); an error closes the connection.
pub type Recheck = Arc<dyn Fn(&PeerInfo) -> Result<(), String> + Send + Sync>;

/// Places per key (an identity, a source address), each given back when
/// its holder drops it.
pub(crate) struct Places<K: std::hash::Hash + Eq + Clone>(Mutex<HashMap<K, usize>>);

impl<K: std::hash::Hash + Eq + Clone> Default for Places<K> {
    fn default() -> Self {
        Places(Mutex::new(HashMap::new()))
    }
}

/// One key's place.
pub(crate) struct Place<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Places<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Places<K> {
    pub(crate) fn take(self: &Arc<Self>, key: K, max: usize) -> Option<Place<K>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Place {
            counts: self.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Open connections per identity (certificates without one count as one).
type PerIdentity = Places<Option<SpiffeId>>;

/// A TLS connection whose peer identity was read at the handshake, holding
/// its places under the caps while it is open.
pub struct AuthedStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Until the client's HTTP/2 preface is in: its deadline.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes of the preface still to come.
    preface_left: usize,
    recheck: Option<(tokio::time::Interval, Recheck)>,
    _connection: OwnedSemaphorePermit,
    _identity: Place<Option<SpiffeId>>,
}

impl tonic::transport::server::Connected for AuthedStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

fn closed(kind: std::io::ErrorKind, why: String) -> Poll<std::io::Result<()>> {
    Poll::Ready(Err(std::io::Error::new(kind, why)))
}

impl AsyncRead for AuthedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if let Some((interval, recheck)) = me.recheck.as_mut() {
            while interval.poll_tick(cx).is_ready() {
                if let Err(e) = recheck(&me.peer) {
                    tracing::warn!(remote = ?me.peer.remote, error = %e, "closing a connection whose certificate is no longer valid");
                    return closed(std::io::ErrorKind::PermissionDenied, e);
                }
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut me.inner).poll_read(cx, buf);
        if me.first_byte.is_some() {
            if matches!(read, Poll::Ready(Ok(()))) {
                let got = buf.filled().len() - before;
                me.preface_left = me.preface_left.saturating_sub(got);
                if me.preface_left == 0 {
                    me.first_byte = None;
                }
            } else if let Some(timer) = me.first_byte.as_mut() {
                if read.is_pending() && timer.as_mut().poll(cx).is_ready() {
                    tracing::warn!(remote = ?me.peer.remote, "closing a connection that sent nothing after its handshake");
                    refused("silent");
                    return closed(
                        std::io::ErrorKind::TimedOut,
                        "no request after the handshake".into(),
                    );
                }
            }
        }
        read
    }
}

impl AsyncWrite for AuthedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn refused(why: &'static str) {
    metrics::counter!("meldnet_connections_refused_total", "why" => why).increment(1);
}

/// Accepts TCP connections under `limits`, runs the TLS handshakes
/// concurrently and yields the authenticated streams for
/// `serve_with_incoming`. Failed handshakes (foreign CA, revoked, expired,
/// no certificate) and connections over a cap are logged and closed.
/// `recheck`, if given, is applied to every open connection every
/// `limits.recheck_s` seconds.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    federation: TrustDomain,
    limits: ConnectionLimits,
    recheck: Option<Recheck>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<AuthedStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    let per_address: Arc<Places<std::net::IpAddr>> = Arc::default();
    let per_identity = Arc::new(PerIdentity::default());
    tokio::spawn(async move {
        loop {
            // The server dropped its end (shut down): stop accepting, which
            // closes the listening socket.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Before the handshake nobody is known: these places are few,
            // per address too, and short-lived (the handshake timeout).
            let Ok(waiting) = pending.clone().try_acquire_owned() else {
                tracing::warn!(%remote, max = limits.max_pending, "connection refused: too many connections in their handshake");
                refused("pending");
                continue;
            };
            let Some(from_address) = per_address.take(remote.ip(), limits.max_pending_per_address)
            else {
                tracing::warn!(%remote, max = limits.max_pending_per_address, "connection refused: too many connections in their handshake from this address");
                refused("pending_per_address");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let handshakes = handshakes.clone();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let federation = federation.clone();
            let per_identity = per_identity.clone();
            let connections = connections.clone();
            let recheck = recheck.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                // Waiting for a handshake slot counts against the same
                // timeout: a flood of silent connections delays others by
                // at most that long, and each costs little while it waits.
                let handshake =
                    tokio::time::timeout(Duration::from_secs(limits.handshake_timeout_s), async {
                        let slot = handshakes.acquire_owned().await;
                        let tls = acceptor.accept(tcp).await;
                        drop(slot);
                        tls
                    })
                    .await;
                drop((waiting, from_address));
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "TLS handshake timed out");
                        refused("handshake_timeout");
                        return;
                    }
                };
                let chain: Vec<CertificateDer<'static>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default();
                let identity = chain
                    .first()
                    .ok_or_else(|| "no client certificate".to_string())
                    .and_then(|c| SpiffeId::from_certificate(c).map_err(|e| e.to_string()))
                    .and_then(|id| {
                        id.require_federation(&federation)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = &identity {
                    tracing::warn!(%remote, error = %e, "peer certificate carries no usable identity");
                }
                let Ok(connection) = connections.try_acquire_owned() else {
                    tracing::warn!(%remote, max = limits.max_connections, "connection refused: too many open connections");
                    refused("connections");
                    return;
                };
                let Some(slot) = per_identity.take(identity.clone().ok(), limits.max_per_identity)
                else {
                    tracing::warn!(%remote, identity = ?identity.as_ref().ok().map(ToString::to_string), max = limits.max_per_identity, "connection refused: too many connections of this identity");
                    refused("per_identity");
                    return;
                };
                let peer = PeerInfo {
                    identity,
                    chain,
                    remote: Some(remote),
                };
                let recheck = recheck.map(|r| {
                    let every = Duration::from_secs(limits.recheck_s);
                    let mut interval =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    (interval, r)
                });
                let stream = AuthedStream {
                    inner: tls,
                    peer,
                    first_byte: Some(Box::pin(tokio::time::sleep(Duration::from_secs(
                        limits.first_byte_timeout_s,
                    )))),
                    recheck,
                    preface_left: HTTP2_PREFACE,
                    _connection: connection,
                    _identity: slot,
                };
                let _ = tx.send(Ok(stream)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated_naming_the_key() {
        assert!(ConnectionLimits::default().validate().is_ok());
        let zero = ConnectionLimits {
            first_byte_timeout_s: 0,
            ..Default::default()
        };
        assert_eq!(
            zero.validate().unwrap_err(),
            (
                "connections.first_byte_timeout_s".into(),
                "must be at least 1".into()
            )
        );
        let over = ConnectionLimits {
            max_connections: 4,
            max_per_identity: 8,
            ..Default::default()
        };
        assert_eq!(
            over.validate().unwrap_err().0,
            "connections.max_per_identity"
        );
    }

    #[test]
    fn identity_slots_are_given_back() {
        let counts = Arc::new(PerIdentity::default());
        let a = SpiffeId::parse("spiffe://t.test/node/NL").ok();
        let first = counts.take(a.clone(), 2).unwrap();
        let _second = counts.take(a.clone(), 2).unwrap();
        assert!(
            counts.take(a.clone(), 2).is_none(),
            "a third is over the cap"
        );
        assert!(counts.take(None, 2).is_some(), "other identities are apart");
        drop(first);
        assert!(
            counts.take(a, 2).is_some(),
            "a closed connection frees its slot"
        );
    }
}
