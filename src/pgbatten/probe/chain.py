"""The presented certificate chain: in order? complete? Pure: no network.

``check`` receives the chain as the server sent it (leaf first). Order and completeness are facts about
that list; trust, the question a ``verify-full`` client answers with its ``sslrootcert``, is OpenSSL's
(:mod:`probe.trust`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from pgbatten.certfacts import is_self_signed


@dataclass(frozen=True)
class ChainShape:
    """Whether each certificate is followed by its issuer, and whether the chain reaches a trust anchor.

    ``complete`` is True when the last certificate sent is a root (self-signed) or, with a CA given, issued
    by (or equal to) one of its certificates; None when that cannot be told from outside.
    """

    in_order: bool
    complete: bool | None


def chain_shape(chain: Sequence[x509.Certificate], ca: Sequence[x509.Certificate] | None) -> ChainShape:
    """The :class:`ChainShape` of a non-empty ``chain`` (leaf first, as sent)."""
    in_order = all(chain[i].issuer == chain[i + 1].subject for i in range(len(chain) - 1))
    last = chain[-1]
    complete: bool | None
    if is_self_signed(last):
        complete = True
    elif ca:
        complete = any(c.subject == last.issuer for c in ca) or any(c.subject == last.subject for c in ca)
    else:
        complete = None
    return ChainShape(in_order, complete)


__all__ = ["ChainShape", "chain_shape"]
