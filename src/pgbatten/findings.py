"""One ``Finding`` for all pgbatten judges: the outside check, the server audit and the pg_hba.conf lint.

At the bottom of the package graph so that ``probe``, ``audit`` and ``pgconf`` share one type, one severity
vocabulary and one JSON shape. What each finding *means* lives with the code that observes it; this module
only says what a finding is.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITY_ORDER: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
"""Worst first."""


def severity_rank(severity: Severity) -> int:
    """0 for critical, 4 for info: sorts worst first."""
    return SEVERITY_ORDER.index(severity)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth telling. ``id`` is stable kebab-case, safe to match on in scripts.

    ``fix`` is the exact command (or setting) that removes the finding where there is one; ``cis`` cites the
    CIS PostgreSQL Benchmark section that covers it; ``lineno`` is the 1-based line of a configuration file
    the finding is about (the pg_hba.conf lint), None otherwise.
    """

    id: str
    severity: Severity
    title: str
    detail: str = ""
    fix: str | None = None
    cis: str | None = None
    lineno: int | None = None


PGDATA_PLACEHOLDER = "<data_directory>"
"""Stands for the cluster's data directory in a ``fix`` where it is not known. Not valid shell on purpose: a
command pasted with it fails before anything runs, instead of running on a directory that is not meant."""


def secure_fix(*extra: str, pgdata: str | None = None) -> str:
    """``pgbatten secure --pgdata DATA_DIR EXTRA...``, with the placeholder when the directory is unknown."""
    target = shlex.quote(pgdata) if pgdata else PGDATA_PLACEHOLDER
    return " ".join(("pgbatten secure --pgdata", target, *extra))


def with_data_dir(finding: Finding, data_dir: str) -> Finding:
    """``finding`` with the data directory placeholder in its fix replaced by ``data_dir`` (shell-quoted)."""
    if finding.fix is None or PGDATA_PLACEHOLDER not in finding.fix:
        return finding
    return replace(finding, fix=finding.fix.replace(PGDATA_PLACEHOLDER, shlex.quote(data_dir)))


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe severity among ``findings``, None when there are none."""
    ranks = [severity_rank(f.severity) for f in findings]
    return SEVERITY_ORDER[min(ranks)] if ranks else None


def finding_to_json(f: Finding) -> dict[str, Any]:
    """A finding as JSON; key names are a stable interface (``lineno`` only where a line is meant)."""
    out: dict[str, Any] = {
        "id": f.id,
        "severity": f.severity,
        "title": f.title,
        "detail": f.detail,
        "fix": f.fix,
        "cis": f.cis,
    }
    if f.lineno is not None:
        out["lineno"] = f.lineno
    return out


__all__ = ["SEVERITY_ORDER", "Finding", "Severity", "finding_to_json", "severity_rank", "worst"]
