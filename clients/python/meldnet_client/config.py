"""The TOML files `meldnet-certs init` writes for a recipient (PROTOCOL.md
13.3: `agency.toml`, the same shape for regulators and representatives).
Relative paths are relative to the file's own folder."""

from __future__ import annotations

import pathlib
import tomllib
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Tls:
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


@dataclass(frozen=True)
class RecipientConfig:
    keyring: pathlib.Path
    out_dir: pathlib.Path
    hub_address: str
    hub_server_name: str
    tls: Tls

    @staticmethod
    def load(path) -> "RecipientConfig":
        path = pathlib.Path(path)
        with open(path, "rb") as f:
            try:
                doc = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: {e}") from e
        base = path.resolve().parent

        def get(table: dict, key: str, where: str) -> str:
            v = table.get(key)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{path}: {where}{key}: required, a string")
            return v

        def rel(p: str) -> pathlib.Path:
            return (base / p).resolve()

        hub = doc.get("hub")
        tls = doc.get("tls")
        if not isinstance(hub, dict):
            raise ConfigError(f"{path}: [hub]: required")
        if not isinstance(tls, dict):
            raise ConfigError(f"{path}: [tls]: required")
        return RecipientConfig(
            keyring=rel(get(doc, "keyring", "")),
            out_dir=rel(doc.get("out_dir", "deliveries")),
            hub_address=get(hub, "address", "hub."),
            hub_server_name=get(hub, "server_name", "hub."),
            tls=Tls(
                ca=rel(get(tls, "ca", "tls.")),
                cert=rel(get(tls, "cert", "tls.")),
                key=rel(get(tls, "key", "tls.")),
            ),
        )


def identity_of(cert_pem: bytes) -> str:
    """The one `spiffe://` URI SAN of a certificate: who the hub sees (2)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise ConfigError("the certificate has no subject alternative name") from e
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise ConfigError(f"the certificate has {len(uris)} spiffe:// URI SANs, not one")
    return uris[0]
