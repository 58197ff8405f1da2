"""What the user asks ``secure`` to do: one type, validated once, when it is made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pgbatten.errors import UsageError
from pgbatten.pki import KeyType, classify_host
from pgbatten.secure.settings import TlsMin

ClientAuth = Literal["none", "verify-full", "cert"]

MAX_DAYS = 3650
DEFAULT_LOCK_WAIT = 15.0


@dataclass(frozen=True)
class SecureRequest:
    """Everything ``pgbatten secure`` takes from its caller. Invalid values raise ``UsageError`` here.

    ``dry_run`` plans and stops. ``replace_ca`` allows replacing a server certificate (and
    ``pgbatten-ca.crt``) issued by another CA than the one in use. ``allow_lockout`` applies
    ``client_auth`` even though roles that log in over TCP today have no valid certificate from the CA.
    ``end_plaintext_sessions`` terminates the TCP sessions still unencrypted after securing.
    ``legacy_ip_sans`` also writes each IP address of the certificate as a DNS name, for libpq before 15.
    ``lock_wait`` is how long to wait for another run on the same cluster or CA directory.

    ``ca_certificate`` (PEM: the roots in force) is for a server whose CA lives elsewhere, a fleet's control
    node: no CA directory is read or written here. ``certificate`` (PEM, with its chain) is then the one the
    CA signed for the key ``pgbatten csr`` made on this server, and ``crl`` the CA's CRL; without
    ``certificate`` the installed one is kept when it can stay.
    """

    hosts: tuple[str, ...] = ()
    ca_dir: Path | None = None
    tls_min: TlsMin = "1.2"
    client_auth: ClientAuth = "none"
    cert_map: str | None = None
    key_type: KeyType = KeyType.ECDSA_P256
    days: int = 365
    ca_passphrase: bytes | None = field(default=None, repr=False)
    timeout: float = 5.0
    dry_run: bool = False
    replace_ca: bool = False
    allow_lockout: bool = False
    end_plaintext_sessions: bool = False
    legacy_ip_sans: bool = False
    lock_wait: float = DEFAULT_LOCK_WAIT
    certificate: bytes | None = None
    ca_certificate: bytes | None = None
    crl: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.hosts, str):
            raise UsageError("hosts must be a sequence of host names, not one string")
        for host in self.hosts:
            classify_host(host)
        if self.tls_min not in get_args(TlsMin):
            raise UsageError(f"--tls-min must be 1.2 or 1.3, not {self.tls_min!r}")
        if self.client_auth not in get_args(ClientAuth):
            raise UsageError(f"--client-auth must be none, verify-full or cert, not {self.client_auth!r}")
        if not isinstance(self.key_type, KeyType):
            raise UsageError(f"unknown key type {self.key_type!r}")
        if self.cert_map is not None and self.client_auth != "cert":
            raise UsageError("--cert-map only applies with --client-auth cert")
        if self.cert_map is not None and not self.cert_map.replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"--cert-map wants a simple map name, not {self.cert_map!r}")
        if not 1 <= self.days <= MAX_DAYS:
            raise UsageError(f"--days must be 1 to {MAX_DAYS}, not {self.days}")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be positive, not {self.timeout}")
        if self.lock_wait < 0:
            raise UsageError(f"--lock-wait must not be negative, not {self.lock_wait}")
        if self.ca_certificate is None and (self.certificate is not None or self.crl is not None):
            raise UsageError("--certificate and --crl come with the CA's certificate: give --ca-certificate")
        if self.ca_certificate is not None and self.ca_dir is not None:
            raise UsageError("--ca-certificate is for a CA that is not here: use it or --ca-dir, not both")
        if self.ca_certificate is not None and self.legacy_ip_sans:
            raise UsageError("--legacy-ip-sans needs a CA here (a CSR asks for addresses as addresses only)")

    @property
    def external_ca(self) -> bool:
        """Whether the CA lives elsewhere (only its certificate is here)."""
        return self.ca_certificate is not None

    @property
    def verifies_client_certificates(self) -> bool:
        """Whether the request itself turns on client-certificate checks."""
        return self.client_auth != "none"
