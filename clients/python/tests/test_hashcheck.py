"""A hosting provider's hash check at its node, as a provider would call it:
the node's printed address and certificate name, a certificate from
`meldnet-certs provider`, HTTP/JSON and gRPC."""

from __future__ import annotations

import time

import pytest

from meldnet_client.hashcheck import CheckError, Provider

from conftest import binary, run


def test_a_provider_checks_hashes_over_json_and_grpc(fed, tmp_path):
    listed = tmp_path / "listed.bin"
    listed.write_bytes(b"made-up listed material" * 10)
    h = fed.hash_of(listed)
    csv = tmp_path / "list.csv"
    csv.write_text(f"sha256,pdq,pdq_quality,category,series\n{h['sha256']},,,1,series-7\n")
    run(binary("meldnet-hub"), "list", "import", "--operator", fed.operator_config(), "--source-country", "NL", csv)
    where = fed.serve_node("DE")
    out = tmp_path / "provider"
    run(binary("meldnet-certs"), "provider", "--node-dir", fed.root / "nodes" / "DE", "--name", "hoster1", "--out", out)
    p = Provider(where["listening"], where["server_name"], out / "ca.pem", out / "hoster1.pem", out / "hoster1.key")
    queries = [{"sha256": h["sha256"]}, {"md5": "ab" * 16}, {"sha256": "0" * 64, "md5": h["md5"]}]
    # The node follows the hub's list from its start: wait until it holds it.
    deadline = time.monotonic() + 20
    while True:
        answers = p.check_json(queries)
        if answers[0]["known"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answers == [
        {"known": True, "kind": "sha256", "distance": 0},
        {"known": False},
        {"known": False},
    ]
    g = p.check_grpc(queries)
    assert [a.known for a in g] == [True, False, False]
    # A malformed query refuses the whole call, naming it.
    with pytest.raises(CheckError) as e:
        p.check_json([{"sha256": "A" * 64}])
    assert e.value.status == 400 and "queries[0].sha256" in str(e.value)
    with pytest.raises(CheckError, match="queries\\[0\\].sha256"):
        p.check_grpc([{"sha256": "A" * 64}])
    # A federation member is no provider: refused by role.
    agency = fed.root / "agencies" / "DE-bka"
    member = Provider(where["listening"], where["server_name"], out / "ca.pem", agency / "agency.pem", agency / "agency.key")
    with pytest.raises(CheckError) as e:
        member.check_json(queries)
    assert e.value.status == 403
