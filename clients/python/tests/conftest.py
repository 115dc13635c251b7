"""A real federation for the client's tests: certificates from
`meldnet-certs init`, `meldnet-hub serve` and `meldnet-node serve` as
processes on loopback, reports made and submitted by `meldnet-node`. The
binaries are the workspace's (`target/debug`, or `MELDNET_BIN_DIR`); they are
built when missing."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CLIENT = HERE.parent
REPO = CLIENT.parent.parent
sys.path.insert(0, str(CLIENT))

# The stubs, from the protos as they are now (never stale ones).
from meldnet_client import generate  # noqa: E402

generate.generate()

FEDERATION = "eu.meldnet.test"
BIN_DIR = pathlib.Path(os.environ.get("MELDNET_BIN_DIR", REPO / "target" / "debug"))


def binary(name: str) -> pathlib.Path:
    path = BIN_DIR / name
    if not path.exists():
        subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=REPO, check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[:3]} exited {p.returncode}: {p.stdout}\n{p.stderr}")
    return p


class Federation:
    """One federation in a temporary folder: nodes NL and DE, police DE."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root / "fed"
        self.hub_addr = f"127.0.0.1:{free_port()}"
        run(
            binary("meldnet-certs"), "init", "--dir", self.root, "--federation", FEDERATION,
            "--nodes", "NL,DE", "--agencies", "DE/bka", "--hub-addr", self.hub_addr,
        )
        self.hub = None
        self.nodes = {}
        self._n = 0

    def agency_config(self, name: str = "DE-bka") -> pathlib.Path:
        return self.root / "agencies" / name / "agency.toml"

    def operator_config(self) -> pathlib.Path:
        return self.root / "operators" / "admin" / "operator.toml"

    def node_config(self, cc: str) -> pathlib.Path:
        return self.root / "nodes" / cc / "node.toml"

    def _serve(self, args, ready: pathlib.Path, log: pathlib.Path):
        ready.unlink(missing_ok=True)
        child = subprocess.Popen(
            [str(a) for a in args] + ["--ready-file", str(ready)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(log, "ab"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text().strip()):
            if child.poll() is not None:
                raise AssertionError(f"{args[:2]} exited {child.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                child.kill()
                raise AssertionError(f"{args[:2]} did not start: {log.read_text()}")
            time.sleep(0.02)
        return child

    def start_hub(self) -> None:
        self.hub = self._serve(
            [binary("meldnet-hub"), "serve", "--config", self.root / "hub" / "hub.toml"],
            self.root.parent / "hub.ready", self.root.parent / "hub.log",
        )

    def kill_hub(self) -> None:
        self.hub.send_signal(signal.SIGKILL)
        self.hub.wait()
        self.hub = None

    def serve_node(self, cc: str) -> dict:
        """`meldnet-node serve`: returns the JSON line it prints first (where
        providers call it, and the name its certificate holds)."""
        child = self._serve(
            [binary("meldnet-node"), "serve", "--config", self.node_config(cc)],
            self.root.parent / f"node-{cc}.ready", self.root.parent / f"node-{cc}.log",
        )
        self.nodes[cc] = child
        return json.loads(child.stdout.readline())

    def report(self, cc: str = "NL", hosting: str = "DE", files: int = 1) -> str:
        """A report of made-up files (never imagery) made and submitted by
        node `cc`; returns its id."""
        self._n += 1
        paths = []
        for i in range(files):
            p = self.root.parent / f"file-{self._n}-{i}.bin"
            p.write_bytes(f"made-up material {self._n}/{i}".encode() * 7)
            paths.append(p)
        out = run(
            binary("meldnet-node"), "report", "new", "--config", self.node_config(cc),
            "--url", f"https://h{self._n}.example.de/x", "--classification", "baseline",
            "--age-group", "prepubescent", "--hosting", hosting, "--submit", *paths,
        )
        return json.loads(out.stdout.splitlines()[0])["report_id"]

    def hash_of(self, path: pathlib.Path) -> dict:
        out = run(binary("meldnet-node"), "hash", "--json", path)
        return json.loads(out.stdout.splitlines()[0])

    def stats(self) -> dict:
        out = run(binary("meldnet-hub"), "admin", "--operator", self.operator_config(), "stats", "--json")
        return json.loads(out.stdout)

    def stop(self) -> None:
        for child in [self.hub, *self.nodes.values()]:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture
def fed(tmp_path):
    f = Federation(tmp_path)
    f.start_hub()
    yield f
    f.stop()


@pytest.fixture(scope="session")
def vectors() -> pathlib.Path:
    return REPO / "proto" / "vectors"
