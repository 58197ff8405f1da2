"""pgbatten's readers of pg_hba.conf, pg_ident.conf and postgresql.conf against PostgreSQL itself.

Each file is written into a real cluster and read back through ``pg_hba_file_rules``,
``pg_ident_file_mappings`` and ``pg_file_settings``: PostgreSQL refuses it exactly when pgbatten does, and
when both accept it they read the same rules, mappings and settings. Hand-picked traps first, then files
hypothesis makes up from the same pieces. The server's own version sets the rules we parse with.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgbatten.cluster.temp import TempCluster
from pgbatten.errors import ClusterError, ParseError
from pgbatten.pgconf import load_hba, load_ident, parse_conf, token_value
from pgbatten.pgconf.guc_values import parse_bool
from pgbatten.pgconf.hba import HbaRule

pytestmark = pytest.mark.integration

Row = tuple[Any, ...]


@pytest.fixture
def cluster(make_cluster: Callable[..., TempCluster]) -> TempCluster:
    made = make_cluster()
    (made.data_dir / "file").write_text("db1\n")  # what "@file" in a rule stands for
    (made.data_dir / "empty.d").mkdir()  # a directory without files, for the include traps
    # The settings fuzz goes into a file of its own, read where postgresql.conf includes it.
    with made.config_file.open("a") as conf:
        conf.write("include_if_exists = 'fuzz.conf'\n")
    (made.config_file.parent / "fuzz.conf").touch()
    return made


def major(cluster: TempCluster) -> int:
    return int(cluster.sql().value("SHOW server_version_num") or 0) // 10000


# --- pg_hba.conf ------------------------------------------------------------------------------------


def postgres_hba(cluster: TempCluster, data: bytes) -> list[Row]:
    cluster.hba_file.write_bytes(data)
    rows = cluster.sql().query(
        "SELECT line_number, type, to_json(database), to_json(user_name), address, netmask, auth_method,"
        " error FROM pg_hba_file_rules ORDER BY line_number"
    )
    return [
        (int(r[0] or 0), r[1], json.loads(r[2] or "null"), json.loads(r[3] or "null"), *r[4:]) for r in rows
    ]


def same_address(rule: HbaRule, address: str | None, netmask: str | None) -> bool:
    """Our address text against the view's address and netmask columns."""
    if netmask is None:
        return rule.address == address
    assert rule.address is not None and address is not None
    host, _, bits = rule.address.partition("/")
    mask = ipaddress.ip_address(netmask)
    zero = "::" if mask.version == 6 else "0.0.0.0"  # noqa: S104 - a netmask, not an address to bind
    ours = ipaddress.ip_network(f"{zero}/{bits}").netmask if bits.isdigit() else ipaddress.ip_address(bits)
    return ipaddress.ip_address(host) == ipaddress.ip_address(address) and ours == mask


def expand(tokens: tuple[str, ...]) -> list[str]:
    """Names as the view shows them: quotes removed, ``@file`` replaced by what the file says."""
    return [name for t in tokens for name in (["db1"] if t == "@file" else [token_value(t)])]


def assert_agree_hba(cluster: TempCluster, data: bytes, version: int) -> None:
    rows = postgres_hba(cluster, data)
    fatal = [r for r in rows if r[1] is None]  # no type: the line was not loaded (a warning keeps its type)
    try:
        # Read from where PostgreSQL read it: include targets are looked up beside it.
        ours = load_hba(cluster.hba_file, major=version)
    except ParseError as exc:
        assert fatal, f"PostgreSQL loads what we refuse ({exc}): {data!r}"
        if b"\0" not in data:  # PostgreSQL does not count a line a NUL byte joined to the one before
            assert exc.lineno == fatal[0][0], f"{exc} vs {fatal[0]}: {data!r}"
        return
    assert not fatal, f"PostgreSQL refuses what we load ({fatal[0]}): {data!r}"
    assert len(ours.rules) == len(rows), data
    for rule, (lineno, conn, dbs, users, address, netmask, method, _error) in zip(
        ours.rules, rows, strict=True
    ):
        if b"\0" not in data:
            assert rule.lineno == lineno, data
        assert rule.conn_type.value == conn, data
        assert expand(rule.databases) == dbs, data
        assert expand(rule.users) == users, data
        assert same_address(rule, address, netmask), (rule.address, address, netmask, data)
        assert rule.method == method or (rule.method, method) == ("ident", "peer"), data


HBA_TRAPS = [
    b"host all all 0/0 md5\n",
    b"host all all 127.1/32 md5\n",
    b"host all all 010.0.0.1 255.255.255.255 md5\n",
    b"host all all 0x7f.1/32 md5\nhost all all 4294967295/32 md5\n",
    b"host all all 10.0.0.0/+8 md5\nhost all all 10.0.0.0/08 md5\nhost all all 10.0.0.0/-0 md5\n",
    b"host all all 10.0.0.300/8 md5\n",
    b"host all all 10.0.0.0/33 md5\n",
    b"host all all 1.2.3.4/ md5\n",
    b"host all all db.example.com/24 md5\n",
    b"host all all 10.0.0.1 255.0.255.0 md5\n",
    b"host all all 10.0.0.0 ffff:: md5\n",
    b"local all all peer\nhost all all 127.0.0.1/32 md5 \\",
    b"local all all peer\nhost all all 127.0.0.1/32 md5 \\\n",
    b"host all all 127.0.0.1/32 \\\\\n\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 \\\n   md5   # a continued rule\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 md5 # comment \\\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 \\\r\n md5\r\n",
    b"# note\x00 junk\nhost all all 127.0.0.1/32 md5\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 md5\x00junk\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 md5\x00junk\n\nlocal all all trust\n",
    b"host all all 127.0.0.1/32 md5\x00",
    # Include targets (PostgreSQL 16+; an invalid connection type before): a missing file or directory is
    # an error, a directory given to include reads as empty, include_if_exists skips what is missing.
    b"include other.conf\n",
    b"include_dir hba.d\nlocal all all peer\n",
    b"include_if_exists other.conf\nlocal all all peer\n",
    b"include_dir file\nlocal all all peer\n",
    b"include empty.d\nlocal all all peer\n",
    b"include_dir empty.d\nlocal all all peer\n",
    b'host "all","x y" "all" 127.0.0.1/32 md5\nhost all ,all 127.0.0.1/32 md5\n',
    b'host all all "samehost" md5\nhost "all" all samenet md5\n',
    b'host all "unterminated 127.0.0.1/32 md5\n',
    b"host all " + b"a" * 10239 + b" 127.0.0.1/32 md5\n",
    b"host all " + b"a" * 10240 + b" 127.0.0.1/32 md5\n",
    b"host all " + b"a" * 10239 + b", 127.0.0.1/32 md5\n",
    b'host all "' + b"a" * 10239 + b'" 127.0.0.1/32 md5\n',
    b"local all all peer # caf\xe9\n",
    b"host\tall\tall\t127.0.0.1/32\tmd5\r\nlocal all all trust\r\n",
    b"hostssl all all all cert clientcert=verify-ca\n",
    b"host all all 127.0.0.1/32 cert\n",
]


def test_hba_traps_read_as_postgres_reads_them(cluster: TempCluster) -> None:
    version = major(cluster)
    for data in HBA_TRAPS:
        assert_agree_hba(cluster, data, version)


# Pieces of lines, tricky ones included, for files PostgreSQL must read the same way.
_SEP = st.sampled_from([" ", "\t", "  ", " \\\n ", "\\\n", " \r "])
_NAMES = st.sampled_from(
    [
        "all",
        '"all"',
        "db1",
        "db1,db2",
        "db1, db2",
        "db1 ,db2",
        '"a b"',
        '"q""uote"',
        "replication",
        "+grp",
        "@file",
        "samerole",
        '"#x"',
        "a#b",
        "x,",
        "sameuser",
    ]
)
_ADDR = st.sampled_from(
    [
        "all",
        "samehost",
        "samenet",
        "127.0.0.1/32",
        "0/0",
        "127.1/32",
        "010.1.2.3/32",
        "10.0.0.0/+8",
        "10.0.0.300/8",
        "10.0.0.0/33",
        "::1/128",
        "::/0",
        "fe80::1%lo/64",
        "db.example.com",
        ".example.com",
        "x.example.com/8",
        "10.0.0.0 255.0.0.0",
        "10.0.0.1 255.0.255.0",
        "10.0.0.0 ffff::",
        "10.0.0.0 nope",
        "010.0.0.1 255.255.255.255",
        '"samehost"',
    ]
)
_METHOD = st.sampled_from(
    [
        "trust",
        "reject",
        "md5",
        "scram-sha-256",
        "password",
        "ident",
        "pam",
        "cert",
        "md4",
        '"md5"',
        "md5 clientcert=verify-full",
        "trust clientcert=verify-ca",
        "md5 clientcert",
        "cert clientcert=verify-ca",
        "peer",
    ]
)
_TAIL = st.sampled_from(["", "", " # c", " #c \\", "\x00junk", " \\", '"', "# caf\udce9"])
_CONN = st.sampled_from(["host", "hostssl", "hostnossl", "local", "include", "hots", '"host"'])


@st.composite
def hba_line(draw: st.DrawFn) -> str:
    conn = draw(_CONN)
    parts = [conn, draw(_NAMES), draw(_NAMES)]
    if conn != "local" or draw(st.integers(0, 9)) == 0:
        parts.append(draw(_ADDR))
    parts.append(draw(_METHOD))
    if draw(st.integers(0, 6)) == 0:
        parts = parts[: draw(st.integers(1, len(parts)))]
    line = parts[0]
    for part in parts[1:]:
        line += draw(_SEP) + part
    return line + draw(_TAIL)


hba_files = st.tuples(
    st.lists(st.one_of(hba_line(), st.sampled_from(["", "# comment", "local all all peer"])), max_size=6),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
).map(lambda t: (t[1].join(t[0]) + (t[1] if t[2] else "")).encode("utf-8", "surrogateescape"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hba_files)
def test_made_up_hba_files_read_as_postgres_reads_them(cluster: TempCluster, data: bytes) -> None:
    assert_agree_hba(cluster, data, cluster.bin.major)


# --- pg_ident.conf ----------------------------------------------------------------------------------


IDENT_TRAPS = [
    b"m alice bob\n",
    b"include other.conf\n",
    b"include_if_exists other.conf\nm a b\n",
    b"include_dir other.d\nm a b\n",
    b"include empty.d\nm a b\n",
    b"include sysuser pguser\n",
    b'm "a b" c  # x\nm2 \\\n  u v\n',
    b"m /^(.*)$ \\1\n",
    b"m a\n",
    b"m a,b c\n",
    b"m a b c d\n",
    b"m a b # c \\\nm2 a b\n",
    b"m\x00 a b\nm2 a b\n",
]


def test_ident_files_read_as_postgres_reads_them(cluster: TempCluster) -> None:
    version = major(cluster)
    ident_file = cluster.data_dir / "pg_ident.conf"
    for data in IDENT_TRAPS:
        ident_file.write_bytes(data)
        rows = cluster.sql().query(
            "SELECT line_number, map_name, sys_name, pg_username, error FROM pg_ident_file_mappings"
            " ORDER BY line_number"
        )
        fatal = [r for r in rows if r[4] is not None]
        try:
            ours = load_ident(ident_file, major=version)
        except ParseError:
            assert fatal, data
            continue
        assert not fatal, (fatal, data)
        assert [(m.map_name, m.system_user, m.pg_user) for m in ours.mappings] == [r[1:4] for r in rows], data


# --- postgresql.conf --------------------------------------------------------------------------------


def postgres_settings(cluster: TempCluster, text: str) -> tuple[list[Row], list[Row]]:
    fuzz = cluster.config_file.parent / "fuzz.conf"
    fuzz.write_bytes(text.encode("utf-8", "surrogateescape"))
    rows = cluster.sql().query(
        "SELECT sourceline, name, setting, error FROM pg_file_settings WHERE sourcefile = :'file'"
        " ORDER BY seqno",
        {"file": str(fuzz)},
    )
    syntax = [r for r in rows if r[1] is None]  # a line PostgreSQL could not read at all
    return [(int(r[0] or 0), r[1], r[2]) for r in rows if r[1] is not None], syntax


_CONF_NAME = st.sampled_from(["pgb.a", "pgb.B_2", "Pgb.x", "1pgb.a", "pgb.a-b", "pgb.é", "pgb.a.b", "pgb."])
_CONF_VALUE = st.sampled_from(
    [
        "on",
        "1",
        "-1",
        "0x1F",
        "1.5",
        ".5",
        "1e3",
        "5MB",
        "-5s",
        "word",
        "a-b.c:d/e",
        "/path",
        "a.b",
        "'quoted'",
        "'it''s'",
        "'a\\'b'",
        "'tab\\there'",
        "'\\101\\x'",
        "'#not a comment'",
        "''",
        "'open",
        "=",
        "'a' 'b'",
        "x y",
        "'x'#c",
        "TRUE",
    ]
)


@st.composite
def conf_line(draw: st.DrawFn) -> str:
    eq = draw(st.sampled_from([" = ", "=", " ", "  =  "]))
    tail = draw(st.sampled_from(["", " # note", "\t#x", " # caf\udce9", "#\x00"]))
    return draw(st.sampled_from(["", "  "])) + draw(_CONF_NAME) + eq + draw(_CONF_VALUE) + tail


conf_files = st.lists(st.one_of(conf_line(), st.sampled_from(["", "# c", "#pgb.x = 1"])), max_size=6).map(
    lambda lines: "\n".join(lines) + "\n"
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=conf_files)
def test_made_up_settings_read_as_postgres_reads_them(cluster: TempCluster, text: str) -> None:
    settings_rows, syntax = postgres_settings(cluster, text)
    try:
        ours = parse_conf(text)
    except ParseError as exc:
        assert syntax, f"PostgreSQL reads what we refuse ({exc}): {text!r}"
        assert exc.lineno == int(syntax[0][0] or 0), (exc, syntax, text)
        return
    assert not syntax, f"PostgreSQL cannot read what we read ({syntax[0]}): {text!r}"
    assert [(s.lineno, s.raw_name, s.value) for s in ours.settings] == settings_rows, text


def test_boolean_spellings_as_postgres_parses_them(cluster: TempCluster) -> None:
    spellings = [
        "on",
        "ON",
        "On",
        "o",
        "of",
        "off",
        "OFF",
        "offf",
        "t",
        "tr",
        "true",
        "TRUE",
        "truex",
        "y",
        "yes",
        "n",
        "no",
        "f",
        "fal",
        "false",
        "1",
        "0",
        "2",
        "",
        "10",
        "enable",
    ]
    sql = cluster.sql()
    for spelling in spellings:
        try:
            value = sql.value(f"SELECT set_config('enable_seqscan', '{spelling}', false)")
        except ClusterError:  # PostgreSQL refused the spelling
            value = None
        expected = None if value is None else value == "on"
        assert parse_bool(spelling) is expected, spelling
