"""``check`` from the control node against one server of a fleet, and the verdict that lets a rollout go on.

A rollout moves to the next server only when this one passes from the outside, as a client sees it: the
graded ``pgbatten check`` result, with the CA the control node hands out as the client's ``sslrootcert``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pgbatten.errors import UsageError
from pgbatten.probe import check_target
from pgbatten.probe.grading import GRADES
from pgbatten.probe.result import CheckResult, result_to_json
from pgbatten.probe.trust import load_trust_store
from pgbatten.probe.wire import Target

FailOn = Literal["high", "medium", "never"]
_FAILING = {"high": ("critical", "high"), "medium": ("critical", "high", "medium"), "never": ()}


def check_server(
    host: str,
    *,
    port: int = 5432,
    hostaddr: str | None = None,
    ca_file: Path | None = None,
    crl_file: Path | None = None,
    quick: bool = True,
    timeout: float = 5.0,
) -> CheckResult:
    """Probe ``host`` (the name clients use; ``hostaddr`` the address to reach it at) and grade it."""
    if crl_file is not None and ca_file is None:
        raise UsageError("a CRL needs the CA it belongs to: give the CA certificate as well")
    trust = load_trust_store(ca_file, crl_file) if ca_file is not None else None
    target = Target(host, port, hostaddr=hostaddr if hostaddr and hostaddr != host else None)
    return check_target(target, ca=trust, timeout=timeout, full=not quick)


def verdict(result: CheckResult, *, fail_on: FailOn = "high", min_grade: str | None = None) -> str | None:
    """Why the rollout must stop at this server, or None when it may go on."""
    if min_grade is not None and min_grade not in GRADES:
        raise UsageError(f"min_grade must be one of {', '.join(GRADES)}, not {min_grade!r}")
    if not result.reachable:
        return f"{result.target} is unreachable: {result.error or 'no answer'}"
    failing = [f for f in result.findings if f.severity in _FAILING[fail_on]]
    if failing:
        return f"{result.target} (grade {result.grade}): " + "; ".join(
            f"{f.severity}: {f.title}" for f in failing
        )
    if min_grade is not None and (
        result.grade not in GRADES or GRADES.index(result.grade) > GRADES.index(min_grade)
    ):
        return f"{result.target} is graded {result.grade}, below {min_grade}"
    return None


def check_facts(result: CheckResult) -> dict[str, Any]:
    """The graded result as an Ansible task returns it."""
    return {
        "grade": result.grade,
        "reachable": result.reachable,
        "plaintext_accepted": result.plaintext_accepted,
        "protocols": list(result.protocols),
        "verify_full": {v.host: v.ok for v in result.verify_full},
        "findings": [f"{f.severity}: {f.title}" for f in result.findings],
        "check": result_to_json(result),
    }
