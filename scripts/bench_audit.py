#!/usr/bin/env python3
"""Benchmark the remote TLS audit against sslyze and testssl.sh on a throwaway local cluster.

Usage::

    python scripts/bench_audit.py [--sslyze /tmp/sslyze-venv/bin/sslyze] [--testssl PATH]
                                  [--key-type rsa-2048] [--ciphers STRING] [--json-dir DIR]

Starts a cluster (``log_connections = on``, a certificate from a throwaway pgbatten CA, PostgreSQL's
default ``ssl_ciphers`` unless ``--ciphers``), then runs each tool in turn and prints, per tool: wall time,
the server connections it caused (``connection received`` lines in the server log, before/after), and
whether its accepted protocols and cipher suites agree with pgbatten's. Tools that are not installed are
skipped. Not a test: nothing here asserts a time.

Run as root (the cluster runs as the ``postgres`` OS user) or as an unprivileged user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CertificateAuthority, KeyType
from pgbatten.probe.check import check_target
from pgbatten.probe.enumerate import enumerate_tls

PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
CONNECTION_LINE = "connection received"

# sslyze's JSON keys and testssl.sh's ids, mapped to PostgreSQL's protocol spelling.
SSLYZE_KEYS = {
    "ssl_2_0_cipher_suites": "SSLv2",
    "ssl_3_0_cipher_suites": "SSLv3",
    "tls_1_0_cipher_suites": "TLSv1",
    "tls_1_1_cipher_suites": "TLSv1.1",
    "tls_1_2_cipher_suites": "TLSv1.2",
    "tls_1_3_cipher_suites": "TLSv1.3",
}
TESTSSL_PROTOCOL_IDS = {
    "SSLv2": "SSLv2",
    "SSLv3": "SSLv3",
    "TLS1": "TLSv1",
    "TLS1_1": "TLSv1.1",
    "TLS1_2": "TLSv1.2",
    "TLS1_3": "TLSv1.3",
}
TLS13_SUITES = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)
# The bucket for suites a tool reports without their protocol version (testssl.sh --each-cipher).
OLDER = "TLSv1.2 and older"


@dataclass(frozen=True)
class Accepted:
    """What a tool says the server accepts: protocols, and IANA suite names per protocol."""

    protocols: frozenset[str]
    ciphers: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    tool: str
    seconds: float
    connections: int
    accepted: Accepted | None
    note: str = ""
    self_reported: int | None = None


# --------------------------------------------------------------------------------------- cluster


def start_cluster(key_type: KeyType, ciphers: str | None) -> TempCluster:
    """A running cluster with ssl on, before any client has connected."""
    settings = {"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
    if ciphers is not None:
        settings["ssl_ciphers"] = "'" + ciphers.replace("'", "''") + "'"
    cluster = TempCluster(settings=settings)
    try:
        cluster.init()
        issued = CertificateAuthority.create().issue_server(["localhost", "127.0.0.1"], key_type=key_type)
        for name, data in (("server.crt", issued.cert_pem()), ("server.key", issued.key_pem())):
            path = cluster.data_dir / name
            path.write_bytes(data)
            path.chmod(0o600)
            if os.geteuid() == 0:
                os.chown(path, cluster.owner.uid, cluster.owner.gid)
        cluster.start()
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


def connections_so_far(cluster: TempCluster) -> int:
    return cluster.log_text().count(CONNECTION_LINE)


def settled_count(cluster: TempCluster, before: int) -> int:
    """Connections logged since ``before``, once the server has written the last of them."""
    count = connections_so_far(cluster) - before
    for _ in range(20):  # the postmaster logs from forked backends; give the last ones a moment
        time.sleep(0.1)
        now = connections_so_far(cluster) - before
        if now == count:
            break
        count = now
    return count


def measure(
    cluster: TempCluster, tool: str, body: Callable[[], tuple[Accepted | None, str, int | None]]
) -> Run:
    before = connections_so_far(cluster)
    start = time.monotonic()
    accepted, note, self_reported = body()
    seconds = time.monotonic() - start
    return Run(tool, seconds, settled_count(cluster, before), accepted, note, self_reported)


# --------------------------------------------------------------------------------------- tools


def run_pgbatten(port: int) -> tuple[Accepted | None, str, int | None]:
    result = check_target(f"127.0.0.1:{port}", full=True, timeout=5.0)
    ciphers = {p: frozenset(names) for p, names in result.ciphers.items()}
    note = f"grade {result.grade}, {len(result.findings)} findings"
    return Accepted(frozenset(result.protocols), ciphers), note, result.connections_used


def run_quick(port: int) -> tuple[Accepted | None, str, int | None]:
    """The quick check ``secure`` runs for every proof: versions, certificate, plaintext."""
    result = check_target(f"127.0.0.1:{port}", full=False, timeout=5.0)
    note = f"grade {result.grade}, {len(result.findings)} findings"
    return None, note, result.connections_used


def run_enumeration(port: int) -> tuple[Accepted | None, str, int | None]:
    result = enumerate_tls("127.0.0.1", port, timeout=5.0)
    ciphers = {p: frozenset(names) for p, names in result.ciphers.items()}
    note = "complete" if result.complete else "; ".join(str(e) for e in result.errors)
    return Accepted(frozenset(result.protocols), ciphers), note, result.connections


def run_sslyze(exe: str, port: int, out: Path) -> tuple[Accepted | None, str, int | None]:
    json_path = out / "sslyze.json"
    proc = subprocess.run(
        [exe, "--starttls", "postgres", "--json_out", str(json_path), "--quiet", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if not json_path.exists():
        return None, f"no JSON (exit {proc.returncode}): {proc.stderr.strip()[-200:]}", None
    # sslyze also checks Mozilla's "intermediate" configuration by default and exits 1 when it is not met.
    note = f"exit {proc.returncode}" + (" (not Mozilla intermediate)" if proc.returncode == 1 else "")
    return parse_sslyze(json.loads(json_path.read_text())), note, None


def parse_sslyze(doc: Mapping[str, Any]) -> Accepted:
    protocols: set[str] = set()
    ciphers: dict[str, frozenset[str]] = {}
    for server in doc.get("server_scan_results", []):
        scan = server.get("scan_result") or {}
        for key, protocol in SSLYZE_KEYS.items():
            attempt = scan.get(key) or {}
            result = attempt.get("result") or {}
            names = frozenset(
                str(a["cipher_suite"]["name"]) for a in result.get("accepted_cipher_suites") or []
            )
            if names:
                protocols.add(protocol)
                ciphers[protocol] = names
    return Accepted(frozenset(protocols), ciphers)


def run_testssl(exe: str, port: int, out: Path) -> tuple[Accepted | None, str, int | None]:
    json_path = out / "testssl.json"
    json_path.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            exe,
            "--quiet",
            "--warnings",
            "off",
            "--color",
            "0",
            "--starttls",
            "postgres",
            "--protocols",
            "--each-cipher",
            "--jsonfile",
            str(json_path),
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if not json_path.exists():
        return None, f"no JSON (exit {proc.returncode}): {proc.stderr.strip()[-200:]}", None
    return parse_testssl(json.loads(json_path.read_text())), f"-p -e, exit {proc.returncode}", None


def parse_testssl(entries: Sequence[Mapping[str, Any]]) -> Accepted:
    protocols: set[str] = set()
    ciphers: dict[str, set[str]] = {}
    for entry in entries:
        ident = str(entry.get("id", ""))
        finding = str(entry.get("finding", ""))
        if ident in TESTSSL_PROTOCOL_IDS and finding.startswith("offered"):
            protocols.add(TESTSSL_PROTOCOL_IDS[ident])
        elif ident.startswith("cipher_x"):
            # --each-cipher does not say under which version a suite was accepted; the IANA name is last:
            # "xc02f   ECDHE-RSA-AES128-GCM-SHA256   ECDH 256   AESGCM   128   TLS_ECDHE_RSA_WITH_..."
            iana = finding.split()[-1] if finding.split() else ""
            if iana.startswith(("TLS_", "SSL_")):
                bucket = "TLSv1.3" if iana in TLS13_SUITES else OLDER
                ciphers.setdefault(bucket, set()).add(iana)
    return Accepted(frozenset(protocols), {p: frozenset(n) for p, n in ciphers.items()})


# --------------------------------------------------------------------------------------- compare


def compare(reference: Accepted, other: Accepted) -> tuple[str, str]:
    """("yes" | differences) for protocols, then for cipher suites."""
    if reference.protocols == other.protocols:
        proto = "yes"
    else:
        proto = _diff("protocols", reference.protocols, other.protocols)
    if OLDER in other.ciphers:
        reference = _bucketed(reference)
    diffs = []
    for protocol in sorted(set(reference.ciphers) | set(other.ciphers), key=_proto_order):
        ours = reference.ciphers.get(protocol, frozenset())
        theirs = other.ciphers.get(protocol, frozenset())
        if ours != theirs:
            diffs.append(_diff(protocol, ours, theirs))
    total = sum(len(v) for v in other.ciphers.values())
    return proto, (f"yes ({total} suites)" if not diffs else "; ".join(diffs))


def _bucketed(accepted: Accepted) -> Accepted:
    older = frozenset(n for p, names in accepted.ciphers.items() if p != "TLSv1.3" for n in names)
    ciphers = {OLDER: older} if older else {}
    if "TLSv1.3" in accepted.ciphers:
        ciphers["TLSv1.3"] = accepted.ciphers["TLSv1.3"]
    return Accepted(accepted.protocols, ciphers)


def _proto_order(protocol: str) -> int:
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def _diff(label: str, ours: frozenset[str], theirs: frozenset[str]) -> str:
    parts = []
    if theirs - ours:
        parts.append("only they: " + ", ".join(sorted(theirs - ours)))
    if ours - theirs:
        parts.append("only pgbatten: " + ", ".join(sorted(ours - theirs)))
    return f"{label}: " + " / ".join(parts)


def print_table(runs: Sequence[Run], reference: Accepted | None) -> None:
    header = ("tool", "wall time", "server connections", "protocols agree", "cipher suites agree", "note")
    rows: list[tuple[str, ...]] = []
    for run in runs:
        if run.accepted is None or reference is None:
            proto, suites = "-", "-"
        elif run.tool == "pgbatten check (full)":
            proto, suites = (
                "(reference)",
                f"(reference, {sum(len(v) for v in run.accepted.ciphers.values())})",
            )
        else:
            proto, suites = compare(reference, run.accepted)
        conns = str(run.connections)
        if run.self_reported is not None and run.self_reported != run.connections:
            conns += f" (it counted {run.self_reported})"
        rows.append((run.tool, f"{run.seconds:.2f} s", conns, proto, suites, run.note))
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sslyze", help="sslyze executable (default: sslyze on PATH)")
    parser.add_argument("--testssl", help="testssl.sh executable (default: testssl.sh or testssl on PATH)")
    parser.add_argument(
        "--key-type", default="rsa-2048", choices=[k.value for k in KeyType], help="server key type"
    )
    parser.add_argument("--ciphers", help="ssl_ciphers (default: PostgreSQL's own default)")
    parser.add_argument("--json-dir", type=Path, help="keep the tools' JSON output here")
    args = parser.parse_args(argv)

    sslyze = args.sslyze or shutil.which("sslyze")
    testssl = args.testssl or shutil.which("testssl.sh") or shutil.which("testssl")
    out = args.json_dir or Path(tempfile.mkdtemp(prefix="pgbatten-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(KeyType(args.key_type), args.ciphers)
    try:
        port = cluster.port
        version = cluster.bin.path("postgres").parent.parent.name
        print(
            f"cluster: PostgreSQL {version} on 127.0.0.1:{port}, {args.key_type} key, "
            f"ssl_ciphers {'=' + repr(args.ciphers) if args.ciphers else 'default'}"
        )
        runs = [
            measure(cluster, "pgbatten check (full)", lambda: run_pgbatten(port)),
            measure(cluster, "pgbatten enumeration alone", lambda: run_enumeration(port)),
            measure(cluster, "pgbatten check --quick", lambda: run_quick(port)),
        ]
        if sslyze:
            runs.append(measure(cluster, "sslyze", lambda: run_sslyze(sslyze, port, out)))
        else:
            print("sslyze: not installed (pip install sslyze into a venv, then --sslyze PATH)")
        if testssl:
            runs.append(measure(cluster, "testssl.sh", lambda: run_testssl(testssl, port, out)))
        else:
            print("testssl.sh: not installed (apt-get install testssl.sh)")
    finally:
        cluster.cleanup()
    reference = runs[0].accepted
    print()
    print_table(runs, reference)
    if reference is not None:
        print()
        for protocol in sorted(reference.ciphers, key=_proto_order):
            print(f"pgbatten {protocol}: {', '.join(sorted(reference.ciphers[protocol]))}")
    if not args.json_dir:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
