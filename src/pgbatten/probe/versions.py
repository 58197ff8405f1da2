"""The one TLS-version vocabulary: wire values, PostgreSQL's spelling, a reader's spelling, Python's enum.

Everything that names a protocol version derives it from :class:`TlsVersion`: the raw ClientHello builder
(wire values), the stdlib handshakes (:attr:`TlsVersion.ssl_version`), the results and findings
(:attr:`TlsVersion.label`, the spelling of ``ssl_min_protocol_version``: ``TLSv1`` is TLS 1.0) and the
wiretap's decoded view (:attr:`TlsVersion.display`, ``TLS 1.2``). Also the ALPN protocol PostgreSQL 17
requires for direct SSL, once.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from enum import IntEnum


class TlsVersion(IntEnum):
    """Protocol versions by wire value, oldest first (so ``<`` means older)."""

    SSLv3 = 0x0300
    TLSv1 = 0x0301
    TLSv1_1 = 0x0302
    TLSv1_2 = 0x0303
    TLSv1_3 = 0x0304

    @property
    def label(self) -> str:
        """``SSLv3``, ``TLSv1`` ... ``TLSv1.3``: the spelling of ``ssl_min_protocol_version`` and OpenSSL."""
        return _LABELS[self]

    @property
    def display(self) -> str:
        """``SSL 3.0``, ``TLS 1.0`` ... ``TLS 1.3``: the spelling for people."""
        return _DISPLAY[self]

    @property
    def ssl_version(self) -> ssl.TLSVersion:
        """The same version as Python's :class:`ssl.TLSVersion` (for stdlib handshakes)."""
        return _SSL[self]

    @classmethod
    def from_label(cls, label: str) -> TlsVersion | None:
        """The version spelled ``label`` (``TLSv1.2``), None for anything else."""
        return _BY_LABEL.get(label)

    @classmethod
    def from_ssl(cls, version: ssl.TLSVersion) -> TlsVersion | None:
        """The version of a Python :class:`ssl.TLSVersion`, None for MINIMUM/MAXIMUM_SUPPORTED."""
        return _BY_SSL.get(version)


_LABELS = {
    TlsVersion.SSLv3: "SSLv3",
    TlsVersion.TLSv1: "TLSv1",
    TlsVersion.TLSv1_1: "TLSv1.1",
    TlsVersion.TLSv1_2: "TLSv1.2",
    TlsVersion.TLSv1_3: "TLSv1.3",
}
_DISPLAY = {v: ("SSL 3.0" if v is TlsVersion.SSLv3 else f"TLS 1.{v.value - 0x0301}") for v in TlsVersion}
_SSL = {
    TlsVersion.SSLv3: ssl.TLSVersion.SSLv3,
    TlsVersion.TLSv1: ssl.TLSVersion.TLSv1,
    TlsVersion.TLSv1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}
_BY_LABEL = {label: v for v, label in _LABELS.items()}
_BY_SSL = {s: v for v, s in _SSL.items()}

PROTOCOL_LABELS: tuple[str, ...] = tuple(v.label for v in TlsVersion)
"""Every label, oldest first: the order results list accepted protocols in."""

MODERN: frozenset[TlsVersion] = frozenset({TlsVersion.TLSv1_2, TlsVersion.TLSv1_3})
"""The versions a well-configured server accepts (and nothing older)."""

ALPN_POSTGRESQL = "postgresql"
"""The ALPN protocol of PostgreSQL 17+; direct SSL refuses a handshake without it."""


def version_label(value: int) -> str:
    """Label of a wire version, including ones outside :class:`TlsVersion` (``0x7f1c``)."""
    try:
        return TlsVersion(value).label
    except ValueError:
        return f"0x{value:04x}"


def version_display(value: int) -> str:
    """Reader's spelling of a wire version, including unknown ones (``0x7f1c``)."""
    try:
        return TlsVersion(value).display
    except ValueError:
        return f"0x{value:04x}"


def sort_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Known labels oldest first without duplicates; unknown ones are dropped."""
    wanted = set(labels)
    return tuple(label for label in PROTOCOL_LABELS if label in wanted)


__all__ = [
    "ALPN_POSTGRESQL",
    "MODERN",
    "PROTOCOL_LABELS",
    "TlsVersion",
    "sort_labels",
    "version_display",
    "version_label",
]
