"""Transforms that make pg_hba.conf TLS-only and require client certificates.

Each returns ``(new_file, changed)``, is idempotent, and re-renders only the lines it changes, keeping each
changed rule's column alignment where the new text fits. The new file is built from the old one's lines:
only new and edited lines are parsed, so a transform costs one pass over the file, not a second parse.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from operator import attrgetter
from typing import Literal

from pgbatten.pgconf._bulk import gc_paused
from pgbatten.pgconf.auth_tokens import (
    Dialect,
    edit_line,
    layout_columns,
    logical_lines,
    quote_token,
    render_columns,
    tokenize,
)
from pgbatten.pgconf.hba.matching import address_network
from pgbatten.pgconf.hba.syntax import (
    PASSWORD_METHODS,
    ConnType,
    HbaComment,
    HbaFile,
    HbaInclude,
    HbaLine,
    HbaRule,
    parse_lines,
)
from pgbatten.pgconf.lines import dominant_eol, fit_gap, visual_col

__all__ = [
    "DISABLED_MARK",
    "GUARD_MARK",
    "HbaEdit",
    "client_auth_edit",
    "require_tls",
    "require_tls_edit",
    "set_client_auth",
]

GUARD_MARK = "# pgbatten: reject every TCP connection that does not use TLS, whatever rules follow"
DISABLED_MARK = "# pgbatten: disabled plaintext rule:"


def _is_all(tokens: Sequence[str]) -> bool:
    return "all" in tokens


def _guard_coverage(rule: HbaRule) -> set[tuple[int, str]] | None:
    """What (IP version, database keyword) pairs a rule rejects for all non-TLS TCP, or None if not a guard.

    ``all`` does not match physical replication connections, so a complete guard needs ``replication`` too.
    """
    if rule.conn_type not in (ConnType.HOSTNOSSL, ConnType.HOST) or not rule.is_reject:
        return None
    if not _is_all(rule.users):
        return None
    kinds = {d for d in rule.databases if d in ("all", "replication")}
    net = address_network(rule.address) if rule.address not in (None, "all") else None
    if rule.address == "all":
        versions = {4, 6}
    elif net is not None and net[1] == 0:
        versions = {net[0]}  # 0.0.0.0/0 or ::/0, however written
    else:
        return None
    if not kinds:
        return None
    return {(v, k) for v in versions for k in kinds}


def _guard_plan(hba: HbaFile) -> tuple[int, dict[int, list[str]]]:
    """Where the guard goes (line index, or len(lines) for the end) and which databases each family lacks."""
    covered: set[tuple[int, str]] = set()
    stop = len(hba.lines)
    for idx, ln in enumerate(hba.lines):
        if isinstance(ln, HbaInclude):
            stop = idx
            break
        if isinstance(ln, HbaRule) and ln.is_tcp:
            cov = _guard_coverage(ln)
            if cov is None:
                stop = idx
                break
            covered |= cov
    # Keep a rule's own comment block ("# IPv4 local connections:") attached to it.
    while (
        stop < len(hba.lines)
        and stop > 0
        and isinstance(prev := hba.lines[stop - 1], HbaComment)
        and not prev.is_blank
        and not prev.raw.lstrip().startswith("# TYPE")
    ):
        stop -= 1
    missing: dict[int, list[str]] = {}
    for version in (4, 6):
        kinds = [k for k in ("all", "replication") if (version, k) not in covered]
        if kinds:
            missing[version] = kinds
    return stop, missing


_DEFAULT_COLUMNS = (0, 8, 24, 40, 64)  # initdb's layout


def _guard_lines(hba: HbaFile, stop: int, missing: dict[int, list[str]]) -> list[str]:
    columns: Sequence[int] = _DEFAULT_COLUMNS
    template = next((ln for ln in hba.lines[stop:] if isinstance(ln, HbaRule) and ln.is_tcp), None)
    if template is not None:
        cols = layout_columns(template.raw, hba.dialect)
        if cols is not None and len(cols) >= 5:
            method_col = cols[5] if template.netmask is not None else cols[4]
            columns = (*cols[:4], method_col)
    out = [GUARD_MARK]
    for version, kinds in sorted(missing.items()):
        net = "0.0.0.0/0" if version == 4 else "::/0"
        out.append(render_columns(["hostnossl", ",".join(kinds), "all", net, "reject"], columns))
    return out


_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (HbaComment, HbaInclude, HbaRule)}
_VALUES = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}  # every field at once, in order


def _changed(line: HbaLine, lineno: int, **changes: object) -> HbaLine:
    """``dataclasses.replace``, positionally: a transform may renumber every line of a long file."""
    cls = type(line)
    values = _VALUES[cls](line)  # lineno first
    if not changes:
        return cls(lineno, *values[1:])
    named = zip(_FIELDS[cls][1:], values[1:], strict=True)
    return cls(lineno, *[changes.get(f, v) for f, v in named])  # type: ignore[arg-type]


def _as_hostssl(raw: str, rules: Dialect) -> str:
    """``raw`` (a ``host`` rule) with ``hostssl`` for its type, as ``edit_line`` writes it.

    The usual line (``host``, blanks, the database, nothing special before it) is done here: the next
    column keeps its place when the gap leaves room, and then the rest of the line stays as written, which
    is what ``edit_line`` gives without tokenizing the whole line again.
    """
    if raw[4:5] in (" ", "\t") and raw.startswith("host") and "\n" not in raw and "\0" not in raw:
        rest = raw[4:].lstrip(" \t")
        at = len(raw) - len(rest)
        if rest and rest[0] not in _NOT_A_TOKEN_START:
            column = visual_col(raw[:at])
            head = "hostssl" + fit_gap("hostssl", raw[4:at], column, 4)
            if visual_col(head) == column:
                return head + rest
    return edit_line(raw, {0: ConnType.HOSTSSL.value}, rules)


_NOT_A_TOKEN_START = frozenset(',#\\"\r')


@dataclass(frozen=True, slots=True)
class HbaEdit:
    """What a transform did: the file before and after, and where each line of ``after`` comes from.

    ``origin[j]`` is the index in ``before.lines`` of the line that ``after.lines[j]`` is, text unchanged
    (renumbering aside), or -1 for a line the transform wrote or rewrote. The diff of the plan is built
    from it, in one pass, instead of searching both texts for what they share.
    """

    before: HbaFile
    after: HbaFile
    origin: array[int]

    @property
    def changed(self) -> bool:
        return self.after is not self.before

    @classmethod
    def unchanged(cls, hba: HbaFile) -> HbaEdit:
        return cls(hba, hba, array("l", range(len(hba.lines))))

    def then(self, later: HbaEdit) -> HbaEdit:
        """This edit followed by ``later`` (an edit of this one's ``after``)."""
        if not later.changed:
            return self
        if not self.changed:
            return HbaEdit(self.before, later.after, later.origin)
        first = self.origin
        return HbaEdit(
            self.before, later.after, array("l", [first[i] if i >= 0 else -1 for i in later.origin])
        )


class _Rebuild:
    """A transformed file, assembled line by line: kept lines are reused (renumbered), new text is parsed."""

    def __init__(self, hba: HbaFile) -> None:
        self.hba = hba
        self.lines: list[HbaLine] = []
        self.origin: array[int] = array("l")
        self.lineno = 1

    def keep(self, line: HbaLine, index: int, **changes: object) -> None:
        """``line`` (``hba.lines[index]``) at the current line number, ``changes`` (field values) made."""
        if line.lineno != self.lineno or changes:
            line = _changed(line, self.lineno, **changes)
        self.lines.append(line)
        self.origin.append(-1 if "raw" in changes or "eol" in changes else index)
        self.lineno += line.raw.count("\n") + 1

    def add(self, text: str) -> None:
        """Whole new lines, each with its line ending."""
        parsed = parse_lines(text, self.lineno, self.hba.path, self.hba.dialect)
        self.lines.extend(parsed)
        self.origin.extend([-1] * len(parsed))
        self.lineno += text.count("\n")

    def end_last_line(self, eol: str) -> None:
        """Make sure lines can follow: a line ending, and no continuation left open at the end of the file."""
        if not self.lines:
            return
        last = self.lines.pop()
        index = self.origin.pop()
        self.lineno = last.lineno
        if len(logical_lines(last.raw + eol + "#", self.hba.dialect)) == 1:
            # PostgreSQL would read the next line as part of this one (a backslash or a NUL byte at the very
            # end of the file): an empty line ends it.
            self.add(last.raw + eol + eol)
        elif last.eol:
            self.keep(last, index)
        else:
            self.keep(last, index, eol=eol)

    def result(self) -> HbaEdit:
        return HbaEdit(self.hba, replace(self.hba, lines=tuple(self.lines)), self.origin)


def require_tls(hba: HbaFile) -> tuple[HbaFile, bool]:
    """``require_tls_edit`` as ``(new, changed)``."""
    edit = require_tls_edit(hba)
    return edit.after, edit.changed


@gc_paused
def require_tls_edit(hba: HbaFile) -> HbaEdit:
    """Make plaintext TCP connections impossible; idempotent (the edit of a TLS-only file changes nothing).

    - ``host`` rules that do not ``reject`` become ``hostssl`` (same columns); ``host … reject`` is kept
      since it already refuses both.
    - ``hostnossl`` rules that do not ``reject`` are commented out under ``DISABLED_MARK``.
    - Guard rules ``hostnossl all,replication all 0.0.0.0/0 reject`` and the ``::/0`` twin are inserted under
      ``GUARD_MARK`` before the first TCP rule or include directive, so that no later rule and no included
      file can accept plaintext TCP. ``replication`` is listed because ``all`` does not match physical
      replication connections. The guard also refuses GSSAPI-encrypted connections, which are not TLS.
    - ``local`` rules are never touched, so the administrator keeps socket access.
    """
    stop, missing = _guard_plan(hba)
    eol = dominant_eol([ln.eol for ln in hba.lines])
    rules = hba.dialect
    out = _Rebuild(hba)
    changed = False

    def insert_guard() -> None:
        out.add("".join(line + eol for line in _guard_lines(hba, stop, missing)))

    for idx, ln in enumerate(hba.lines):
        if idx == stop and missing:
            insert_guard()
            changed = True
        if isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOST and not ln.is_reject:
            # Only the type token changes: everything parsed from the rest of the line stays as it is.
            out.keep(ln, idx, raw=_as_hostssl(ln.raw, rules), conn_type=ConnType.HOSTSSL)
            changed = True
        elif isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOSTNOSSL and not ln.is_reject:
            out.add(DISABLED_MARK + eol + "#" + ln.raw.replace("\n", "\n#") + ln.eol)
            changed = True
        else:
            out.keep(ln, idx)
    if stop == len(hba.lines) and missing:
        out.end_last_line(eol)
        insert_guard()
        changed = True
    return out.result() if changed else HbaEdit.unchanged(hba)


def set_client_auth(
    hba: HbaFile,
    mode: Literal["none", "verify-full", "cert"],
    map_name: str | None = None,
) -> tuple[HbaFile, bool]:
    """``client_auth_edit`` as ``(new, changed)``."""
    edit = client_auth_edit(hba, mode, map_name)
    return edit.after, edit.changed


@gc_paused
def client_auth_edit(
    hba: HbaFile,
    mode: Literal["none", "verify-full", "cert"],
    map_name: str | None = None,
) -> HbaEdit:
    """Require client certificates on ``hostssl`` rules that use a password method; idempotent.

    ``verify-full`` adds ``clientcert=verify-full`` (upgrading ``verify-ca``) and keeps the password check;
    ``cert`` replaces the method with ``cert`` (plus ``map=NAME``), dropping any ``clientcert`` option since
    ``cert`` implies it; ``none`` changes nothing. Replication rules are treated alike; ``host``,
    ``hostnossl``, ``local`` and non-password rules are left alone (run ``require_tls`` first). ``map_name``
    is only valid with ``cert``: PostgreSQL refuses ``map`` with password methods.
    """
    if mode not in ("none", "verify-full", "cert"):
        raise ValueError(f"unknown client authentication mode {mode!r}")
    if map_name is not None and mode != "cert":
        raise ValueError("map_name only applies to mode 'cert'")
    if mode == "none":
        return HbaEdit.unchanged(hba)
    out = _Rebuild(hba)
    changed = False
    for idx, ln in enumerate(hba.lines):
        if not (
            isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOSTSSL and ln.method in PASSWORD_METHODS
        ):
            out.keep(ln, idx)
            continue
        toks = tokenize(ln.raw, ln.lineno, hba.path, hba.dialect).tokens
        method_idx = next(i for i, t in enumerate(toks) if t.field == (5 if ln.netmask is not None else 4))
        cert_idx = [i for i, t in enumerate(toks) if i > method_idx and t.value.startswith("clientcert=")]
        edits: dict[int, str | None] = {}
        append: list[str] = []
        if mode == "verify-full":
            if ln.option("clientcert") == "verify-full":
                out.keep(ln, idx)
                continue
            if cert_idx:
                edits = {i: None for i in cert_idx[:-1]}
                edits[cert_idx[-1]] = "clientcert=verify-full"
            else:
                append.append("clientcert=verify-full")
        else:
            edits = {method_idx: "cert", **{i: None for i in cert_idx}}
            if map_name is not None:
                append.append(f"map={quote_token(map_name)}")
        text = edit_line(ln.raw, edits, hba.dialect, append) + ln.eol
        out.add(text)
        changed = True
    return out.result() if changed else HbaEdit.unchanged(hba)
