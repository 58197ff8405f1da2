"""The indexed first-match analysis and lint against the straightforward quadratic reference (hba_oracle)."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from pgbatten.errors import ParseError
from pgbatten.pgconf.auth_tokens import dialect, edit_line
from pgbatten.pgconf.hba import (
    ConnType,
    HbaFile,
    HbaRule,
    covers,
    lint,
    parse_hba,
    render,
    require_tls,
    set_client_auth,
    shadowing_rule,
    shadows,
    syntax,
)
from pgbatten.pgconf.hba.enforce import _as_hostssl
from tests.unit import hba_oracle
from tests.unit.test_pgconf_hba import hba_texts, rule_lines

# Few distinct values, so that rules often cover each other, in every way the model knows.
DATABASES = ["all", "replication", "sameuser", "samerole", "samegroup", "db1", "db2", '"all"', "@dbs", "/^d"]
USERS = ["all", "alice", "bob", "+admins", '"all"', "@users", "/^r"]
ADDRESSES = [
    "all",
    "samehost",
    "samenet",
    "0.0.0.0/0",
    "0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/24",
    "10.1.2.3/32",
    "127.1/32",
    "010.0.0.1/32",
    "10.0.0.0/+8",
    "::/0",
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1::1/128",
    "::ffff:10.1.2.3/128",
    "db.example.com",
    ".example.com",
    "192.168.0.0 255.255.0.0",
    "10.1.0.0 255.255.0.0",
    "10.0.0.1 255.0.255.0",
    "10.1.2.3 255.255.255.255",
    "fd00:: ffff::",
]


@st.composite
def rule_line(draw: st.DrawFn) -> str:
    conn = draw(st.sampled_from(list(ConnType)))
    dbs = ",".join(draw(st.lists(st.sampled_from(DATABASES), min_size=1, max_size=3)))
    users = ",".join(draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=3)))
    if conn is ConnType.LOCAL:
        method = draw(st.sampled_from(["trust", "reject", "peer", "md5", "scram-sha-256"]))
        return f"local {dbs} {users} {method}"
    methods = ["trust", "reject", "md5", "scram-sha-256", "password", "ident", "pam"]
    if conn is ConnType.HOSTSSL:
        methods += ["cert", "scram-sha-256 clientcert=verify-full", "md5 clientcert=verify-ca"]
    method = draw(st.sampled_from(methods))
    return f"{conn.value} {dbs} {users} {draw(st.sampled_from(ADDRESSES))} {method}"


hba_files = st.lists(
    st.one_of(rule_line(), rule_line(), rule_line(), st.sampled_from(["# note", "", "include_dir conf.d"])),
    max_size=40,
).map(lambda lines: parse_hba("\n".join(lines) + "\n"))


def _reference_shadows(rules: tuple[HbaRule, ...]) -> list[HbaRule | None]:
    return [hba_oracle.shadowing_rule(rules, r) for r in rules]


@settings(max_examples=300)
@given(hba_files)
def test_fast_lint_gives_exactly_the_reference_findings(hba: HbaFile) -> None:
    assert shadows(hba.rules) == _reference_shadows(hba.rules)
    assert lint(hba) == hba_oracle.lint(hba)
    secured, _ = require_tls(hba)
    assert lint(secured) == hba_oracle.lint(secured)
    with_certs, _ = set_client_auth(secured, "verify-full")
    assert lint(with_certs) == hba_oracle.lint(with_certs)


@settings(max_examples=200)
@given(st.lists(rule_line(), min_size=2, max_size=2))
def test_covers_agrees_with_the_reference(lines: list[str]) -> None:
    a, b = parse_hba("\n".join(lines)).rules
    assert covers(a, b) == hba_oracle.covers(a, b)
    assert covers(b, a) == hba_oracle.covers(b, a)
    assert shadowing_rule((a, b), b) == hba_oracle.shadowing_rule((a, b), b)


@settings(max_examples=50)
@given(hba_files, st.randoms(use_true_random=False))
def test_rules_out_of_file_order_still_get_the_reference_answer(hba: HbaFile, rnd: object) -> None:
    # The audit builds rules from pg_hba_file_rules; hand-built lists need not be in line order.
    rules = list(hba.rules)
    rnd.shuffle(rules)  # type: ignore[attr-defined]
    rules = [replace(r, databases=()) if i == 0 else r for i, r in enumerate(rules)]
    assert shadows(rules) == [hba_oracle.shadowing_rule(rules, r) for r in rules]


def test_many_rules_sharing_keys_are_answered_without_comparing_every_pair() -> None:
    # A generated file: one network, a rule per user, then per-user rules that the first ones shadow.
    n = 3000
    lines = [f"hostssl app user{i} 10.0.0.0/8 scram-sha-256" for i in range(n)]
    lines += [f"hostssl app user{i} 10.{i % 256}.0.0/16 cert" for i in range(n)]
    hba = parse_hba("\n".join(lines) + "\n")
    dead = shadows(hba.rules)
    assert dead[:n] == [None] * n
    assert [d.lineno if d else None for d in dead[n:]] == list(range(1, n + 1))


@settings(max_examples=150)
@given(hba_texts(), st.sampled_from(["none", "verify-full", "cert"]))
def test_transforms_build_what_parsing_their_output_gives(text: str, mode: str) -> None:
    # require_tls and set_client_auth reuse the lines they keep instead of parsing their output again; the
    # result must be exactly what a parse of that output gives, line numbers and all.
    hba = parse_hba(text)
    secured, _ = require_tls(hba)
    assert secured == parse_hba(render(secured))
    certs, _ = set_client_auth(secured, mode, "m" if mode == "cert" else None)  # type: ignore[arg-type]
    assert certs == parse_hba(render(certs))


GAPS = [" ", "  ", "\t", "    ", " \t", "\t ", "\r"]
NEXT = ["all", "db", '"db x"', ",db", "#c", "\\", "a,b", "x" * 9]
REST = ["", " all 10.0.0.0/8 md5", "\tall\t::1/128\ttrust  # note", " all\\\n 0/0 md5", " a\0b"]
host_lines = st.tuples(
    st.sampled_from(["", " ", "\t"]),
    st.lists(st.sampled_from(GAPS), min_size=1, max_size=2).map("".join),
    st.sampled_from(NEXT),
    st.sampled_from(REST),
).map(lambda t: t[0] + "host" + t[1] + t[2] + t[3])


@given(host_lines, st.sampled_from([None, 13, 16]))
def test_host_to_hostssl_shortcut_writes_what_edit_line_writes(raw: str, major: int | None) -> None:
    rules = dialect(major)
    assert _as_hostssl(raw, rules) == edit_line(raw, {0: "hostssl"}, rules)


CONN_WORDS = ["local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc", "hots", "include"]
NAME_WORDS = ["all", "replication", "db1", "+grp", "@file", "sameuser", "x" * 10_239]
ADDRESS_WORDS = ["10.0.0.0/8", "10.0.0.1/33", "::1/128", "127.1/32", "1.2.3.4", "db.example", "0/0", "all"]
MASK_WORDS = ["255.255.255.0", "255.0.255.0", "ffff::", "bogus"]
METHOD_WORDS = ["md5", "scram-sha-256", "peer", "cert", "trust", "md6", "reject", "ident", "gss"]
OPTION_WORDS = ["clientcert=verify-full", "clientcert=verify-ca", "clientcert=x", "map=m", "novalue"]


@st.composite
def plain_lines(draw: st.DrawFn) -> str:
    """Lines of plain words in the order of a rule's fields, sometimes a field missing or out of place."""
    words = [
        draw(st.sampled_from(CONN_WORDS)),
        draw(st.sampled_from(NAME_WORDS)),
        draw(st.sampled_from(NAME_WORDS)),
    ]
    if words[0] != "local" or draw(st.integers(0, 9)) == 0:
        words.append(draw(st.sampled_from(ADDRESS_WORDS)))
        if draw(st.integers(0, 3)) == 0:
            words.append(draw(st.sampled_from(MASK_WORDS)))
    words += [draw(st.sampled_from(METHOD_WORDS)), *draw(st.lists(st.sampled_from(OPTION_WORDS), max_size=2))]
    del words[draw(st.integers(0, 40)) :]  # usually nothing: the slice starts past the end
    gaps = draw(st.lists(st.sampled_from([" ", "\t", "  ", "\r"]), min_size=len(words), max_size=len(words)))
    return "".join(w + g for w, g in zip(words, gaps, strict=True)).rstrip(" ")


def _outcome(text: str, major: int | None) -> object:
    try:
        return parse_hba(text, major=major)
    except ParseError as exc:
        return str(exc)


@given(st.one_of(plain_lines(), rule_lines()), st.sampled_from([None, 13, 16]))
def test_plain_lines_read_without_the_tokenizer_as_with_it(line: str, major: int | None) -> None:
    fast = _outcome(line, major)
    with patch.object(syntax, "_parse_plain", lambda *_args: None):
        assert fast == _outcome(line, major)  # the same rule, or the same error
