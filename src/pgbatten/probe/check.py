"""``pgbatten check``: the outside proof that a PostgreSQL server is TLS-only, graded.

Shaped like sslyze: :func:`check_target` does the I/O (the probes of ``probe.tls``, ``probe.enumerate`` and
``probe.plaintext``), :func:`aggregate` turns what it saw into a frozen :class:`CheckResult` without
touching the network, and a failing sub-check is recorded as data (a finding, an ``error``) rather than
aborting the scan. What each observation means is in the finding catalogue (``probe.findings``,
``probe.cert_findings``); the grade, A+ to F, in ``probe.grading``.

Two modes. The quick check (the default of :func:`check_target`, what ``pgbatten secure`` runs after every
change) costs a handful of connections: one TLS 1.2-1.3 handshake, one per older version, one plaintext
probe. The full audit (``full=True``, the default of ``pgbatten check``) replaces the per-version handshakes
by the shrinking-offer enumeration of :mod:`probe.enumerate` and adds the direct-SSL probe:

* 1 connection: SSLRequest and a complete libpq-like handshake (the answer to SSLRequest, bytes after
  ``S``, the certificate chain even under TLS 1.3), with a startup message buffered in the SSLRequest's
  packet: whether the server processes it is the CVE-2021-23214 probe (PostgreSQL 17+ refuses such a
  handshake, and one more connection without the buffered bytes completes it);
* n + a few connections: every accepted suite per version, groups and server preference (skipped when the
  first connection already showed there is no TLS, or the server stalled);
* 1 connection: the plaintext login probe;
* 1 connection: direct SSL, offered at the best version the enumeration found (skipped without TLS).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from cryptography import x509

from pgbatten.certfacts import CertificateInfo, load_der_chain
from pgbatten.findings import Finding
from pgbatten.probe import cert_findings, findings, tls, wire
from pgbatten.probe.chain import ChainShape, chain_shape
from pgbatten.probe.enumerate import DirectSsl, TlsEnumeration, direct_ssl_probe, enumerate_tls
from pgbatten.probe.grading import finding_order, grade
from pgbatten.probe.hostname import hostname_matches, hostname_matches_before_15
from pgbatten.probe.plaintext import PlaintextResult, probe_plaintext
from pgbatten.probe.result import CheckResult, VerifyFull, exit_status, result_to_json
from pgbatten.probe.tls import TlsScan
from pgbatten.probe.transport import Deadline
from pgbatten.probe.trust import TrustStore, verify_chain
from pgbatten.probe.versions import TlsVersion, sort_labels

DEADLINE_FACTOR = 20
"""The whole audit of one target ends after this many ``timeout``s, whatever the server does."""


# --------------------------------------------------------------------------------------------- aggregation


def trust_store(
    ca: Sequence[x509.Certificate] | TrustStore | None,
    crls: Sequence[x509.CertificateRevocationList] | None = None,
) -> TrustStore | None:
    """What a verify-full client trusts, from ``--ca`` certificates (or a ready store) and ``--crl``."""
    if ca is None:
        return None
    if isinstance(ca, TrustStore):
        return ca if not crls else replace(ca, crls=(*ca.crls, *crls))
    return TrustStore(certificates=tuple(ca), crls=tuple(crls or ())) if ca else None


def _verify_full(
    host: str,
    chain: Sequence[x509.Certificate],
    whole: bool,
    store: TrustStore | None,
    now: dt.datetime,
    *,
    name_given: bool = True,
) -> VerifyFull:
    leaf = chain[0]
    # Only hostaddr given: libpq has no name to compare (``host`` merely labels the target).
    name = host if name_given else ""
    match = hostname_matches(leaf, name)
    old = hostname_matches_before_15(leaf, name)
    if store is not None:
        verdict = verify_chain(chain, store, now)
        trusted, trust_reason = verdict.trusted, verdict.reason
        if trusted is False and not whole:
            trust_reason += " (only the leaf certificate could be read from this connection)"
        revoked = verdict.revoked
    elif now > leaf.not_valid_after_utc or now < leaf.not_valid_before_utc:
        # Whatever CA a client trusts, OpenSSL refuses a certificate outside its validity.
        when = "has expired" if now > leaf.not_valid_after_utc else "is not yet valid"
        trusted, revoked = False, False
        trust_reason = f"certificate verify failed: certificate {when} (the server certificate; whatever CA "
        trust_reason += "the client trusts)"
    else:
        trusted, trust_reason, revoked = None, "no --ca given, chain not checked", False
    return VerifyFull(
        host,
        match.matched,
        match.reason,
        trusted,
        trust_reason,
        old_client_name_ok=old.matched if old.matched != match.matched else None,
        old_client_name_reason=old.reason if old.matched != match.matched else "",
        revoked=revoked,
    )


def _without_handshake(verdict: VerifyFull, detail: str) -> VerifyFull:
    """The verdict when the server's certificate came from the raw enumeration only: libpq fails at the
    handshake (an SSL error, before any certificate is judged)."""
    reason = "SSL error: a libpq-like client cannot complete the TLS handshake"
    reason += f" ({detail})" if detail else ""
    return replace(verdict, trusted=False, trust_reason=f"{reason}; the chain itself: {verdict.trust_reason}")


def _no_tls_reason(answer: wire.SslAnswer, scan: TlsScan) -> str | None:
    """Why libpq's verify-full fails before any certificate, in libpq's words; None when it cannot be told."""
    if answer is wire.SslAnswer.REFUSED:
        return "server does not support SSL, but SSL was required"
    if answer is wire.SslAnswer.ACCEPTED and scan.best is None and not scan.accepted_versions:
        detail = "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts if a.detail)
        return "SSL error: no TLS handshake completes" + (f" ({detail})" if detail else "")
    return None


_CertificatePart = tuple[
    CertificateInfo | None,
    tuple[CertificateInfo, ...],
    list[VerifyFull],
    ChainShape | None,
    list[Finding],
    str | None,
]
"""(leaf, chain, verify-full verdicts, chain shape, findings, a load problem)."""


def _certificate_part(
    target: wire.Target,
    ders: Sequence[bytes],
    whole: bool,
    store: TrustStore | None,
    now: dt.datetime,
) -> tuple[
    CertificateInfo | None,
    tuple[CertificateInfo, ...],
    list[VerifyFull],
    ChainShape | None,
    list[Finding],
    str | None,
]:
    chain, load_problem = load_der_chain(ders)
    if not chain:
        return None, (), [], None, [], load_problem
    cert_info = CertificateInfo.from_certificate(chain[0])
    infos = tuple(CertificateInfo.from_certificate(c) for c in chain)
    verify = [_verify_full(target.host, chain, whole, store, now, name_given=target.host_name_given)]
    anchors = store.certificates if store is not None else None
    shape = chain_shape(chain, anchors) if whole else None
    found = cert_findings.certificate_findings(cert_info, verify, store is not None, now)
    found += cert_findings.chain_findings(chain, infos, shape)
    found += cert_findings.trust_setting_findings(store)
    return cert_info, infos, verify, shape, found, load_problem


def aggregate(
    target: wire.Target,
    scan: TlsScan,
    plaintext: PlaintextResult | None,
    *,
    ca: Sequence[x509.Certificate] | TrustStore | None,
    now: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] | None = None,
    enumeration: TlsEnumeration | None = None,
    direct: DirectSsl | None = None,
    deadline_hit: str | None = None,
    elapsed: float = 0.0,
) -> CheckResult:
    """Turn raw observations into a :class:`CheckResult`. No network I/O (OpenSSL judges the chain)."""
    full = enumeration is not None or direct is not None
    steps = {"tls_handshakes": scan.connections}
    if enumeration is not None:
        steps["enumeration"] = enumeration.connections
    if plaintext is not None:
        steps["plaintext"] = 1 if plaintext.connected else 0
    if direct is not None:
        steps["direct_ssl"] = direct.connections
    connections = sum(steps.values())
    mode: Literal["quick", "full"] = "full" if full else "quick"
    common: dict[str, Any] = {"connections_by_step": steps, "elapsed": elapsed, "mode": mode}
    found: list[Finding] = []
    if scan.unreachable is not None:
        return CheckResult.ungraded(target, scan.unreachable, connections=connections, **common)
    resp = scan.ssl_response
    if resp is not None and resp.answer is wire.SslAnswer.CLOSED:
        # Nothing answered: a proxy with no backend, a server at its connection limit, or not PostgreSQL.
        return CheckResult.ungraded(target, resp.detail, connections=connections, **common)
    if resp is not None and resp.answer is wire.SslAnswer.UNEXPECTED:
        return CheckResult.ungraded(
            target,
            resp.detail,
            reachable=True,
            connections=connections,
            findings=(findings.not_postgresql(resp.detail),),
            **common,
        )

    protocols = tuple(scan.accepted_versions)
    if enumeration is not None and (enumeration.protocols or not protocols):
        # The enumeration offers every version the raw hello can carry; the stdlib one stops at 1.2.
        protocols = sort_labels((*enumeration.protocols, *protocols))
    found += findings.tls_findings(scan, protocols, full)
    found += findings.plaintext_findings(plaintext)
    if enumeration is not None:
        found += findings.enumeration_findings(enumeration)
    if direct is not None:
        found += findings.direct_ssl_findings(direct.supported)
    found += findings.buffered_plaintext_findings(scan.buffered)
    if deadline_hit:
        found.append(findings.audit_deadline(deadline_hit))

    cert_info: CertificateInfo | None = None
    infos: tuple[CertificateInfo, ...] = ()
    verify: list[VerifyFull] = []
    shape: ChainShape | None = None
    error: str | None = None
    best = scan.best
    ders: Sequence[bytes] = best.chain if best is not None else ()
    whole = best.full_chain if best is not None else False
    no_handshake: str | None = None
    if not ders and enumeration is not None and enumeration.certificate_chain_der:
        ders, whole = enumeration.certificate_chain_der, True
        # Only the raw enumeration reached the certificate: no libpq-like handshake completes, so no
        # verify-full client connects, whatever the chain (which is still judged for the findings).
        no_handshake = "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts if a.detail)
    if ders:
        store = trust_store(ca, crls)
        cert_info, infos, verify, shape, more, error = _certificate_part(target, ders, whole, store, now)
        found += more
        if no_handshake is not None:
            verify = [_without_handshake(v, no_handshake) for v in verify]
    elif protocols:
        error = "the server sent no certificate"
    if not verify and resp is not None and not scan.stalled:
        refusal = _no_tls_reason(resp.answer, scan)
        if refusal is not None:
            verify = [VerifyFull(target.host, False, "no certificate to compare", False, refusal)]

    plaintext_accepted = plaintext.verdict.accepted if plaintext and plaintext.verdict else None
    found.sort(key=finding_order)
    verify_ok = verify[0].ok if verify else None
    return CheckResult(
        target=target,
        reachable=True,
        plaintext_accepted=plaintext_accepted,
        tls_supported=bool(protocols),
        protocols=protocols,
        cipher=best.cipher if best else None,
        certificate=cert_info,
        verify_full=tuple(verify),
        findings=tuple(found),
        grade=grade(
            found, plaintext_accepted=plaintext_accepted, protocols=protocols, verify_full_ok=verify_ok
        ),
        connections_used=connections,
        error=error or (plaintext.error if plaintext and plaintext.verdict is None else None),
        chain_complete=shape.complete if shape else None,
        version_attempts=scan.attempts,
        ciphers=dict(enumeration.ciphers) if enumeration else {},
        server_preference=dict(enumeration.server_preference) if enumeration else {},
        groups=enumeration.groups if enumeration else (),
        chain=infos,
        chain_in_order=shape.in_order if shape else None,
        direct_ssl=direct.supported if direct else None,
        buffered_plaintext_processed=scan.buffered.processed if scan.buffered else None,
        notes=enumeration.notes if enumeration else (),
        **common,
    )


# ------------------------------------------------------------------------------------- I/O entry point


def _step(budget: Deadline, timeout: float, what: str, missed: list[str]) -> float | None:
    """Seconds for the next step (at most ``timeout``), or None (noting ``what`` was cut) once ``budget``
    has passed."""
    left = budget.left()
    if left <= 0.05:
        missed.append(f"deadline reached before {what}")
        return None
    return min(timeout, left)


def check_target(
    target: wire.Target | str,
    *,
    ca: Sequence[x509.Certificate] | TrustStore | None = None,
    crls: Sequence[x509.CertificateRevocationList] | None = None,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
    full: bool = False,
    deadline: float | None = None,
    direct_ssl: bool = True,
) -> CheckResult:
    """Probe one target over the network and grade it. Never raises for network trouble, nor for a bug met
    on the way: that becomes an ungraded result whose ``error`` names it, so a fleet goes on.

    ``target`` may be a :class:`wire.Target` or ``"host[:port]"`` text (a :class:`UsageError` if invalid).
    ``timeout`` bounds each connection; ``deadline`` (default ``DEADLINE_FACTOR * timeout``) the whole target.
    The quick check (default): 1 connection for TLS 1.2/1.3 plus 1 per older version tried, plus 1 plaintext
    login attempt. ``full``: the audit described in the module docstring (``direct_ssl=False`` skips its
    direct-SSL connection). Fewer connections when the answer is already known (no TLS, unreachable, not
    PostgreSQL).
    """
    if isinstance(target, str):
        target = wire.parse_target(target)
    started = time.monotonic()
    try:
        return _check_target(
            target,
            store=trust_store(ca, crls),
            timeout=timeout,
            now=now,
            full=full,
            deadline=deadline,
            direct_ssl=direct_ssl,
        )
    except Exception as exc:  # a bug met on one target must not abort a fleet: report it as this target's
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CheckResult.ungraded(
            target,
            f"the audit failed with an internal error ({type(exc).__name__}: {detail}); please report it",
            mode="full" if full else "quick",
            elapsed=time.monotonic() - started,
        )


def _check_target(
    target: wire.Target,
    *,
    store: TrustStore | None,
    timeout: float,
    now: dt.datetime | None,
    full: bool,
    deadline: float | None,
    direct_ssl: bool,
) -> CheckResult:
    started = time.monotonic()
    budget = Deadline(deadline if deadline is not None else DEADLINE_FACTOR * timeout)
    missed: list[str] = []
    # Connect to the address (libpq's hostaddr), present and verify the name (host).
    host, port, name = target.address, target.port, target.host
    enumeration: TlsEnumeration | None = None
    direct: DirectSsl | None = None
    plaintext: PlaintextResult | None = None
    if full:
        scan = tls.first_handshake(host, port, timeout=timeout, server_name=name, buffered_probe=True)
    else:
        scan = tls.tls_versions_accepted(host, port, timeout=timeout, server_name=name)
    resp = scan.ssl_response
    answered = scan.unreachable is None and resp is not None
    is_pg = (
        answered
        and resp is not None
        and resp.answer not in (wire.SslAnswer.UNEXPECTED, wire.SslAnswer.CLOSED)
    )
    tls_ok = is_pg and resp is not None and resp.answer is wire.SslAnswer.ACCEPTED
    go_on = tls_ok and not scan.stalled and not scan.extra_after_s
    if full and go_on:
        step = _step(budget, timeout, "the cipher-suite enumeration", missed)
        if step is not None:
            # Leave room for the two single connections that follow.
            enumeration = enumerate_tls(
                host,
                port,
                timeout=step,
                deadline=max(budget.left() - 2 * step, step),
                server_name=name,
            )
    if is_pg:
        step = _step(budget, timeout, "the plaintext probe", missed)
        if step is not None:
            plaintext = probe_plaintext(host, port, step)
    if full and direct_ssl and go_on:
        step = _step(budget, timeout, "the direct-SSL probe", missed)
        if step is not None:
            direct = direct_ssl_probe(
                host, port, timeout=step, version=_direct_version(enumeration, scan), server_name=name
            )
    when = now if now is not None else dt.datetime.now(dt.UTC)
    return aggregate(
        target,
        scan,
        plaintext,
        ca=store,
        now=when,
        enumeration=enumeration,
        direct=direct,
        deadline_hit=missed[0] if missed else None,
        elapsed=time.monotonic() - started,
    )


def _direct_version(enumeration: TlsEnumeration | None, scan: TlsScan) -> TlsVersion | None:
    """The best version known to be accepted, so the direct-SSL probe needs exactly one connection."""
    names = list(enumeration.protocols) if enumeration else []
    names += list(scan.accepted_versions)
    for version in (TlsVersion.TLSv1_3, TlsVersion.TLSv1_2):
        if version.label in names:
            return version
    return None


__all__ = [
    "DEADLINE_FACTOR",
    "CheckResult",
    "VerifyFull",
    "aggregate",
    "check_target",
    "exit_status",
    "result_to_json",
]
