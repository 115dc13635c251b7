"""The client against a real hub: receive, verify, store before
acknowledging, acknowledge; never anything again once confirmed; resume
after a crash of the client between storing and acknowledging, and after a
SIGKILL of the hub; a key not yet in the keyring leaves deliveries queued."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from meldnet_client.config import RecipientConfig
from meldnet_client.inbox import Inbox
from meldnet_client.store import DeliveryStore
from meldnet_client.stubs import pb
from meldnet_client.verify import verify_delivery


def inbox(fed, out=None, **kw) -> Inbox:
    cfg = RecipientConfig.load(fed.agency_config())
    if out is not None:
        cfg = RecipientConfig(cfg.keyring, out, cfg.hub_address, cfg.hub_server_name, cfg.tls)
    return Inbox(cfg, **kw)


def test_receive_verify_store_acknowledge_and_nothing_comes_again(fed):
    ids = [fed.report() for _ in range(3)]
    box = inbox(fed)
    s = box.receive()
    assert sorted(s.stored_ids) == sorted(ids)
    assert (s.stored, s.again, s.rejected, s.unknown_key) == (3, 0, 0, 0)
    assert s.confirmed == 3 and s.redelivered_after_ack == 0
    # What is stored is the bytes as received: it verifies again from them.
    stored = list(box.store.stored())
    assert sorted(i for i, _, _ in stored) == sorted(ids)
    for _, seq, data in stored:
        d = pb.Delivery.FromString(data)
        assert d.seq == seq
        verify_delivery(d, box.keyring, box.me)
    # Acknowledged and confirmed: a new session gets nothing of it again.
    s = inbox(fed).receive()
    assert (s.stored, s.again, s.redelivered_after_ack) == (0, 0, 0)
    # Later reports come, and only they.
    more = [fed.report() for _ in range(2)]
    s = inbox(fed).receive()
    assert sorted(s.stored_ids) == sorted(more)
    assert s.again == 0 and s.redelivered_after_ack == 0
    seqs = [seq for _, seq, _ in DeliveryStore(box.store.root).stored()]
    assert len(seqs) == len(set(seqs)) == 5


class Crash(Exception):
    pass


class CrashBeforeAck(DeliveryStore):
    """Stores, then dies before the acknowledgement is sent (as a process
    killed between its flush and its ack would)."""

    def flush(self):
        super().flush()
        raise Crash()


def test_a_crash_between_store_and_ack_resumes_without_loss_or_double(fed, tmp_path):
    ids = [fed.report() for _ in range(4)]
    out = tmp_path / "agency-out"
    with pytest.raises(Crash):
        inbox(fed, out, store=CrashBeforeAck(out)).receive()
    # Stored (durably) but never acknowledged: they come again, are found
    # stored with the same bytes, and are acknowledged this time.
    first = list(DeliveryStore(out).stored())
    assert first and {i for i, _, _ in first} <= set(ids)
    s = inbox(fed, out).receive()
    assert s.again == len(first)
    assert s.stored + s.again == 4 and s.redelivered_after_ack == 0
    assert sorted(i for i, _, _ in DeliveryStore(out).stored()) == sorted(ids)
    s = inbox(fed, out).receive()
    assert (s.stored, s.again) == (0, 0)


def test_the_hub_killed_and_started_again_the_client_resumes(fed, tmp_path):
    ids = [fed.report() for _ in range(3)]
    fed.kill_hub()
    box = inbox(fed, tmp_path / "out")
    result = {}

    def receive():
        try:
            result["summary"] = box.receive(retries=10)
        except Exception as e:  # noqa: BLE001 - shown by the assertion below
            result["error"] = e

    t = threading.Thread(target=receive)
    t.start()
    time.sleep(1.0)
    fed.start_hub()
    t.join(60)
    assert "error" not in result, result.get("error")
    s = result["summary"]
    assert s.sessions > 1
    assert sorted(s.stored_ids) == sorted(ids) and s.redelivered_after_ack == 0


def test_a_key_not_in_the_keyring_leaves_the_delivery_queued(fed, tmp_path):
    rid = fed.report()
    cfg = RecipientConfig.load(fed.agency_config())
    # A keyring without node NL's keys (a node's new key not yet given).
    partial = tmp_path / "keyring.toml"
    text = cfg.keyring.read_text()
    blocks = text.split("[[keys]]")
    partial.write_text("[[keys]]".join(b for b in blocks if "/node/NL" not in b))
    narrow = RecipientConfig(partial, tmp_path / "out", cfg.hub_address, cfg.hub_server_name, cfg.tls)
    s = Inbox(narrow).receive()
    assert (s.stored, s.rejected, s.unknown_key) == (0, 0, 1)
    # With the keyring brought up to date it comes again and is stored.
    shutil.copy(cfg.keyring, partial)
    s = Inbox(narrow).receive()
    assert s.stored_ids == [rid]
