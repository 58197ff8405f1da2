"""Line splitting and column arithmetic shared by the config file editors.

PostgreSQL's readers only ever split on ``\\n``; ``\\r`` is ordinary whitespace to them. We therefore split on
``\\n`` alone (``str.splitlines`` would also split on form feeds and Unicode separators and break identity),
and move a ``\\r`` that precedes the ``\\n`` into the line ending so that edits never strand it.
"""

from __future__ import annotations

from pathlib import Path

from pgbatten.errors import FileProblem

TAB_WIDTH = 8


def split_lines(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(content, eol)`` pairs; ``"".join(c + e ...)`` gives ``text`` back exactly."""
    if not text:
        return []
    parts = text.split("\n")
    out: list[tuple[str, str]] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last:
            if part:
                out.append((part, ""))
        elif part.endswith("\r"):
            out.append((part[:-1], "\r\n"))
        else:
            out.append((part, "\n"))
    return out


def dominant_eol(eols: list[str]) -> str:
    """The line ending new lines should use: the file's own, LF for an empty or one-line file."""
    for eol in eols:
        if eol:
            return eol
    return "\n"


def visual_col(text: str) -> int:
    """Display column reached after ``text`` on its last physical line, tabs expanded."""
    return len(text.rsplit("\n", 1)[-1].expandtabs(TAB_WIDTH))


def fit_gap(before: str, gap: str, target_col: int | None, orig_start_col: int | None) -> str:
    """Whitespace to put after ``before`` so the next item lands on ``target_col`` if it can.

    ``gap`` is the original whitespace and ``orig_start_col`` the column it started at: when nothing before it
    moved, the original gap is kept verbatim (identity for untouched parts of a line). Otherwise we pad to the
    original column, with tabs if the original used tabs, and fall back to a single separator when the new
    text is too long to keep the alignment.
    """
    if "\n" in gap:
        return gap
    cur = visual_col(before)
    if orig_start_col is not None and cur == orig_start_col:
        return gap
    sep = "\t" if "\t" in gap else " "
    if target_col is None or target_col <= cur:
        return sep
    if sep == "\t":
        out = ""
        while (cur // TAB_WIDTH + 1) * TAB_WIDTH <= target_col:
            out += "\t"
            cur = (cur // TAB_WIDTH + 1) * TAB_WIDTH
        return out + " " * (target_col - cur)
    return " " * (target_col - cur)


def read_text(path: Path) -> str:
    """Read a config file as text without losing bytes that are not UTF-8.

    Undecodable bytes become lone surrogates (``surrogateescape``); writers must encode with the same error
    handler to get the original bytes back.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise FileProblem(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise FileProblem(path, "is a directory, expected a file") from exc
    except OSError as exc:
        raise FileProblem(path, f"cannot read: {exc.strerror}") from exc
    return data.decode("utf-8", errors="surrogateescape")
