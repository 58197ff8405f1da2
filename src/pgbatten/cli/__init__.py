"""The ``pgbatten`` command: a thin layer of argument parsing and printing over the library.

``app`` holds the root group and the shared options; each ``*_cmd`` module adds one command family.
"""

from pgbatten.cli import (
    bench_cmd,
    ca_cmd,
    cert_cmd,
    check_cmd,
    demo_cmd,
    mitm_cmd,
    renew_cmd,
    rotation_cmd,
    schedule_cmd,
    secure_cmd,
    status_cmd,
    wiretap_cmd,
)
from pgbatten.cli.app import main

__all__ = [
    "bench_cmd",
    "ca_cmd",
    "cert_cmd",
    "check_cmd",
    "demo_cmd",
    "main",
    "mitm_cmd",
    "renew_cmd",
    "rotation_cmd",
    "schedule_cmd",
    "secure_cmd",
    "status_cmd",
    "wiretap_cmd",
]
