"""The postgresql.conf settings of a TLS-only server, by major version. Pure."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pgbatten.keyshare import SERVER_CURVE_UP_TO_17, SERVER_GROUPS_18

TlsMin = Literal["1.2", "1.3"]

# Mozilla's "intermediate" list: forward-secret AEAD suites only. It governs TLS 1.2; TLS 1.3 suites are
# all AEAD and forward secret, and PostgreSQL leaves them at OpenSSL's defaults.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)

# Through PostgreSQL 17 ssl_ecdh_curve names a single EC curve: 'X25519' stops the server ("ECDH: could not
# create key", measured on 15 and 17), so it is P-256, and the HelloRetryRequest that OpenSSL clients' X25519
# key share causes is saved on the client side. PostgreSQL 18's ssl_groups takes a list, X25519 first, so the
# clients' default share is taken as it is. The reasons, and the client half, live in pgbatten.keyshare.
ECDH_CURVE = SERVER_CURVE_UP_TO_17
GROUPS_18 = SERVER_GROUPS_18


def tls_settings(
    *,
    major: int,
    tls_min: TlsMin,
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None,
    crl_file: Path | None = None,
) -> dict[str, str]:
    """Every setting ``secure`` owns, as the unquoted values PostgreSQL reports in ``pg_settings``.

    ``ca_file`` None sets ``ssl_ca_file`` to empty: the server then asks no client for a certificate, so a
    stray ``~/.postgresql/postgresql.crt`` (which libpq sends to any server that asks) cannot break a login.
    """
    settings = {
        "ssl": "on",
        "ssl_cert_file": str(cert_file),
        "ssl_key_file": str(key_file),
        "ssl_ca_file": str(ca_file) if ca_file is not None else "",
        "ssl_min_protocol_version": f"TLSv{tls_min}",
        "ssl_ciphers": INTERMEDIATE_CIPHERS,
        "password_encryption": "scram-sha-256",
    }
    if major >= 18:
        settings["ssl_groups"] = GROUPS_18
    else:
        settings["ssl_ecdh_curve"] = ECDH_CURVE
    if crl_file is not None:
        settings["ssl_crl_file"] = str(crl_file)
    return settings
