#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: a client certificate bundle kept present, or revoked, where the CA is."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cert
short_description: Keep a PostgreSQL client certificate bundle present, or revoke a user's certificates
description:
  - Runs where the CA is - the control node (C(delegate_to localhost)) or a host that holds its own CA.
  - O(state=present) issues a bundle as C(pgbatten cert client) does (postgresql.crt and .key, root.crt,
    .pk8, .p12, INSTALL.md) only when the one in O(out_dir) is missing or not right (another CA, another
    user, revoked, expired or due for renewal); otherwise nothing changes.
  - O(state=revoked) revokes every unrevoked client certificate of O(user) and signs the CRL; hand the CRL
    to the servers with M(pgbatten.tls.secure) (the role does).
version_added: 0.1.0
author: pgbatten developers
options:
  user:
    description: The PostgreSQL role (the certificate's CN).
    type: str
    required: true
  state:
    description: Whether the bundle should be present or the user's certificates revoked.
    type: str
    choices: [present, revoked]
    default: present
  ca_dir:
    description: The pgbatten CA directory.
    type: path
    required: true
  out_dir:
    description: The bundle directory (required with O(state=present)).
    type: path
  server_host:
    description: The server name INSTALL.md connects to.
    type: str
  port:
    description: The server port INSTALL.md connects to.
    type: int
    default: 5432
  dbname:
    description: The database INSTALL.md connects to.
    type: str
    default: postgres
  days:
    description: Validity in days.
    type: int
    default: 365
  key_type:
    description: The client key type.
    type: str
    choices: [ecdsa-p256, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  renew_before:
    description: Re-issue when less than this is left (default a third of the life).
    type: str
  p12_password_file:
    description: A file holding the PKCS#12 password (else one is generated and returned once).
    type: path
  ca_passphrase_file:
    description: A file holding the CA key's passphrase.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: A certificate for the application role, on the control node
  pgbatten.tls.cert:
    user: app
    ca_dir: /srv/pki/pgbatten
    out_dir: /srv/pki/bundles/app
    server_host: db1.example.com
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
reasons:
  description: Why a bundle was issued.
  returned: always
  type: list
  elements: str
certificate:
  description: The new certificate (serial, not_after, ...), when one was issued.
  returned: when issued
  type: dict
p12_password:
  description: The generated PKCS#12 password, shown once (null when read from a file).
  returned: when issued
  type: str
revoked:
  description: The serials revoked (state=revoked).
  returned: when revoked
  type: list
  elements: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    fail_on_error,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "state": {"type": "str", "default": "present", "choices": ["present", "revoked"]},
            "ca_dir": {"type": "path", "required": True},
            "out_dir": {"type": "path"},
            "server_host": {"type": "str"},
            "port": {"type": "int", "default": 5432},
            "dbname": {"type": "str", "default": "postgres"},
            "days": {"type": "int", "default": 365},
            "key_type": {
                "type": "str",
                "default": "ecdsa-p256",
                "choices": ["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"],
            },
            "renew_before": {"type": "str"},
            "p12_password_file": {"type": "path", "no_log": False},
            "ca_passphrase_file": {"type": "path", "no_log": False},
        },
        required_if=[("state", "present", ["out_dir"])],
        supports_check_mode=True,
    )
    require_pgbatten(module)
    from pgbatten.cli.app import read_secret_file
    from pgbatten.fleet.clients import ensure_client, revoke_client
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import KeyType

    params = module.params

    def secret(name: str) -> bytes | None:
        return read_secret_file(Path(params[name])) if params[name] else None

    try:
        if params["state"] == "revoked":
            outcome = revoke_client(
                Path(params["ca_dir"]),
                params["user"],
                passphrase=secret("ca_passphrase_file"),
                dry_run=module.check_mode,
            )
        else:
            outcome = ensure_client(
                Path(params["ca_dir"]),
                params["user"],
                out_dir=Path(params["out_dir"]),
                port=params["port"],
                server_host=params["server_host"],
                dbname=params["dbname"],
                days=params["days"],
                key_type=KeyType.parse(params["key_type"]),
                p12_password=secret("p12_password_file"),
                before=parse_duration(params["renew_before"]) if params["renew_before"] else None,
                passphrase=secret("ca_passphrase_file"),
                dry_run=module.check_mode,
            )
    except Exception as exc:
        fail_on_error(module, exc)
        return
    facts = outcome.to_json()
    changed = facts.pop("changed")
    module.exit_json(changed=changed, **facts)


if __name__ == "__main__":
    main()
