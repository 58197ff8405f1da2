from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgbatten.errors import FileProblem, ParseError
from pgbatten.pgconf.hba import (
    DISABLED_MARK,
    GUARD_MARK,
    PASSWORD_METHODS,
    ConnType,
    HbaComment,
    HbaFile,
    HbaInclude,
    HbaRule,
    lint,
    load_hba,
    parse_hba,
    render,
    require_tls,
    set_client_auth,
    shadowing_rule,
    token_value,
)
from pgbatten.pgconf.postgresql_conf import IncludeKind

DATA = Path(__file__).parent / "data"
INITDB_HBA = DATA / "pg_hba.conf.initdb15"

SEED = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             postgres                                peer
host    all             all             0.0.0.0/0               md5
hostssl all             all             0.0.0.0/0               scram-sha-256
"""


# --- generated files --------------------------------------------------------------------------------

db_tokens = st.sampled_from(["all", "replication", "sameuser", '"db one"', "db2", '"all"', "@dbs.txt", "app"])
user_tokens = st.sampled_from(["all", "alice", "+admins", '"Bob ""B"""', "@users", "/^r.*$"])
addresses = st.sampled_from(
    [
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "127.0.0.1/32",
        "::1/128",
        "all",
        "samehost",
        "samenet",
        ".example.com",
        "db.example.com",
        "192.168.0.0 255.255.0.0",
        "10.0.0.1\t255.255.255.255",
    ]
)
methods = st.sampled_from(["trust", "reject", "scram-sha-256", "md5", "password", "ident", "ldap", "pam"])
gaps = st.sampled_from([" ", "  ", "\t", "    ", "\t\t", " \t"])
comments = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\\"), max_size=15).map(
    lambda t: "#" + t
)


def _list(tokens: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(tokens, min_size=1, max_size=3).flatmap(
        lambda items: st.sampled_from([",", ", "]).map(lambda sep: sep.join(items))
    )


@st.composite
def rule_lines(draw: st.DrawFn) -> str:
    conn = draw(st.sampled_from(list(ConnType)))
    method = draw(methods)
    if conn is ConnType.LOCAL:
        method = draw(st.sampled_from(["trust", "reject", "peer", "md5", "scram-sha-256"]))
    elif conn is ConnType.HOSTSSL:
        method = draw(st.sampled_from([method, "cert"]))
    fields = [
        draw(st.sampled_from([conn.value, conn.value])),
        draw(_list(db_tokens)),
        draw(_list(user_tokens)),
    ]
    if conn is not ConnType.LOCAL:
        fields.append(draw(addresses))
    fields.append(method)
    if conn is ConnType.HOSTSSL and method != "cert" and draw(st.booleans()):
        fields.append(draw(st.sampled_from(["clientcert=verify-ca", "clientcert=verify-full"])))
    if method == "ldap":
        fields.append('ldapserver=ldap.example.net ldapbasedn="dc=example, dc=net"')
    line = draw(gaps.filter(lambda g: g != "\t\t")) if draw(st.booleans()) else ""
    for k, text in enumerate(fields):
        if k:
            gap = draw(gaps)
            # A PostgreSQL 16 continuation: the backslash must end the physical line.
            line += gap + ("\\\n" + draw(gaps) if draw(st.integers(0, 9)) == 0 else "")
        line += text
    if draw(st.booleans()):
        line += draw(gaps) + draw(comments)
    return line


hba_lines = st.one_of(
    rule_lines(),
    rule_lines(),
    comments,
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["include other.conf", 'include_if_exists "opt file.conf"', "include_dir conf.d"]),
)


@st.composite
def hba_texts(draw: st.DrawFn) -> str:
    lines, eol, final_eol = draw(
        st.tuples(st.lists(hba_lines, max_size=12), st.sampled_from(["\n", "\r\n"]), st.booleans())
    )
    text = eol.join(line.replace("\n", eol) for line in lines)
    if lines and final_eol:
        text += eol
    return text


@given(hba_texts())
def test_render_is_identity_on_generated_files(text: str) -> None:
    assert render(parse_hba(text)) == text


def _strip_pgbatten_additions(old: HbaFile, new: HbaFile) -> list[str]:
    """The new file's lines minus what require_tls inserts (marker comments and guard rules)."""
    disabled = sum(1 for ln in new.lines if ln.raw == DISABLED_MARK)
    inserted_guards = len(new.lines) - len(old.lines) - disabled
    kept: list[str] = []
    skip = 0
    for ln in new.lines:
        if skip:
            skip -= 1
            continue
        if ln.raw == GUARD_MARK and inserted_guards:
            skip = inserted_guards - 1
            continue
        if ln.raw != DISABLED_MARK:
            kept.append(ln.raw)
    return kept


def _same_but_type(old: HbaRule, new: HbaRule) -> bool:
    keys = ("databases", "users", "address", "netmask", "method", "options", "comment")
    return all(getattr(old, k) == getattr(new, k) for k in keys)


@settings(max_examples=150)
@given(hba_texts())
@example("#\0\n")
def test_require_tls_touches_only_its_lines_and_is_idempotent(text: str) -> None:
    hba = parse_hba(text)
    new, changed = require_tls(hba)
    assert changed == (render(new) != text)
    again, changed_again = require_tls(new)
    assert not changed_again
    assert render(again) == render(new)
    kept = _strip_pgbatten_additions(hba, new)
    assert len(kept) == len(hba.lines)
    by_raw = {ln.raw: ln for ln in new.lines}
    for old, raw in zip(hba.lines, kept, strict=True):
        if isinstance(old, HbaRule) and old.conn_type is ConnType.HOST and not old.is_reject:
            converted = by_raw[raw]
            assert isinstance(converted, HbaRule)
            assert converted.conn_type is ConnType.HOSTSSL
            assert _same_but_type(old, converted)
        elif isinstance(old, HbaRule) and old.conn_type is ConnType.HOSTNOSSL and not old.is_reject:
            assert raw == "#" + old.raw.replace("\n", "\n#")
        elif old is hba.lines[-1] and (not old.eol or "\0" in old.raw) and raw != old.raw:
            # The guard is appended after a last line PostgreSQL would read on from (a NUL byte anywhere in
            # it, or at the very end of the file): an empty line ends it first, and becomes part of that
            # logical line. Hypothesis found '#\0\n', a NUL in a comment that does end with a newline.
            assert raw == old.raw + "\n" or raw == old.raw + "\r\n"
        else:
            assert raw == old.raw
    # No plaintext path: before any TCP rule that accepts, or any include, reject rules cover all
    # non-TLS TCP for every database, replication included, over IPv4 and IPv6.
    covered: set[tuple[str, str]] = set()
    for ln in new.lines:
        if isinstance(ln, HbaInclude) or (isinstance(ln, HbaRule) and ln.is_tcp and not ln.is_reject):
            break
        if (
            isinstance(ln, HbaRule)
            and ln.conn_type in (ConnType.HOST, ConnType.HOSTNOSSL)
            and ln.is_reject
            and "all" in ln.users
        ):
            nets = {"all": ["4", "6"], "0.0.0.0/0": ["4"], "::/0": ["6"]}.get(ln.address or "", [])
            covered |= {(v, d) for v in nets for d in ln.databases if d in ("all", "replication")}
    assert covered == {(v, d) for v in "46" for d in ("all", "replication")}


@settings(max_examples=150)
@given(hba_texts(), st.sampled_from(["verify-full", "cert"]))
def test_set_client_auth_touches_only_password_hostssl_rules(text: str, mode: str) -> None:
    hba = parse_hba(text)
    new, changed = set_client_auth(hba, mode, "pgmap" if mode == "cert" else None)  # type: ignore[arg-type]
    assert len(new.lines) == len(hba.lines)
    for old, cur in zip(hba.lines, new.lines, strict=True):
        target = (
            isinstance(old, HbaRule) and old.conn_type is ConnType.HOSTSSL and old.method in PASSWORD_METHODS
        )
        if not target:
            assert cur.raw == old.raw
            continue
        assert isinstance(cur, HbaRule) and isinstance(old, HbaRule)
        if mode == "cert":
            assert cur.method == "cert"
            assert cur.option("map") == "pgmap"
            assert cur.option("clientcert") is None
        else:
            assert cur.method == old.method
            assert cur.option("clientcert") == "verify-full"
        assert (cur.databases, cur.users, cur.address) == (old.databases, old.users, old.address)
    again, changed_again = set_client_auth(new, mode, "pgmap" if mode == "cert" else None)  # type: ignore[arg-type]
    assert not changed_again and render(again) == render(new)
    assert changed == (render(new) != text)


# --- the model ------------------------------------------------------------------------------------


def test_initdb_file_round_trips_and_parses() -> None:
    text = INITDB_HBA.read_text()
    hba = parse_hba(text)
    assert render(hba) == text
    assert [(r.conn_type, r.databases, r.address, r.method) for r in hba.rules] == [
        (ConnType.LOCAL, ("all",), None, "trust"),
        (ConnType.HOST, ("all",), "127.0.0.1/32", "trust"),
        (ConnType.HOST, ("all",), "::1/128", "trust"),
        (ConnType.LOCAL, ("replication",), None, "trust"),
        (ConnType.HOST, ("replication",), "127.0.0.1/32", "trust"),
        (ConnType.HOST, ("replication",), "::1/128", "trust"),
    ]
    assert all(isinstance(ln, HbaComment) for ln in hba.lines[:3])


def test_fields_quotes_lists_options_netmask_and_continuations() -> None:
    text = (
        'hostssl "db one",db2, "all"  +admins,@users.txt  192.168.1.0 255.255.255.0 \\\n'
        "   scram-sha-256 clientcert=verify-full   # office\n"
        'host all all .example.com ldap ldapserver=ldap ldapbasedn="dc=example, dc=net"\n'
    )
    hba = parse_hba(text, Path("/x/pg_hba.conf"))
    first, second = hba.rules
    assert first.lineno == 1 and second.lineno == 3
    assert first.databases == ('"db one"', "db2", '"all"')
    assert [token_value(t) for t in first.databases] == ["db one", "db2", "all"]
    assert first.users == ("+admins", "@users.txt")
    assert (first.address, first.netmask) == ("192.168.1.0/24", "255.255.255.0")
    assert first.options == (("clientcert", "verify-full"),)
    assert first.comment == "# office"
    assert second.address == ".example.com"
    assert second.options == (("ldapserver", "ldap"), ("ldapbasedn", "dc=example, dc=net"))
    assert render(hba) == text


def test_include_directives_are_kept() -> None:
    hba = parse_hba('include_dir hba.d\ninclude_if_exists "extra file.conf"\n')
    assert [(i.kind, i.path) for i in hba.lines if isinstance(i, HbaInclude)] == [
        (IncludeKind.INCLUDE_DIR, "hba.d"),
        (IncludeKind.INCLUDE_IF_EXISTS, "extra file.conf"),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("hots all all 10.0.0.0/8 md5", "invalid connection type"),
        ("host all", "end-of-line before role specification"),
        ("host all all", "end-of-line before IP address specification"),
        ("host all all 10.0.0.0/8", "end-of-line before authentication method"),
        ("host all all 10.0.0.0/33 md5", "invalid CIDR mask"),
        ("host all all 10.0.0.300/8 md5", "invalid IP address"),
        ("host all all 10.0.0.0 md5", "invalid IP mask"),
        ("host all all 10.0.0.0 ffff:: md5", "IP address and mask do not match"),
        ("host all all 10.0.0.0/8 md4", "invalid authentication method"),
        ("host all all 10.0.0.0/8 md5 clientcert", "not in name=value format"),
        ("host all all 10.0.0.0/8 md5 clientcert=verify-full", "clientcert can only be configured"),
        ("host all all 10.0.0.0/8 cert", "only supported on hostssl"),
        ("host all all 10.0.0.0/8 peer", "only supported on local sockets"),
        ("hostssl all all all cert clientcert=verify-ca", 'only accepts "verify-full"'),
        ("host,local all all all md5", "multiple values specified for connection type"),
        ('host "db all all all md5', "unterminated quoted string"),
        ("include", "include takes exactly one file name"),
        ("include a b", "include takes exactly one file name"),
    ],
)
def test_parse_errors_name_the_line(line: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_hba(f"# header\n\nlocal all all peer\n{line}  # trailing\n", Path("/etc/pg_hba.conf"))
    assert info.value.lineno == 4
    assert str(info.value).startswith("/etc/pg_hba.conf:4: ")


def test_load_hba(tmp_path: Path) -> None:
    path = tmp_path / "pg_hba.conf"
    path.write_bytes(b"local all all peer # caf\xe9\n")
    hba = load_hba(path)
    assert hba.path == path
    assert render(hba).encode("utf-8", errors="surrogateescape") == path.read_bytes()
    with pytest.raises(FileProblem):
        load_hba(tmp_path / "missing")


# --- the seed case ------------------------------------------------------------------------------


def test_seed_lint_reports_shadowed_hostssl_and_plaintext() -> None:
    findings = lint(parse_hba(SEED))
    by_line = {(f.lineno, f.id) for f in findings}
    assert (4, "hba-host-above-hostssl") in by_line
    assert (3, "hba-plaintext-accepted") in by_line
    assert (3, "hba-md5") in by_line
    shadow = next(f for f in findings if f.id == "hba-host-above-hostssl")
    assert shadow.severity == "high"
    assert "host … md5 above hostssl keeps plaintext open" in shadow.title
    assert "line 3" in shadow.detail


def test_seed_require_tls_makes_plaintext_impossible() -> None:
    new, changed = require_tls(parse_hba(SEED))
    assert changed
    assert render(new) == (
        "# TYPE  DATABASE        USER            ADDRESS                 METHOD\n"
        "local   all             postgres                                peer\n"
        f"{GUARD_MARK}\n"
        "hostnossl all,replication all           0.0.0.0/0               reject\n"
        "hostnossl all,replication all           ::/0                    reject\n"
        "hostssl all             all             0.0.0.0/0               md5\n"
        "hostssl all             all             0.0.0.0/0               scram-sha-256\n"
    )
    ids = {f.id for f in lint(new)}
    assert "hba-plaintext-accepted" not in ids
    assert "hba-host-above-hostssl" not in ids


def test_require_tls_disables_plaintext_rules_and_keeps_local_and_rejects() -> None:
    text = (
        "local all all peer\n"
        "hostnossl all all 10.0.0.0/8 md5   # old\n"
        "hostnossl all bad 0.0.0.0/0 reject\n"
        "host all all 192.0.2.0/24 reject\n"
        "host\tall\tall\t10.0.0.0/8\tscram-sha-256\n"
    )
    new, _ = require_tls(parse_hba(text))
    lines = render(new).splitlines()
    assert lines[0] == "local all all peer"
    assert lines[1] == GUARD_MARK
    assert lines[4:] == [
        DISABLED_MARK,
        "#hostnossl all all 10.0.0.0/8 md5   # old",
        "hostnossl all bad 0.0.0.0/0 reject",
        "host all all 192.0.2.0/24 reject",
        "hostssl\tall\tall\t10.0.0.0/8\tscram-sha-256",
    ]


def test_require_tls_on_initdb_file_keeps_comments_with_their_rules() -> None:
    hba = parse_hba(INITDB_HBA.read_text())
    new, changed = require_tls(hba)
    assert changed
    lines = render(new).splitlines()
    guard = lines.index(GUARD_MARK)
    assert lines[guard + 3] == "# IPv4 local connections:"
    assert lines[guard + 4] == "hostssl all             all             127.0.0.1/32            trust"
    assert [r.conn_type for r in new.rules if r.is_tcp and not r.is_reject] == [ConnType.HOSTSSL] * 4


def test_require_tls_with_no_tcp_rules_appends_the_guard() -> None:
    new, changed = require_tls(parse_hba("local all all peer"))
    assert changed
    assert render(new).startswith("local all all peer\n" + GUARD_MARK + "\n")
    assert not require_tls(new)[1]


def test_existing_partial_guard_is_completed() -> None:
    text = "hostnossl all all 0.0.0.0/0 reject\nhostssl all all all scram-sha-256\n"
    new, changed = require_tls(parse_hba(text))
    assert changed
    assert [r.raw for r in new.rules][:3] == [
        "hostnossl all all 0.0.0.0/0 reject",
        "hostnossl replication all 0.0.0.0/0 reject",
        "hostnossl all,replication all ::/0 reject",
    ]


# --- client certificates ------------------------------------------------------------------------


def test_set_client_auth_modes() -> None:
    text = (
        "hostssl all all 10.0.0.0/8 scram-sha-256   # keep\n"
        "hostssl replication rep 10.0.0.0/8 md5 clientcert=verify-ca\n"
        "hostssl all all 0.0.0.0/0 reject\n"
        "hostssl all all 0.0.0.0/0 ldap ldapserver=x\n"
        "local all all scram-sha-256\n"
    )
    hba = parse_hba(text)
    assert set_client_auth(hba, "none") == (hba, False)
    full, changed = set_client_auth(hba, "verify-full")
    assert changed
    assert render(full).splitlines()[:2] == [
        "hostssl all all 10.0.0.0/8 scram-sha-256 clientcert=verify-full   # keep",
        "hostssl replication rep 10.0.0.0/8 md5 clientcert=verify-full",
    ]
    cert, _ = set_client_auth(hba, "cert", map_name="cn map")
    assert render(cert).splitlines()[:2] == [
        'hostssl all all 10.0.0.0/8 cert map="cn map"   # keep',
        'hostssl replication rep 10.0.0.0/8 cert map="cn map"',
    ]
    assert render(cert).splitlines()[2:] == text.splitlines()[2:]
    with pytest.raises(ValueError, match="map_name only applies"):
        set_client_auth(hba, "verify-full", map_name="m")


# --- lint ---------------------------------------------------------------------------------------


def _ids(text: str) -> set[tuple[int | None, str]]:
    return {(f.lineno, f.id) for f in lint(parse_hba(text))}


def test_shadowing_model() -> None:
    hba = parse_hba(
        "hostssl all all 10.0.0.0/8 scram-sha-256\n"
        "hostssl db1 alice 10.1.2.0/24 cert\n"  # covered: subnet, all db, all users
        "hostssl replication all 10.1.2.0/24 cert\n"  # "all" does not match replication
        "hostssl all all ::1/128 cert\n"  # IPv6 vs IPv4: not covered
        "hostnossl all all 10.0.0.0/8 reject\n"  # different transport
        "host all all samehost md5\n"
        'hostssl "db one" all samehost cert\n'  # covered by host+samehost
        "hostssl all +grp samenet cert\n"  # samenet not covered by samehost
        "hostssl all all .example.com cert\n"
        "hostssl @dbs all 10.0.0.1/32 cert\n"  # file contents unknown: not claimed
    )
    rules = hba.rules
    shadows = [shadowing_rule(rules, r) for r in rules]
    assert [s.lineno if s else None for s in shadows] == [
        None,
        1,
        None,
        None,
        None,
        None,
        6,
        None,
        None,
        None,
    ]


def test_lint_findings_by_method_and_type() -> None:
    ids = _ids(
        "host all all 10.0.0.0/8 trust\n"
        "hostssl all all 172.16.0.0/12 password\n"
        "hostssl all bob 192.168.0.0/16 ident\n"
        "local all all md5\n"
        "hostssl all all ::/0 cert\n"
        "hostssl all all all scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
        "hostgssenc all all 192.0.2.0/24 gss\n"
        "include_dir hba.d\n"
    )
    assert {
        (1, "hba-plaintext-accepted"),
        (1, "hba-trust-tcp"),
        (2, "hba-password-cleartext"),
        (3, "hba-ident-tcp"),
        (4, "hba-md5"),
        (5, "hba-open-address"),
        (6, "hba-open-address"),
        (8, "hba-shadowed-rule"),
        (9, "hba-include-not-checked"),
    } == ids
    assert _ids("hostgssenc all all 192.0.2.0/24 gss\n") == {(1, "hba-gss-not-tls")}
    findings = lint(parse_hba("hostssl all all ::/0 cert\nhostssl all all all md5\n"))
    assert [(f.lineno, f.severity) for f in findings if f.id == "hba-open-address"] == [
        (1, "info"),
        (2, "low"),
    ]


def test_lint_is_quiet_on_a_hardened_file() -> None:
    new, _ = require_tls(parse_hba("local all all peer\nhost all all 10.0.0.0/8 scram-sha-256\n"))
    assert lint(new) == []
