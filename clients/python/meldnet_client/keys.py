"""The keyring (`keyring.toml`, PROTOCOL.md 13.1): the public keys of the hub
and of every node, looked up by owner and key id (5.1)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass

from . import ed25519

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_FEDERATION = re.compile(r"^(?=.{1,253}$)[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*$")


def key_id(public_key: bytes) -> str:
    """The first 8 bytes of SHA-256 of the key, in lower-case hex (1)."""
    return hashlib.sha256(public_key).digest()[:8].hex()


def valid_key_id(k: str) -> bool:
    return bool(_KEY_ID.match(k))


class KeyringError(ValueError):
    """A keyring that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Keyring:
    federation: str
    # (owner, key id) -> 32 public-key bytes
    keys: dict

    @staticmethod
    def load(path) -> "Keyring":
        with open(path, "rb") as f:
            try:
                doc = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise KeyringError(f"{path}: {e}") from e
        return Keyring.parse(doc, str(path))

    @staticmethod
    def parse(doc: dict, where: str = "keyring") -> "Keyring":
        unknown = set(doc) - {"federation", "keys"}
        if unknown:
            raise KeyringError(f"{where}: unknown key {sorted(unknown)[0]}")
        federation = doc.get("federation")
        if not isinstance(federation, str) or not _FEDERATION.match(federation):
            raise KeyringError(f"{where}: federation: not a federation name: {federation!r}")
        keys = {}
        hub = f"spiffe://{federation}/hub"
        node = re.compile(rf"^spiffe://{re.escape(federation)}/node/[A-Z]{{2}}$")
        for i, k in enumerate(doc.get("keys", [])):
            at = f"{where}: keys[{i}]"
            if set(k) - {"owner", "public_key"}:
                raise KeyringError(f"{at}: unknown key {sorted(set(k) - {'owner', 'public_key'})[0]}")
            owner, hexkey = k.get("owner"), k.get("public_key")
            if not isinstance(owner, str) or not (owner == hub or node.match(owner)):
                raise KeyringError(f"{at}.owner: not the hub or a node of {federation}: {owner!r}")
            if not isinstance(hexkey, str) or not _HEX64.match(hexkey):
                raise KeyringError(f"{at}.public_key: not 64 lower-case hex digits")
            public = bytes.fromhex(hexkey)
            try:
                ed25519.check_public_key(public)
            except ed25519.KeyError_ as e:
                raise KeyringError(f"{at}.public_key: {e}") from e
            keys[(owner, key_id(public))] = public
        return Keyring(federation, keys)

    def hub(self) -> str:
        return f"spiffe://{self.federation}/hub"

    def node(self, country: str) -> str:
        return f"spiffe://{self.federation}/node/{country}"

    def get(self, owner: str, kid: str):
        """The key, or None when this keyring does not hold it."""
        return self.keys.get((owner, kid))
