"""The plan's diff, built from the edit: what ``difflib.unified_diff`` prints, never hiding a change."""

from __future__ import annotations

import difflib
import io
import re
from array import array
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from pgbatten.cli.secure_cmd import as_printed
from pgbatten.pgconf.hba import HbaEdit, client_auth_edit, parse_hba, render, require_tls_edit
from pgbatten.secure.changes import FileChange, hba_kept_lines, iter_diff, unified_diff
from tests.unit.test_pgconf_hba import hba_texts

PATH = Path("/srv/pg/data/pg_hba.conf")

# Few distinct lines, so that both texts share lines in many ambiguous ways; some without a final newline.
LINES = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "\n", "a", "b\r\n", "x\x0cy\n"]), max_size=14)


def _difflib(old: list[str], new: list[str]) -> str:
    """What the plan printed before: difflib, each line ended."""
    diff = difflib.unified_diff(old, new, fromfile=f"a{PATH}", tofile=f"b{PATH}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff)


@given(LINES, LINES, st.integers(0, 4))
def test_same_hunks_as_difflib_from_the_same_matching_blocks(a: list[str], b: list[str], n: int) -> None:
    blocks = difflib.SequenceMatcher(None, a, b).get_matching_blocks()[:-1]
    ours = list(unified_diff(a, b, "old", "new", blocks=[tuple(m) for m in blocks], n=n))  # type: ignore[misc]
    assert ours == list(difflib.unified_diff(a, b, "old", "new", n=n))
    assert list(unified_diff(a, b, "old", "new", n=n)) == ours  # without blocks: difflib's own


def _change(edit: HbaEdit) -> FileChange:
    old, new = render(edit.before).encode(), render(edit.after).encode()
    return FileChange(PATH, old, new, 0o640, purpose="pg_hba", kept=hba_kept_lines(edit))


def _lines(data: bytes | None) -> list[str]:
    return (data or b"").decode().splitlines(keepends=True)


def _patched(old: list[str], diff: str) -> list[str]:
    """``patch`` of the diff onto ``old``, checking every context and removed line against it."""
    out: list[str] = []
    at = 0
    for line in re.findall(r"[^\n]*\n", diff)[2:]:  # each printed line ends in \n, and only there
        if line.startswith("@@"):
            start, _, count = line.split()[1][1:].partition(",")
            target = int(start) if count == "0" else int(start) - 1  # N,0: after line N
            out += old[at:target]
            at = target
        elif line[0] in " -":
            assert old[at].rstrip("\r\n") == line[1:].rstrip("\r\n"), (line, old[at])
            if line[0] == " ":
                out.append(old[at])
            at += 1
        else:
            out.append(line[1:])
    return out + old[at:]


def _edits(text: str, mode: str) -> HbaEdit:
    to_tls = require_tls_edit(parse_hba(text, PATH))
    return to_tls.then(client_auth_edit(to_tls.after, mode))  # type: ignore[arg-type]


@settings(max_examples=300)
@given(hba_texts(), st.sampled_from(["none", "verify-full", "cert"]))
def test_the_plan_diff_is_difflibs_and_a_true_patch(text: str, mode: str) -> None:
    edit = _edits(text, mode)
    for j, i in enumerate(edit.origin):
        if i >= 0:  # a kept line is the very line it was
            before, after = edit.before.lines[i], edit.after.lines[j]
            assert (before.raw, before.eol) == (after.raw, after.eol)
    kept = [i for i in edit.origin if i >= 0]
    assert kept == sorted(set(kept))
    change = _change(edit)
    old, new = _lines(change.old), _lines(change.new)
    ours = "".join(iter_diff([change]))
    # (The printed diff ends every line, so line ends are not compared.)
    assert [ln.rstrip("\r\n") for ln in _patched(old, ours)] == [ln.rstrip("\r\n") for ln in new]
    if len(set(old)) == len(old) and len(set(new)) == len(new):
        # Every line once: the lines both texts share are forced, and difflib finds exactly the edit.
        assert ours == _difflib(old, new)


def test_the_plan_diff_of_an_initdb_file_is_difflibs() -> None:
    text = (Path(__file__).parent / "data" / "pg_hba.conf.initdb15").read_text()
    for mode in ("none", "verify-full", "cert"):
        change = _change(_edits(text, mode))
        assert "".join(iter_diff([change])) == _difflib(_lines(change.old), _lines(change.new))


def test_kept_lines_that_are_not_shared_fall_back_to_comparing() -> None:
    old, new = b"a\nb\nc\n", b"a\nB\nc\n"
    wrong = FileChange(PATH, old, new, 0o640, kept=array("l", [0, 0, 3]))  # claims b was kept
    assert "".join(iter_diff([wrong])) == _difflib(_lines(old), _lines(new))
    assert "-b\n+B\n" in "".join(iter_diff([wrong]))


def test_a_big_file_is_diffed_from_the_edit_in_hunks() -> None:
    rules = [f"host db{i} user{i} 10.0.{i // 250}.{i % 250}/32 md5" for i in range(3_000)]
    text = "local all all peer\n" + "\n".join(rules) + "\n"
    change = _change(_edits(text, "none"))
    pieces = list(iter_diff([change]))
    assert len(pieces) == 1 + 1  # the header with the guard's hunk, then every host rule in one hunk
    assert "".join(pieces) == _difflib(_lines(change.old), _lines(change.new))


PRINTED = ["a", "\t", "\n", "\r", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "漢", "\u0301"]


@given(st.text(st.sampled_from(PRINTED)))
def test_printed_as_rich_printed_it(text: str) -> None:
    buf = io.StringIO()
    Console(file=buf, highlight=False, width=80).out(text, highlight=False, end="")
    assert as_printed(text) == buf.getvalue()
