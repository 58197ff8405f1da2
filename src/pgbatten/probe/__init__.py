"""The outside check: prove from the network that a PostgreSQL server is TLS-only.

``check_target("db.example.com:5432", ca=[...], timeout=5.0)`` probes one server and returns a frozen
:class:`CheckResult`; :func:`result_to_json` and :func:`exit_status` serve ``pgbatten check``.
"""

from pgbatten.certfacts import CertificateInfo
from pgbatten.findings import Finding
from pgbatten.probe.check import (
    GRADE_RULES,
    CheckResult,
    VerifyFull,
    aggregate,
    chain_trusted,
    check_target,
    check_targets,
    exit_status,
    grade,
    result_to_json,
    with_findings,
)
from pgbatten.probe.fleet import parse_targets_text, read_targets_file, run_fleet
from pgbatten.probe.hostname import HostMatch, hostname_matches
from pgbatten.probe.tls import (
    HandshakeInfo,
    PlaintextResult,
    TlsScan,
    VersionAttempt,
    VersionStatus,
    open_pg_tls,
    probe_plaintext,
    tls_versions_accepted,
)
from pgbatten.probe.wire import SslAnswer, SslResponse, Target, classify_ssl_response, parse_target

__all__ = [
    "GRADE_RULES",
    "CertificateInfo",
    "CheckResult",
    "Finding",
    "HandshakeInfo",
    "HostMatch",
    "PlaintextResult",
    "SslAnswer",
    "SslResponse",
    "Target",
    "TlsScan",
    "VerifyFull",
    "VersionAttempt",
    "VersionStatus",
    "aggregate",
    "chain_trusted",
    "check_target",
    "check_targets",
    "classify_ssl_response",
    "exit_status",
    "grade",
    "hostname_matches",
    "open_pg_tls",
    "parse_target",
    "parse_targets_text",
    "probe_plaintext",
    "read_targets_file",
    "result_to_json",
    "run_fleet",
    "tls_versions_accepted",
    "with_findings",
]
