"""Standard notices as a provider's own code takes them (PROTOCOL.md 16):
node DE serves notices for its register; a report from NL about a URL its
provider serves becomes a notice the provider fetches over HTTP/JSON or
gRPC, verifies offline with the node's key, acknowledges and answers; the
node's signed record of the answer verifies."""

from __future__ import annotations

import time

import pytest

from meldnet_client.hashcheck import CheckError, Provider
from meldnet_client.keys import Keyring
from meldnet_client.notices import NoticeClient, uuid7

from conftest import FEDERATION, binary, run


def client(fed, where, tmp_path, name):
    out = tmp_path / name
    run(binary("meldnet-certs"), "provider", "--node-dir", fed.root / "nodes" / "DE", "--name", name, "--out", out)
    p = Provider(where["listening"], where["server_name"], out / "ca.pem", out / f"{name}.pem", out / f"{name}.key")
    keyring = Keyring.load(fed.root / "keyring.toml")
    return NoticeClient(p, keyring, f"spiffe://{FEDERATION}/provider/DE/{name}")


def wait(f, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        got = f()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_a_provider_receives_verifies_and_answers_its_notices(fed, tmp_path):
    cfg = fed.node_config("DE")
    cfg.write_text(
        cfg.read_text()
        + '\n[notices]\n\n[[notices.providers]]\nname = "hoster1"\nasn = 64500\nhostnames = ["example.de"]\n'
        + '\n[[notices.providers]]\nname = "hoster2"\nasn = 64501\nhostnames = ["example.org"]\n'
    )
    where = fed.serve_node("DE")
    c1 = client(fed, where, tmp_path, "hoster1")
    c2 = client(fed, where, tmp_path, "hoster2")

    fed.report("NL", "DE")
    got = wait(c1.pending)
    assert len(got) == 1
    n = got[0]
    assert n.attempt == 1 and n.url.startswith("https://h") and n.provider.asn == 64500
    assert n.hotline == f"spiffe://{FEDERATION}/node/DE"
    assert c2.pending() == []
    assert c1.acknowledge(got) == 1
    assert c1.pending() == []

    r = c1.answer(n.notice_id, "removed")
    assert r.recorded_by == f"spiffe://{FEDERATION}/node/DE"
    # Another provider may not answer it; a refusal without a reason is refused.
    with pytest.raises(CheckError) as e:
        c2.answer(n.notice_id, "removed")
    assert e.value.status == 404
    with pytest.raises(CheckError) as e:
        c1.answer(n.notice_id, "refused")
    assert e.value.status == 400 and "answer.reason" in str(e.value)
    # The same answer id again: the same record.
    aid = uuid7()
    first = c1.answer(n.notice_id, "received", answer_id=aid)
    assert c1.answer(n.notice_id, "received", answer_id=aid) == first

    # gRPC: the next notice pushed on the stream, acknowledged there.
    fed.report("NL", "DE")
    kept = []
    pushed = wait(lambda: c1.receive_grpc(keep=lambda n, sn: kept.append(sn.SerializeToString())))
    assert len(pushed) == 1 and pushed[0].notice_id != n.notice_id
    assert len(kept) == 1
    assert c1.pending() == []
