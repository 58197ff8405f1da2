#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Documentation of the pgbatten.tls.check action plugin (it runs on the control node)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: check
short_description: Audit a PostgreSQL server from the control node, as a client sees it, and grade it
description:
  - Runs on the control node (an action plugin): no credentials, nothing installed on the host.
  - Probes the host the task runs for as C(pgbatten check) does (TLS versions, certificate chain,
    C(verify-full) by libpq's rules by name and by address, plaintext refused) and returns the graded result.
  - Fails when the server is unreachable or has a finding of O(fail_on) severity (or is graded below
    O(min_grade)), so that a rollout stops before the next host.
version_added: 0.1.0
author: pgbatten developers
options:
  host:
    description: The name clients use, checked against the certificate. Default the inventory hostname.
    type: str
  hostaddr:
    description: The address to connect to. Default C(ansible_host).
    type: str
  port:
    description: The server's port.
    type: int
    default: 5432
  ca_certificate:
    description: The CA certificate(s) a verify-full client trusts (a file on the control node).
    type: path
  ca_dir:
    description: A pgbatten CA directory on the control node (roots, CRL); not with O(ca_certificate).
    type: path
  crl:
    description: A CRL file on the control node.
    type: path
  quick:
    description: Versions, certificate and plaintext only (no cipher-suite enumeration, no direct SSL).
    type: bool
    default: true
  timeout:
    description: Seconds per connection.
    type: float
    default: 5.0
  fail_on:
    description: Fail on findings of this severity or worse; C(never) only reports.
    type: str
    choices: [high, medium, never]
    default: high
  min_grade:
    description: Fail when graded below this.
    type: str
    choices: ["A+", A, B, C, F]
attributes:
  check_mode:
    support: full
    description: Only reads; runs in check mode too.
  diff_mode:
    support: none
notes:
  - Requires the pgbatten Python library beside ansible-core on the control node.
"""

EXAMPLES = r"""
- name: Check the server from the control node before moving on
  pgbatten.tls.check:
    port: "{{ postgresql_port }}"
    ca_dir: "{{ pgbatten_tls_ca_dir }}"
"""

RETURN = r"""
grade:
  description: A+ to F, or not graded.
  returned: always
  type: str
reachable:
  description: Whether the server answered.
  returned: always
  type: bool
plaintext_accepted:
  description: Whether a plaintext login was accepted (null when not tried).
  returned: always
  type: bool
verify_full:
  description: For each name and address checked, whether verify-full passes.
  returned: always
  type: dict
findings:
  description: One line per finding.
  returned: always
  type: list
  elements: str
check:
  description: The whole result, as C(pgbatten check --json) prints it.
  returned: always
  type: dict
"""
