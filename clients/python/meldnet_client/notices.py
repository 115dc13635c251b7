"""A hosting provider's side of standard notices (PROTOCOL.md 16), on the
same port and credentials as hash checks: the waiting notices, each
verified offline with the hotline node's key before it is acknowledged, and
answers, whose signed records from the node are verified too. HTTP/JSON
with the standard library, or gRPC (`meldnet.v1.ProviderNotices`)."""

from __future__ import annotations

import base64
import os
import queue
import threading
import time
import uuid

import grpc

from .hashcheck import CheckError, Provider
from .keys import Keyring
from .stubs import grpc_pb, pb
from .verify import verify_answer_record, verify_notice


def uuid7() -> str:
    """A UUIDv7 (time-ordered): what an answer id must be."""
    ms = int(time.time() * 1000)
    b = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return str(uuid.UUID(bytes=bytes(b)))


class NoticeClient:
    """Notices for `provider` (its address, name, CA and certificate), as
    `me` (its certificate identity), verified with `keyring`."""

    def __init__(self, provider: Provider, keyring: Keyring, me: str) -> None:
        self.p = provider
        self.keyring = keyring
        self.me = me

    def pending(self) -> list:
        """`GET /v1/notices`: each waiting notice, verified from its signed
        bytes; returns the decoded `Notice` messages (refuses the lot if one
        does not verify)."""
        out = []
        for n in self.p.call_json("GET", "/v1/notices")["notices"]:
            s = n["signed"]
            sn = pb.SignedNotice(
                notice=base64.b64decode(s["notice"]),
                signature=base64.b64decode(s["signature"]),
                key_id=s["key_id"],
            )
            out.append(verify_notice(sn, self.keyring, self.me))
        return out

    def acknowledge(self, notices) -> int:
        """`POST /v1/notices/ack` once the notices are stored."""
        stored = [{"notice_id": n.notice_id, "attempt": n.attempt} for n in notices]
        return self.p.call_json("POST", "/v1/notices/ack", {"stored": stored})["acknowledged"]

    def answer(self, notice_id: str, kind: str, reason: str | None = None,
               detail: str = "", at_ms: int = 0, answer_id: str | None = None):
        """`POST /v1/notices/answer`; returns the node's `AnswerRecord`,
        verified, after checking it records this answer."""
        body = {"notice_id": notice_id, "answer_id": answer_id or uuid7(), "kind": kind,
                "detail": detail, "at_ms": at_ms}
        if reason is not None:
            body["reason"] = reason
        doc = self.p.call_json("POST", "/v1/notices/answer", body)
        sr = pb.SignedAnswerRecord(
            answer_record=base64.b64decode(doc["record"]),
            signature=base64.b64decode(doc["signature"]),
            key_id=doc["key_id"],
        )
        r = verify_answer_record(sr, self.keyring)
        if r.provider != self.me or r.answer.answer_id != body["answer_id"]:
            raise CheckError(200, "the node's record does not record this answer")
        return r

    def receive_grpc(self, idle: float = 1.5, keep=None) -> list:
        """`ProviderNotices.Receive`: the waiting notices, each verified and
        handed to `keep(notice, signed)` (store it durably there: it is
        acknowledged when `keep` returns), then acknowledged on the stream;
        stops once nothing came for `idle` s."""
        creds = grpc.ssl_channel_credentials(
            self.p.ca.read_bytes(), self.p.key.read_bytes(), self.p.cert.read_bytes()
        )
        opts = [("grpc.ssl_target_name_override", self.p.server_name),
                ("grpc.default_authority", self.p.server_name)]
        acks: "queue.Queue" = queue.Queue()

        def requests():
            while True:
                a = acks.get()
                if a is None:
                    return
                yield a

        got = []
        with grpc.secure_channel(self.p.address, creds, options=opts) as ch:
            stream = grpc_pb.ProviderNoticesStub(ch).Receive(requests())
            batches: "queue.Queue" = queue.Queue()

            def read():
                try:
                    for b in stream:
                        batches.put(b)
                except grpc.RpcError:
                    pass
                batches.put(None)

            threading.Thread(target=read, daemon=True).start()
            while True:
                try:
                    b = batches.get(timeout=idle)
                except queue.Empty:
                    break
                if b is None:
                    break
                ns = [verify_notice(sn, self.keyring, self.me) for sn in b.notices]
                if keep is not None:
                    for n, sn in zip(ns, b.notices):
                        keep(n, sn)
                got.extend(ns)
                acks.put(pb.NoticeAck(stored=[
                    pb.NoticeAttempt(notice_id=n.notice_id, attempt=n.attempt) for n in ns
                ]))
            time.sleep(0.3)
            acks.put(None)
            stream.cancel()
        return got
