"""The data directory in fix commands: quoted when known, an unmistakable placeholder when not."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from pgbatten.findings import PGDATA_PLACEHOLDER, Finding, secure_fix, with_data_dir
from pgbatten.probe.check import CheckResult
from pgbatten.probe.findings import FIX_SECURE, FIX_TLS13, fix_host
from pgbatten.probe.fixes import with_known_data_dir
from pgbatten.probe.wire import Target


def test_the_placeholder_reads_as_one_and_never_runs(tmp_path: Path) -> None:
    assert f"pgbatten secure --pgdata {PGDATA_PLACEHOLDER}" == FIX_SECURE
    # Pasted into a shell, `<...>` is a redirection from a file that does not exist: nothing runs.
    for fix in (FIX_SECURE, FIX_TLS13):
        pasted = fix.replace("pgbatten", "echo ran", 1)
        done = subprocess.run(["sh", "-c", pasted], cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode != 0 and done.stdout == ""
        assert list(tmp_path.iterdir()) == []  # not even an output file made


def test_a_known_directory_is_quoted_for_the_shell() -> None:
    odd = "/srv/pg data/it's"
    fixed = with_data_dir(Finding("x", "high", "t", fix=fix_host("db.example.com")), odd)
    assert fixed.fix is not None
    assert shlex.split(fixed.fix) == ["pgbatten", "secure", "--pgdata", odd, "--host", "db.example.com"]
    assert (
        secure_fix("--tls-min", "1.3", pgdata=odd)
        == f"pgbatten secure --pgdata {shlex.quote(odd)} --tls-min 1.3"
    )
    untouched = Finding("y", "low", "t", fix="chmod 600 key")
    assert with_data_dir(untouched, odd) is untouched


def test_a_result_takes_the_directory_the_audit_read() -> None:
    result = CheckResult.ungraded(Target("192.0.2.7", 5432), None, reachable=True)
    result = CheckResult(
        **{**result.__dict__, "findings": (Finding("tls-not-supported", "critical", "t", fix=FIX_SECURE),)}
    )
    assert (
        with_known_data_dir(result, "/var/lib/pg").findings[0].fix == "pgbatten secure --pgdata /var/lib/pg"
    )
    # 192.0.2.7 is not this machine's: the placeholder stays.
    assert with_known_data_dir(result).findings[0].fix == FIX_SECURE
