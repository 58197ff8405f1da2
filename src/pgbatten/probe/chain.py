"""The presented certificate chain: in order? complete? trusted by the CA given? Pure: no network.

``check`` receives the chain as the server sent it (leaf first). Order and completeness are facts about
that list; trust is the question a ``verify-full`` client answers with its ``sslrootcert``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import verification

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


def chain_trusted(
    chain: Sequence[x509.Certificate], ca: Sequence[x509.Certificate], now: dt.datetime
) -> tuple[bool, str]:
    """Does ``chain`` (leaf first) lead to one of ``ca``?

    The trust check alone, leaving names to :func:`hostname_matches`: libpq asks OpenSSL for a chain and
    applies its own name rules (CN fallback included), which cryptography's server verifier does not do.
    Extension policies are therefore relaxed to what OpenSSL's default chain verification demands.
    """
    if not chain:
        return False, "the server sent no certificate"
    if not ca:
        return False, "no CA certificates given"
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(ca)))
            .time(now)
            .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        verifier.verify(chain[0], list(chain[1:]))
    except verification.VerificationError as exc:
        return False, f"certificate chain does not verify against the CA given: {exc}"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return False, f"certificate chain could not be evaluated: {exc}"
    return True, "chain verifies against the CA given"


__all__ = ["ChainShape", "chain_shape", "chain_trusted"]
