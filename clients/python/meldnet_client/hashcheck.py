"""A hosting provider's hash check at its country's node (PROTOCOL.md 11):
`POST /v1/check` (HTTP/JSON, standard library only) or the gRPC method
`meldnet.v1.HashCheck/Check`, both over mTLS with the certificate the
node's provider CA issued."""

from __future__ import annotations

import http.client
import json
import pathlib
import socket
import ssl
from dataclasses import dataclass

import grpc

from .stubs import grpc_pb, pb


class CheckError(Exception):
    """The node refused the call; `status` is the HTTP status (or None for
    gRPC) and the message is the node's, naming the field."""

    def __init__(self, status, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, checking the certificate for another name (the
    node's hash-check name, not its IP address)."""

    def __init__(self, host: str, port: int, server_name: str, context, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


@dataclass(frozen=True)
class Provider:
    """Where a provider's node listens and the provider's credentials (PEM
    files): the node's CA for providers (`ca.pem`, written beside the
    certificate by `meldnet-certs provider`), the certificate and its key."""

    address: str  # host:port, as `meldnet-node serve` prints it
    server_name: str  # the name in the node's hash-check certificate
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path

    def call_json(self, method: str, path: str, body=None, timeout: float = 30):
        """One HTTP/JSON call on the node's provider port (mTLS, TLS 1.3,
        HTTP/1.1); returns the decoded answer, or raises `CheckError` with
        the node's message."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(str(self.cert), str(self.key))
        host, port = self.address.rsplit(":", 1)
        conn = _Connection(host, int(port), self.server_name, ctx, timeout)
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

    def check_json(self, queries: list, timeout: float = 30) -> list:
        """Each query a dict of `sha256`, `md5`, `sha1`, `pdq`,
        `pdq_quality`; returns the node's answers (dicts), one per query."""
        return self.call_json("POST", "/v1/check", {"queries": queries}, timeout)["answers"]

    def check_grpc(self, queries: list, timeout: float = 30) -> list:
        """The same over gRPC: `HashQuery` messages in, `HashAnswer` out."""
        creds = grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes()
        )
        opts = [("grpc.ssl_target_name_override", self.server_name), ("grpc.default_authority", self.server_name)]
        with grpc.secure_channel(self.address, creds, options=opts) as ch:
            try:
                resp = grpc_pb.HashCheckStub(ch).Check(
                    pb.CheckRequest(queries=[pb.HashQuery(**q) for q in queries]), timeout=timeout
                )
            except grpc.RpcError as e:
                raise CheckError(None, f"{e.code().name}: {e.details()}") from e
        return list(resp.answers)
