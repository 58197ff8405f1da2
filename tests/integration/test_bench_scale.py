"""``scripts/bench_scale.py`` runs and prints every table (small sizes; the figures themselves are not
asserted: performance goals live in the benchmark's output, never in timed tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_scale.py"


def test_bench_scale_runs_every_section_in_small_mode() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for title in (
        "## CRL: sign and write",
        "## Inventory: issue one more",
        "## PostgreSQL: new TLS connection",
        "## pg_hba.conf rules: pgbatten secure --dry-run end to end",
    ):
        assert title in out, out
    assert "growth (CPU): n^" in out
    assert "growth of list (CPU):  n^" in out
    # secure --dry-run ran to the end on both generated pg_hba.conf files.
    assert re.findall(r"^\| (10|1,000) +\| [0-9.]+ s +\| [0-9.]+ s +\| [0-9]+ MiB +\| 0 +\|$", out, re.M) == [
        "10",
        "1,000",
    ]
    # Both orders of the CRL were served to real connections.
    assert out.count("| random order |") == out.count("| sorted       |") >= 2
