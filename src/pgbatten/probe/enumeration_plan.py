"""The pure plans of the TLS enumeration: what each connection offers, and what its answer means.

Generic scanners try each suite on its own connection; every connection to PostgreSQL forks a backend,
so sslyze opens ~600 connections per server. Here each connection offers *every* remaining candidate and
the server names the one it likes best; that suite is removed and the rest offered again, until the
server refuses. ``n`` accepted suites cost ``n + 1`` connections, and the same answers also reveal the key
exchange groups and whether the server enforces its own order.

Split like sslyze: the plans here are generators that yield the next :class:`HelloJob` and are sent its
:class:`Outcome`; :mod:`probe.enumerate` opens the connections and folds the per-version results. No I/O
here, so a simulated server can check the connection arithmetic exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from pgbatten.errors import ProbeError
from pgbatten.probe.cipher_suites import (
    CIPHER_SUITES,
    EC_GROUPS,
    GROUP_BY_NAME,
    NAMED_GROUPS,
    SECP256R1,
    X25519,
    candidates_for,
    group_name,
    suite_name,
)
from pgbatten.probe.tlsraw import AnswerKind, ServerAnswer
from pgbatten.probe.versions import TlsVersion, version_label

LEGACY_VERSIONS: tuple[TlsVersion, ...] = (
    TlsVersion.TLSv1_2,
    TlsVersion.TLSv1_1,
    TlsVersion.TLSv1,
    TlsVersion.SSLv3,
)
ALL_GROUPS: tuple[int, ...] = tuple(NAMED_GROUPS)
KEY_SHARE_GROUPS: tuple[int, ...] = (X25519, SECP256R1)
"""Real key shares in the first TLS 1.3 hello, as browsers and libpq send them."""


# --------------------------------------------------------------------------------------------- plan data


@dataclass(frozen=True)
class HelloJob:
    """One connection's ClientHello, described: the I/O layer builds the bytes."""

    version: TlsVersion
    suites: tuple[int, ...]
    groups: tuple[int, ...]
    key_share_groups: tuple[int, ...] = ()


class Verdict(StrEnum):
    """How one connection ended, from the enumeration's point of view."""

    ACCEPTED = "accepted"
    """The server chose one of our suites at the version we offered."""
    CHOSE_THEN_FAILED = "chose_then_failed"
    """The server chose a suite, then sent a fatal alert in the same flight: it cannot really use it."""
    REFUSED = "refused"
    """Alert, closed connection, or a ServerHello for another version: nothing acceptable offered."""
    ERROR = "error"
    """Timeout, unreachable, not PostgreSQL, garbage: stop probing this target."""


@dataclass(frozen=True)
class Outcome:
    """One connection's result, judged against the job that produced it."""

    verdict: Verdict
    detail: str = ""
    answer: ServerAnswer | None = None
    error: ProbeError | None = None

    @property
    def suite(self) -> int | None:
        """The suite the server chose, if any."""
        return self.answer.cipher_suite if self.answer else None

    @property
    def group(self) -> int | None:
        """The group the server chose (TLS 1.3 key share / HRR, TLS <= 1.2 ServerKeyExchange)."""
        return self.answer.group if self.answer else None


def judge(job: HelloJob, answer: ServerAnswer | None, *, closed: bool) -> Outcome:
    """Classify the server's (possibly partial, possibly absent) answer to ``job``. Pure."""
    if answer is None or answer.kind is AnswerKind.INCOMPLETE:
        return Outcome(Verdict.REFUSED, "connection closed without an answer" if closed else "no answer")
    if answer.kind is AnswerKind.ALERT:
        return Outcome(Verdict.REFUSED, f"alert {answer.alert_name}", answer)
    if answer.version != job.version:
        return Outcome(Verdict.REFUSED, f"server answered {version_label(answer.version or 0)}", answer)
    if answer.cipher_suite not in job.suites:
        return Outcome(
            Verdict.ERROR,
            error=ProbeError(
                "", 0, f"server chose {suite_name(answer.cipher_suite or 0)}, which we never offered"
            ),
        )
    if answer.kind is AnswerKind.HELLO_RETRY_REQUEST and job.version < TlsVersion.TLSv1_3:
        return Outcome(Verdict.ERROR, error=ProbeError("", 0, "HelloRetryRequest below TLS 1.3"))
    if job.version >= TlsVersion.TLSv1_3 and answer.group is not None and answer.group not in job.groups:
        # RFC 8446 4.2.8 forbids it, and the shrinking offer relies on every answer naming one of ours.
        return Outcome(
            Verdict.ERROR,
            error=ProbeError("", 0, f"server chose group {group_name(answer.group)}, which we never offered"),
        )
    if answer.alert_description is not None:
        return Outcome(Verdict.CHOSE_THEN_FAILED, f"alert {answer.alert_name} after choosing", answer)
    return Outcome(Verdict.ACCEPTED, answer.kind.value, answer)


@dataclass(frozen=True)
class VersionResult:
    """Everything learned about one protocol version."""

    version: TlsVersion
    accepted: bool | None
    """None when an error stopped the probe before the first answer."""
    suites: tuple[int, ...] = ()
    """Accepted suites in the order the server chose them (its preference order if it enforces one)."""
    groups: tuple[int, ...] = ()
    server_preference: bool | None = None
    refusal: str | None = None
    """Why the first hello failed, e.g. ``alert protocol_version``."""
    certificates: tuple[bytes, ...] = ()
    dh_prime_bits: tuple[int, ...] = ()
    error: ProbeError | None = None
    notes: tuple[str, ...] = ()
    inferred: bool = False
    """Refused without a hello of its own (see :func:`enumerate_tls`)."""


@dataclass
class _Observation:
    offered: tuple[int, ...]
    groups: tuple[int, ...]
    pick: int


@dataclass
class _PlanState:
    """Mutable scratch state of one plan; frozen into a VersionResult at the end."""

    version: TlsVersion
    suites: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    observations: list[_Observation] = field(default_factory=list)
    certificates: tuple[bytes, ...] = ()
    dh_bits: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, job: HelloJob, out: Outcome) -> None:
        answer = out.answer
        assert answer is not None and answer.cipher_suite is not None
        self.observations.append(_Observation(job.suites, job.groups, answer.cipher_suite))
        if answer.certificates and not self.certificates:
            self.certificates = answer.certificates
        if answer.dh_prime_bits is not None and answer.dh_prime_bits not in self.dh_bits:
            self.dh_bits.append(answer.dh_prime_bits)
        self.notes.extend(n for n in answer.notes if n not in self.notes)

    def result(self, *, error: ProbeError | None = None, preference: bool | None = None) -> VersionResult:
        return VersionResult(
            version=self.version,
            accepted=bool(self.suites),
            suites=tuple(self.suites),
            groups=tuple(self.groups),
            server_preference=preference,
            certificates=self.certificates,
            dh_prime_bits=tuple(self.dh_bits),
            error=error,
            notes=tuple(self.notes),
        )


Plan = Generator[HelloJob, Outcome, VersionResult]


def _first_refusal(version: TlsVersion, out: Outcome) -> VersionResult:
    if out.verdict is Verdict.ERROR:
        return VersionResult(version, None, error=out.error)
    return VersionResult(version, False, refusal=out.detail)


def _selectable(suite: int, groups: Sequence[int], accepted_groups: Sequence[int], tls13: bool) -> bool:
    # A (EC)DHE-by-group suite is only choosable when the offer shares a group with the server.
    needs_group = tls13 or CIPHER_SUITES[suite].kex == "ECDHE"
    return not needs_group or any(g in accepted_groups for g in groups)


def _preference_verdict(acc: _PlanState, tls13: bool) -> tuple[bool | None, bool]:
    """(server enforces its order?, decided?) from the answers so far, given the final accepted lists.

    Client preference predicts each pick is the first selectable accepted suite in our offer; server
    preference predicts the best one by the server's ranking, which is the order the shrinking offers
    discovered. One contradicted pick decides; a pick where the two predictions differ decides too.
    """
    accepted = acc.suites
    if len(accepted) < 2:
        return None, True
    rank = {s: i for i, s in enumerate(accepted)}
    for obs in acc.observations:
        choosable = [s for s in obs.offered if s in rank and _selectable(s, obs.groups, acc.groups, tls13)]
        if not choosable:
            continue
        client_pick = choosable[0]
        server_pick = min(choosable, key=rank.__getitem__)
        if obs.pick != client_pick:
            return True, True
        if client_pick != server_pick:
            return False, True
    return None, False


def _reversed_job(acc: _PlanState, groups: Sequence[int]) -> HelloJob:
    return HelloJob(acc.version, tuple(reversed(acc.suites)), tuple(groups))


def _finish_preference(
    acc: _PlanState, tls13: bool, groups: Sequence[int]
) -> Generator[HelloJob, Outcome, bool | None]:
    """Decide server preference, spending one connection (accepted suites reversed) only if still open."""
    pref, decided = _preference_verdict(acc, tls13)
    if decided:
        return pref
    out = yield _reversed_job(acc, groups)
    if out.verdict is not Verdict.ACCEPTED or out.suite is None:
        return None
    acc.observations.append(_Observation(tuple(reversed(acc.suites)), tuple(groups), out.suite))
    return _preference_verdict(acc, tls13)[0]


def certificate_group(chain: Sequence[bytes]) -> int | None:
    """Named group of the leaf's EC key: RFC 4492 makes TLS <= 1.2 ECDSA depend on offering it."""
    if not chain:
        return None
    try:
        key = x509.load_der_x509_certificate(chain[0]).public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return GROUP_BY_NAME.get(key.curve.name)
    return None


def plan_legacy(
    version: TlsVersion,
    candidates: Sequence[int] | None = None,
    groups: Sequence[int] = EC_GROUPS,
    *,
    enumerate_groups: bool = True,
) -> Plan:
    """Plan for one TLS <= 1.2 version: shrink the suites, then (optionally) the ECDHE groups.

    Suites are offered with every group each time: in TLS <= 1.2 an ECDSA certificate is only usable
    when the client lists its curve (RFC 4492 5.1), so shrinking groups alongside would hide suites.
    Group enumeration then re-offers a known ECDHE suite (an RSA-signed one when possible, for the same
    reason) with the groups not yet seen; for an ECDSA-only server the certificate's curve is appended
    last, and the probing stops if the server insists on it.
    """
    acc = _PlanState(version)
    s_rem = list(candidates if candidates is not None else candidates_for(version))
    all_groups = tuple(groups)
    first = True
    while s_rem:
        job = HelloJob(version, tuple(s_rem), all_groups)
        out = yield job
        if out.verdict is Verdict.ERROR:
            return _first_refusal(version, out) if first else acc.result(error=out.error)
        if out.verdict is Verdict.REFUSED:
            if first:
                return _first_refusal(version, out)
            break
        first = False
        acc.record(job, out)
        assert out.suite is not None
        s_rem.remove(out.suite)
        if out.verdict is Verdict.CHOSE_THEN_FAILED:
            acc.notes.append(f"{suite_name(out.suite)} chosen, then {out.detail}")
            continue
        acc.suites.append(out.suite)
        if out.group is not None and out.group not in acc.groups:
            acc.groups.append(out.group)
    if first:
        return VersionResult(version, False, refusal="no candidate suites")
    pref = yield from _finish_preference(acc, False, all_groups)

    ecdhe = [s for s in acc.suites if CIPHER_SUITES[s].kex == "ECDHE"]
    rsa_signed = [s for s in ecdhe if CIPHER_SUITES[s].auth == "RSA"]
    if enumerate_groups and ecdhe:
        suites = tuple(rsa_signed or ecdhe)
        cert_group = None if rsa_signed else certificate_group(acc.certificates)
        while True:
            offer = [g for g in all_groups if g not in acc.groups]
            if not offer:
                break
            if cert_group is not None and cert_group in acc.groups:
                offer.append(cert_group)
            job = HelloJob(version, suites, tuple(offer))
            out = yield job
            if out.verdict is Verdict.ERROR:
                return acc.result(error=out.error, preference=pref)
            if out.verdict is not Verdict.ACCEPTED or out.group is None:
                break
            if out.group not in offer:
                # A server that ignores supported_groups: offering less would never change its answer.
                acc.notes.append(
                    f"server chose ECDHE group {group_name(out.group)} without it being offered; the "
                    "group list may be incomplete"
                )
                break
            if out.group in acc.groups:
                # Offered last, yet chosen: complete for a client-ordered server; a server ranking groups
                # itself could still accept ones it likes less than the certificate's curve.
                acc.notes.append(
                    f"ECDHE group list ends at the certificate's curve {group_name(out.group)}; complete "
                    "unless the server ranks groups itself"
                )
                break
            acc.groups.append(out.group)
    return acc.result(preference=pref)


def plan_tls13(
    candidates: Sequence[int] | None = None,
    groups: Sequence[int] = ALL_GROUPS,
    key_share_groups: Sequence[int] = KEY_SHARE_GROUPS,
) -> Plan:
    """Plan for TLS 1.3: shrink suites and groups in the same connections.

    Every TLS 1.3 answer (ServerHello or HelloRetryRequest) names both a suite and a group, so each
    connection removes one of each. When the server refuses, either list may have run out; a probe with
    the known-good suites and the remaining groups tells which, and is useful either way. After the suites
    are done, group probes offer the accepted suites reversed, which settles server preference for free.
    """
    acc = _PlanState(TlsVersion.TLSv1_3)
    s_rem = list(candidates if candidates is not None else candidates_for(TlsVersion.TLSv1_3))
    g_rem = list(groups)
    s_done = g_done = False
    s_tentative = False
    first = True
    while not (s_done and g_done):
        offer_s = tuple(reversed(acc.suites)) if s_done else tuple(s_rem)
        offer_g = tuple(acc.groups) if g_done else tuple(g_rem)
        if not offer_s or not offer_g:
            s_done = s_done or not offer_s
            g_done = g_done or not offer_g
            if not acc.suites or not acc.groups:
                break
            continue
        job = HelloJob(TlsVersion.TLSv1_3, offer_s, offer_g, tuple(key_share_groups) if first else ())
        out = yield job
        if out.verdict is Verdict.ERROR:
            return _first_refusal(job.version, out) if first else acc.result(error=out.error)
        if out.verdict is not Verdict.ACCEPTED or out.suite is None or out.group is None:
            if first:
                return _first_refusal(job.version, out)
            if s_tentative:
                # Known-good suites with the remaining groups failed: the groups ran out, not the suites.
                s_tentative, s_done, g_done = False, False, True
            elif s_done:
                g_done = True
            elif g_done:
                s_done = True
            else:
                # Ambiguous: assume the suites ran out (TLS 1.3 has 5 suites, servers many more groups)
                # and let the next probe, known suites x remaining groups, confirm it.
                s_done = s_tentative = True
            continue
        first = False
        s_tentative = False
        acc.record(job, out)
        if not s_done and out.suite in s_rem:
            s_rem.remove(out.suite)
            acc.suites.append(out.suite)
        if not g_done and out.group in g_rem:
            g_rem.remove(out.group)
            acc.groups.append(out.group)
    if first:
        return VersionResult(TlsVersion.TLSv1_3, False, refusal="no candidate suites or groups")
    pref = yield from _finish_preference(acc, True, acc.groups)
    return acc.result(preference=pref)


R = TypeVar("R")


def drive(plan: Generator[HelloJob, Outcome, R], exchange: Callable[[HelloJob], Outcome]) -> R:
    """Run a plan to completion, feeding it the outcome of each job from ``exchange``."""
    try:
        job = next(plan)
        while True:
            job = plan.send(exchange(job))
    except StopIteration as stop:
        result: R = stop.value
        return result


def run_enumeration(
    exchange: Callable[[HelloJob], Outcome], *, exhaustive: bool = False
) -> list[VersionResult]:
    """Run every version's plan against ``exchange`` (real sockets or a simulated server).

    Unless ``exhaustive``, a ``protocol_version`` alert to a hello at version v marks every older version
    refused without probing it: RFC 5246 E.1 has a server answer with the highest version it supports up
    to the client's, so refusing v outright means it supports nothing older either. Stops at the first
    error.
    """
    results = [drive(plan_tls13(), exchange)]
    if results[0].error is not None and results[0].accepted is None:
        return results
    inferred = False
    for version in LEGACY_VERSIONS:
        if inferred:
            results.append(VersionResult(version, False, refusal="inferred", inferred=True))
            continue
        # TLS 1.3's enumeration already lists the groups; TLS <= 1.2 then only reports those it met.
        result = drive(plan_legacy(version, enumerate_groups=not results[0].accepted), exchange)
        results.append(result)
        if result.error is not None:
            break
        inferred = not exhaustive and result.refusal == "alert protocol_version"
    return results


__all__ = [
    "ALL_GROUPS",
    "KEY_SHARE_GROUPS",
    "LEGACY_VERSIONS",
    "HelloJob",
    "Outcome",
    "Plan",
    "Verdict",
    "VersionResult",
    "certificate_group",
    "drive",
    "judge",
    "plan_legacy",
    "plan_tls13",
    "run_enumeration",
]
