"""The names of the files pgbatten puts in a cluster's directory."""

from __future__ import annotations

__all__ = ["CA_NAME", "CERT_NAME", "CRL_NAME", "KEY_NAME", "PENDING_KEY_NAME"]

CERT_NAME = "pgbatten-server.crt"
KEY_NAME = "pgbatten-server.key"
CA_NAME = "pgbatten-ca.crt"
CRL_NAME = "pgbatten-ca.crl"
PENDING_KEY_NAME = "pgbatten-server.key.pending"
"""A key made by ``pgbatten csr`` for a certificate the CA has yet to sign (the key in use is left alone)."""
