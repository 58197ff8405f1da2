"""Chain trust decided by OpenSSL itself, the way libpq has it decided for ``sslmode=verify-ca/verify-full``.

libpq hands the chain the server sent to OpenSSL with a store built from ``sslrootcert`` (every certificate
and CRL in that file; the system store for ``sslrootcert=system``) and, when ``sslcrl``/``sslcrldir``
load, the flags ``X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL``; the TLS client's verification
purpose is ``sslserver``. So OpenSSL, not a reimplementation, decides here too: the ``openssl verify``
command with exactly those inputs (``-purpose sslserver``, no partial chains, the server's extra
certificates as untrusted, ``-crl_check_all``, ``-attime`` for the moment judged). That accepts X.509 v1
certificates, refuses an intermediate alone as anchor, enforces the server purpose (extendedKeyUsage,
keyUsage), validity and revocation exactly as libpq's OpenSSL does. libssl also checks the chain at the TLS
context's security level (``-auth_level``: at level 2, the default of Debian, Ubuntu and RHEL, RSA keys
under 2048 bits and SHA-1 signatures are refused); ``openssl verify`` does not unless told, so the level
of this machine's default client context is asked from libssl and passed on. Host names stay with
:mod:`probe.hostname`, which follows libpq's own code.

``sslcrl``/``sslcrldir`` as a target gives them load as libpq loads them (:func:`load_trust_store` with
``as_libpq``): a CRL file that is missing or holds nothing OpenSSL reads as PEM turns CRL checking off
silently (noted here), and a ``sslcrldir`` turns it on even when the directory does not exist.

No network I/O: a short-lived subprocess on files in a private temporary directory. Where the ``openssl``
command is missing, the verdict falls back to :mod:`cryptography`'s verifier and says so: right for
pgbatten's own certificates (X.509 v3, server purpose), stricter than libpq for X.509 v1 certificates,
and blind to the purpose, so ``check`` names the command to install.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import functools
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
EE_KEY_TOO_SMALL = 66
CA_KEY_TOO_SMALL = 67
CA_MD_TOO_WEAK = 68

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
    EE_KEY_TOO_SMALL: "the client's OpenSSL security level refuses a key this small (level 2: RSA and DH "
    "under 2048 bits, EC under 224)",
    CA_KEY_TOO_SMALL: "the client's OpenSSL security level refuses an issuer key this small (level 2: RSA "
    "under 2048 bits)",
    CA_MD_TOO_WEAK: "the client's OpenSSL security level refuses the signature's digest (level 2: SHA-1 "
    "and MD5)",
}

SYSTEM_BEFORE_16 = (
    'sslrootcert=system is libpq 16+: libpq 15 and older look for a file named "system" and refuse to '
    'connect (root certificate file "system" does not exist); give those clients the CA file instead'
)

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
    crl_check: bool = False
    """CRL checks on even without a CRL to use (libpq's sslcrl loaded, or any sslcrldir)."""
    notes: tuple[str, ...] = ()
    """What libpq does with the trust settings that a user would not expect (a sslcrl it cannot load)."""

    @property
    def checks_crls(self) -> bool:
        return self.crl_check or bool(self.crls) or self.crl_dir is not None


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


@functools.cache
def client_security_level() -> int | None:
    """The security level of a new TLS client context of this machine's libssl (what libpq gets: it sets
    none), None when libssl cannot be asked. Its configuration (Debian: built in, 2) decides it."""
    name = ctypes.util.find_library("ssl")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.TLS_client_method.restype = ctypes.c_void_p
        lib.SSL_CTX_new.restype = ctypes.c_void_p
        lib.SSL_CTX_new.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_security_level.restype = ctypes.c_int
        lib.SSL_CTX_get_security_level.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_free.argtypes = [ctypes.c_void_p]
        ctx = lib.SSL_CTX_new(lib.TLS_client_method())
        if not ctx:
            return None
        try:
            level = int(lib.SSL_CTX_get_security_level(ctx))
        finally:
            lib.SSL_CTX_free(ctx)
    except (OSError, AttributeError):  # no such library or symbol (OpenSSL before 1.1, LibreSSL)
        return None
    return level if 0 <= level <= 5 else None


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def verify_chain(
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    now: dt.datetime,
    *,
    openssl: str | None = None,
    auth_level: int | None = None,
) -> TrustVerdict:
    """Would OpenSSL, set up as libpq sets it up, accept ``chain`` (leaf first, as sent) at ``now``?

    ``auth_level`` (default: :func:`client_security_level`) is the TLS context's security level.
    """
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
        level = client_security_level() if auth_level is None else auth_level
        if level is not None:
            args += ["-auth_level", str(level)]
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
                # libpq adds the directory even when it does not exist: then no CRL is found in it.
                crl_dir = store.crl_dir if store.crl_dir.is_dir() else work / "empty-crl-dir"
                crl_dir.mkdir(exist_ok=True)
                args += ["-CApath", str(crl_dir)]
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
        if store.system:
            return TrustVerdict(
                True,
                f"chain verifies against OpenSSL's default store{crl_note} (OpenSSL, "
                f"purpose sslserver); {SYSTEM_BEFORE_16}",
            )
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


def _libpq_crl_file(path: str) -> tuple[list[x509.CertificateRevocationList], str | None]:
    """The CRLs libpq's ``X509_STORE_load_locations`` takes from ``sslcrl`` (PEM only), or why none load.

    None as the second value: the file loads (and turns CRL checks on, even without a CRL in it).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return [], f"sslcrl {path}: {exc.strerror or exc}"
    if b"-----BEGIN X509 CRL-----" not in data:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return [], None
        return [], f"sslcrl {path}: no CRL in PEM form (libpq reads sslcrl as PEM only)"
    try:
        return load_crls(data), None
    except ValueError as exc:
        return [], f"sslcrl {path}: unreadable CRL ({exc})"


def _strict_crls(crl_file: Path | str) -> list[x509.CertificateRevocationList]:
    from pgbatten.errors import FileProblem

    try:
        data = Path(crl_file).read_bytes()
    except OSError as exc:
        raise FileProblem(crl_file, exc.strerror or str(exc)) from exc
    if b"-----BEGIN X509 CRL-----" not in data:
        hint = "a DER file: convert it with openssl crl -inform DER -outform PEM" if data[:1] == b"0" else ""
        raise FileProblem(
            crl_file, f"not a PEM CRL file, which is all libpq reads as sslcrl{'; ' + hint if hint else ''}"
        )
    try:
        return load_crls(data)
    except ValueError as exc:
        raise FileProblem(crl_file, f"unreadable CRL: {exc}") from exc


def load_trust_store(
    ca_file: Path | str | None,
    crl_file: Path | str | None = None,
    crl_dir: Path | str | None = None,
    *,
    as_libpq: bool = False,
) -> TrustStore | None:
    """The :class:`TrustStore` of an ``sslrootcert`` file (or ``system``), ``sslcrl`` and ``sslcrldir``.

    None without a CA. A CA file that is missing or holds no certificate is a :class:`FileProblem`, raised
    before any connection (libpq refuses to connect then too).

    The CRL settings, by default as ``check --crl`` takes them: a missing or unreadable file is a
    :class:`FileProblem` (libpq would silently check no CRL; a check must not hide that), and a directory
    given as ``crl_file`` is a CRL directory. With ``as_libpq`` (the ``sslcrl``/``sslcrldir`` of a
    connection string) exactly as libpq loads them, never raising: a file that does not load turns CRL
    checking off (said in :attr:`TrustStore.notes`) and so does the directory beside it; a
    ``sslcrldir`` alone turns it on, whether or not it exists.
    """
    from pgbatten.certfacts import load_pem_file
    from pgbatten.errors import FileProblem

    if ca_file is None:
        return None
    crls: list[x509.CertificateRevocationList] = []
    directory = Path(crl_dir) if crl_dir else None
    crl_check = False
    notes: list[str] = []
    if as_libpq:
        if crl_file:
            crls, problem = _libpq_crl_file(str(crl_file))
            if problem is not None:
                # X509_STORE_load_locations stops at the file: neither it nor the directory counts.
                skipped = f" (and sslcrldir {directory} with it)" if directory is not None else ""
                notes.append(f"{problem}: libpq loads no CRL{skipped} and checks no revocation")
                directory = None
            else:
                crl_check = True
        elif directory is not None:
            crl_check = True
            if not directory.is_dir():
                notes.append(
                    f"sslcrldir {directory} is not a directory: libpq checks CRLs and finds none, so every "
                    "verify-full connection fails"
                )
    else:
        if crl_file is not None and Path(crl_file).is_dir():
            directory, crl_file = Path(crl_file), None
        if crl_file is not None:
            crls = _strict_crls(crl_file)
            crl_check = True
        if directory is not None:
            if not directory.is_dir():
                raise FileProblem(directory, "not a directory (sslcrldir)")
            crl_check = True
    system = str(ca_file) == "system"
    return TrustStore(
        () if system else tuple(load_pem_file(ca_file)),
        crls=tuple(crls),
        crl_dir=directory,
        system=system,
        ca_crls=() if system else crls_in_ca_file(Path(ca_file).read_bytes()),
        crl_check=crl_check,
        notes=tuple(notes),
    )


__all__ = [
    "CERT_REVOKED",
    "INVALID_PURPOSE",
    "TrustStore",
    "TrustVerdict",
    "client_security_level",
    "crls_in_ca_file",
    "judge_openssl_output",
    "load_crls",
    "load_trust_store",
    "openssl_command",
    "verify_chain",
]
