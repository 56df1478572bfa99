"""How much a `kiban` process imports at start (the image's entrypoint): a command imports the
services it needs and no other — `kiban token`, `kiban --help` and `kiban audit verify intake`
never import pandas (the anonymizer's) nor the other services' apps. Each case runs in a fresh
interpreter, as the container's process does; nothing here measures time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiban_cli import main as cli
from kiban_cli.services import SERVICE_NAMES, SERVICES

PROBE = """
import contextlib, io, json, sys
from kiban_cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
roots = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"code": code, "roots": roots, "out": out.getvalue()}))
"""


def _imports(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=tmp_path,
        env={"KIBAN_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    return int(report["code"] or 0), set(report["roots"]), str(report["out"])


def _services(roots: set[str]) -> set[str]:
    return {r.removeprefix("kiban_") for r in roots if r.removeprefix("kiban_") in SERVICE_NAMES}


def test_kiban_token_imports_no_service_and_no_pandas(tmp_path: Path) -> None:
    code, roots, out = _imports(tmp_path, "token", "--sub", "researcher:r1", "--scope", "x")
    assert code == 0
    assert out.count(".") == 2
    assert _services(roots) == set()
    assert "pandas" not in roots


def test_kiban_help_lists_every_command_without_importing_a_service(tmp_path: Path) -> None:
    code, roots, out = _imports(tmp_path, "--help")
    assert code == 0
    assert _services(roots) == set()
    assert "pandas" not in roots
    for command in ("serve", "token", "audit", "keys", "link", "anonymize", "release"):
        assert f"\n    {command}" in out


def test_kiban_audit_verify_imports_only_the_service_it_verifies(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/missing.db"
    code, roots, _ = _imports(tmp_path, "audit", "verify", "intake", "--database-url", missing)
    assert code == 2  # no such database: a CommandError, reported, not a traceback
    assert _services(roots) == {"intake"}
    assert "pandas" not in roots


def test_a_service_command_imports_only_its_service(tmp_path: Path) -> None:
    code, roots, out = _imports(tmp_path, "link", "--help")
    assert code == 0
    assert "usage: kiban link" in out
    assert _services(roots) == {"linkage"}


def test_an_unknown_command_still_lists_every_command(tmp_path: Path) -> None:
    code, _, out = _imports(tmp_path, "no-such-command")
    assert code == 2
    assert "invalid choice: 'no-such-command'" in out
    for command in ("serve", "token", "audit", "keys", "link", "anonymize", "release"):
        assert f"'{command}'" in out


def test_the_help_table_of_service_commands_matches_what_the_services_register() -> None:
    """`kiban --help` lists the service commands from a table in main.py; this is the check
    that the table says what the services' `cli` modules register (names and help)."""
    lazy = cli._parser(["--help"]).format_help()
    discovered = cli._parser(["a-command-no-one-has"]).format_help()
    assert lazy == discovered


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_listed_service_is_the_one_its_definition_names(name: str) -> None:
    assert name in SERVICES
    assert SERVICES[name].name == name
    assert SERVICES[name].definition.zone.value in ("core", "information")
    assert "nope" not in SERVICES
    assert list(SERVICES) == list(SERVICE_NAMES)
