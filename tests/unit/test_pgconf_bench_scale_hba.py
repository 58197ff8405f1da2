"""The pg_hba growth benchmark runs (smoke only: benchmarks print figures, tests do not time them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pgbatten.pgconf import lint, parse_hba

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_scale_hba.py"


def test_bench_prints_the_growth_table() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--max", "100"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["10", "100"]
    assert all(len(row) >= 7 for row in rows)


def test_generated_files_are_valid_and_give_findings() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bench_scale_hba import generate_hba
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = generate_hba(500)
    assert text == generate_hba(500)
    hba = parse_hba(text, major=15)
    assert len(hba.rules) == 502
    ids = {f.id for f in lint(hba)}
    assert {"hba-plaintext-accepted", "hba-shadowed-rule", "hba-md5"} <= ids
