#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Documentation of the pgbatten.tls.sign action plugin (it runs on the control node)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sign
short_description: Sign a PostgreSQL server's CSR with the CA on the control node
description:
  - Runs on the control node (an action plugin), where the CA and its key are; the key is read there and
    nowhere else, and the host's private key is never seen (only its CSR).
  - Checks what the CSR asks for before signing, as C(pgbatten ca sign) does, and refuses with one line
    naming the problem - a name outside O(allowed_hosts), a wildcard, an e-mail or URI name, a key type
    not in O(key_types), the CA bit or a CA key usage, a CSR whose signature does not verify, a CN that is
    not among its names.
  - Certifies only the names and the key, with the CA's own server profile, and records the certificate
    in the CA's inventory as the server O(name).
  - Returns the certificate with the chain the server serves (the cross certificate during a CA rotation),
    the roots it trusts and the CRL.
version_added: 0.1.0
author: pgbatten developers
options:
  csr:
    description: The CSR (PEM), as M(pgbatten.tls.csr) returns it.
    type: str
    required: true
  ca_dir:
    description: The pgbatten CA directory on the control node.
    type: path
    required: true
  allowed_hosts:
    description:
      - Names the server may be certified for (C(db1.example.com), C(*.example.com) for one label more,
        addresses, networks such as C(10.0.0.0/24)). With any, every name the CSR asks for must match one.
    type: list
    elements: str
    default: []
  key_types:
    description: Key types accepted (default every type pgbatten issues).
    type: list
    elements: str
    default: []
  days:
    description: Validity in days (never beyond the CA's own end).
    type: int
    default: 365
  name:
    description: The server's name in the inventory. Default the inventory hostname.
    type: str
  ca_passphrase_file:
    description: A file on the control node holding the CA key's passphrase.
    type: path
attributes:
  check_mode:
    support: full
    description: Checks the CSR and signs in memory only; nothing is recorded.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Sign the host's CSR on the control node
  pgbatten.tls.sign:
    csr: "{{ request.csr }}"
    ca_dir: "{{ pgbatten_tls_ca_dir }}"
    allowed_hosts: "{{ [inventory_hostname, ansible_host, 'localhost', '127.0.0.1', '::1'] }}"
  when: request.csr is not none
  register: signed
"""

RETURN = r"""
certificate:
  description: The certificate and its chain (PEM), for M(pgbatten.tls.secure).
  returned: success
  type: str
ca_certificate:
  description: The roots the server installs as ssl_ca_file (PEM).
  returned: success
  type: str
crl:
  description: The CRL of every CA in force (PEM), or null.
  returned: success
  type: str
serial:
  description: The certificate's serial (decimal).
  returned: success
  type: str
hosts:
  description: The names and addresses certified.
  returned: success
  type: list
  elements: str
not_after:
  description: End of validity (ISO 8601, UTC).
  returned: success
  type: str
signed:
  description: False in check mode (signed in memory, nothing recorded).
  returned: success
  type: bool
"""
