#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: pgbatten secure - make a running cluster TLS-only, by reload, and prove it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secure
short_description: Make a running PostgreSQL cluster TLS-only, by reload, and prove it from outside
description:
  - Runs on the database host, with the pgbatten library in the host's own Python, and does exactly what
    C(pgbatten secure) does - plan, show the diff, validate with PostgreSQL itself, write atomically with
    backups, reload (never restart), prove from outside (plaintext refused, the installed certificate served,
    verify-full by name and by address, real libpq logins), and restore every file if any proof fails.
  - With O(certificate) and O(ca_certificate) (the fleet way, see the C(pgbatten.tls.pgbatten_tls) role),
    installs a certificate signed on the control node for the key M(pgbatten.tls.csr) made here; no CA key
    is needed or written on this host. Without O(certificate), the installed certificate is kept when it
    can stay.
  - With O(ca_dir) instead, uses a CA directory on this host, as the command does by default.
  - A second run with nothing to change writes nothing and reports C(changed=false).
version_added: 0.1.0
author: pgbatten developers
options:
  pgdata:
    description: The cluster's data directory. One of O(pgdata) and O(cluster) is required.
    type: path
  cluster:
    description: A Debian/Ubuntu cluster as C(VERSION/NAME), e.g. C(15/main).
    type: str
  hosts:
    description: Names and addresses the certificate must carry besides the machine's and listen addresses.
    type: list
    elements: str
    default: []
  certificate:
    description: The certificate (PEM, with its chain) the control node signed for this host's pending key.
    type: str
  ca_certificate:
    description: The CA certificate(s) (PEM) the server trusts and its clients verify it with.
    type: str
  crl:
    description: The CA's CRL (PEM), installed when the server verifies client certificates.
    type: str
  ca_dir:
    description: A CA directory on this host (instead of O(ca_certificate)).
    type: path
  ca_passphrase_file:
    description: With O(ca_dir), a file holding the CA key's passphrase.
    type: path
  tls_min:
    description: The lowest TLS version accepted.
    type: str
    choices: ["1.2", "1.3"]
    default: "1.2"
  client_auth:
    description: C(verify-full) adds a client certificate to the password, C(cert) replaces it.
    type: str
    choices: [none, verify-full, cert]
    default: none
  cert_map:
    description: With O(client_auth=cert), a pg_ident map for certificate names that differ from role names.
    type: str
  key_type:
    description: The server key type.
    type: str
    choices: [ecdsa-p256, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  days:
    description: With O(ca_dir), validity of an issued server certificate.
    type: int
    default: 365
  replace_ca:
    description: Allow replacing the certificate and ssl_ca_file of another CA (clients need the new root).
    type: bool
    default: false
  allow_lockout:
    description: Require client certificates even though roles that log in over TCP have none yet.
    type: bool
    default: false
  end_plaintext_sessions:
    description: End the TCP sessions still unencrypted once the server is TLS-only.
    type: bool
    default: false
  timeout:
    description: Seconds per connection of the proofs.
    type: float
    default: 5.0
attributes:
  check_mode:
    support: full
    description: The same as C(pgbatten secure --dry-run) - plans and reports, writes nothing.
  diff_mode:
    support: full
    description: The plan as a unified diff of every file (private keys are never shown).
"""

EXAMPLES = r"""
- name: Install the certificate the control node signed, and prove it
  pgbatten.tls.secure:
    cluster: 15/main
    certificate: "{{ signed.certificate }}"
    ca_certificate: "{{ trust.ca_certificate }}"
  register: secured
"""

RETURN = r"""
status:
  description: applied, unchanged, repaired (nothing to write, reloaded and proved), or dry-run.
  returned: always
  type: str
files:
  description: Each file written (path, action, purpose, mode).
  returned: always
  type: list
  elements: dict
proofs:
  description: Each outside check (what, ok, detail).
  returned: always
  type: list
  elements: dict
backups:
  description: Each file replaced and its backup (original, backup).
  returned: always
  type: list
  elements: dict
certificate:
  description: The served certificate (path, subject, sans, serial, not_after, fingerprint_sha256).
  returned: always
  type: dict
client:
  description: What clients need (sslrootcert, conninfo, psql).
  returned: always
  type: dict
secure:
  description: The whole C(pgbatten secure --json) document.
  returned: always
  type: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    CLUSTER_ARGS,
    CLUSTER_EXCLUSIVE,
    CLUSTER_ONE_OF,
    discover_cluster,
    fail_on_error,
    pem_bytes,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CLUSTER_ARGS,
            "hosts": {"type": "list", "elements": "str", "default": []},
            "certificate": {"type": "str"},
            "ca_certificate": {"type": "str"},
            "crl": {"type": "str"},
            "ca_dir": {"type": "path"},
            "ca_passphrase_file": {"type": "path", "no_log": False},
            "tls_min": {"type": "str", "default": "1.2", "choices": ["1.2", "1.3"]},
            "client_auth": {"type": "str", "default": "none", "choices": ["none", "verify-full", "cert"]},
            "cert_map": {"type": "str"},
            "key_type": {
                "type": "str",
                "default": "ecdsa-p256",
                "choices": ["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"],
            },
            "days": {"type": "int", "default": 365},
            "replace_ca": {"type": "bool", "default": False},
            "allow_lockout": {"type": "bool", "default": False},
            "end_plaintext_sessions": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 5.0},
        },
        mutually_exclusive=[*CLUSTER_EXCLUSIVE, ("ca_dir", "ca_certificate")],
        required_one_of=[*CLUSTER_ONE_OF, ("ca_dir", "ca_certificate")],
        required_by={"certificate": "ca_certificate", "crl": "ca_certificate"},
        supports_check_mode=True,
    )
    require_pgbatten(module)
    from pgbatten.cli.app import read_secret_file
    from pgbatten.pki import KeyType
    from pgbatten.secure import SecureRequest, secure
    from pgbatten.secure.plan import render_diff

    p = module.params
    progress: list[str] = []
    try:
        request = SecureRequest(
            hosts=tuple(p["hosts"]),
            ca_dir=Path(p["ca_dir"]) if p["ca_dir"] else None,
            tls_min=p["tls_min"],
            client_auth=p["client_auth"],
            cert_map=p["cert_map"],
            key_type=KeyType.parse(p["key_type"]),
            days=p["days"],
            ca_passphrase=read_secret_file(Path(p["ca_passphrase_file"]))
            if p["ca_passphrase_file"]
            else None,
            timeout=p["timeout"],
            dry_run=module.check_mode,
            replace_ca=p["replace_ca"],
            allow_lockout=p["allow_lockout"],
            end_plaintext_sessions=p["end_plaintext_sessions"],
            certificate=pem_bytes(p["certificate"]),
            ca_certificate=pem_bytes(p["ca_certificate"]),
            crl=pem_bytes(p["crl"]),
        )
        result = secure(discover_cluster(module), request, progress=progress.append)
    except Exception as exc:
        fail_on_error(module, exc, log=progress)
        return
    doc = result.to_json()
    changed = result.plan.changed or result.status == "repaired"
    facts = {
        "status": result.status,
        "files": doc["files"],
        "proofs": doc["proofs"],
        "backups": doc["backups"],
        "certificate": doc["certificate"],
        "client": doc["client"],
        "notes": doc["notes"],
        "secure": doc,
        "log": progress,
    }
    if module._diff and result.plan.changed:
        facts["diff"] = {"prepared": render_diff(result.plan)}
    module.exit_json(changed=changed, **facts)


if __name__ == "__main__":
    main()
