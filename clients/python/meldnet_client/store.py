"""Where a recipient keeps what it received, durably, before it acknowledges
(PROTOCOL.md 8 step 6 and 9.2).

Layout of the folder:

- `deliveries/<id>.<seq>.pb`: each verified delivery's bytes exactly as the
  hub sent them (the `Delivery` message), so it re-verifies later from the
  stored bytes alone. Written to a temporary name, flushed, renamed, and the
  folder flushed: once `put` returns, a crash does not lose it.
- `confirmed`: the seqs whose acknowledgement the hub confirmed (`acked`),
  one per line, flushed; a confirmed seq must never come again.
- `rejected.jsonl`: each delivery refused, with its seq and reason.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

_ID = re.compile(r"^[0-9a-f-]{36}$")


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DeliveryStore:
    def __init__(self, root) -> None:
        self.root = pathlib.Path(root)
        self.dir = self.root / "deliveries"
        self.dir.mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.root)
        self._confirmed_path = self.root / "confirmed"
        self.confirmed = set()
        if self._confirmed_path.exists():
            for n, line in enumerate(self._confirmed_path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                if not line.isdigit():
                    raise ValueError(f"{self._confirmed_path}: line {n}: not a seq: {line!r}")
                self.confirmed.add(int(line))

    def path_of(self, ident: str, seq: int) -> pathlib.Path:
        if not _ID.match(ident):
            raise ValueError(f"not an id to name a file by: {ident!r}")
        return self.dir / f"{ident}.{seq}.pb"

    def put(self, ident: str, seq: int, data: bytes) -> bool:
        """Stores `data` durably; False when these very bytes were stored
        before (a redelivery of an unconfirmed acknowledgement). Other bytes
        under the same id and seq are an error: the queue position is the
        hub's, and it never changes what it holds."""
        path = self.path_of(ident, seq)
        if path.exists():
            if path.read_bytes() == data:
                return False
            raise ValueError(f"{path.name}: other bytes are stored for this id and seq")
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True

    def flush(self) -> None:
        """Makes the renames of `put` durable: call before acknowledging."""
        _fsync_dir(self.dir)

    def confirm(self, seqs) -> None:
        new = [s for s in seqs if s not in self.confirmed]
        if not new:
            return
        with open(self._confirmed_path, "a") as f:
            f.write("".join(f"{s}\n" for s in new))
            f.flush()
            os.fsync(f.fileno())
        self.confirmed.update(new)

    def reject(self, seq: int, reason: str) -> None:
        with open(self.root / "rejected.jsonl", "a") as f:
            f.write(json.dumps({"seq": seq, "reason": reason}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def stored(self):
        """(id, seq, bytes) of every stored delivery, in file-name order."""
        for p in sorted(self.dir.glob("*.pb")):
            ident, seq, _ = p.name.rsplit(".", 2)
            yield ident, int(seq), p.read_bytes()
