"""Files PostgreSQL reads one way must be read that way here, version by version (the traps of issue 8).

Each case was first seen failing: a valid file refused, a spelling of a value taken for another value, a byte
that is not UTF-8 crashing the read. ``tests/integration/test_pgconf_postgres_agrees.py`` checks the same
against a real PostgreSQL 15.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbatten.cluster.discover import discover
from pgbatten.errors import ParseError
from pgbatten.pgconf import (
    add_mapping,
    lint,
    load_conf,
    parse_conf,
    parse_hba,
    parse_ident,
    render_conf,
    render_ident,
    set_values,
)
from pgbatten.pgconf.guc_values import parse_bool, same_setting_value
from pgbatten.pgconf.hba import HbaInclude, render, require_tls, set_client_auth
from pgbatten.pgconf.pg_ident import IdentInclude, IdentMapping

# --- postgresql.conf: names and values compared as PostgreSQL compares them -------------------------


@pytest.mark.parametrize("spelling", ["on", "ON", "true", "TRUE", "yes", "1", "t", "tr", "Y", "On"])
def test_every_spelling_of_on_is_on(spelling: str) -> None:
    assert parse_bool(spelling) is True
    assert same_setting_value("ssl", spelling, "on")
    assert same_setting_value("SSL", "on", spelling)


@pytest.mark.parametrize("spelling", ["off", "OFF", "of", "false", "f", "no", "N", "0"])
def test_every_spelling_of_off_is_off(spelling: str) -> None:
    assert parse_bool(spelling) is False
    assert same_setting_value("ssl", spelling, "off")
    assert not same_setting_value("ssl", spelling, "on")


@pytest.mark.parametrize("word", ["o", "", "2", "onn", "truex", "enable", "of f"])
def test_not_booleans(word: str) -> None:
    assert parse_bool(word) is None
    assert not same_setting_value("ssl", word, "on")


def test_enums_ignore_case_and_strings_do_not() -> None:
    assert same_setting_value("ssl_min_protocol_version", "tlsv1.2", "TLSv1.2")
    assert not same_setting_value("ssl_min_protocol_version", "TLSv1.3", "TLSv1.2")
    assert same_setting_value("synchronous_commit", "true", "on")  # a hidden alias of that enum
    assert not same_setting_value("ssl_min_protocol_version", "true", "on")
    assert not same_setting_value("ssl_cert_file", "/A/server.crt", "/a/server.crt")
    assert not same_setting_value("pgbatten.x", "true", "on")  # a custom setting is a string
    # A name of unknown type: "off" and "0" are two values (hypothesis found set_values keeping "off").
    assert not same_setting_value("a", "off", "0")


def test_set_values_takes_ssl_true_and_upper_case_names_for_what_they_are() -> None:
    # Seen: "ssl = 'on' would not take effect" for a file saying ssl = true, and an edit of SSL = off that
    # PostgreSQL's pg_file_settings then reported under the name SSL.
    for text in ("ssl = true\n", "SSL = TRUE\n", "ssl = 1\n", "ssl = yes\n", "Ssl = On\n"):
        conf = parse_conf(text)
        assert set_values(conf, {"ssl": "on"}) == (conf, False), text
    new, changed = set_values(parse_conf("SSL = off\n"), {"ssl": "on"})
    assert changed and render_conf(new) == "SSL = on\n"
    assert new.get("ssl") == new.get("SSL") and new.get("Ssl") is not None


# --- postgresql.conf: bytes that are not UTF-8 ------------------------------------------------------


def test_a_latin1_comment_does_not_stop_discovery_and_survives_an_edit(tmp_path: Path) -> None:
    # Seen: "internal error: UnicodeDecodeError" from every command naming such a cluster.
    (tmp_path / "PG_VERSION").write_text("15\n")
    conf = tmp_path / "postgresql.conf"
    original = b"# Zugriff f\xfcr caf\xe9\nhba_file = 'pg_hba.conf'\nport = 5433\n"
    conf.write_bytes(original)
    cluster = discover(pgdata=tmp_path)
    assert cluster.hba_file == tmp_path / "pg_hba.conf"
    edited, _ = set_values(load_conf(conf), {"ssl": "on"})
    data = render_conf(edited).encode("utf-8", "surrogateescape")
    assert data.startswith(original) and data.endswith(b"ssl = on\n")


# --- pg_hba.conf and pg_ident.conf: what each major version reads ----------------------------------


def test_include_directives_only_from_16() -> None:
    text = "include_dir hba.d\nlocal all all peer\n"
    assert isinstance(parse_hba(text, major=16).lines[0], HbaInclude)
    assert isinstance(parse_hba(text).lines[0], HbaInclude)  # the newest rules by default
    with pytest.raises(ParseError, match=r"invalid connection type 'include_dir'.*PostgreSQL 16") as info:
        parse_hba(text, major=15)
    assert info.value.lineno == 1


def test_pg_ident_include_is_a_map_name_before_16() -> None:
    assert isinstance(parse_ident("include other.conf\n", major=16).lines[0], IdentInclude)
    mapping = parse_ident("include sysuser pguser\n", major=15).lines[0]
    assert isinstance(mapping, IdentMapping) and mapping.map_name == "include"
    with pytest.raises(ParseError, match="missing entry"):
        parse_ident("include other.conf\n", major=15)


def test_backslash_continues_a_line_from_14_only() -> None:
    # In 14+ the backslash at the end of the comment continues the comment over the next rule.
    text = "host all all 10.0.0.0/8 md5  # office \\\nlocal all all peer\n"
    assert [r.conn_type.value for r in parse_hba(text, major=13).rules] == ["host", "local"]
    assert [r.conn_type.value for r in parse_hba(text, major=14).rules] == ["host"]
    assert [r.conn_type.value for r in parse_hba(text, major=15).rules] == ["host"]
    with pytest.raises(ParseError, match="invalid authentication method"):
        parse_hba("host all all 10.0.0.0/8 \\\n md5\n", major=13)  # the backslash is the method there
    assert parse_hba("host all all 10.0.0.0/8 \\\n md5\n", major=15).rules[0].method == "md5"


def test_two_backslashes_then_an_empty_line_continue_once() -> None:
    # After a continuation the next backslash must come after where the last one was.
    with pytest.raises(ParseError, match=r"invalid authentication method '\\\\'") as info:
        parse_hba("host all all 127.0.0.1/32 \\\\\n\nlocal all all trust\n", major=15)
    assert info.value.lineno == 1


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("0/0", "0.0.0.0/0"),
        ("127.1/32", "127.0.0.1/32"),
        ("010.0.0.1 255.255.255.255", "8.0.0.1/32"),  # octal, as inet_aton reads it
        ("10.0.0.0/+8", "10.0.0.0/8"),
        ("10.0.0.0/08", "10.0.0.0/8"),
        ("0x7f.1/32", "127.0.0.1/32"),
        ("10.1.2.3/8", "10.1.2.3/8"),  # the usual spelling is kept as written
        ("::1/128", "::1/128"),
    ],
)
def test_numeric_addresses_as_the_c_library_reads_them(address: str, normalised: str) -> None:
    # Seen: each of these refused although PostgreSQL loads it.
    rule = parse_hba(f"host all all {address} md5\n", major=15).rules[0]
    assert rule.address == normalised


def test_a_guard_written_0_0_counts_as_a_guard() -> None:
    text = "hostnossl all,replication all 0/0 reject\nhostnossl all,replication all ::/0 reject\n"
    assert require_tls(parse_hba(text + "hostssl all all all md5\n", major=15))[1] is False


def test_a_host_name_with_a_mask_is_refused_like_postgres() -> None:
    with pytest.raises(ParseError, match="host name cannot have a CIDR mask"):
        parse_hba("host all all db.example.com/24 md5\n", major=15)


@pytest.mark.parametrize("final", ["", "\n"])
def test_a_trailing_backslash_on_the_last_line_is_dropped(final: str) -> None:
    hba_file = parse_hba(f"local all all peer\nhost all all 127.0.0.1/32 md5 \\{final}", major=15)
    assert [r.method for r in hba_file.rules] == ["peer", "md5"]
    assert render(hba_file) == f"local all all peer\nhost all all 127.0.0.1/32 md5 \\{final}"
    secured, _ = set_client_auth(require_tls(hba_file)[0], "verify-full")
    assert secured == parse_hba(render(secured), major=15)


def test_a_nul_byte_ends_what_postgres_reads_of_a_line() -> None:
    # 14+: what follows the NUL is dropped and the next line read on as part of the same one, so a NUL in a
    # comment swallows the rule below it; 12 and 13 only drop the rest of the line.
    text = "# note\0 junk\nhost all all 127.0.0.1/32 md5\nlocal all all trust\n"
    assert [r.method for r in parse_hba(text, major=15).rules] == ["trust"]
    assert [r.method for r in parse_hba(text, major=13).rules] == ["md5", "trust"]
    rule = parse_hba("host all all 127.0.0.1/32 md5\0junk\n\nlocal all all trust\n", major=15).rules[0]
    assert rule.method == "md5" and rule.lineno == 1
    with pytest.raises(ParseError, match="md5local"):
        parse_hba("host all all 127.0.0.1/32 md5\0junk\nlocal all all trust\n", major=15)
    secured, _ = require_tls(parse_hba("local all all peer\0", major=15))
    assert secured == parse_hba(render(secured), major=15)
    assert [r.conn_type.value for r in secured.rules] == ["local", "hostnossl", "hostnossl"]


def test_a_token_longer_than_postgres_reads_is_refused() -> None:
    ok = parse_hba("host all " + "a" * 10239 + " 127.0.0.1/32 md5\n", major=15)
    assert len(ok.rules[0].users[0]) == 10239
    for line in ("a" * 10240 + " ", "a" * 10239 + ", ", '"' + "a" * 10239 + '" '):
        with pytest.raises(ParseError, match="token too long"):
            parse_hba("host all " + line + "127.0.0.1/32 md5\n", major=15)
    # From PostgreSQL 16 a token may be of any length (measured on 17).
    for line in ("a" * 10240 + " ", '"' + "a" * 100000 + '" '):
        assert parse_hba("host all " + line + "127.0.0.1/32 md5\n", major=16).rules


def test_include_lines_are_read_as_postgres_16_reads_them() -> None:
    # Exactly two fields whose first token names an include, quoted or not, the second field's first token
    # the file; any other line is a rule (an error in pg_hba.conf) or a mapping (a map called include).
    from pgbatten.pgconf import HbaInclude, IdentInclude, parse_ident

    for line, target in (
        ("include a", "a"),
        ('"include" a', "a"),
        ("include a,b", "a"),
        ("include,x a", "a"),
    ):
        (inc,) = parse_hba(line + "\n", major=16).lines
        assert isinstance(inc, HbaInclude) and inc.path == target, line
        (inc2,) = parse_ident(line + "\n", major=16).lines
        assert isinstance(inc2, IdentInclude) and inc2.path == target, line
    (mapping,) = parse_ident("include sysuser pguser\n", major=16).mappings
    assert (mapping.map_name, mapping.system_user, mapping.pg_user) == ("include", "sysuser", "pguser")


def test_a_name_ending_in_a_backslash_is_quoted() -> None:
    # Unquoted at the end of the line it would continue the line (14+) over the next mapping.
    new, _ = add_mapping(parse_ident("", major=15), "m", "DOMAIN\\", "u\\")
    again = parse_ident(render_ident(new) + "m2 a b\n", major=15)
    assert [(m.map_name, m.system_user, m.pg_user) for m in again.mappings] == [
        ("m", "DOMAIN\\", "u\\"),
        ("m2", "a", "b"),
    ]


# --- a long plan can be interrupted ------------------------------------------------------------------


@pytest.fixture
def alarm() -> Iterator[None]:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
def test_ctrl_c_stops_parsing_and_linting_promptly() -> None:
    # Ctrl-C is delivered between bytecodes: no step may sit in one long C call or swallow the exception.
    text = "".join(f"host db{i % 50} user{i} 10.{i % 256}.{i // 256 % 256}.0/24 md5\n" for i in range(60_000))
    parsed = parse_hba(text)
    for work in (lambda: parse_hba(text), lambda: lint(parsed), lambda: require_tls(parsed)):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for _ in range(100):  # much longer than the alarm
                work()
        assert time.monotonic() - started < 1.0
    assert gc.isenabled()  # the collector paused during the work is back
