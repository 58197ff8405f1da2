"""Certificates and keys for pgbatten: an in-memory CA, its directory on disk, and client bundles."""

from pgbatten.pki.anchor import CACertificate
from pgbatten.pki.authority import CertificateAuthority, IssuedCertificate
from pgbatten.pki.bundle import ClientBundle, generate_password, render_install_md, write_client_bundle
from pgbatten.pki.certbuild import check_role_name
from pgbatten.pki.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    key_type_of,
    load_private_key_pem,
    pkcs12_bundle,
    private_key_pem,
    private_key_pk8_der,
)
from pgbatten.pki.names import HostName, classify_host, subject_alt_names
from pgbatten.pki.revocation import Revocation
from pgbatten.pki.store import (
    CAStore,
    CertKind,
    ClusterRef,
    CrlInstall,
    Installation,
    InventoryEntry,
    default_ca_dir,
    parse_serial,
)

__all__ = [
    "CACertificate",
    "CAStore",
    "CertKind",
    "CertificateAuthority",
    "ClientBundle",
    "ClusterRef",
    "CrlInstall",
    "HostName",
    "Installation",
    "InventoryEntry",
    "IssuedCertificate",
    "KeyType",
    "PrivateKey",
    "Revocation",
    "check_role_name",
    "classify_host",
    "default_ca_dir",
    "generate_key",
    "generate_password",
    "key_type_of",
    "load_private_key_pem",
    "parse_serial",
    "pkcs12_bundle",
    "private_key_pem",
    "private_key_pk8_der",
    "render_install_md",
    "subject_alt_names",
    "write_client_bundle",
]
