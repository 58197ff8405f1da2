"""The files a plan writes, and how they are shown: a unified diff per text file, a line per certificate.

The diff is what ``difflib.unified_diff`` prints (same hunks, context and headers). difflib finds what two
texts share by searching both, which on a pg_hba.conf of 100,000 rules takes seconds and grows faster
than the file; but the planner knows which lines it kept, since it made the edit. A change that carries
``kept`` (the lines shared, as difflib's matching blocks) is diffed from that in one pass; one without it
(postgresql.conf and pg_ident.conf edits, small files) is compared by difflib.
"""

from __future__ import annotations

import difflib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import dns_names, ip_addresses
from pgbatten.pgconf._bulk import gc_paused
from pgbatten.pgconf.hba import HbaEdit, HbaLine

__all__ = [
    "CONTEXT",
    "FileChange",
    "describe_pem",
    "hba_kept_lines",
    "iter_diff",
    "opcodes_from_blocks",
    "unified_diff",
]

CONTEXT = 3
"""Lines of context around each change, as ``diff -u`` and difflib."""

Opcode = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class FileChange:
    """One file to create or replace. ``old`` is None for a new file."""

    path: Path
    old: bytes | None
    new: bytes
    mode: int
    secret: bool = False
    purpose: str = ""
    kept: array[int] | None = field(default=None, compare=False, repr=False)
    """The lines of ``old`` that ``new`` keeps, as (old line, new line, count) triples in a row, in order;
    None when not known (the diff then compares the texts)."""

    @property
    def is_new(self) -> bool:
        return self.old is None


def iter_diff(changes: Iterable[FileChange]) -> Iterator[str]:
    """The plan's diff, a piece at a time: a unified diff of every text file, a line for the others."""
    for change in changes:
        if change.secret:
            action = "new file" if change.is_new else "replace"
            yield f"{action} {change.path} (private key, mode {change.mode:04o}; content not shown)\n"
            continue
        if change.purpose in ("server cert", "CA cert", "CRL"):
            action = "new file" if change.is_new else "replace"
            yield f"{action} {change.path} ({describe_pem(change.new)})\n"
            continue
        old, new, blocks = _prepared(change)
        label = str(change.path)
        # A hunk at a time: a diff of a big file is never one string in memory.
        hunk: list[str] = []
        for line in unified_diff(old, new, f"a{label}", f"b{label}", blocks=blocks):
            if line.startswith("@@") and hunk:
                yield "".join(hunk)
                hunk = []
            hunk.append(line if line.endswith("\n") else line + "\n")
        if hunk:
            yield "".join(hunk)


@gc_paused
def _prepared(change: FileChange) -> tuple[list[str], list[str], list[tuple[int, int, int]] | None]:
    """Both texts as lines, and the lines they share when known (millions of objects for a big file)."""
    old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
    new = change.new.decode(errors="replace").splitlines(keepends=True)
    return old, new, (_blocks(change.kept, old, new) if change.kept is not None else None)


def unified_diff(
    a: Sequence[str],
    b: Sequence[str],
    fromfile: str,
    tofile: str,
    *,
    blocks: Sequence[tuple[int, int, int]] | None = None,
    n: int = CONTEXT,
) -> Iterator[str]:
    """``difflib.unified_diff(a, b, fromfile, tofile, n=n)``, from ``blocks`` (the lines ``a`` and ``b``
    share, as ``SequenceMatcher.get_matching_blocks`` gives them) when known instead of searching."""
    codes: list[Opcode] = (
        list(difflib.SequenceMatcher(None, a, b).get_opcodes())
        if blocks is None
        else opcodes_from_blocks(blocks, len(a), len(b))
    )
    started = False
    for group in _grouped(codes, n):
        if not started:
            started = True
            yield f"--- {fromfile}\n"
            yield f"+++ {tofile}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for line in a[i1:i2]:
                    yield " " + line
                continue
            if tag in ("replace", "delete"):
                for line in a[i1:i2]:
                    yield "-" + line
            if tag in ("replace", "insert"):
                for line in b[j1:j2]:
                    yield "+" + line


def opcodes_from_blocks(blocks: Iterable[tuple[int, int, int]], len_a: int, len_b: int) -> list[Opcode]:
    """``SequenceMatcher.get_opcodes`` for these matching blocks (increasing, not overlapping)."""
    codes: list[Opcode] = []
    i = j = 0
    for ai, bj, size in (*blocks, (len_a, len_b, 0)):
        tag = "replace" if i < ai and j < bj else "delete" if i < ai else "insert" if j < bj else ""
        if tag:
            codes.append((tag, i, ai, j, bj))
        if size and codes and codes[-1][0] == "equal" and codes[-1][2] == ai and codes[-1][4] == bj:
            codes[-1] = ("equal", codes[-1][1], ai + size, codes[-1][3], bj + size)
        elif size:
            codes.append(("equal", ai, ai + size, bj, bj + size))
        i, j = ai + size, bj + size
    return codes


def _grouped(codes: list[Opcode], n: int) -> Iterator[list[Opcode]]:
    """``SequenceMatcher.get_grouped_opcodes``: the changes with up to ``n`` lines of context, in hunks."""
    if not codes:
        codes = [("equal", 0, 1, 0, 1)]
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in codes:
        # A long unchanged stretch ends a hunk: n lines after the change, n before the next.
        if tag == "equal" and i2 - i1 > 2 * n:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            yield group
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        yield group


def _range(start: int, stop: int) -> str:
    """A hunk's line range as ``diff -u`` writes it (1-based; ``N,0`` is the line before an insertion)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _blocks(kept: array[int], a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int, int]] | None:
    """The lines ``a`` and ``b`` share: those ``kept`` names, and what difflib finds between them.

    The edit kept or rewrote whole rules; a rule may span several lines (continuations), of which a rewrite
    may keep some: those are found by comparing the stretches between kept lines, which are short.
    None (compare everything) unless ``kept`` names lines the texts share: a diff that hid a change would be
    worse than a slow one.
    """
    blocks: list[tuple[int, int, int]] = []
    i = j = 0
    for k in range(0, len(kept) + 3, 3):
        ai, bj, size = (kept[k], kept[k + 1], kept[k + 2]) if k < len(kept) else (len(a), len(b), 0)
        if ai < i or bj < j or size < 0 or ai + size > len(a) or bj + size > len(b):
            return None
        if a[ai : ai + size] != b[bj : bj + size]:
            return None
        if i < ai and j < bj:
            matcher = difflib.SequenceMatcher(None, a[i:ai], b[j:bj])
            blocks.extend((i + x, j + y, n) for x, y, n in matcher.get_matching_blocks()[:-1])
        if size:
            blocks.append((ai, bj, size))
        i, j = ai + size, bj + size
    return blocks


@gc_paused
def hba_kept_lines(edit: HbaEdit) -> array[int]:
    """The text lines (as ``str.splitlines`` counts them, which the diff shows) that an edit kept, as
    ``FileChange.kept`` triples."""
    old_at = [0, *accumulate(_text_lines(ln) for ln in edit.before.lines)]
    kept: array[int] = array("l")
    j = 0
    for line, origin in zip(edit.after.lines, edit.origin, strict=True):
        count = _text_lines(line)
        if origin >= 0 and count:
            i = old_at[origin]
            if kept and kept[-3] + kept[-1] == i and kept[-2] + kept[-1] == j:
                kept[-1] += count  # continues the block before
            else:
                kept.extend((i, j, count))
        j += count
    return kept


def _text_lines(line: HbaLine) -> int:
    text = line.raw + line.eol
    # splitlines also ends a line at \r, \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029 (none printable).
    if text[-1:] == "\n" and text[:-1].isprintable():
        return 1
    return len(text.splitlines())


def describe_pem(data: bytes) -> str:
    """One line about a PEM certificate or CRL, for the plan."""
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError:
            return f"{len(data)} bytes"
        return f"CRL, {len(list(crl))} revoked, next update {crl.next_update_utc:%Y-%m-%d}"
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    names = [*dns_names(cert), *(str(ip) for ip in ip_addresses(cert))]
    sans = "; SANs: " + ", ".join(names) if names else ""
    return f"certificate {subject}{sans}; valid until {cert.not_valid_after_utc:%Y-%m-%d}"
