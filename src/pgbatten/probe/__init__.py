"""The outside check: prove from the network that a PostgreSQL server is TLS-only.

``check_target("db.example.com:5432", ca=[...], timeout=5.0)`` probes one server and returns a frozen
:class:`CheckResult`; :func:`result_to_json` and :func:`exit_status` serve ``pgbatten check``.

The modules, bottom up: ``wire`` (protocol bytes), ``versions`` (the TLS-version vocabulary),
``transport`` (the one way to connect and ask for TLS, deadlines, typed errors), ``tls`` (stdlib
handshakes), ``client_hello``/``tlsraw``/``enumeration_plan``/``enumerate`` (the raw-ClientHello
enumeration), ``plaintext`` (the plaintext probes), ``hostname`` and ``chain`` (libpq's verdicts),
``findings``/``cert_findings`` (the catalogue), ``grading``, ``result``, ``check`` (orchestration), ``fleet``.
"""

from pgbatten.certfacts import CertificateInfo
from pgbatten.findings import Finding
from pgbatten.probe.check import aggregate, check_target
from pgbatten.probe.fleet import parse_targets_text, read_targets_file, run_fleet
from pgbatten.probe.grading import GRADE_RULES, grade, with_findings
from pgbatten.probe.hostname import HostMatch, hostname_matches
from pgbatten.probe.plaintext import PlaintextResult, probe_plaintext
from pgbatten.probe.result import CheckResult, VerifyFull, exit_status, result_to_json
from pgbatten.probe.tls import (
    HandshakeInfo,
    TlsScan,
    VersionAttempt,
    VersionStatus,
    open_pg_tls,
    tls_versions_accepted,
)
from pgbatten.probe.trust import TrustStore, TrustVerdict, verify_chain
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
    "TrustStore",
    "TrustVerdict",
    "VerifyFull",
    "VersionAttempt",
    "VersionStatus",
    "aggregate",
    "check_target",
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
    "verify_chain",
    "with_findings",
]
