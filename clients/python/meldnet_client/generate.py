"""Generates the Python stubs from the repository's `proto/` with Google's
`protoc` (PyPI `grpcio-tools`), into `meldnet_client/_gen/`. Run
`python3 -m meldnet_client.generate` after every change to `proto/`; the
client refuses to start on stubs older than the protos (see `stubs.py`)."""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
GEN = HERE / "_gen"
PROTO_ROOT = HERE.parent.parent.parent / "proto"
# The wire protocol; store.proto holds on-disk records, not needed here.
FILES = ["report", "decision", "hashlist", "series", "hub", "notice"]


def proto_digest() -> str:
    """SHA-256 over the protos the stubs come from, to tell stale stubs."""
    h = hashlib.sha256()
    for name in FILES:
        h.update((PROTO_ROOT / "meldnet" / "v1" / f"{name}.proto").read_bytes())
    return h.hexdigest()


def generate() -> None:
    from grpc_tools import protoc

    if GEN.exists():
        shutil.rmtree(GEN)
    GEN.mkdir()
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
    ] + [str(PROTO_ROOT / "meldnet" / "v1" / f"{n}.proto") for n in FILES]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on proto/meldnet/v1 (see above)")
    (GEN / "PROTO_SHA256").write_text(proto_digest() + "\n")


if __name__ == "__main__":
    generate()
    print(f"stubs written to {GEN}", file=sys.stderr)
