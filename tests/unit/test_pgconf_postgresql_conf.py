from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbatten.errors import FileProblem, ParseError
from pgbatten.pgconf.postgresql_conf import (
    ADDED_BY_COMMENT,
    IncludeKind,
    Setting,
    effective_settings,
    format_value,
    includes,
    load_conf_tree,
    overridden_settings,
    parse_conf,
    quote_value,
    render,
    set_values,
    unquote_value,
)

DATA = Path(__file__).parent / "data"
INITDB_CONF = DATA / "postgresql.conf.initdb15"


# --- generated files --------------------------------------------------------------------------------

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}(\.[a-z_][a-z0-9_]{0,5})?", fullmatch=True).filter(
    lambda n: n.lower() not in {"include", "include_dir", "include_if_exists"}
)
text_values = st.text(st.characters(codec="utf-8", exclude_characters="\n\0"), max_size=12)
values = st.one_of(
    text_values.map(quote_value),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        ["on", "off", "128MB", "0x1F", "1.5", "-.5", "localhost", "a-b:c/d", "'it''s'", r"'a\'b'"]
    ),
)
spaces = st.sampled_from(["", " ", "  ", "\t", "\t\t", " \t"])
comments = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=20).map(
    lambda t: "#" + t
)


@st.composite
def entry_lines(draw: st.DrawFn) -> str:
    sep = draw(st.sampled_from(["=", " = ", " ", "\t=\t", "  =", "= "]))
    trailing = draw(st.one_of(st.just(""), st.tuples(spaces, comments).map("".join)))
    prefix = draw(st.sampled_from(["", "", "#", "# "]))
    return f"{draw(spaces)}{prefix}{draw(names)}{sep}{draw(values)}{trailing}"


conf_lines = st.one_of(entry_lines(), comments, spaces, st.tuples(spaces, comments).map("".join))


@st.composite
def conf_texts(draw: st.DrawFn) -> str:
    lines, eol, final_eol = draw(
        st.tuples(st.lists(conf_lines, max_size=15), st.sampled_from(["\n", "\r\n"]), st.booleans())
    )
    text = eol.join(lines)
    if lines and final_eol:
        text += eol
    return text


@given(conf_texts())
def test_render_is_identity_on_generated_files(text: str) -> None:
    assert render(parse_conf(text)) == text


@given(text_values)
def test_quote_value_round_trips(value: str) -> None:
    quoted = quote_value(value)
    assert unquote_value(quoted) == value
    conf = parse_conf(f"x = {quoted}\n")
    assert conf.settings[0].value == value


@settings(max_examples=150)
@given(conf_texts(), names, st.one_of(text_values, st.integers(0, 1000), st.booleans()))
def test_set_values_touches_only_the_target_line(text: str, name: str, value: str | int | bool) -> None:
    conf = parse_conf(text)
    new, changed = set_values(conf, {name: value})
    old_lines = [ln.text for ln in conf.lines]
    new_lines = [ln.text for ln in new.lines]
    key = name.lower()
    winner = new.get(key)
    assert winner is not None
    assert winner.value == unquote_value(format_value(value))
    if len(new_lines) == len(old_lines):
        differing = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
        assert len(differing) <= 1
        if differing:
            assert differing == [winner.index]
    else:
        # Appended: every old line survives (only a missing final newline may be added).
        assert new_lines[: len(old_lines)] == old_lines
        assert ADDED_BY_COMMENT in new_lines[len(old_lines) :]
    assert changed == (render(new) != render(conf))
    again, changed_again = set_values(new, {name: value})
    assert not changed_again
    assert render(again) == render(new)
    assert render(parse_conf(render(new))) == render(new)


# --- the real initdb output -----------------------------------------------------------------------


def test_initdb_default_file_round_trips_and_is_understood() -> None:
    text = INITDB_CONF.read_text()
    conf = parse_conf(text)
    assert render(conf) == text
    assert conf.get("max_connections") is not None
    assert conf.get("MAX_CONNECTIONS") == conf.get("max_connections")
    ssl = next(s for s in conf.commented_settings if s.name == "ssl")
    assert ssl.value == "off"
    assert not [s for s in conf.commented_settings if s.name.startswith("include")]
    assert includes(conf) == []


def test_set_values_on_initdb_file_uncomments_defaults_in_place() -> None:
    text = INITDB_CONF.read_text()
    conf = parse_conf(text)
    new, changed = set_values(
        conf, {"ssl": True, "ssl_cert_file": "/etc/pg/server.crt", "max_connections": 50}
    )
    assert changed
    old_lines, new_lines = text.split("\n"), render(new).split("\n")
    assert len(old_lines) == len(new_lines)
    diff = {i: (a, b) for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b}
    assert sorted(b for _, b in diff.values()) == [
        "max_connections = 50\t\t\t# (change requires restart)",
        "ssl = on",
        "ssl_cert_file = '/etc/pg/server.crt'",
    ]


def test_commented_default_keeps_comment_column() -> None:
    conf = parse_conf("#listen_addresses = 'localhost'\t\t# what IP address(es) to listen on;\n")
    new, _ = set_values(conf, {"listen_addresses": "*"})
    assert render(new) == "listen_addresses = '*'\t\t\t# what IP address(es) to listen on;\n"


# --- edits ----------------------------------------------------------------------------------------


def test_last_active_entry_is_edited_and_earlier_ones_reported() -> None:
    text = "ssl = off\nport = 5432\n  SSL   =   'off'   # keep me\n"
    conf = parse_conf(text)
    assert [s.lineno for s in overridden_settings(conf)] == [1]
    new, changed = set_values(conf, {"ssl": "on"})
    assert changed
    assert render(new) == "ssl = off\nport = 5432\n  SSL   =   on      # keep me\n"


def test_equal_value_changes_nothing() -> None:
    conf = parse_conf("ssl = true\nport = '5432'\n")
    new, changed = set_values(conf, {"ssl": "on", "port": 5432})
    assert not changed
    assert new is conf


def test_append_handles_missing_final_newline_and_crlf() -> None:
    conf = parse_conf("port = 5432\r\n# end")
    new, changed = set_values(conf, {"ssl_ciphers": "HIGH:!aNULL", "ssl": True})
    assert changed
    assert render(new) == (
        "port = 5432\r\n# end\r\n\r\n# Added by pgbatten\r\nssl_ciphers = 'HIGH:!aNULL'\r\nssl = on\r\n"
    )
    newer, _ = set_values(new, {"ssl_min_protocol_version": "TLSv1.2"})
    assert render(newer).endswith("ssl = on\r\nssl_min_protocol_version = 'TLSv1.2'\r\n")
    assert render(newer).count(ADDED_BY_COMMENT) == 1


def test_values_are_quoted_unless_plain() -> None:
    assert format_value("on") == "on"
    assert format_value(False) == "off"
    assert format_value(12) == "12"
    assert format_value("12") == "12"
    assert format_value("128MB") == "'128MB'"
    assert format_value("it's C:\\x") == "'it''s C:\\\\x'"
    assert format_value("a\nb") == "'a\\nb'"


def test_set_values_rejects_bad_names() -> None:
    conf = parse_conf("")
    with pytest.raises(ValueError, match="not a valid parameter name"):
        set_values(conf, {"bad name": "x"})
    with pytest.raises(ValueError, match="directive"):
        set_values(conf, {"include": "x.conf"})


def test_unquote_escapes_like_postgres() -> None:
    assert unquote_value(r"'a\tb\\c\'d''e\101\q'") == "a\tb\\c'd'eAq"
    assert unquote_value("plain") == "plain"


def test_prose_comments_are_not_settings() -> None:
    conf = parse_conf("# Add settings here\n# Memory units:  B  = bytes\n#ssl = on\n#   port = 5433 # x\n")
    assert [(s.name, s.value) for s in conf.commented_settings] == [("ssl", "on"), ("port", "5433")]


def test_name_value_without_equals() -> None:
    conf = parse_conf("work_mem 4MB\nsearch_path '\"$user\", public'\n")
    assert [(s.name, s.value) for s in conf.settings] == [
        ("work_mem", "4MB"),
        ("search_path", '"$user", public'),
    ]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("ssl_cert_file = 'server.crt", "unterminated quoted string"),
        ("ssl =", "missing value"),
        ("ssl = # nothing", "missing value"),
        ("ssl = on off", "unexpected text after the value"),
        ("search_path = a.b", "must be quoted"),
        ("data_directory = /var/lib/pg", "quote it"),
        ("= on", "expected a parameter name"),
        ("shared_buffers = 1.5GB", "unexpected text"),
    ],
)
def test_parse_errors_name_the_line(line: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_conf(f"# header\nport = 5432\n{line}\n", Path("/etc/pg/postgresql.conf"))
    assert info.value.lineno == 3
    assert info.value.line == line
    assert str(info.value).startswith("/etc/pg/postgresql.conf:3: ")


# --- includes and effective settings -----------------------------------------------------------


def test_includes_are_listed() -> None:
    conf = parse_conf("include 'a.conf'\nINCLUDE_DIR = conf_d\ninclude_if_exists = 'b.conf' # opt\n")
    assert [(i.kind, i.path, i.lineno) for i in includes(conf)] == [
        (IncludeKind.INCLUDE, "a.conf", 1),
        (IncludeKind.INCLUDE_DIR, "conf_d", 2),
        (IncludeKind.INCLUDE_IF_EXISTS, "b.conf", 3),
    ]


def test_load_tree_and_effective_settings(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("ssl = off\nport = 5434\n")
    (tmp_path / "conf.d" / "a.conf").write_text("port = 5433\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("port = 1\n")
    (tmp_path / "conf.d" / "c.txt").write_text("port = 2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.conf").write_text("include 'y.conf'\n")
    (tmp_path / "sub" / "y.conf").write_text("work_mem = '8MB'\n")
    main = tmp_path / "postgresql.conf"
    main.write_text(
        "ssl = on\ninclude_dir 'conf.d'\ninclude 'sub/x.conf'\n"
        "include_if_exists 'nope.conf'\nwork_mem = 4MB\n"
    )
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("port = 6000\n")
    files = load_conf_tree(main)
    assert [f.path for f in files] == [
        main,
        tmp_path / "conf.d" / "a.conf",
        tmp_path / "conf.d" / "b.conf",
        tmp_path / "sub" / "x.conf",
        tmp_path / "sub" / "y.conf",
    ]
    eff = effective_settings(files)
    assert (eff["ssl"].value, eff["ssl"].path, eff["ssl"].lineno) == (
        "off",
        tmp_path / "conf.d" / "b.conf",
        1,
    )
    assert eff["ssl"].overrides == ((main, 1),)
    # work_mem after the include line in the main file wins over the included one.
    assert (eff["work_mem"].value, eff["work_mem"].path) == ("4MB", main)
    assert eff["port"].value == "5434"
    eff_auto = effective_settings([*files, *load_conf_tree(auto)])
    assert (eff_auto["port"].value, eff_auto["port"].path) == ("6000", auto)


def test_missing_include_is_a_parse_error_naming_the_line(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text("port = 1\ninclude 'missing.conf'\n")
    with pytest.raises(ParseError, match="does not exist") as info:
        load_conf_tree(main)
    assert (info.value.path, info.value.lineno) == (main, 2)


def test_include_loop_is_detected(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text("include 'a.conf'\n")
    (tmp_path / "a.conf").write_text("\ninclude 'postgresql.conf'\n")
    with pytest.raises(ParseError, match="include loop") as info:
        load_conf_tree(main)
    assert (info.value.path, info.value.lineno) == (tmp_path / "a.conf", 2)


def test_same_file_included_twice_is_not_a_loop(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text("include 'a.conf'\nport = 1\ninclude 'a.conf'\n")
    (tmp_path / "a.conf").write_text("port = 2\n")
    files = load_conf_tree(main)
    assert len(files) == 2
    assert effective_settings(files)["port"].path == tmp_path / "a.conf"


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text("include 'a.conf'\n")
    (tmp_path / "a.conf").write_text("ok = 1\nbad = 'x\n")
    with pytest.raises(ParseError) as info:
        load_conf_tree(main)
    assert (info.value.path, info.value.lineno) == (tmp_path / "a.conf", 2)


def test_unreadable_main_file_is_a_file_problem(tmp_path: Path) -> None:
    with pytest.raises(FileProblem):
        load_conf_tree(tmp_path / "absent.conf")


def test_setting_model_is_frozen() -> None:
    setting = parse_conf("a = 1").settings[0]
    assert isinstance(setting, Setting)
    with pytest.raises(AttributeError):
        setting.value = "2"  # type: ignore[misc]


def test_identifier_classes_are_flex_letters_on_decoded_text() -> None:
    # guc-file.l: LETTER [A-Za-z_\200-\377] on bytes, i.e. every non-ASCII character of the decoded text
    # (surrogate escapes included). The negated ASCII classes that compile fast must say exactly that.
    import re

    from pgbatten.pgconf import conf_lexer as pc

    reference = {
        "L": re.compile("[A-Za-z_\u0080-\U0010ffff]"),
        "LD": re.compile("[A-Za-z_0-9\u0080-\U0010ffff]"),
        "UNQ": re.compile("[A-Za-z_0-9\u0080-\U0010ffff]|[-._:/]"),
    }
    fast = {"L": re.compile(pc._L), "LD": re.compile(pc._LD), "UNQ": re.compile(pc._UNQUOTED_TAIL)}
    chars = [chr(c) for c in range(0x100)] + ["\udc80", "\udcff", "é", "ß", "中", "\U0001f600", "\U0010ffff"]
    for name, ref in reference.items():
        assert [c for c in chars if ref.fullmatch(c)] == [c for c in chars if fast[name].fullmatch(c)], name
