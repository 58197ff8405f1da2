"""`pgbatten check`'s fix commands name the real data directory when the server is a cluster of this machine.

They used to print a literal ``--pgdata DIR``; pasted, that fails or, worse, names a directory called DIR.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

import pytest

from pgbatten.cluster.local import data_dir_serving, is_local_address
from pgbatten.cluster.temp import TempCluster
from pgbatten.findings import PGDATA_PLACEHOLDER
from pgbatten.netutil import free_port
from tests.faultlib import Run

pytestmark = pytest.mark.integration

PLAIN_HBA = (
    "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
)


def fixes(out: str) -> list[str]:
    (result,) = json.loads(out)
    return [f["fix"] for f in result["findings"] if f["fix"] and f["fix"].startswith("pgbatten secure")]


def test_fixes_for_a_cluster_of_this_machine_work_when_pasted(
    make_cluster: Callable[..., TempCluster],
) -> None:
    cluster = make_cluster(hba=PLAIN_HBA)
    code, out, err = Run(["check", "--quick", "--json", f"localhost:{cluster.port}"]).finish()
    assert code == 1, err
    found = fixes(out)
    assert found and all(PGDATA_PLACEHOLDER not in f for f in found)
    assert f"pgbatten secure --pgdata {shlex.quote(str(cluster.data_dir))}" in found
    # Pasted as printed, the fix secures that very cluster.
    command = shlex.split(next(f for f in found if f.endswith(shlex.quote(str(cluster.data_dir)))))
    code, _, err = Run([*command[1:], "--yes", "--ca-dir", str(cluster.root / "ca")]).finish()
    assert code == 0, err
    assert cluster.sql().value("SELECT current_setting('ssl')") == "on"


def test_only_the_cluster_serving_that_address_and_port_is_named(
    make_cluster: Callable[..., TempCluster],
) -> None:
    cluster = make_cluster(hba=PLAIN_HBA)
    assert data_dir_serving(["127.0.0.1"], cluster.port) == cluster.data_dir
    assert data_dir_serving(["localhost"], cluster.port) == cluster.data_dir
    assert data_dir_serving(["127.0.0.1"], free_port()) is None  # nothing of ours listens there
    # Not this machine's address (only a bind is tried, nothing is sent): the same port elsewhere is not it.
    assert not is_local_address("192.0.2.7")
    assert data_dir_serving(["192.0.2.7"], cluster.port) is None
