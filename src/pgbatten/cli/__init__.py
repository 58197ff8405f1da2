"""The ``pgbatten`` command: a thin layer of argument parsing and printing over the library.

``app`` holds the root group, ``options`` the options commands share; each ``*_cmd`` module adds one
command family and is imported only when one of its commands runs (see ``PgBattenGroup``). A new command is
listed here, with the modules that define it and its one-line help (a test compares that line with the
command's own).
"""

from pgbatten.cli.app import PgBattenGroup, main

_M = "pgbatten.cli."
PgBattenGroup.lazy = {
    "bench": (
        (_M + "bench_cmd",),
        "Measure what each way of connecting costs: new-connection latency and rate, round trips, query "
        "rate and bulk transfer, for plaintext (if allowed), TLS 1.2, TLS 1.3 and direct SSL.",
    ),
    "ca": (
        (_M + "ca_cmd", _M + "rotation_cmd", _M + "fleet_cmd"),
        "The certificate authority that signs server and client certificates.",
    ),
    "cert": ((_M + "cert_cmd", _M + "revoke_cmd"), "Client certificates: issue bundles, revoke, list."),
    "check": (
        (_M + "check_cmd",),
        "Audit servers from the outside, with no credentials: TLS versions and cipher suites, certificate "
        "chain, verify-full by libpq's rules, direct SSL, plaintext refused.",
    ),
    "crl": ((_M + "cert_cmd", _M + "revoke_cmd"), "The certificate revocation list (CRL)."),
    "csr": (
        (_M + "fleet_cmd",),
        "Make the server's key here (kept here, mode 0600) and a CSR for the names secure would certify.",
    ),
    "demo": (
        (_M + "demo_cmd",),
        "Show an eavesdropper reading a plaintext query, secure the server, and show it again.",
    ),
    "mitm": (
        (_M + "mitm_cmd",),
        "Attack the connections of clients pointed at --listen; say what their settings let through.",
    ),
    "renew": (
        (_M + "renew_cmd",),
        "Re-issue the server and client certificates and CRLs that are due, without dropping a session.",
    ),
    "schedule": (
        (_M + "schedule_cmd",),
        "Write a systemd service + timer (or print a cron line) that runs pgbatten renew daily.",
    ),
    "secure": (
        (_M + "secure_cmd",),
        "Make a running cluster TLS-only, by reload, and prove it from outside.",
    ),
    "status": (
        (_M + "status_cmd",),
        "Report certificates, CRLs and the CA with their ends, and what to do next.",
    ),
    "wiretap": (
        (_M + "wiretap_cmd",),
        "Relay connections to UPSTREAM unchanged, decoding live what an eavesdropper on the path reads.",
    ),
}

__all__ = ["main"]
