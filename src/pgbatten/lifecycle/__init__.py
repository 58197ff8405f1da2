"""Keeping what pgbatten installs valid over time: status, renewal, scheduling and CA rotation.

``timeline`` holds the pure decisions (each takes ``now``); ``facts`` reads the CA directory and the
clusters; ``status`` judges them; ``export`` renders JSON and Prometheus metrics.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from pgbatten.lifecycle.facts import read_all
from pgbatten.lifecycle.status import evaluate
from pgbatten.lifecycle.timeline import Thresholds
from pgbatten.lifecycle.views import StatusReport
from pgbatten.pki import ClusterRef


def status(
    ca_dir: Path,
    clusters: Sequence[ClusterRef] = (),
    *,
    now: dt.datetime | None = None,
    thresholds: Thresholds | None = None,
    timeout: float = 5.0,
) -> StatusReport:
    """Read the CA directory and every cluster named, and judge them at ``now`` (default: the clock)."""
    from pgbatten.lifecycle.rotation import read_rotation

    ca, facts = read_all(ca_dir, clusters, timeout=timeout)
    return evaluate(
        ca,
        facts,
        now=now or dt.datetime.now(dt.UTC),
        thresholds=thresholds,
        rotation=read_rotation(ca_dir),
    )


__all__ = ["ClusterRef", "StatusReport", "Thresholds", "status"]
