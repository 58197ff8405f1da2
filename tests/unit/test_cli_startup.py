"""`pgbatten --help` starts fast because nothing heavy is imported until a command needs it (the figure
itself is printed by the README's start-up benchmark, not asserted here)."""

from __future__ import annotations

import subprocess
import sys

# Each costs 10-60 ms to import; a command that needs one imports it inside the command.
HEAVY = ("rich", "cryptography", "psycopg", "ssl", "sqlite3", "pgbatten.probe", "pgbatten.pki")


def test_importing_the_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, pgbatten.cli\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from pgbatten.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for command in ("ca", "cert", "check", "crl", "secure", "status", "renew"):
        assert f"  {command} " in result.stdout


def test_the_lazy_command_table_matches_the_commands() -> None:
    import importlib

    import click

    from pgbatten.cli import main
    from pgbatten.cli.app import PgBattenGroup

    for modules, _ in PgBattenGroup.lazy.values():
        for module in modules:
            importlib.import_module(module)
    # Every command is in the table (one missing would never be loaded), with its own help line.
    assert set(main.commands) == set(PgBattenGroup.lazy)
    for name, (_, text) in PgBattenGroup.lazy.items():
        for limit in (45, 70):
            expected = main.commands[name].get_short_help_str(limit)
            assert click.Command(name, help=text).get_short_help_str(limit) == expected, name
