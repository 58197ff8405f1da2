"""Certificate revocation lists: what an entry is, which entries a CRL leaves out, and signing one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from pgbatten.pki.certbuild import CLOCK_SKEW, SIGNATURE_HASH, check_days, utc_now
from pgbatten.pki.keys import PrivateKey


@dataclass(frozen=True)
class Revocation:
    """One entry for a CRL: the serial, when it was revoked, and when the certificate ends (if known).

    An entry whose certificate has ended is left out of the CRL (RFC 5280 3.3 permits it): an expired
    certificate is refused anyway, and a CRL that only ever grows costs every new connection more.
    """

    serial: int
    revoked_at: dt.datetime
    not_after: dt.datetime | None = None


def crl_cutoff(now: dt.datetime) -> dt.datetime:
    """Certificates that ended before this are left out of a CRL signed at ``now``.

    A certificate within the clock skew of its end may still be accepted by a server whose clock lags.
    """
    return now - CLOCK_SKEW


def sign_crl(
    issuer: x509.Certificate,
    key: PrivateKey,
    authority_key_id: x509.AuthorityKeyIdentifier,
    revoked: Iterable[Revocation | tuple[int, dt.datetime]],
    *,
    number: int,
    days: int = 30,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` signed by ``issuer``, numbered ``number``, valid until ``now + days``.

    Entries are sorted by serial (each new PostgreSQL backend sorts the list before its first lookup,
    and sorted input makes that cheap) and entries of certificates that have ended are left out.
    """
    check_days(days)
    if number < 0:
        raise ValueError("CRL number must not be negative")
    now = utc_now(now)
    cutoff = crl_cutoff(now)
    kept: dict[int, dt.datetime] = {}
    naive: dict[dt.datetime, dt.datetime] = {}
    for item in revoked:
        if isinstance(item, Revocation):
            serial, revoked_at, ends = item.serial, item.revoked_at, item.not_after
        else:
            (serial, revoked_at), ends = item, None
        if ends is not None and ends < cutoff:
            continue
        if not 0 < serial < 2**159:
            raise ValueError(f"serial {serial} is not a positive number of at most 159 bits")
        when = naive.get(revoked_at)
        if when is None:
            # What RevokedCertificateBuilder.revocation_date() would store: naive UTC.
            when = naive[revoked_at] = utc_now(revoked_at).replace(tzinfo=None)
        kept[serial] = when
    # Built at once, and each entry from its constructor (the checks its setters would make are made
    # above): CertificateRevocationListBuilder.add_revoked_certificate copies the whole list on every
    # call, which makes a CRL of r entries cost O(r^2), and three builders per entry cost more than the
    # signature. 100,000 entries take well under a second.
    entries = [
        x509.RevokedCertificateBuilder(serial_number=serial, revocation_date=kept[serial]).build()
        for serial in sorted(kept)
    ]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=now,
        next_update=now + dt.timedelta(days=days),
        extensions=[
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
            x509.Extension(x509.AuthorityKeyIdentifier.oid, False, authority_key_id),
        ],
        revoked_certificates=entries,
    )
    return builder.sign(key, SIGNATURE_HASH())
