from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.errors import ParseError
from pgbatten.pgconf.pg_ident import IdentInclude, add_mapping, load_ident, parse_ident, render

INITDB_IDENT = Path(__file__).parent / "data" / "pg_ident.conf.initdb15"

names = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"), min_size=1, max_size=10)
gaps = st.sampled_from([" ", "\t", "   ", "\t\t"])


@st.composite
def ident_texts(draw: st.DrawFn) -> str:
    line_kinds = st.one_of(
        st.tuples(
            st.sampled_from(["map", "certmap", '"my map"']), gaps, st.sampled_from(["alice", "/^(.*)$"])
        ).map(lambda t: t[0] + t[1] + t[2] + " bob"),
        st.sampled_from(["# comment", "", "  ", "include_dir ident.d", 'ssl  "CN x"   "x y"  # who']),
    )
    lines, eol, final = draw(
        st.tuples(st.lists(line_kinds, max_size=8), st.sampled_from(["\n", "\r\n"]), st.booleans())
    )
    return eol.join(lines) + (eol if lines and final else "")


@given(ident_texts())
def test_render_is_identity(text: str) -> None:
    assert render(parse_ident(text)) == text


@given(ident_texts(), names, names, names)
def test_add_mapping_appends_once_and_keeps_other_lines(text: str, m: str, sysuser: str, pguser: str) -> None:
    ident = parse_ident(text)
    new, changed = add_mapping(ident, m, sysuser, pguser)
    assert changed
    assert render(new).startswith(text)
    assert [(x.map_name, x.system_user, x.pg_user) for x in new.mappings][-1] == (m, sysuser, pguser)
    again, changed_again = add_mapping(new, m, sysuser, pguser)
    assert not changed_again and again is new


def test_initdb_file_and_column_layout() -> None:
    text = INITDB_IDENT.read_text()
    ident = parse_ident(text)
    assert render(ident) == text and ident.mappings == ()
    new, _ = add_mapping(ident, "pgbatten", "/^(.*)@clients$", r"\1")
    assert render(new) == text + "pgbatten        /^(.*)@clients$         \\1\n"
    newer, _ = add_mapping(new, "pgbatten", "CN=Admin One", "admin")
    assert render(newer).endswith('pgbatten        "CN=Admin One"          admin\n')
    assert newer.mappings[0].is_regex and not newer.mappings[1].is_regex


def test_fields_and_includes() -> None:
    ident = parse_ident('m "a b" c  # x\r\ninclude_if_exists other.conf\r\nm2 \\\r\n  u v')
    assert [(m.map_name, m.system_user, m.pg_user, m.lineno) for m in ident.mappings] == [
        ("m", "a b", "c", 1),
        ("m2", "u", "v", 3),
    ]
    assert isinstance(ident.lines[1], IdentInclude)
    new, _ = add_mapping(ident, "m3", "x", "y")
    assert render(new).endswith("  u v\r\nm3 x    y\r\n")


@pytest.mark.parametrize(
    ("line", "reason"),
    [("map alice", "missing entry"), ("map alice,bob carol", "multiple values"), ('map "x', "unterminated")],
)
def test_errors(line: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_ident(f"# c\n{line}\n", Path("pg_ident.conf"))
    assert info.value.lineno == 2


def test_load_ident(tmp_path: Path) -> None:
    path = tmp_path / "pg_ident.conf"
    path.write_text("m u v\n")
    assert load_ident(path).mappings[0].pg_user == "v"
