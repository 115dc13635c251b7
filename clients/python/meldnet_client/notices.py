"""A hosting provider's side of standard notices (PROTOCOL.md 16), on the
same port and credentials as hash checks: the waiting notices, each
verified offline with the hotline node's key before it is acknowledged, and
answers, whose signed records from the node are verified too. HTTP/JSON
with the standard library, or gRPC (`meldnet.v1.ProviderNotices`)."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
import os
import time

import grpc

from .hashcheck import CheckError, Provider, _Connection
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

    def _json(self, method: str, path: str, body=None, timeout: float = 30):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.p.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(str(self.p.cert), str(self.p.key))
        host, port = self.p.address.rsplit(":", 1)
        conn = _Connection(host, int(port), self.p.server_name, ctx, timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CheckError(resp.status, f"not JSON: {raw[:200]!r}") from e
        if resp.status != 200:
            raise CheckError(resp.status, doc.get("error", str(doc)))
        return doc

    def pending(self) -> list:
        """`GET /v1/notices`: each waiting notice, verified from its signed
        bytes; returns the decoded `Notice` messages (refuses the lot if one
        does not verify)."""
        out = []
        for n in self._json("GET", "/v1/notices")["notices"]:
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
        return self._json("POST", "/v1/notices/ack", {"stored": stored})["acknowledged"]

    def answer(self, notice_id: str, kind: str, reason: str | None = None,
               detail: str = "", at_ms: int = 0, answer_id: str | None = None):
        """`POST /v1/notices/answer`; returns the node's `AnswerRecord`,
        verified, after checking it records this answer."""
        body = {"notice_id": notice_id, "answer_id": answer_id or uuid7(), "kind": kind,
                "detail": detail, "at_ms": at_ms}
        if reason is not None:
            body["reason"] = reason
        doc = self._json("POST", "/v1/notices/answer", body)
        sr = pb.SignedAnswerRecord(
            answer_record=base64.b64decode(doc["record"]),
            signature=base64.b64decode(doc["signature"]),
            key_id=doc["key_id"],
        )
        r = verify_answer_record(sr, self.keyring)
        if r.provider != self.me or r.answer.answer_id != body["answer_id"]:
            raise CheckError(200, "the node's record does not record this answer")
        return r

    def receive_grpc(self, idle: float = 1.5) -> list:
        """`ProviderNotices.Receive`: the waiting notices, verified, then
        acknowledged on the stream; stops once nothing came for `idle` s."""
        creds = grpc.ssl_channel_credentials(
            self.p.ca.read_bytes(), self.p.key.read_bytes(), self.p.cert.read_bytes()
        )
        opts = [("grpc.ssl_target_name_override", self.p.server_name),
                ("grpc.default_authority", self.p.server_name)]
        import queue
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
            import threading
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
                got.extend(ns)
                acks.put(pb.NoticeAck(stored=[
                    pb.NoticeAttempt(notice_id=n.notice_id, attempt=n.attempt) for n in ns
                ]))
            time.sleep(0.3)
            acks.put(None)
            stream.cancel()
        return got
