"""TLS enumeration: exact lists and exact connection counts against loopback OpenSSL servers.

The fake PostgreSQL answers the SSLRequest with ``S`` and hands the socket to Python's own ``ssl`` server,
so every answer the enumerator parses is real OpenSSL behaviour. A pure simulated server checks the plans'
connection arithmetic on shapes the stdlib server cannot be configured into.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgbatten.probe.cipher_suites import CIPHER_SUITES, GROUP_BY_NAME, TLS13_SUITES, group_name
from pgbatten.probe.enumerate import direct_ssl_probe, enumerate_tls, summarize
from pgbatten.probe.enumeration_plan import HelloJob, Outcome, Verdict, run_enumeration
from pgbatten.probe.tlsraw import AnswerKind, ServerAnswer
from pgbatten.probe.versions import TlsVersion
from tests.unit.tls_helpers import write_self_signed

ECDSA_PAIR = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
ECDSA_PAIR_IANA = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
)
OPENSSL_TLS13_DEFAULT = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}


# --------------------------------------------------------------------------------------------- fake server


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert, key, _der = write_self_signed(tmp_path_factory.mktemp("enum"))
    return cert, key


def server_context(
    cert_files: tuple[Path, Path],
    ciphers: str,
    low: ssl.TLSVersion,
    high: ssl.TLSVersion,
    *,
    server_order: bool = True,
    curve: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_files)
    ctx.set_ciphers(ciphers)
    ctx.minimum_version, ctx.maximum_version = low, high
    if server_order:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


@dataclass
class FakePostgres:
    """Loopback listener: counts accepted connections; stops itself when the test ends."""

    port: int = 0
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def fake_postgres(
    ctx: ssl.SSLContext | None, mode: str = "tls", max_connections: int = 200
) -> Iterator[FakePostgres]:
    """Modes: ``tls`` (SSLRequest, S, TLS), ``direct`` (TLS at once), ``stall``, ``refuse``, ``garbage``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    state = FakePostgres(port=listener.getsockname()[1])

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        if mode == "ssh":
            # An SSH server greets first; its banner starts with the byte of an 'S' answer.
            conn.sendall(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")
            state.stop.wait(2)
            return
        if mode != "direct" and len(conn.recv(8)) != 8:
            return
        if mode == "stall":
            state.stop.wait(10)
            return
        if mode in ("refuse", "garbage"):
            conn.sendall(b"N" if mode == "refuse" else b"SHTTP/1.1 400 Bad Request\r\n\r\n")
            return
        if mode == "tls":
            conn.sendall(b"S")
        assert ctx is not None
        with ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
            tls.do_handshake()

    def serve() -> None:
        while not state.stop.is_set() and state.connections < max_connections:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            state.connections += 1
            with conn, contextlib.suppress(OSError):
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        thread.join(15)
        listener.close()


def probe_direct_ssl(host: str, port: int, timeout: float) -> bool | None:
    """Direct SSL supported? (True, False, or None when unreachable.)"""
    return direct_ssl_probe(host, port, timeout=timeout).supported


# --------------------------------------------------------------------------------------------- real OpenSSL


def test_tls12_and_13_with_server_order(cert_files: tuple[Path, Path]) -> None:
    ctx = server_context(cert_files, ECDSA_PAIR, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    with fake_postgres(ctx) as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=5)
        seen = server.connections
    assert result.errors == ()
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.ciphers["TLSv1.2"] == ECDSA_PAIR_IANA  # the server's order is the configured order
    assert set(result.ciphers["TLSv1.3"]) == OPENSSL_TLS13_DEFAULT
    assert result.server_preference == {"TLSv1.2": True, "TLSv1.3": True}
    assert result.refused == ("SSLv3", "TLSv1", "TLSv1.1")
    assert result.inferred_refused == ("SSLv3", "TLSv1")
    groups13 = result.groups_by_protocol["TLSv1.3"]
    assert {"x25519", "secp256r1", "secp384r1"} <= set(groups13)
    assert len(result.certificate_chain_der) == 1
    # TLS 1.3: one connection per group (3 of them also yield the 3 suites), one ambiguous refusal, one
    # final refusal. TLS 1.2: 2 suites + refusal + reversed-order check (our weakest-first offer happens
    # to match this server's order, so only the extra probe can tell). TLS 1.1: one protocol_version alert.
    assert result.connections == (len(groups13) + 2) + (2 + 1 + 1) + 1
    assert result.connections == seen


def test_pinned_group_and_client_order(cert_files: tuple[Path, Path]) -> None:
    ctx = server_context(
        cert_files,
        ECDSA_PAIR,
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
        server_order=False,
        curve="secp384r1",
    )
    with fake_postgres(ctx) as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=5)
        seen = server.connections
    assert result.errors == ()
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert set(result.ciphers["TLSv1.2"]) == set(ECDSA_PAIR_IANA)
    assert set(result.ciphers["TLSv1.3"]) == OPENSSL_TLS13_DEFAULT
    assert result.server_preference == {"TLSv1.2": False, "TLSv1.3": False}
    assert result.groups == ("secp384r1",)
    # TLS 1.3: HRR (suite 1 + the group), ambiguous refusal, known suites x other groups refused (so the
    # groups ran out), suites 2 and 3, final refusal, reversed-order check = 7. TLS 1.2: 2 + 1 + 1 = 4.
    assert result.connections == 7 + 4 + 1 == seen


def test_tls12_only_enumerates_groups(cert_files: tuple[Path, Path]) -> None:
    ctx = server_context(
        cert_files, ECDSA_PAIR, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, server_order=False
    )
    with fake_postgres(ctx) as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=5)
        seen = server.connections
    assert result.protocols == ("TLSv1.2",)
    assert result.ciphers == {"TLSv1.2": ECDSA_PAIR_IANA}  # client order: ours, AES-128 before ChaCha
    assert result.server_preference == {"TLSv1.2": False}
    assert "TLSv1.3" in result.refused
    groups = result.groups_by_protocol["TLSv1.2"]
    assert {"x25519", "secp256r1", "secp384r1"} <= set(groups)
    assert all(GROUP_BY_NAME[g] < 256 for g in groups)  # no FFDHE group over ECDHE
    # 1 (TLS 1.3 refused) + 3 (suites) + 1 (order) + one per group beyond the first + 1 final + 1 (TLS 1.1)
    assert result.connections == 1 + 3 + 1 + (len(groups) - 1) + 1 + 1 == seen


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls10_and_11(cert_files: tuple[Path, Path]) -> None:
    ctx = server_context(
        cert_files,
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0",
        ssl.TLSVersion.TLSv1,
        ssl.TLSVersion.TLSv1_1,
        curve="secp384r1",
    )
    with fake_postgres(ctx) as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=5)
        seen = server.connections
    pair = ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA")
    assert result.protocols == ("TLSv1", "TLSv1.1")
    assert result.ciphers == {"TLSv1": pair, "TLSv1.1": pair}
    assert result.server_preference == {"TLSv1": True, "TLSv1.1": True}
    assert result.refused == ("SSLv3", "TLSv1.2", "TLSv1.3")
    assert result.inferred_refused == ()
    assert result.groups == ("secp384r1",)
    assert result.connections == seen


def test_stalling_server_is_bounded() -> None:
    with fake_postgres(None, mode="stall") as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=0.3)
    assert result.connections == 1  # the first timeout stops the target instead of paying it per job
    assert len(result.errors) == 1 and "no answer within 0.3s" in str(result.errors[0])
    assert result.protocols == ()
    assert result.elapsed < 10


def test_overall_deadline_bounds_every_read() -> None:
    with fake_postgres(None, mode="stall") as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=60, deadline=0.3)
    assert result.connections == 1 and "no answer" in str(result.errors[0])


@pytest.mark.parametrize(
    ("mode", "message"),
    [("refuse", "does not offer TLS"), ("garbage", "unencrypted data after accepting SSLRequest")],
)
def test_bad_peers_become_errors(mode: str, message: str) -> None:
    with fake_postgres(None, mode=mode) as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=2)
    assert result.connections == 1
    assert not result.complete and message in str(result.errors[0])
    assert result.errors[0].port == server.port


def test_ssh_banner_is_not_postgresql_nor_bytes_after_s() -> None:
    # "SSH-2.0-..." starts with 'S': read as an answer byte, the rest would look like the CVE-2021-23222
    # injection. The one classifier of SSLRequest answers knows the banner.
    with fake_postgres(None, mode="ssh") as server:
        result = enumerate_tls("127.0.0.1", server.port, timeout=2)
    assert result.connections == 1
    assert "not a PostgreSQL answer" in str(result.errors[0]), result.errors
    assert "SSH-2.0" in str(result.errors[0])
    assert "unencrypted data" not in str(result.errors[0])


def test_tls_garbage_is_an_error() -> None:
    # A peer that accepts the SSLRequest and then talks HTTP in place of TLS.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(8)
            conn.sendall(b"S")
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    listener.settimeout(5)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result = enumerate_tls("127.0.0.1", port, timeout=2)
    thread.join(5)
    listener.close()
    assert result.connections == 1 and "speaks HTTP" in str(result.errors[0])


def test_unreachable_port() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        result = enumerate_tls("127.0.0.1", port, timeout=1)
    assert result.connections == 0 and "connection failed" in str(result.errors[0])
    assert probe_direct_ssl("127.0.0.1", port, 1) is None


def test_probe_direct_ssl(cert_files: tuple[Path, Path]) -> None:
    ctx = server_context(cert_files, ECDSA_PAIR, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    ctx.set_alpn_protocols(["postgresql"])
    with fake_postgres(ctx, mode="direct") as direct:
        assert probe_direct_ssl("127.0.0.1", direct.port, 5) is True
    with fake_postgres(ctx, mode="tls") as classic:
        assert probe_direct_ssl("127.0.0.1", classic.port, 5) is False
    with fake_postgres(ctx, mode="direct") as direct:
        result = enumerate_tls("127.0.0.1", direct.port, timeout=5, direct_ssl=True)
    assert result.direct_ssl and result.protocols == ("TLSv1.2", "TLSv1.3") and result.errors == ()


# --------------------------------------------------------------------------------------------- simulated


@dataclass
class SimServer:
    """An OpenSSL-like chooser: no sockets, exact arithmetic."""

    versions: Sequence[TlsVersion]
    suites: Sequence[int]
    groups: Sequence[int]
    server_order: bool
    jobs: list[HelloJob] = field(default_factory=list)

    def exchange(self, job: HelloJob) -> Outcome:
        self.jobs.append(job)
        if job.version not in self.versions:
            return Outcome(Verdict.REFUSED, "alert protocol_version")
        shared_groups = [g for g in job.groups if g in self.groups]
        if self.server_order:
            shared_groups.sort(key=list(self.groups).index)

        def usable(s: int) -> bool:
            info = CIPHER_SUITES[s]
            if info.tls13 != (job.version == TlsVersion.TLSv1_3):
                return False
            return bool(shared_groups) or not (info.tls13 or info.kex == "ECDHE")

        choices = [s for s in job.suites if s in self.suites and usable(s)]
        if self.server_order:
            choices.sort(key=list(self.suites).index)
        if not choices:
            return Outcome(Verdict.REFUSED, "alert handshake_failure")
        suite = choices[0]
        needs_group = job.version == TlsVersion.TLSv1_3 or CIPHER_SUITES[suite].kex == "ECDHE"
        answer = ServerAnswer(
            kind=AnswerKind.SERVER_HELLO,
            complete=True,
            version=int(job.version),
            cipher_suite=suite,
            group=shared_groups[0] if needs_group else None,
        )
        return Outcome(Verdict.ACCEPTED, "server_hello", answer)


@pytest.mark.parametrize("server_order", [True, False])
@pytest.mark.parametrize(
    ("suites13", "groups"),
    [((0x1302, 0x1303, 0x1301), (29, 23, 30, 25, 24, 256)), (TLS13_SUITES, (24,)), ((0x1301,), (29, 23))],
)
def test_simulated_tls13_arithmetic(
    server_order: bool, suites13: tuple[int, ...], groups: tuple[int, ...]
) -> None:
    legacy = (0xC02F, 0xC030, 0x009E, 0x002F)
    sim = SimServer((TlsVersion.TLSv1_2, TlsVersion.TLSv1_3), suites13 + legacy, groups, server_order)
    results = run_enumeration(sim.exchange)
    summary = summarize("sim", 1, results, direct_ssl=False, connections=len(sim.jobs), elapsed=0)
    assert set(summary.ciphers["TLSv1.3"]) == {CIPHER_SUITES[s].name for s in suites13}
    assert set(summary.groups_by_protocol["TLSv1.3"]) == {group_name(g) for g in groups}
    assert set(summary.ciphers["TLSv1.2"]) == {CIPHER_SUITES[s].name for s in legacy}
    if server_order:
        assert summary.ciphers["TLSv1.2"] == tuple(CIPHER_SUITES[s].name for s in legacy)
        assert summary.ciphers["TLSv1.3"] == tuple(CIPHER_SUITES[s].name for s in suites13)
    assert summary.server_preference["TLSv1.2"] is server_order
    assert summary.server_preference["TLSv1.3"] is (server_order if len(suites13) > 1 else None)
    n_s, n_g = len(suites13), len(groups)
    # Joint shrinking: max(n_s, n_g) answers, at most 3 refusals/probes to settle which list ran out and
    # the order; never the n_s + n_g + 2 of enumerating suites and groups one after the other.
    tls13_jobs = [j for j in sim.jobs if j.version == TlsVersion.TLSv1_3]
    assert max(n_s, n_g) + 1 <= len(tls13_jobs) <= max(n_s, n_g) + 4
    tls12_jobs = [j for j in sim.jobs if j.version == TlsVersion.TLSv1_2]
    assert len(tls12_jobs) <= len(legacy) + 2


def test_server_naming_a_group_never_offered_cannot_make_the_plans_spin() -> None:
    """A broken TLS 1.3 server that always names x25519, offered or not: the enumeration must end."""
    from pgbatten.probe.enumeration_plan import judge

    jobs: list[HelloJob] = []

    def exchange(job: HelloJob) -> Outcome:
        jobs.append(job)
        if len(jobs) > 100:
            raise AssertionError("the plan keeps offering the same hello")
        if job.version != TlsVersion.TLSv1_3 or 0x1301 not in job.suites:
            return Outcome(Verdict.REFUSED, "alert handshake_failure")
        answer = ServerAnswer(
            kind=AnswerKind.HELLO_RETRY_REQUEST,
            complete=True,
            version=int(TlsVersion.TLSv1_3),
            cipher_suite=0x1301,
            group=GROUP_BY_NAME["x25519"],
        )
        return judge(job, answer, closed=False)

    results = run_enumeration(exchange)
    assert len(jobs) <= 10
    tls13 = results[0]
    assert tls13.error is not None and "never offered" in tls13.error.reason


def test_tls12_server_inventing_groups_ends_the_group_probes() -> None:
    """A TLS 1.2 server that answers each hello with a new group nobody offered: no endless group probing."""
    from pgbatten.probe.enumeration_plan import judge

    jobs: list[HelloJob] = []
    suite = 0xC02F  # ECDHE-RSA-AES128-GCM-SHA256

    def exchange(job: HelloJob) -> Outcome:
        jobs.append(job)
        if len(jobs) > 100:
            raise AssertionError("the plan keeps probing groups")
        if job.version != TlsVersion.TLSv1_2 or suite not in job.suites:
            return Outcome(Verdict.REFUSED, "alert handshake_failure")
        answer = ServerAnswer(
            kind=AnswerKind.SERVER_HELLO,
            complete=True,
            version=int(TlsVersion.TLSv1_2),
            cipher_suite=suite,
            group=0x7000 + len(jobs),  # never offered, different every time
        )
        return judge(job, answer, closed=False)

    results = run_enumeration(exchange)
    tls12 = next(r for r in results if r.version == TlsVersion.TLSv1_2)
    assert tls12.suites == (suite,)
    assert len(jobs) <= 10
    assert any("without it being offered" in n for n in tls12.notes)
