#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Documentation of the pgbatten.tls.trust action plugin (it runs on the control node)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: trust
short_description: Read the CA certificate(s) and CRL that every server of a pgbatten CA installs
description:
  - Runs on the control node (an action plugin). Reads the public parts of the CA directory only - the
    roots in force (both during a CA rotation) and the CRL; never the CA key.
version_added: 0.1.0
author: pgbatten developers
options:
  ca_dir:
    description: The pgbatten CA directory on the control node.
    type: path
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: What the servers install beside their certificate
  pgbatten.tls.trust:
    ca_dir: /srv/pki/pgbatten
  run_once: true
  register: trust
"""

RETURN = r"""
ca_certificate:
  description: The roots in force (PEM).
  returned: success
  type: str
crl:
  description: The CRL of every CA in force (PEM), or null when the CA has none yet.
  returned: success
  type: str
fingerprints_sha256:
  description: The roots' fingerprints.
  returned: success
  type: list
  elements: str
"""
