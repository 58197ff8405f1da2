"""Fleets with one CA whose key never leaves the control node.

The server's key is made on the server and stays there (``request``: a CSR from ``secure``'s plan); the
control node checks and signs the CSR with its CA (``sign``); the server installs the certificate through
``secure``'s own path — plan, diff, validation, reload, proofs, rollback. The Ansible collection in
``ansible/`` wraps these; ``pgbatten csr``, ``pgbatten ca sign`` and ``pgbatten secure --certificate`` do
the same by hand.
"""
