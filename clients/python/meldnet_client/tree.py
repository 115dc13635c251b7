"""The decision Merkle tree (PROTOCOL.md 7): RFC 6962 hashing, and the root
rebuilt from an inclusion path as RFC 9162 section 2.1.3.2 does."""

from __future__ import annotations

import hashlib

MAX_PATH = 64


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: list) -> bytes:
    """RFC 6962's Merkle Tree Hash over leaf hashes (n >= 1)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def root_from_path(leaf: bytes, index: int, size: int, path: list):
    """The root that `path` proves `leaf` at `index` of a tree of `size`
    under, or None when the path cannot be such a proof."""
    if index >= size or len(path) > MAX_PATH or any(len(p) != 32 for p in path):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def tree_head(size: int, root: bytes) -> bytes:
    """What the hub signs (after its prefix): size, 8 bytes big endian, then the root."""
    return size.to_bytes(8, "big") + root
