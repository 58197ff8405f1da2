"""The man in the middle's certificates: one forgery per attack.

``self-signed``: a certificate for the server's own names, signed by its own key. ``other-ca``: the same
names from a CA the client has never heard of. ``same-ca-wrong-host``: a genuine certificate of the CA the
client trusts, for another host (what fools ``verify-ca``; needs that CA's key). ``expired``: the right
names, expired a day ago (from the client's CA when its key is at hand, else self-signed).

Legitimate certificates come from :class:`pgbatten.pki.CertificateAuthority`, which refuses to build an
expired or self-issued leaf, as it should; the forger builds those two itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten.certfacts import CertificateInfo
from pgbatten.errors import UsageError
from pgbatten.pki import CertificateAuthority, generate_key, private_key_pem, subject_alt_names
from pgbatten.pki.keys import PrivateKey

WRONG_HOST = "mitm.pgbatten.invalid"
"""The host a same-CA forgery is issued for: a name no client connects to (RFC 2606 reserves .invalid)."""


class Attack(StrEnum):
    STRIP = "strip"
    SELF_SIGNED = "self-signed"
    OTHER_CA = "other-ca"
    SAME_CA_WRONG_HOST = "same-ca-wrong-host"
    EXPIRED = "expired"
    DOWNGRADE_AUTH = "downgrade-auth"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Attack.STRIP: "answers 'N' to SSLRequest, so the client goes on in plaintext",
    Attack.SELF_SIGNED: "presents a self-signed certificate for the server's names",
    Attack.OTHER_CA: "presents a certificate for the server's names from a CA the client does not trust",
    Attack.SAME_CA_WRONG_HOST: f"presents a genuine certificate of the client's CA for {WRONG_HOST}",
    Attack.EXPIRED: "presents a certificate for the server's names that expired yesterday",
    Attack.DOWNGRADE_AUTH: "presents a forged certificate, then asks for the password in cleartext",
}


@dataclass(frozen=True)
class Forgery:
    """A certificate (with its chain) and key the man in the middle presents."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    follows_names: bool = True
    """Made for the names the client expects (a client asking for another name gets one made for it);
    False for the genuine certificate for another host."""

    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain))

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    @property
    def info(self) -> CertificateInfo:
        return CertificateInfo.from_certificate(self.certificate)


def _forge_leaf(
    names: Sequence[str],
    *,
    issuer: tuple[x509.Name, PrivateKey] | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> Forgery:
    key = generate_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(subject_alt_names(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if issuer is None:
        # A self-signed server certificate, as `openssl req -x509` makes it: its own CA.
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return Forgery(builder.sign(issuer_key, hashes.SHA256()), key)


def forge(
    attack: Attack,
    names: Sequence[str],
    *,
    ca: CertificateAuthority | None = None,
    now: dt.datetime | None = None,
) -> Forgery | None:
    """The certificate ``attack`` presents for a server known by ``names`` (None for ``strip``).

    ``ca`` is the CA the client trusts, when the attacker has its key: ``same-ca-wrong-host`` needs it,
    ``expired`` and ``downgrade-auth`` use it when given (a certificate that would pass ``verify-ca``).
    """
    if not names:
        raise ValueError("a forgery needs at least one name")
    now = now or dt.datetime.now(dt.UTC)
    if attack == Attack.STRIP:
        return None
    if attack == Attack.SELF_SIGNED or (attack == Attack.DOWNGRADE_AUTH and ca is None):
        start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=30)
        return _forge_leaf(names, issuer=None, not_before=start, not_after=end)
    if attack == Attack.OTHER_CA:
        other = CertificateAuthority.create(common_name="pgbatten MITM CA", days=30, now=now)
        issued = other.issue_server(list(names), days=30, now=now)
        return Forgery(issued.certificate, issued.key, (other.certificate,))
    if attack in (Attack.SAME_CA_WRONG_HOST, Attack.DOWNGRADE_AUTH):
        if ca is None:
            raise UsageError(
                f"--attack {attack} needs the CA the client trusts: "
                "--ca-dir DIR, or --ca-cert FILE --ca-key FILE"
            )
        issued = ca.issue_server([WRONG_HOST], days=30, now=now)
        return Forgery(issued.certificate, issued.key, issued.chain, follows_names=False)
    issuer = (ca.certificate.subject, ca.key) if ca is not None else None
    return _forge_leaf(
        names,
        issuer=issuer,
        not_before=now - dt.timedelta(days=31),
        not_after=now - dt.timedelta(days=1),
    )
