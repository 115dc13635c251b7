"""Checks the vectors in this folder without any meldnet code: SHA-256 from
hashlib, Ed25519 from the `cryptography` package (OpenSSL), the tree and the
list digest as PROTOCOL.md describes them. Usage: python3 check.py [folder]
(`pip install cryptography` first)."""
import json, hashlib, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey, Ed25519PrivateKey
import os
d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
def L(n): return json.load(open(f"{d}/{n}"))
H = lambda b: hashlib.sha256(b).digest()
def check_sig(v, msg_field):
    pub = bytes.fromhex(v["signer"]["public_key_hex"])
    assert H(pub)[:8].hex() == v["key_id"]
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["signer"]["seed_hex"]))
    from cryptography.hazmat.primitives import serialization as s
    assert sk.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw) == pub
    msg = bytes.fromhex(v["context_prefix_hex"]) + bytes.fromhex(v[msg_field])
    assert msg.hex() == v["signed_bytes_hex"]
    assert sk.sign(msg).hex() == v["signature_hex"]
    Ed25519PublicKey.from_public_bytes(pub).verify(bytes.fromhex(v["signature_hex"]), msg)
r = L("report.json"); check_sig(r, "report_hex")
assert H(bytes.fromhex(r["report_hex"])).hex() == r["report_sha256_hex"]
dv = L("decision.json")
leaf = H(b"\0" + bytes.fromhex(dv["decision_hex"])); assert leaf.hex() == dv["leaf_hash_hex"]
node = lambda a, b: H(b"\1" + a + b)
def mth(ls):
    if len(ls) == 1: return ls[0]
    k = 1
    while k * 2 < len(ls): k *= 2
    return node(mth(ls[:k]), mth(ls[k:]))
leaves = [bytes.fromhex(x) for x in dv["all_leaf_hashes_hex"]]
assert mth(leaves).hex() == dv["root_hex"]
fn, sn, rr = dv["leaf_index"], dv["tree_size"] - 1, leaf
for p in map(bytes.fromhex, dv["audit_path_hex"]):
    assert sn != 0
    if fn & 1 or fn == sn:
        rr = node(p, rr)
        if not fn & 1:
            while not fn & 1 and fn != 0: fn >>= 1; sn >>= 1
    else:
        rr = node(rr, p)
    fn >>= 1; sn >>= 1
assert sn == 0 and rr.hex() == dv["root_hex"]
assert dv["tree_head_hex"] == dv["tree_size"].to_bytes(8, "big").hex() + dv["root_hex"]
check_sig(dv, "tree_head_hex")
assert bytes.fromhex(r["report_sha256_hex"]).hex() in dv["decision_hex"]
lh = L("list_head.json")
dd = bytes(32)
for c, want in zip(lh["changes_hex"], lh["digests_hex"]):
    dd = H(bytes.fromhex(lh["change_prefix_hex"]) + dd + bytes.fromhex(c)); assert dd.hex() == want
assert dd.hex() in lh["head_hex"]
check_sig(lh, "head_hex")
check_sig(L("notification.json"), "notification_hex")
check_sig(L("case_step.json"), "step_hex")
check_sig(L("notice.json"), "notice_hex")
check_sig(L("notice_answer.json"), "answer_record_hex")
check_sig(L("stats_export.json"), "stats_export_hex")
print("all vectors check with Python's cryptography (OpenSSL) and hashlib")

# The edge cases: OpenSSL is cofactorless, so it refuses the torsion case
# that meldnet's cofactored rule accepts (PROTOCOL.md 5.3).
from cryptography.exceptions import InvalidSignature
e = L("edge_cases.json")
pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["signer"]["public_key_hex"]))
msg = bytes.fromhex(e["signed_bytes_hex"])
for name, case in e["signatures"].items():
    try:
        pub.verify(bytes.fromhex(case["signature_hex"]), msg)
        got = "accept"
    except InvalidSignature:
        got = "reject"
    assert got == case["cofactorless"], name
    print(f"  {name}: OpenSSL {got}s, meldnet {case['meldnet']}s")

# Why a verifier must refuse small-order public keys itself: OpenSSL loads
# them, and under the identity key R = B, s = 1 "verifies" for any message.
ident = Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["refused_public_keys_hex"]["identity (order 1)"]))
B = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
try:
    ident.verify(B + (1).to_bytes(32, "little"), b"any message at all")
    print("  OpenSSL accepts a forgery under the identity key: refuse small-order keys when loading a keyring")
except InvalidSignature:
    print("  this OpenSSL refuses the identity-key forgery")
