"""postgresql.conf: a line-preserving model, value edits, and include-aware loading.

Lines are read with the tokens of PostgreSQL's ``guc-file.l`` (:mod:`pgbatten.pgconf.conf_lexer`). Anything
else on a line is an error PostgreSQL would refuse to start with, so we refuse it too rather than guess.
``search_path = a.b`` and ``x = /path`` are such errors: those values must be quoted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pgbatten.errors import ParseError
from pgbatten.pgconf.conf_lexer import NAME, VALUE_KINDS, format_value, lex, quote_value, unquote_value
from pgbatten.pgconf.guc_values import same_setting_value, setting_key
from pgbatten.pgconf.lines import dominant_eol, fit_gap, read_text, split_lines, visual_col

__all__ = [
    "ADDED_BY_COMMENT",
    "ConfFile",
    "ConfLine",
    "Include",
    "IncludeKind",
    "Setting",
    "SettingSource",
    "effective_settings",
    "format_value",
    "includes",
    "load_conf",
    "load_conf_tree",
    "overridden_settings",
    "parse_conf",
    "quote_value",
    "render",
    "same_setting_value",
    "set_values",
    "unquote_value",
]

ADDED_BY_COMMENT = "# Added by pgbatten"
MAX_INCLUDE_DEPTH = 10  # PostgreSQL's CONF_FILE_MAX_DEPTH

_COMMENTED = re.compile(r"[ \t]*#[ \t]*")


class IncludeKind(StrEnum):
    """The three include directives of postgresql.conf."""

    INCLUDE = "include"
    INCLUDE_IF_EXISTS = "include_if_exists"
    INCLUDE_DIR = "include_dir"


_INCLUDE_NAMES = frozenset(k.value for k in IncludeKind)


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``name = value`` line, active or a commented-out default such as ``#ssl = off``.

    ``name`` is ASCII-lower-cased because PostgreSQL compares GUC names case-insensitively; ``raw_name`` is
    the spelling in the file. ``value`` is the value PostgreSQL sees (quotes and escapes removed);
    ``raw_value`` is the token as written. ``value_start``/``value_end`` locate ``raw_value`` in the line.
    """

    index: int
    name: str
    raw_name: str
    raw_value: str
    value: str
    comment: str | None
    active: bool
    value_start: int
    value_end: int

    @property
    def lineno(self) -> int:
        """1-based line number."""
        return self.index + 1


@dataclass(frozen=True, slots=True)
class Include:
    """An active include directive; ``path`` is the unquoted file or directory name as written."""

    kind: IncludeKind
    path: str
    raw_value: str
    index: int

    @property
    def lineno(self) -> int:
        """1-based line number."""
        return self.index + 1


@dataclass(frozen=True, slots=True)
class ConfLine:
    """One physical line: its text without the line ending, the ending itself, and what it means."""

    text: str
    eol: str
    item: Setting | Include | None = None


@dataclass(frozen=True, slots=True)
class ConfFile:
    """A parsed postgresql.conf-style file that keeps every line exactly as read."""

    lines: tuple[ConfLine, ...]
    path: Path | None = None

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Active settings in file order (duplicates included: the last one wins in PostgreSQL)."""
        return tuple(ln.item for ln in self.lines if isinstance(ln.item, Setting) and ln.item.active)

    @property
    def commented_settings(self) -> tuple[Setting, ...]:
        """Commented-out ``#name = value`` lines, the form initdb uses for defaults."""
        return tuple(ln.item for ln in self.lines if isinstance(ln.item, Setting) and not ln.item.active)

    def get(self, name: str) -> Setting | None:
        """The active setting for ``name`` that wins within this file, if any."""
        key = _lower(name)
        found = None
        for setting in self.settings:
            if setting.name == key:
                found = setting
        return found


@dataclass(frozen=True, slots=True)
class SettingSource:
    """Where the effective value of a setting comes from, and which earlier definitions it overrides."""

    name: str
    value: str
    raw_value: str
    path: Path | None
    lineno: int
    overrides: tuple[tuple[Path | None, int], ...] = ()


def _lower(name: str) -> str:
    return setting_key(name)


def _parse_setting(
    text: str, offset: int, index: int, *, active: bool, path: Path | None
) -> Setting | Include | None:
    """Parse ``text[offset:]``; for inactive (commented) lines return None instead of raising."""

    def fail(reason: str) -> None:
        if active:
            raise ParseError(path, index + 1, text, reason)

    toks = lex(text[offset:])
    if not toks or toks[0].kind == "COMMENT":
        return None
    name_tok = toks[0]
    if name_tok.kind not in ("ID", "QID"):
        if name_tok.kind == "ERROR" and name_tok.text == "'":
            fail("unterminated quoted string")
        else:
            fail(f"expected a parameter name, found {name_tok.text!r}")
        return None
    rest = toks[1:]
    has_equals = bool(rest) and rest[0].kind == "EQUALS"
    if has_equals:
        rest = rest[1:]
    if not active and not has_equals:
        # Prose comments like "# Add settings here" would otherwise look like "add settings".
        return None
    if not rest or rest[0].kind == "COMMENT":
        fail(f"missing value for parameter {name_tok.text!r}")
        return None
    value_tok = rest[0]
    if value_tok.kind not in VALUE_KINDS:
        if value_tok.kind == "ERROR" and value_tok.text == "'":
            fail("unterminated quoted string")
        elif value_tok.kind == "QID":
            fail(f"value {value_tok.text!r} must be quoted")
        else:
            fail(f"invalid value starting at {value_tok.text!r} (quote it)")
        return None
    after = rest[1:]
    if after and after[0].kind != "COMMENT":
        if after[0].kind == "ERROR" and after[0].text == "'":
            fail("unterminated quoted string")
        else:
            fail(f"unexpected text after the value: {text[offset + after[0].start :].strip()!r}")
        return None
    comment = after[0].text if after else None
    name = _lower(name_tok.text)
    value = unquote_value(value_tok.text) if value_tok.kind == "STRING" else value_tok.text
    if name in _INCLUDE_NAMES:
        if not active:
            return None
        if not value:
            fail(f"empty file name for {name}")
        return Include(IncludeKind(name), value, value_tok.text, index)
    return Setting(
        index=index,
        name=name,
        raw_name=name_tok.text,
        raw_value=value_tok.text,
        value=value,
        comment=comment,
        active=active,
        value_start=offset + value_tok.start,
        value_end=offset + value_tok.end,
    )


def _parse_line(text: str, index: int, path: Path | None) -> Setting | Include | None:
    commented = _COMMENTED.match(text)
    if commented is not None:
        return _parse_setting(text, commented.end(), index, active=False, path=path)
    return _parse_setting(text, 0, index, active=True, path=path)


def parse_conf(text: str, path: Path | None = None) -> ConfFile:
    """Parse postgresql.conf syntax; raises ``ParseError`` on any line PostgreSQL would reject."""
    lines = tuple(
        ConfLine(content, eol, _parse_line(content, i, path))
        for i, (content, eol) in enumerate(split_lines(text))
    )
    return ConfFile(lines, path)


def render(conf: ConfFile) -> str:
    """The file's text; byte-for-byte what was parsed unless something was edited."""
    return "".join(ln.text + ln.eol for ln in conf.lines)


def includes(conf: ConfFile) -> list[Include]:
    """Active include directives in file order."""
    return [ln.item for ln in conf.lines if isinstance(ln.item, Include)]


def overridden_settings(conf: ConfFile) -> list[Setting]:
    """Active settings that a later line of the same file overrides (PostgreSQL uses the last one)."""
    last: dict[str, int] = {s.name: s.index for s in conf.settings}
    return [s for s in conf.settings if last[s.name] != s.index]


def _replace_value(text: str, setting: Setting, new_raw: str, *, strip_prefix: int = 0) -> str:
    """Swap the value token, keeping indentation and the trailing comment's column when possible."""
    # Uncommenting drops the "#" and the blanks after it but keeps the line's indentation.
    head = _leading_ws(text) if strip_prefix else ""
    before = head + text[strip_prefix : setting.value_start] + new_raw
    tail = text[setting.value_end :]
    if setting.comment is None:
        return before + tail
    gap_len = len(tail) - len(tail.lstrip(" \t\r"))
    gap, comment = tail[:gap_len], tail[gap_len:]
    orig_gap_col = visual_col(text[: setting.value_end])
    target = visual_col(text[: setting.value_end] + gap)
    return before + fit_gap(before, gap, target, orig_gap_col) + comment


def _leading_ws(text: str) -> str:
    return text[: len(text) - len(text.lstrip(" \t"))]


def set_values(conf: ConfFile, values: Mapping[str, str | int | float | bool]) -> tuple[ConfFile, bool]:
    """Set each ``name`` to ``value``, touching as few lines as possible; returns ``(new, changed)``.

    For each name: the last active line (the one PostgreSQL obeys) gets its value replaced, other lines
    untouched (``overridden_settings`` lists the earlier duplicates); otherwise the last commented default
    ``#name = ...`` is uncommented in place with the new value, even if it shows the same value, because the
    commented value is only documentation; otherwise ``name = value`` is appended under ``ADDED_BY_COMMENT``.
    A value PostgreSQL reads as the current one (``same_setting_value``: ``on`` is ``TRUE``) changes nothing.
    """
    lines = list(conf.lines)
    to_append: list[tuple[str, str]] = []
    changed = False
    for raw_name, raw_new in values.items():
        if not NAME.fullmatch(raw_name):
            raise ValueError(f"{raw_name!r} is not a valid parameter name")
        name = _lower(raw_name)
        if name in _INCLUDE_NAMES:
            raise ValueError(f"{raw_name!r} is a directive, not a setting")
        new_raw = format_value(raw_new)
        new_value = unquote_value(new_raw)
        active = [ln.item for ln in lines if isinstance(ln.item, Setting) and ln.item.active]
        target = next((s for s in reversed(active) if s.name == name), None)
        if target is not None:
            if same_setting_value(name, target.value, new_value):
                continue
            old = lines[target.index]
            text = _replace_value(old.text, target, new_raw)
        else:
            commented = [ln.item for ln in lines if isinstance(ln.item, Setting) and not ln.item.active]
            target = next((s for s in reversed(commented) if s.name == name), None)
            if target is None:
                to_append.append((name, new_raw))
                continue
            old = lines[target.index]
            prefix = _COMMENTED.match(old.text)
            assert prefix is not None
            text = _replace_value(old.text, target, new_raw, strip_prefix=prefix.end())
        lines[target.index] = ConfLine(text, old.eol, _parse_line(text, target.index, conf.path))
        changed = True
    if to_append:
        lines = _append(lines, to_append, conf.path)
        changed = True
    if not changed:
        return conf, False
    return replace(conf, lines=tuple(lines)), True


def _append(lines: list[ConfLine], entries: list[tuple[str, str]], path: Path | None) -> list[ConfLine]:
    eol = dominant_eol([ln.eol for ln in lines])
    if lines and not lines[-1].eol:
        lines[-1] = replace(lines[-1], eol=eol)
    if not _ends_in_pgbatten_block(lines):
        if lines and lines[-1].text.strip():
            lines.append(ConfLine("", eol))
        lines.append(ConfLine(ADDED_BY_COMMENT, eol))
    for name, raw in entries:
        text = f"{name} = {raw}"
        lines.append(ConfLine(text, eol, _parse_line(text, len(lines), path)))
    return lines


def _ends_in_pgbatten_block(lines: list[ConfLine]) -> bool:
    for ln in reversed(lines):
        if ln.text.strip() == ADDED_BY_COMMENT:
            return True
        if not (isinstance(ln.item, Setting) and ln.item.active) and ln.text.strip():
            return False
    return False


# --- loading (I/O) -------------------------------------------------------------------------------


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _include_target(conf_path: Path, raw: str) -> Path:
    # PostgreSQL resolves relative include paths against the directory of the including file.
    target = Path(raw)
    return _norm(target if target.is_absolute() else conf_path.parent / target)


def _dir_sort_key(name: str) -> bytes:
    # include_dir reads files in strcmp order, i.e. by bytes, independent of the locale.
    return name.encode("utf-8", errors="surrogateescape")


def _is_included_conf(name: str) -> bool:
    return name.endswith(".conf") and not name.startswith(".")


def load_conf(path: Path) -> ConfFile:
    """Read and parse one file (``FileProblem`` if unreadable, ``ParseError`` if malformed)."""
    path = _norm(Path(path))
    return parse_conf(read_text(path), path)


def load_conf_tree(path: Path) -> list[ConfFile]:
    """Read ``path`` and every file it includes, each file once, in the order PostgreSQL first reads them.

    Relative includes are resolved against the including file's directory; ``include_dir`` takes the
    ``*.conf`` files (dotfiles skipped) in byte order; ``include_if_exists`` tolerates a missing file while a
    missing ``include`` or ``include_dir`` is a ``ParseError`` naming the include line, as is an include loop
    or nesting deeper than PostgreSQL allows. Pass the result (plus postgresql.auto.conf, last) to
    ``effective_settings``.
    """
    out: list[ConfFile] = []
    loaded: set[Path] = set()

    def visit(conf: ConfFile, stack: tuple[Path, ...]) -> None:
        assert conf.path is not None
        if conf.path not in loaded:
            loaded.add(conf.path)
            out.append(conf)
        for inc in includes(conf):
            line = conf.lines[inc.index].text

            def fail(reason: str, inc: Include = inc, line: str = line) -> ParseError:
                return ParseError(conf.path, inc.lineno, line, reason)

            target = _include_target(conf.path, inc.path)
            if inc.kind is IncludeKind.INCLUDE_DIR:
                if not target.is_dir():
                    raise fail(f"include_dir {target} is not a directory")
                try:
                    names = sorted(
                        (p.name for p in target.iterdir() if _is_included_conf(p.name)), key=_dir_sort_key
                    )
                except OSError as exc:
                    raise fail(f"cannot list {target}: {exc.strerror}") from exc
                targets = [target / n for n in names if (target / n).is_file()]
            elif not target.exists():
                if inc.kind is IncludeKind.INCLUDE_IF_EXISTS:
                    continue
                raise fail(f"included file {target} does not exist")
            else:
                targets = [target]
            for child_path in targets:
                real = child_path.resolve()
                if real in stack:
                    raise fail(f"include loop: {child_path} is already being read")
                if len(stack) >= MAX_INCLUDE_DEPTH:
                    raise fail(f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
                visit(parse_conf(read_text(child_path), child_path), (*stack, real))

    root = load_conf(path)
    assert root.path is not None
    visit(root, (root.path.resolve(),))
    return out


def _targets_in(conf: ConfFile, inc: Include, by_path: Mapping[Path, ConfFile]) -> list[ConfFile]:
    if conf.path is None:
        return []
    target = _include_target(conf.path, inc.path)
    if inc.kind is not IncludeKind.INCLUDE_DIR:
        return [by_path[target]] if target in by_path else []
    names = sorted(
        (p.name for p in by_path if p.parent == target and _is_included_conf(p.name)), key=_dir_sort_key
    )
    return [by_path[target / n] for n in names]


def effective_settings(files: Iterable[ConfFile]) -> dict[str, SettingSource]:
    """For each setting name, the definition PostgreSQL ends up using, and the ones it overrides.

    Files are processed in the given order, and each include is followed at the point where it appears
    (resolved among the given files, as ``load_conf_tree`` returns them); a file already reached through an
    include is not processed again as a top-level file. Pass postgresql.auto.conf last, as PostgreSQL reads
    it after postgresql.conf and everything that includes.
    """
    files = list(files)
    by_path = {f.path: f for f in files if f.path is not None}
    result: dict[str, SettingSource] = {}
    walked: set[int] = set()

    def walk(conf: ConfFile, stack: tuple[int, ...]) -> None:
        walked.add(id(conf))
        for ln in conf.lines:
            item = ln.item
            if isinstance(item, Setting) and item.active:
                previous = result.get(item.name)
                overrides = (
                    () if previous is None else (*previous.overrides, (previous.path, previous.lineno))
                )
                result[item.name] = SettingSource(
                    item.name, item.value, item.raw_value, conf.path, item.lineno, overrides
                )
            elif isinstance(item, Include) and len(stack) < MAX_INCLUDE_DEPTH:
                for child in _targets_in(conf, item, by_path):
                    if id(child) not in stack:
                        walk(child, (*stack, id(child)))

    for conf in files:
        if id(conf) not in walked:
            walk(conf, (id(conf),))
    return result
