"""Ed25519 verification by meldnet's rule (PROTOCOL.md 5.2).

The fast path is OpenSSL through the `cryptography` package: every signature
OpenSSL's cofactorless check accepts also passes the cofactored rule. Only
when OpenSSL refuses does this module decide itself, with the cofactored
equation on plain integers, so that a recipient in Python accepts exactly
what the hub accepts: a crafted signature with a small-order component in R
(which OpenSSL refuses) is accepted, `s >= L` is refused, and small-order
public keys are refused when a key is loaded.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# The base point, in extended coordinates (X, Y, Z, T).
_BY = 4 * pow(5, P - 2, P) % P
_IDENTITY = (0, 1, 1, 0)


class KeyError_(ValueError):
    """A public key meldnet refuses (not 32 bytes, not a point, small order)."""


def _decode_point(b: bytes):
    """curve25519-dalek's decompress: y is the low 255 bits reduced mod p,
    the top bit chooses x's sign (either sign is accepted for x = 0).
    None when the bytes are not a point."""
    if len(b) != 32:
        return None
    n = int.from_bytes(b, "little")
    sign = n >> 255
    y = (n & ((1 << 255) - 1)) % P
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # x = sqrt(u / v), the non-negative root (even), as dalek's sqrt_ratio_i.
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    vxx = v * x * x % P
    if vxx == u % P:
        pass
    elif vxx == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x & 1:
        x = P - x
    if sign:
        x = (P - x) % P
    return (x, y, 1, x * y % P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, p):
    q = _IDENTITY
    while k:
        if k & 1:
            q = _add(q, p)
        p = _add(p, p)
        k >>= 1
    return q


def _neg(p):
    x, y, z, t = p
    return ((P - x) % P, y, z, (P - t) % P)


def _is_identity(p) -> bool:
    x, y, z, _ = p
    return x % P == 0 and (y - z) % P == 0


def _base():
    return _decode_point(_BY.to_bytes(32, "little"))


def small_order(public_key: bytes) -> bool:
    """True when `public_key` decodes to a point of order dividing 8."""
    a = _decode_point(public_key)
    return a is not None and _is_identity(_mul(8, a))


def check_public_key(public_key: bytes) -> None:
    """Refuses what meldnet refuses when a keyring is loaded (5.2 step 4)."""
    if len(public_key) != 32:
        raise KeyError_(f"a public key is 32 bytes, not {len(public_key)}")
    a = _decode_point(public_key)
    if a is None:
        raise KeyError_("the public key is not a curve point")
    if _is_identity(_mul(8, a)):
        raise KeyError_("the public key is of small order: anyone could sign for it")


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """meldnet's verdict on `signature` over `message` (prefix included) by
    `public_key`. The key is assumed checked by `check_public_key`."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except InvalidSignature:
        pass
    return _verify_cofactored(public_key, message, signature)


def _verify_cofactored(public_key: bytes, message: bytes, signature: bytes) -> bool:
    r_bytes, s_bytes = signature[:32], signature[32:]
    s = int.from_bytes(s_bytes, "little")
    if s >= L:
        return False
    r = _decode_point(r_bytes)
    a = _decode_point(public_key)
    if r is None or a is None:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    # [8]([s]B - [k]A - R) == identity
    t = _add(_add(_mul(s, _base()), _neg(_mul(k, a))), _neg(r))
    return _is_identity(_mul(8, t))
