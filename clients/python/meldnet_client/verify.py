"""What a recipient checks before it stores a delivery (PROTOCOL.md 8), from
public keys only: the hub's signature through the decision's tree, the
decision bound to the exact report bytes, the report itself, the node's
signature, and that the delivery is addressed to this recipient."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from . import ed25519, tree
from .keys import Keyring, valid_key_id
from .stubs import pb

REPORT = b"meldnet.v1.report\x00"
DECISION_TREE = b"meldnet.v1.decision-tree\x00"
LIST_HEAD = b"meldnet.v1.list-head\x00"
CASE_STEP = b"meldnet.v1.case-step\x00"
NOTIFICATION = b"meldnet.v1.notification\x00"
NOTICE = b"meldnet.v1.notice\x00"
NOTICE_ANSWER = b"meldnet.v1.notice-answer\x00"
STATS_EXPORT = b"meldnet.v1.stats-export\x00"

MAX_SIGNED_BYTES = 256 * 1024
_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_HEX = {n: re.compile(rf"^[0-9a-f]{{{n}}}$") for n in (32, 40, 64)}


class Refused(Exception):
    """A delivery that must not be stored; `str()` is the reason the hub
    records (`DeliveryAck.rejected`, 9.4), naming the field."""


class UnknownKey(Exception):
    """Signed by a key this keyring does not hold (yet): leave the delivery
    unacknowledged and update the keyring (8)."""


@dataclass
class Routed:
    report: object  # pb.Report
    decision: object  # pb.Decision
    report_digest: bytes


@dataclass
class Noticed:
    notification: object  # pb.Notification


def _envelope(field: str, data: bytes, signature: bytes, kid: str, most: int = MAX_SIGNED_BYTES) -> None:
    if len(data) > most:
        raise Refused(f"{field}: {len(data)} bytes, at most {most}")
    if len(signature) != 64:
        raise Refused(f"{field}.signature: {len(signature)} bytes, not 64")
    if not valid_key_id(kid):
        raise Refused(f"{field}.key_id: not 16 lower-case hex digits: {kid!r}")


def _key(keyring: Keyring, owner: str, kid: str, field: str) -> bytes:
    key = keyring.get(owner, kid)
    if key is None:
        raise UnknownKey(f"{field}.key_id: {kid} is not a key of {owner} in the keyring")
    return key


def verify_signed_decision(sd, keyring: Keyring):
    """The hub's signature over the tree head the decision's path leads to;
    returns the decoded `Decision`."""
    _envelope("decision", sd.decision, sd.signature, sd.key_id)
    if len(sd.audit_path) > tree.MAX_PATH:
        raise Refused(f"decision.audit_path: {len(sd.audit_path)} hashes, at most {tree.MAX_PATH}")
    if sd.tree_size == 0 or sd.leaf_index >= sd.tree_size:
        raise Refused(f"decision.leaf_index: {sd.leaf_index} is not in a tree of {sd.tree_size}")
    root = tree.root_from_path(
        tree.leaf_hash(sd.decision), sd.leaf_index, sd.tree_size, list(sd.audit_path)
    )
    if root is None:
        raise Refused("decision.audit_path: not an inclusion path of this leaf and tree size")
    key = _key(keyring, keyring.hub(), sd.key_id, "decision")
    if not ed25519.verify(key, DECISION_TREE + tree.tree_head(sd.tree_size, root), sd.signature):
        raise Refused("decision.signature: does not verify with the hub's key over the tree head")
    try:
        return pb.Decision.FromString(sd.decision)
    except DecodeError as e:
        raise Refused(f"decision: signed bytes do not decode: {e}") from e


def check_report(data: bytes):
    """Decodes a report from its signed bytes and checks what a recipient
    relies on (6.1): canonical bytes, id, country, items and their hashes."""
    try:
        r = pb.Report.FromString(data)
    except DecodeError as e:
        raise Refused(f"report: does not decode: {e}") from e
    if r.SerializeToString(deterministic=True) != data:
        raise Refused("report: not the canonical encoding")
    if not _UUID7.match(r.id):
        raise Refused(f"report.id: not a UUIDv7 in canonical lower-case text: {r.id!r}")
    if not _COUNTRY.match(r.origin_country):
        raise Refused(f"report.origin_country: not a country code: {r.origin_country!r}")
    if r.created_at_ms <= 0:
        raise Refused("report.created_at_ms: not after 1970")
    if not 1 <= len(r.items) <= 1000:
        raise Refused(f"report.items: {len(r.items)} items, 1 to 1000")
    for i, item in enumerate(r.items):
        if not _HEX[64].match(item.sha256):
            raise Refused(f"report.items[{i}].sha256: not 64 lower-case hex digits")
        if not _HEX[32].match(item.md5):
            raise Refused(f"report.items[{i}].md5: not 32 lower-case hex digits")
        if item.pdq and not _HEX[64].match(item.pdq):
            raise Refused(f"report.items[{i}].pdq: not 64 lower-case hex digits")
    return r


def verify_routed(sr, sd, keyring: Keyring, me: str) -> Routed:
    """Section 8, steps 1 to 5, for a routed report."""
    decision = verify_signed_decision(sd, keyring)
    _envelope("report", sr.report, sr.signature, sr.key_id)
    digest = hashlib.sha256(sr.report).digest()
    if decision.report_digest != digest:
        raise Refused("decision.report_digest: not the SHA-256 of the report bytes")
    report = check_report(sr.report)
    if decision.report_id != report.id:
        raise Refused(f"decision.report_id: {decision.report_id} but the report is {report.id}")
    origin = keyring.node(report.origin_country)
    if decision.origin != origin:
        raise Refused(f"decision.origin: {decision.origin} but the report is from {origin}")
    key = _key(keyring, origin, sr.key_id, "report")
    if not ed25519.verify(key, REPORT + sr.report, sr.signature):
        raise Refused(f"report.signature: does not verify with {origin}'s key {sr.key_id}")
    if me not in {r.identity for r in decision.recipients}:
        raise Refused(f"decision.recipients: {me} is not among them")
    return Routed(report, decision, digest)


def verify_notification(sn, keyring: Keyring, me: str) -> Noticed:
    """6.5: the hub's signature, a UUIDv7 id, addressed to this representative."""
    _envelope("notification", sn.notification, sn.signature, sn.key_id)
    key = _key(keyring, keyring.hub(), sn.key_id, "notification")
    if not ed25519.verify(key, NOTIFICATION + sn.notification, sn.signature):
        raise Refused("notification.signature: does not verify with the hub's key")
    try:
        n = pb.Notification.FromString(sn.notification)
    except DecodeError as e:
        raise Refused(f"notification: signed bytes do not decode: {e}") from e
    if not _UUID7.match(n.notification_id):
        raise Refused(f"notification.notification_id: not a UUIDv7: {n.notification_id!r}")
    if n.representative != me:
        raise Refused(f"notification.representative: {n.representative}, not {me}")
    return Noticed(n)


def verify_delivery(delivery, keyring: Keyring, me: str):
    """A `Delivery` (decoded): a `Routed` or a `Noticed`, or raises."""
    kind = delivery.WhichOneof("content")
    if kind == "routed":
        if not delivery.routed.HasField("report") or not delivery.routed.HasField("decision"):
            raise Refused("delivery.routed: a routed report carries the report and its decision")
        return verify_routed(delivery.routed.report, delivery.routed.decision, keyring, me)
    if kind == "notification":
        return verify_notification(delivery.notification, keyring, me)
    raise Refused("delivery.content: neither a routed report nor a notification")


def verify_list_head(sh, keyring: Keyring):
    """The hub's signature on a list head (10); returns the decoded `ListHead`."""
    _envelope("list_head", sh.head, sh.signature, sh.key_id)
    key = _key(keyring, keyring.hub(), sh.key_id, "list_head")
    if not ed25519.verify(key, LIST_HEAD + sh.head, sh.signature):
        raise Refused("list_head.signature: does not verify with the hub's key")
    return pb.ListHead.FromString(sh.head)


def list_digest(previous: bytes, change: bytes) -> bytes:
    """The running list digest after one more change (10)."""
    return hashlib.sha256(b"meldnet.v1.list-change\x00" + previous + change).digest()


def verify_notice(sn, keyring: Keyring, me: str | None = None):
    """16.1: a hotline node's notice, verified offline with that node's key
    from the keyring; canonical bytes; addressed to `me` when given.
    Returns the decoded `Notice`."""
    _envelope("notice", sn.notice, sn.signature, sn.key_id)
    try:
        n = pb.Notice.FromString(sn.notice)
    except DecodeError as e:
        raise Refused(f"notice: signed bytes do not decode: {e}") from e
    if n.SerializeToString(deterministic=True) != sn.notice:
        raise Refused("notice: not the canonical encoding")
    if not _COUNTRY.match(n.country) or n.hotline != keyring.node(n.country):
        raise Refused(f"notice.hotline: {n.hotline} is not the node of {n.country!r}")
    key = _key(keyring, n.hotline, sn.key_id, "notice")
    if not ed25519.verify(key, NOTICE + sn.notice, sn.signature):
        raise Refused(f"notice.signature: does not verify with {n.hotline}'s key {sn.key_id}")
    if not _UUID7.match(n.notice_id):
        raise Refused(f"notice.notice_id: not a UUIDv7: {n.notice_id!r}")
    if n.attempt < 1:
        raise Refused("notice.attempt: starts at 1")
    if me is not None and n.provider.identity != me:
        raise Refused(f"notice.provider.identity: {n.provider.identity}, not {me}")
    return n


def verify_answer_record(sr, keyring: Keyring):
    """16.3: the node's signed record of a provider's answer; returns the
    decoded `AnswerRecord`."""
    _envelope("answer_record", sr.answer_record, sr.signature, sr.key_id)
    try:
        r = pb.AnswerRecord.FromString(sr.answer_record)
    except DecodeError as e:
        raise Refused(f"record: signed bytes do not decode: {e}") from e
    key = _key(keyring, r.recorded_by, sr.key_id, "record")
    if not ed25519.verify(key, NOTICE_ANSWER + sr.answer_record, sr.signature):
        raise Refused(f"record.signature: does not verify with {r.recorded_by}'s key {sr.key_id}")
    return r


def verify_stats_export(se, keyring: Keyring):
    """6.6: the hub's signed statistics, verified offline with the hub's
    key; returns the decoded `StatsExport` (its `made_at_ms` is the date a
    regulator cites)."""
    # An export lists every provider: bounded by the message limit (16 MiB).
    _envelope("stats_export", se.stats_export, se.signature, se.key_id, 16 * 1024 * 1024)
    key = _key(keyring, keyring.hub(), se.key_id, "export")
    if not ed25519.verify(key, STATS_EXPORT + se.stats_export, se.signature):
        raise Refused("export.signature: does not verify with the hub's key")
    try:
        e = pb.StatsExport.FromString(se.stats_export)
    except DecodeError as err:
        raise Refused(f"stats_export: signed bytes do not decode: {err}") from err
    if e.hub != keyring.hub():
        raise Refused(f"export.hub: {e.hub} is not this federation's hub")
    return e
