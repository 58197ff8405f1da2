"""Grades A+ to F, as data: each rule is a grade, the sentence that explains it, and what triggers it.

:data:`CAPS` are the rules that cap a grade (the lowest cap that applies wins); :data:`A_PLUS` is the one
rule that raises A to A+. The sentences are the documentation: this module's docstring, the README's grade
table and its finding-id table are generated from the same rules (:func:`grade_table_markdown`,
:func:`finding_table_markdown`), and a test compares them with the README word for word.

There is no D or E: every finding that weakens a server either makes a man in the middle possible (F),
breaks its certificate or protocol outright (C) or weakens verification or the cipher choice (B); no
observation fits between C and F, so those letters would never be given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pgbatten.findings import SEVERITY_ORDER, Finding, Severity, severity_rank
from pgbatten.probe.findings import FINDING_SEVERITIES
from pgbatten.probe.result import NOT_GRADED, CheckResult
from pgbatten.probe.versions import MODERN, TlsVersion

GRADES: tuple[str, ...] = ("A+", "A", "B", "C", "F")
"""Best first."""


@dataclass(frozen=True)
class GradeFacts:
    """What grading looks at besides the findings."""

    findings: tuple[Finding, ...]
    plaintext_accepted: bool | None = None
    protocols: tuple[str, ...] = ()
    verify_full_ok: bool | None = None

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(f.id for f in self.findings)


@dataclass(frozen=True)
class GradeRule:
    """One grade and what gives it: any of ``finding_ids``, any finding of ``severities``, or ``condition``.

    For a cap the rule applies when any of those holds. For :data:`A_PLUS` they are what *prevents* it,
    and ``condition`` what it requires.
    """

    grade: str
    text: str
    finding_ids: frozenset[str] = frozenset()
    severities: frozenset[Severity] = frozenset()
    condition: Callable[[GradeFacts], bool] | None = field(default=None, compare=False)

    def matches(self, facts: GradeFacts) -> bool:
        """Whether any finding or the condition triggers this rule."""
        if facts.ids & self.finding_ids:
            return True
        if any(f.severity in self.severities for f in facts.findings):
            return True
        return self.condition is not None and self.condition(facts)


def _no_tls_or_plaintext(facts: GradeFacts) -> bool:
    return facts.plaintext_accepted is True or not facts.protocols


def _a_plus_requirements(facts: GradeFacts) -> bool:
    versions = {TlsVersion.from_label(p) for p in facts.protocols}
    return (
        facts.plaintext_accepted is False
        and bool(versions)
        and versions <= MODERN
        and TlsVersion.TLSv1_3 in versions
        and facts.verify_full_ok is True
    )


CAPS: tuple[GradeRule, ...] = (
    GradeRule(
        "F",
        "the server accepts a plaintext login, or no TLS connection can be made",
        frozenset({"plaintext-accepted", "tls-not-supported", "tls-handshake-failed"}),
        condition=_no_tls_or_plaintext,
    ),
    GradeRule(
        "C",
        "the certificate is expired, not yet valid or revoked by the CRL given, SSL 3.0, TLS 1.0 or 1.1 is "
        "accepted, or a broken "
        "cipher suite (NULL, EXPORT, RC4, DES, anonymous, MD5) is accepted",
        frozenset(
            {
                "cert-expired",
                "cert-not-yet-valid",
                "cert-revoked",
                "ssl3-accepted",
                "tls10-accepted",
                "tls11-accepted",
                "cipher-insecure",
            }
        ),
    ),
    GradeRule(
        "B",
        "no verify-full client could accept the certificate for the host given (host-name mismatch, or "
        "with --ca a chain OpenSSL does not verify or that lacks an intermediate), a weak suite (no forward "
        "secrecy, or CBC), a weak group or DH prime is accepted, or any other high or critical finding",
        frozenset(
            {
                "hostname-mismatch",
                "untrusted-issuer",
                "chain-incomplete",
                "cipher-no-forward-secrecy",
                "cipher-non-aead",
                "weak-groups",
                "weak-dh",
            }
        ),
        frozenset({"critical", "high"}),
    ),
)

A_TEXT = "none of the above"

A_PLUS = GradeRule(
    "A+",
    "A, and plaintext refused, only TLS 1.2 or newer and TLS 1.3 among them, verify-full succeeds with "
    "the --ca given, and no medium, high or critical finding",
    frozenset({"tls13-not-supported", "plaintext-undetermined"}),
    frozenset({"critical", "high", "medium"}),
    condition=_a_plus_requirements,
)

NOT_GRADED_TEXT = "not graded: unreachable, or not a PostgreSQL server"
NOT_GRADED_IDS = frozenset({"not-postgresql"})

GRADE_RULES: tuple[tuple[str, str], ...] = (
    *((rule.grade, rule.text) for rule in CAPS),
    ("A", A_TEXT),
    (A_PLUS.grade, A_PLUS.text),
    (NOT_GRADED, NOT_GRADED_TEXT),
)
"""(grade, when) in the order the README shows them."""


def grade(
    findings: Iterable[Finding],
    *,
    reachable: bool = True,
    plaintext_accepted: bool | None = None,
    protocols: Sequence[str] = (),
    verify_full_ok: bool | None = None,
) -> str:
    """Apply :data:`CAPS` and :data:`A_PLUS`. Pure."""
    facts = GradeFacts(tuple(findings), plaintext_accepted, tuple(protocols), verify_full_ok)
    if not reachable or facts.ids & NOT_GRADED_IDS:
        return NOT_GRADED
    capped = [rule.grade for rule in CAPS if rule.matches(facts)]
    if capped:
        return max(capped, key=GRADES.index)
    blocked = bool(facts.ids & A_PLUS.finding_ids) or any(
        f.severity in A_PLUS.severities for f in facts.findings
    )
    if not blocked and A_PLUS.condition is not None and A_PLUS.condition(facts):
        return "A+"
    return "A"


def finding_order(f: Finding) -> tuple[int, str]:
    """Sort key: worst severity first, then by id."""
    return severity_rank(f.severity), f.id


def with_findings(result: CheckResult, extra: Iterable[Finding]) -> CheckResult:
    """``result`` with ``extra`` findings (e.g. from the server-side audit) added and the grade redone."""
    found = sorted((*result.findings, *extra), key=finding_order)
    verify_ok = result.verify_full[0].ok if result.verify_full else None
    return replace(
        result,
        findings=tuple(found),
        grade=grade(
            found,
            reachable=result.reachable,
            plaintext_accepted=result.plaintext_accepted,
            protocols=result.protocols,
            verify_full_ok=verify_ok,
        ),
    )


# --------------------------------------------------------------------------------------------- documentation


def _md(text: str) -> str:
    return text.replace("--ca", "`--ca`")


def grade_table_markdown() -> str:
    """The README's grade table, from the rules."""
    rows = ["| grade | when |", "| --- | --- |"]
    rows += [f"| {g} | {_md(text)} |" for g, text in GRADE_RULES]
    return "\n".join(rows)


def grade_effect(finding_id: str, severities: Sequence[Severity]) -> str:
    """What one finding id does to the grade, in the words of the finding table."""
    for rule in sorted(CAPS, key=lambda r: -GRADES.index(r.grade)):
        if finding_id in rule.finding_ids:
            return rule.grade
    if finding_id in NOT_GRADED_IDS:
        return "not graded"
    if any(s in CAPS[-1].severities for s in severities):
        return CAPS[-1].grade
    if finding_id in A_PLUS.finding_ids or any(s in A_PLUS.severities for s in severities):
        return "no A+"
    return ""


def finding_table_markdown(severities: Mapping[str, tuple[Severity, ...]] = FINDING_SEVERITIES) -> str:
    """The README's finding-id table: every id of the outside check, worst first, with its grade effect."""
    rows = ["| id | severity | grade |", "| --- | --- | --- |"]

    def key(item: tuple[str, tuple[Severity, ...]]) -> tuple[int, str]:
        return min(SEVERITY_ORDER.index(s) for s in item[1]), item[0]

    for finding_id, sev in sorted(severities.items(), key=key):
        rows.append(f"| `{finding_id}` | {' or '.join(sev)} | {grade_effect(finding_id, sev)} |")
    return "\n".join(rows)


def _rules_doc() -> str:
    lines = ["", "Grading rules (start at A; the lowest cap that applies wins):", ""]
    lines += [f"* {g} - {text}." for g, text in GRADE_RULES]
    return "\n".join(lines) + "\n"


__doc__ = (__doc__ or "") + _rules_doc()

__all__ = [
    "A_PLUS",
    "CAPS",
    "GRADES",
    "GRADE_RULES",
    "NOT_GRADED",
    "GradeFacts",
    "GradeRule",
    "finding_order",
    "finding_table_markdown",
    "grade",
    "grade_effect",
    "grade_table_markdown",
    "with_findings",
]
