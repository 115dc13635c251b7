"""Command line: `python3 -m meldnet_client receive --config agency.toml`,
`python3 -m meldnet_client verify --config agency.toml` (every stored
delivery again, from its bytes), `python3 -m meldnet_client check ...`."""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import threading


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="meldnet_client")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("receive", help="receive, verify, store, acknowledge")
    r.add_argument("--config", required=True, help="agency.toml (or a regulator's, representative's)")
    r.add_argument("--follow", action="store_true", help="keep the stream open until interrupted")
    v = sub.add_parser("verify", help="verify every stored delivery again from its bytes")
    v.add_argument("--config", required=True)
    c = sub.add_parser("check", help="a hosting provider's hash check (HTTP/JSON)")
    c.add_argument("--node", required=True, help="host:port the node printed")
    c.add_argument("--server-name", required=True, help="the node's certificate name (it printed it)")
    c.add_argument("--ca", required=True, type=pathlib.Path)
    c.add_argument("--cert", required=True, type=pathlib.Path)
    c.add_argument("--key", required=True, type=pathlib.Path)
    c.add_argument("--sha256", action="append", default=[])
    c.add_argument("--md5", action="append", default=[])
    c.add_argument("--grpc", action="store_true", help="call the gRPC method instead")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)

    from .config import RecipientConfig

    if args.command == "receive":
        from .inbox import Inbox

        inbox = Inbox(RecipientConfig.load(args.config))
        stop = threading.Event() if args.follow else None
        try:
            s = inbox.receive(follow=args.follow, stop=stop)
        except KeyboardInterrupt:
            return 130
        print(json.dumps({k: v for k, v in vars(s).items() if k != "rejections"}))
        return 0
    if args.command == "verify":
        from .config import identity_of
        from .keys import Keyring
        from .store import DeliveryStore
        from .stubs import pb
        from .verify import Refused, UnknownKey, verify_delivery

        cfg = RecipientConfig.load(args.config)
        keyring, me = Keyring.load(cfg.keyring), identity_of(cfg.tls.cert.read_bytes())
        bad = 0
        for ident, seq, data in DeliveryStore(cfg.out_dir).stored():
            try:
                verify_delivery(pb.Delivery.FromString(data), keyring, me)
                print(f"OK {ident} seq {seq}")
            except (Refused, UnknownKey) as e:
                bad += 1
                print(f"BAD {ident} seq {seq}: {e}")
        return 1 if bad else 0
    from .hashcheck import Provider

    p = Provider(args.node, args.server_name, args.ca, args.cert, args.key)
    queries = [{"sha256": h} for h in args.sha256] + [{"md5": h} for h in args.md5]
    if args.grpc:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps([MessageToDict(a) for a in p.check_grpc(queries)]))
    else:
        print(json.dumps(p.check_json(queries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
