"""Tampered deliveries are refused, never stored, and the refusals reach
the real hub. Between the client and the hub sits a relay holding the
hub's TLS certificate and the agency's credentials, but not the hub's or a
node's signing key (a compromised TLS terminator): it passes the real
hub's batches on with chosen deliveries changed."""

from __future__ import annotations

import json
from concurrent import futures

import grpc

from meldnet_client.config import RecipientConfig
from meldnet_client.inbox import RECEIVE, Inbox, channel
from meldnet_client.store import DeliveryStore
from meldnet_client.stubs import pb


def flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


class Relay:
    def __init__(self, fed, tamper) -> None:
        self.cfg = RecipientConfig.load(fed.agency_config())
        self.tamper = tamper
        hub = fed.root / "hub"
        creds = grpc.ssl_server_credentials(
            [((hub / "hub.key").read_bytes(), (hub / "hub.pem").read_bytes())],
            root_certificates=(fed.root / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handler = grpc.method_handlers_generic_handler(
            "meldnet.v1.Inbox",
            {
                "Receive": grpc.stream_stream_rpc_method_handler(
                    self.receive, request_deserializer=lambda b: b, response_serializer=lambda b: b
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def receive(self, requests, context):
        with channel(self.cfg) as up:
            call = up.stream_stream(RECEIVE, request_serializer=lambda b: b, response_deserializer=lambda b: b)(
                requests
            )
            for raw in call:
                batch = pb.DeliveryBatch.FromString(raw)
                if batch.deliveries:
                    for d in batch.deliveries:
                        self.tamper(d, batch)
                    raw = batch.SerializeToString()
                yield raw

    def stop(self) -> None:
        self.server.stop(0)


def test_tampered_deliveries_are_refused_and_the_hub_records_why(fed, tmp_path):
    ids = [fed.report() for _ in range(6)]
    changed = {}

    def tamper(d, batch):
        if d.WhichOneof("content") != "routed" or len(changed) >= 4 or d.seq in changed:
            return
        r = d.routed
        how = len(changed)
        if how == 0:
            r.report.report = flip(r.report.report, len(r.report.report) // 2)
        elif how == 1:
            r.decision.signature = flip(r.decision.signature, 5)
        elif how == 2:
            r.decision.decision = flip(r.decision.decision, len(r.decision.decision) - 3)
        else:
            # Another report, signed by its node, under this decision.
            other = next(x for x in batch.deliveries if x.seq != d.seq and x.seq not in changed)
            r.report.CopyFrom(other.routed.report)
        changed[d.seq] = how

    relay = Relay(fed, tamper)
    try:
        out = tmp_path / "out"
        s = Inbox(RecipientConfig.load(fed.agency_config()), DeliveryStore(out), address=f"127.0.0.1:{relay.port}").receive()
    finally:
        relay.stop()
    assert len(changed) == 4
    assert s.rejected == 4 and s.stored == 2, (s.rejections, s.stored_ids)
    assert {seq for seq, _ in s.rejections} == set(changed)
    reasons = [r for _, r in sorted(s.rejections)]
    for reason in reasons:
        assert reason.split(":")[0] in {"decision.report_digest", "decision.signature"}, reasons
    # Nothing tampered was stored; what was stored is untouched and verifies.
    stored = list(DeliveryStore(out).stored())
    assert {seq for _, seq, _ in stored}.isdisjoint(changed)
    assert {i for i, _, _ in stored} <= set(ids)
    lines = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert {x["seq"] for x in lines} == set(changed)
    # The real hub recorded the refusals and took them out of the queue.
    assert fed.stats()["deliveries_refused"] == 4
    s = Inbox(RecipientConfig.load(fed.agency_config()), DeliveryStore(out)).receive()
    assert (s.stored, s.again, s.rejected) == (0, 0, 0)
