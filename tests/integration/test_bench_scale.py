"""``scripts/bench_scale.py`` runs and prints every table (small sizes; the figures themselves are not
asserted: performance goals live in the benchmark's output, never in timed tests)."""

from __future__ import annotations

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
    ):
        assert title in out, out
    assert "growth (CPU): n^" in out
    assert "growth of list (CPU):  n^" in out
    # Both orders of the CRL were served to real connections.
    assert out.count("| random order |") == out.count("| sorted       |") >= 2
