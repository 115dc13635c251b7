"""The committed test vectors (PROTOCOL.md 12) verified with this client's
own code: what the Rust test makes from the seeds, Python checks."""

from __future__ import annotations

import hashlib
import json

import pytest

from meldnet_client import ed25519, tree
from meldnet_client.keys import Keyring, KeyringError, key_id
from meldnet_client.stubs import pb
from meldnet_client.verify import (
    CASE_STEP,
    Refused,
    UnknownKey,
    list_digest,
    verify_list_head,
    verify_answer_record,
    verify_notice,
    verify_notification,
    verify_routed,
    verify_stats_export,
)


def load(vectors, name):
    return json.loads((vectors / name).read_text())


def flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


@pytest.fixture
def keyring(vectors):
    return Keyring.load(vectors / "keyring.toml")


@pytest.fixture
def routed(vectors):
    r, d = load(vectors, "report.json"), load(vectors, "decision.json")
    sr = pb.SignedReport.FromString(bytes.fromhex(r["signed_report_hex"]))
    sd = pb.SignedDecision.FromString(bytes.fromhex(d["signed_decision_hex"]))
    me = pb.Decision.FromString(sd.decision).recipients[0].identity
    return sr, sd, me


def test_key_ids_and_signers(vectors):
    for name in ["report.json", "decision.json", "list_head.json", "notification.json", "case_step.json",
                 "notice.json", "notice_answer.json", "stats_export.json"]:
        v = load(vectors, name)
        public = bytes.fromhex(v["signer"]["public_key_hex"])
        assert key_id(public) == v["key_id"] == v["signer"]["key_id"], name
        signed = bytes.fromhex(v["signed_bytes_hex"])
        assert signed.startswith(bytes.fromhex(v["context_prefix_hex"]))
        assert ed25519.verify(public, signed, bytes.fromhex(v["signature_hex"])), name


def test_the_routed_report_verifies_and_its_report_encodes_canonically(routed, keyring, vectors):
    sr, sd, me = routed
    v = verify_routed(sr, sd, keyring, me)
    r = load(vectors, "report.json")
    assert sr.report.hex() == r["report_hex"]
    assert v.report_digest.hex() == r["report_sha256_hex"]
    # Python's encoder, given the decoded report, makes the signed bytes again.
    assert v.report.SerializeToString(deterministic=True).hex() == r["report_hex"]
    assert v.decision.report_id == v.report.id


def test_the_tree_root_from_the_leaves_and_from_the_path(vectors):
    d = load(vectors, "decision.json")
    leaf = tree.leaf_hash(bytes.fromhex(d["decision_hex"]))
    assert leaf.hex() == d["leaf_hash_hex"]
    leaves = [bytes.fromhex(x) for x in d["all_leaf_hashes_hex"]]
    assert tree.root_of(leaves).hex() == d["root_hex"]
    path = [bytes.fromhex(p) for p in d["audit_path_hex"]]
    assert tree.root_from_path(leaf, d["leaf_index"], d["tree_size"], path).hex() == d["root_hex"]
    assert tree.tree_head(d["tree_size"], bytes.fromhex(d["root_hex"])).hex() == d["tree_head_hex"]
    # At any other position or size the path gives no root, another root,
    # or (a tree of similar shape) the same root, under a head the hub's
    # signature does not cover: the signature binds the size.
    hub = bytes.fromhex(d["signer"]["public_key_hex"])
    signature = bytes.fromhex(d["signature_hex"])
    prefix = bytes.fromhex(d["context_prefix_hex"])
    for i in range(d["tree_size"] + 2):
        for n in range(1, d["tree_size"] + 5):
            if (i, n) != (d["leaf_index"], d["tree_size"]):
                got = tree.root_from_path(leaf, i, n, path)
                assert got is None or not ed25519.verify(hub, prefix + tree.tree_head(n, got), signature), (i, n)
    # The root of every leaf of the tree from its own path.
    for i in range(len(leaves)):
        p = inclusion_path(leaves, i)
        assert tree.root_from_path(leaves[i], i, len(leaves), p).hex() == d["root_hex"]


def inclusion_path(leaves, i):
    """RFC 6962's PATH(m, D[n]), to check `root_from_path` on every leaf."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if i < k:
        return inclusion_path(leaves[:k], i) + [tree.root_of(leaves[k:])]
    return inclusion_path(leaves[k:], i - k) + [tree.root_of(leaves[:k])]


def test_one_changed_byte_anywhere_is_refused(routed, keyring):
    sr, sd, me = routed
    cases = []
    for i in range(len(sr.report)):
        cases.append(("report", i))
    for i in range(64):
        cases.append(("report_signature", i))
        cases.append(("decision_signature", i))
    for i in range(len(sd.decision)):
        cases.append(("decision", i))
    for j, p in enumerate(sd.audit_path):
        for i in range(0, 32, 7):
            cases.append((f"path{j}", i))
    for what, i in cases:
        r, d = pb.SignedReport(), pb.SignedDecision()
        r.CopyFrom(sr)
        d.CopyFrom(sd)
        if what == "report":
            r.report = flip(sr.report, i)
        elif what == "report_signature":
            r.signature = flip(sr.signature, i)
        elif what == "decision_signature":
            d.signature = flip(sd.signature, i)
        elif what == "decision":
            d.decision = flip(sd.decision, i)
        else:
            j = int(what[4:])
            d.audit_path[j] = flip(sd.audit_path[j], i)
        with pytest.raises(Refused):
            verify_routed(r, d, keyring, me)
    for change in [dict(leaf_index=sd.leaf_index + 1), dict(tree_size=sd.tree_size + 1), dict(leaf_index=sd.tree_size)]:
        d = pb.SignedDecision()
        d.CopyFrom(sd)
        for k, val in change.items():
            setattr(d, k, val)
        with pytest.raises(Refused):
            verify_routed(sr, d, keyring, me)


def test_not_addressed_to_me_and_unknown_keys(routed, keyring):
    sr, sd, me = routed
    with pytest.raises(Refused, match="recipients"):
        verify_routed(sr, sd, keyring, "spiffe://vectors.meldnet.test/agency/FR/police")
    # A keyring without the node's key: not a bad delivery, an unknown key.
    hub_only = Keyring(keyring.federation, {k: v for k, v in keyring.keys.items() if k[0] == keyring.hub()})
    with pytest.raises(UnknownKey):
        verify_routed(sr, sd, hub_only, me)


def test_the_list_head_and_its_chained_digest(vectors, keyring):
    lh = load(vectors, "list_head.json")
    d = bytes(32)
    prefix = bytes.fromhex(lh["change_prefix_hex"])
    assert prefix == b"meldnet.v1.list-change\x00"
    for change, want in zip(lh["changes_hex"], lh["digests_hex"]):
        d = list_digest(d, bytes.fromhex(change))
        assert d.hex() == want
    head = verify_list_head(pb.SignedListHead.FromString(bytes.fromhex(lh["signed_list_head_hex"])), keyring)
    assert (head.version, head.count, head.digest) == (3, 1, d)
    kinds = [pb.ListChange.FromString(bytes.fromhex(c)).WhichOneof("change") for c in lh["changes_hex"]]
    assert kinds == ["add", "add", "withdraw"]


def test_the_notification_and_the_case_step(vectors, keyring):
    n = load(vectors, "notification.json")
    sn = pb.SignedNotification.FromString(bytes.fromhex(n["signed_notification_hex"]))
    rep = pb.Notification.FromString(sn.notification).representative
    v = verify_notification(sn, keyring, rep)
    assert v.notification.WhichOneof("body") == "proceedings"
    with pytest.raises(Refused, match="representative"):
        verify_notification(sn, keyring, rep + "x")
    bad = pb.SignedNotification()
    bad.CopyFrom(sn)
    bad.notification = flip(sn.notification, 9)
    with pytest.raises(Refused):
        verify_notification(bad, keyring, rep)
    c = load(vectors, "case_step.json")
    sc = pb.SignedCaseStep.FromString(bytes.fromhex(c["signed_case_step_hex"]))
    key = keyring.get(keyring.node("NL"), sc.key_id)
    assert ed25519.verify(key, CASE_STEP + sc.step, sc.signature)
    step = pb.CaseStep.FromString(sc.step)
    assert step.SerializeToString(deterministic=True) == sc.step
    assert step.provider.name


def test_edge_cases_fall_as_meldnet_decides(vectors):
    e = load(vectors, "edge_cases.json")
    public = bytes.fromhex(e["signer"]["public_key_hex"])
    message = bytes.fromhex(e["signed_bytes_hex"])
    assert message == bytes.fromhex(e["context_prefix_hex"]) + bytes.fromhex(e["message_hex"])
    for name, case in e["signatures"].items():
        got = ed25519.verify(public, message, bytes.fromhex(case["signature_hex"]))
        assert got == (case["meldnet"] == "accept"), name
    for name, hexkey in e["refused_public_keys_hex"].items():
        with pytest.raises(KeyringError, match="small order"):
            Keyring.parse(
                {"federation": "vectors.meldnet.test",
                 "keys": [{"owner": "spiffe://vectors.meldnet.test/hub", "public_key": hexkey}]}
            )
        assert ed25519.small_order(bytes.fromhex(hexkey)), name


def test_the_keyring_refuses_what_it_cannot_use():
    base = {"federation": "eu.test", "keys": []}
    good = "a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0"
    for doc, field in [
        ({**base, "extra": 1}, "unknown key extra"),
        ({**base, "federation": "EU"}, "federation"),
        ({**base, "keys": [{"owner": "spiffe://eu.test/agency/DE/bka", "public_key": good}]}, "owner"),
        ({**base, "keys": [{"owner": "spiffe://eu.test/hub", "public_key": good.upper()}]}, "public_key"),
    ]:
        with pytest.raises(KeyringError, match=field):
            Keyring.parse(doc)
    assert hashlib.sha256(bytes.fromhex(good)).digest()[:8].hex() == key_id(bytes.fromhex(good))


def test_the_notice_and_the_answer_record_verify_offline(vectors, keyring):
    v = load(vectors, "notice.json")
    sn = pb.SignedNotice.FromString(bytes.fromhex(v["signed_notice_hex"]))
    me = f"spiffe://{keyring.federation}/provider/NL/example-hosting"
    n = verify_notice(sn, keyring, me)
    assert n.notice_id == "0192f1a0-6c00-7000-8000-0000000000e1" and n.attempt == 1
    with pytest.raises(Refused, match="notice.provider.identity"):
        verify_notice(sn, keyring, me.replace("example-hosting", "other"))
    bad = pb.SignedNotice(notice=flip(sn.notice, 9), signature=sn.signature, key_id=sn.key_id)
    with pytest.raises(Refused):
        verify_notice(bad, keyring)
    a = load(vectors, "notice_answer.json")
    sr = pb.SignedAnswerRecord.FromString(bytes.fromhex(a["signed_answer_record_hex"]))
    r = verify_answer_record(sr, keyring)
    assert r.answer.notice_id == n.notice_id and r.answer.reason == pb.RefusalReason.REFUSAL_REASON_LEGAL_DISPUTE
    bad = pb.SignedAnswerRecord(answer_record=flip(sr.answer_record, 4), signature=sr.signature, key_id=sr.key_id)
    with pytest.raises(Refused):
        verify_answer_record(bad, keyring)


def test_the_stats_export_verifies_with_the_hubs_key(vectors, keyring):
    v = load(vectors, "stats_export.json")
    se = pb.SignedStatsExport.FromString(bytes.fromhex(v["signed_stats_export_hex"]))
    e = verify_stats_export(se, keyring)
    assert e.made_at_ms == 1_730_000_007_000 and e.stats.providers[0].removed_in_time == 2
    bad = pb.SignedStatsExport(stats_export=flip(se.stats_export, 3), signature=se.signature, key_id=se.key_id)
    with pytest.raises(Refused):
        verify_stats_export(bad, keyring)
