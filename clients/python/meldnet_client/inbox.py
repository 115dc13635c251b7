"""Receiving deliveries (`Inbox.Receive`, PROTOCOL.md 9): verify each one
(8), store it durably, then acknowledge it; refuse what fails with a reason;
leave what a key not yet in the keyring signed; reconnect and resume after
a cut; close only when the hub said `caught_up` and confirmed every
acknowledgement."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from .config import RecipientConfig, identity_of
from .keys import Keyring
from .store import DeliveryStore
from .stubs import pb
from .verify import Noticed, Refused, Routed, UnknownKey, verify_delivery

log = logging.getLogger("meldnet_client.inbox")

RECEIVE = "/meldnet.v1.Inbox/Receive"
MAX_MESSAGE = 16 * 1024 * 1024
MAX_ACKS = 4096
MAX_REJECTIONS = 256
MAX_REASON = 512


@dataclass
class Summary:
    """What a `receive` did, in counts; `stored_ids` in the order stored."""

    sessions: int = 0
    stored: int = 0
    again: int = 0
    rejected: int = 0
    unknown_key: int = 0
    confirmed: int = 0
    redelivered_after_ack: int = 0
    stored_ids: list = field(default_factory=list)
    rejections: list = field(default_factory=list)


def channel(cfg: RecipientConfig, address: str | None = None) -> grpc.Channel:
    """An mTLS channel to the hub (or to `address`, e.g. a test's relay),
    checking the hub's certificate for `[hub] server_name`."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=cfg.tls.ca.read_bytes(),
        private_key=cfg.tls.key.read_bytes(),
        certificate_chain=cfg.tls.cert.read_bytes(),
    )
    return grpc.secure_channel(
        address or cfg.hub_address,
        creds,
        options=[
            ("grpc.ssl_target_name_override", cfg.hub_server_name),
            ("grpc.default_authority", cfg.hub_server_name),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )


def _varint(buf: bytes, i: int):
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise DecodeError("a truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def delivery_bytes(batch: bytes) -> list:
    """The bytes of each `DeliveryBatch.deliveries` entry (field 1) exactly
    as the hub sent them, in order: what is stored."""
    out, i = [], 0
    while i < len(batch):
        tag, i = _varint(batch, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(batch, i)
        elif wire == 2:
            n, i = _varint(batch, i)
            if i + n > len(batch):
                raise DecodeError("a field runs past the end of the batch")
            if number == 1:
                out.append(batch[i : i + n])
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise DecodeError(f"wire type {wire} in a delivery batch")
    return out


def _reason(text: str) -> str:
    """A rejection reason the hub takes (9.4): no control characters, 1 to
    512 bytes."""
    clean = "".join(c if c.isprintable() else " " for c in text).strip() or "refused"
    b = clean.encode()[:MAX_REASON]
    return b.decode(errors="ignore")


class Inbox:
    """One recipient's queue. `receive()` drains it (or follows it) and
    returns a `Summary`."""

    def __init__(self, cfg: RecipientConfig, store: DeliveryStore | None = None, address=None):
        self.cfg = cfg
        self.keyring = Keyring.load(cfg.keyring)
        self.me = identity_of(cfg.tls.cert.read_bytes())
        self.store = store or DeliveryStore(cfg.out_dir)
        self.address = address

    def receive(self, follow: bool = False, retries: int = 5, stop=None) -> Summary:
        """Sessions until the queue is drained (or, with `follow`, until the
        `threading.Event` `stop` is set). A cut stream (`UNAVAILABLE`, or
        `ABORTED` when superseded) is opened again with backoff, at most
        `retries` times in a row."""
        summary = Summary()
        failures = 0
        while True:
            summary.sessions += 1
            try:
                self._session(summary, follow, stop)
                return summary
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED) or failures >= retries:
                    raise
                failures += 1
                log.warning("stream ended (%s: %s); again in %.1f s", code, e.details(), 0.2 * 2**failures)
                time.sleep(0.2 * 2**failures)

    def _session(self, summary: Summary, follow: bool, stop) -> None:
        acks: queue.Queue = queue.Queue()

        def requests():
            while True:
                m = acks.get()
                if m is None:
                    return
                yield m

        with channel(self.cfg, self.address) as ch:
            call = ch.stream_stream(
                RECEIVE,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )(requests(), timeout=None)
            if stop is not None:
                threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True).start()
            unconfirmed: set = set()
            caught_up = False
            try:
                for raw in call:
                    batch = pb.DeliveryBatch.FromString(raw)
                    raws = delivery_bytes(raw)
                    if len(raws) != len(batch.deliveries):
                        raise DecodeError("deliveries are not where the batch says")
                    seqs, rejected = [], []
                    for d, data in zip(batch.deliveries, raws):
                        self._one(d, data, summary, seqs, rejected)
                    if seqs or rejected:
                        # Everything named is on disk before the hub hears of it.
                        self.store.flush()
                        for i in range(0, len(seqs), MAX_ACKS):
                            acks.put(pb.DeliveryAck(seqs=seqs[i : i + MAX_ACKS]))
                        for i in range(0, len(rejected), MAX_REJECTIONS):
                            acks.put(pb.DeliveryAck(rejected=rejected[i : i + MAX_REJECTIONS]))
                        unconfirmed.update(seqs)
                        unconfirmed.update(r.seq for r in rejected)
                    if batch.acked:
                        named = [s for s in batch.acked if s in unconfirmed]
                        self.store.confirm(named)
                        summary.confirmed += len(named)
                        unconfirmed.difference_update(batch.acked)
                    if batch.deliveries:
                        caught_up = batch.caught_up
                    elif batch.caught_up:
                        caught_up = True
                    if caught_up and not unconfirmed and not follow:
                        break
            except grpc.RpcError as e:
                if stop is None or not stop.is_set() or e.code() != grpc.StatusCode.CANCELLED:
                    raise
            finally:
                acks.put(None)
                call.cancel()

    def _one(self, d, data: bytes, summary: Summary, seqs: list, rejected: list) -> None:
        if d.seq in self.store.confirmed:
            # Never allowed (9.2): the hub sent again what it confirmed.
            summary.redelivered_after_ack += 1
            log.error("seq %d came again after its acknowledgement was confirmed", d.seq)
        try:
            checked = verify_delivery(d, self.keyring, self.me)
        except UnknownKey as e:
            summary.unknown_key += 1
            log.warning("seq %d left unacknowledged: %s", d.seq, e)
            return
        except Refused as e:
            reason = _reason(str(e))
            self.store.reject(d.seq, reason)
            rejected.append(pb.Rejection(seq=d.seq, reason=reason))
            summary.rejected += 1
            summary.rejections.append((d.seq, reason))
            log.warning("seq %d refused: %s", d.seq, reason)
            return
        if isinstance(checked, Routed):
            ident = checked.report.id
        else:
            assert isinstance(checked, Noticed)
            ident = checked.notification.notification_id
        if self.store.put(ident, d.seq, data):
            summary.stored += 1
            summary.stored_ids.append(ident)
        else:
            summary.again += 1
        seqs.append(d.seq)
