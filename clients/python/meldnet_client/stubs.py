"""The generated protobuf and gRPC modules (`python3 -m meldnet_client.generate`).

Imported as `from meldnet_client.stubs import pb, grpc_pb` (`pb` holds every
message of `meldnet.v1`, `grpc_pb` the service stubs)."""

from __future__ import annotations

import sys
import types

from . import generate as _generate

if not (_generate.GEN / "PROTO_SHA256").exists():
    raise ImportError(
        "the meldnet stubs are not generated: run `python3 -m meldnet_client.generate`"
    )
if (_generate.GEN / "PROTO_SHA256").read_text().strip() != _generate.proto_digest():
    raise ImportError(
        "the meldnet stubs are older than proto/: run `python3 -m meldnet_client.generate`"
    )
if str(_generate.GEN) not in sys.path:
    sys.path.insert(0, str(_generate.GEN))

from meldnet.v1 import (  # noqa: E402
    decision_pb2,
    hashlist_pb2,
    hashlist_pb2_grpc,
    hub_pb2,
    hub_pb2_grpc,
    notice_pb2,
    notice_pb2_grpc,
    report_pb2,
    series_pb2,
    series_pb2_grpc,
)

pb = types.SimpleNamespace()
for _m in (report_pb2, decision_pb2, hashlist_pb2, series_pb2, hub_pb2, notice_pb2):
    for _name in _m.DESCRIPTOR.message_types_by_name:
        setattr(pb, _name, getattr(_m, _name))
    for _name in _m.DESCRIPTOR.enum_types_by_name:
        setattr(pb, _name, getattr(_m, _name))
grpc_pb = types.SimpleNamespace()
for _m in (hub_pb2_grpc, hashlist_pb2_grpc, series_pb2_grpc, notice_pb2_grpc):
    for _name in dir(_m):
        if _name.endswith("Stub"):
            setattr(grpc_pb, _name, getattr(_m, _name))
