"""Chain trust decided by OpenSSL itself, the way libpq has it decided for ``sslmode=verify-ca/verify-full``.

libpq hands the chain the server sent to OpenSSL with a store built from ``sslrootcert`` (every certificate
and CRL in that file; the system store for ``sslrootcert=system``) and, when ``sslcrl``/``sslcrldir``
load, the flags ``X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL``; the TLS client's verification
purpose is ``sslserver``. So OpenSSL, not a reimplementation, decides here too: the ``openssl verify``
command with exactly those inputs (``-purpose sslserver``, no partial chains, the server's extra
certificates as untrusted, ``-crl_check_all``, ``-attime`` for the moment judged). That accepts X.509 v1
certificates, refuses an intermediate alone as anchor, enforces the server purpose (extendedKeyUsage,
keyUsage), validity and revocation exactly as libpq's OpenSSL does. Host names stay with
:mod:`probe.hostname`, which follows libpq's own code.

No network I/O: a short-lived subprocess on files in a private temporary directory. Where the ``openssl``
command is missing, the verdict falls back to :mod:`cryptography`'s verifier and says so: right for
pgbatten's own certificates (X.509 v3, server purpose), stricter than libpq for X.509 v1 certificates,
and blind to the purpose, so ``check`` names the command to install.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

OPENSSL_TIMEOUT = 10.0

# X509_V_ERR_* codes (openssl/x509_vfy.h) we explain; the message itself is always OpenSSL's.
UNABLE_TO_GET_ISSUER_CERT = 2
UNABLE_TO_GET_CRL = 3
CERT_NOT_YET_VALID = 9
CERT_HAS_EXPIRED = 10
CRL_NOT_YET_VALID = 11
CRL_HAS_EXPIRED = 12
DEPTH_ZERO_SELF_SIGNED_CERT = 18
SELF_SIGNED_CERT_IN_CHAIN = 19
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
CERT_REVOKED = 23
INVALID_CA = 24
INVALID_PURPOSE = 26

_HINTS = {
    UNABLE_TO_GET_ISSUER_CERT: "the CA file holds an intermediate but not the root it chains to; OpenSSL, "
    "and so libpq, accepts no intermediate as trust anchor: add the root to sslrootcert",
    UNABLE_TO_GET_CRL: "CRL checking covers the whole chain, and there is no CRL from the issuer of "
    "this certificate: add it to sslcrl",
    DEPTH_ZERO_SELF_SIGNED_CERT: "unknown CA: the server's self-signed certificate is not in sslrootcert",
    SELF_SIGNED_CERT_IN_CHAIN: "unknown CA: the chain ends at a root that is not in sslrootcert",
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unknown CA, or an incomplete chain: neither the server nor "
    "sslrootcert supplies the issuer",
    INVALID_PURPOSE: "the certificate is not for TLS servers (extendedKeyUsage without serverAuth, or "
    "keyUsage without digitalSignature/keyEncipherment)",
    CERT_REVOKED: "the CRL revokes it",
}

_ERROR_LINE = re.compile(r"^error (\d+) at (\d+) depth lookup: ?(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class TrustStore:
    """What a verify-full client trusts: its ``sslrootcert`` and the CRLs it checks.

    ``system`` stands for ``sslrootcert=system`` (OpenSSL's default store). ``crls`` empty and no
    ``crl_dir``: no revocation checking, as libpq without ``sslcrl``.
    """

    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    crl_dir: Path | None = None
    system: bool = False
    ca_crls: tuple[x509.CertificateRevocationList, ...] = field(default=())
    """CRLs found in the sslrootcert file itself: OpenSSL loads them, and uses them once CRL checks are on."""

    @property
    def checks_crls(self) -> bool:
        return bool(self.crls) or self.crl_dir is not None


@dataclass(frozen=True)
class TrustVerdict:
    """OpenSSL's answer for one chain: trusted, or the first error with its code and depth."""

    trusted: bool | None
    """None: no verdict (no openssl command, nothing to judge)."""
    reason: str
    code: int | None = None
    depth: int | None = None
    message: str | None = None
    """OpenSSL's own text for ``code`` (``unable to get local issuer certificate``…)."""

    @property
    def revoked(self) -> bool:
        return self.code == CERT_REVOKED


def openssl_command() -> str | None:
    """The ``openssl`` binary judging chains, None when it is not installed."""
    return shutil.which("openssl")


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def verify_chain(
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    now: dt.datetime,
    *,
    openssl: str | None = None,
) -> TrustVerdict:
    """Would OpenSSL, set up as libpq sets it up, accept ``chain`` (leaf first, as sent) at ``now``?"""
    if not chain:
        return TrustVerdict(False, "the server sent no certificate")
    if not store.certificates and not store.system:
        return TrustVerdict(False, "no CA certificates given")
    binary = openssl or openssl_command()
    if binary is None:
        return _verify_without_openssl(chain, store, now)
    with tempfile.TemporaryDirectory(prefix="pgbatten-verify-") as tmp:
        work = Path(tmp)
        args = [binary, "verify", "-purpose", "sslserver", "-attime", str(int(now.timestamp()))]
        if not store.system:
            ca_file = work / "root.pem"
            ca_file.write_bytes(
                _pem(store.certificates) + b"".join(c.public_bytes(Encoding.PEM) for c in store.ca_crls)
            )
            # Only the sslrootcert file: never the machine's own store, which libpq does not read then.
            args += ["-no-CApath", "-no-CAstore", "-CAfile", str(ca_file)]
        if len(chain) > 1:
            untrusted = work / "untrusted.pem"
            untrusted.write_bytes(_pem(chain[1:]))
            args += ["-untrusted", str(untrusted)]
        if store.checks_crls:
            args.append("-crl_check_all")
            if store.crls:
                crl_file = work / "crl.pem"
                crl_file.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in store.crls))
                args += ["-CRLfile", str(crl_file)]
            if store.crl_dir is not None:
                args += ["-CApath", str(store.crl_dir)]
        leaf = work / "leaf.pem"
        leaf.write_bytes(_pem(chain[:1]))
        args.append(str(leaf))
        try:
            run = subprocess.run(args, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return TrustVerdict(None, f"chain not judged: openssl verify failed to run ({exc})")
    return judge_openssl_output(run.returncode, run.stdout + run.stderr, store)


def _verify_without_openssl(
    chain: Sequence[x509.Certificate], store: TrustStore, now: dt.datetime
) -> TrustVerdict:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.x509 import verification

    caveat = "the openssl command is not installed (apt-get install openssl): judged by cryptography instead"
    if store.system or store.checks_crls:
        return TrustVerdict(None, f"chain not judged: {caveat.split(':')[0]}")
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(store.certificates)))
            .time(now)
            .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        verifier.verify(chain[0], list(chain[1:]))
    except (verification.VerificationError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return TrustVerdict(
            False, f"certificate chain does not verify against the CA given: {exc} ({caveat})"
        )
    return TrustVerdict(True, f"chain verifies against the CA given ({caveat})")


def judge_openssl_output(returncode: int, output: str, store: TrustStore) -> TrustVerdict:
    """Turn ``openssl verify``'s exit status and text into a verdict. Pure."""
    crl_note = " and the CRLs given" if store.checks_crls else ""
    match = _ERROR_LINE.search(output)
    if returncode == 0 and match is None:
        return TrustVerdict(
            True, f"chain verifies against the CA given{crl_note} (OpenSSL, purpose sslserver)"
        )
    if match is None:
        text = " ".join(output.split())[:300] or f"exit status {returncode}"
        return TrustVerdict(False, f"certificate verify failed: {text}")
    code, depth, message = int(match.group(1)), int(match.group(2)), match.group(3).strip()
    where = "the server certificate" if depth == 0 else f"the certificate at depth {depth}"
    hint = _HINTS.get(code)
    reason = f"certificate verify failed: {message} ({where}"
    reason += f"; {hint})" if hint else ")"
    return TrustVerdict(False, reason, code, depth, message)


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in PEM ``data`` (a DER file holds exactly one); ``ValueError`` when there is none."""
    if b"-----BEGIN X509 CRL-----" not in data:
        return [x509.load_der_x509_crl(data)]
    out: list[x509.CertificateRevocationList] = []
    for block in re.findall(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", data, re.DOTALL):
        out.append(x509.load_pem_x509_crl(block))
    return out


def crls_in_ca_file(data: bytes) -> tuple[x509.CertificateRevocationList, ...]:
    """The CRLs an sslrootcert file holds beside its certificates (OpenSSL loads both kinds)."""
    with contextlib.suppress(ValueError):
        if b"-----BEGIN X509 CRL-----" in data:
            return tuple(load_crls(data))
    return ()


def load_trust_store(
    ca_file: Path | str | None,
    crl_file: Path | str | None = None,
    crl_dir: Path | str | None = None,
) -> TrustStore | None:
    """The :class:`TrustStore` of an ``sslrootcert`` file (or ``system``), ``sslcrl`` and ``sslcrldir``.

    None without a CA. A file that is missing or holds no certificate (no CRL) is a :class:`FileProblem`,
    raised before any connection: libpq would silently skip a missing CRL file, a check must not.
    """
    from pgbatten.certfacts import load_pem_file
    from pgbatten.errors import FileProblem

    if ca_file is None:
        return None
    crls: list[x509.CertificateRevocationList] = []
    if crl_file is not None:
        try:
            data = Path(crl_file).read_bytes()
        except OSError as exc:
            raise FileProblem(crl_file, exc.strerror or str(exc)) from exc
        try:
            crls = load_crls(data)
        except ValueError as exc:
            raise FileProblem(crl_file, f"not a CRL file (PEM or DER): {exc}") from exc
    directory = Path(crl_dir) if crl_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise FileProblem(directory, "not a directory (sslcrldir)")
    if str(ca_file) == "system":
        return TrustStore(crls=tuple(crls), crl_dir=directory, system=True)
    certificates = load_pem_file(ca_file)
    return TrustStore(
        tuple(certificates),
        crls=tuple(crls),
        crl_dir=directory,
        ca_crls=crls_in_ca_file(Path(ca_file).read_bytes()),
    )


__all__ = [
    "CERT_REVOKED",
    "INVALID_PURPOSE",
    "TrustStore",
    "TrustVerdict",
    "crls_in_ca_file",
    "judge_openssl_output",
    "load_crls",
    "load_trust_store",
    "openssl_command",
    "verify_chain",
]
