"""The console commands of pyproject.toml: every target imports, is callable, and answers --help without torch."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# Root scripts and scripts/ callers that share a parser with a console command.
ROOT_SCRIPTS = [
    "train.py",
    "evaluate.py",
    "cli_inference.py",
    "scripts/score.py",
    "scripts/instruction_sweep.py",
    "scripts/make_tiny_bundle.py",
    "scripts/inspect_mask.py",
]

# Runs every command's --help in one fresh interpreter and reports, per command, the exit code, whether
# the help text came out, and whether torch had been imported by then.
PROBE = r"""
import contextlib, importlib, io, json, runpy, sys
results = {}
for name, target in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    code = None
    with contextlib.redirect_stdout(out):
        sys.argv = [name, "--help"]
        try:
            if target.endswith(".py"):
                runpy.run_path(target, run_name="__main__")
            else:
                module, _, func = target.partition(":")
                getattr(importlib.import_module(module), func)()
        except SystemExit as exc:
            code = exc.code
        except ImportError as exc:
            code = f"{type(exc).__name__}: {exc}"
    results[name] = {"code": code, "usage": out.getvalue().startswith("usage:"), "torch": "torch" in sys.modules}
print(json.dumps(results))
"""


def test_the_expected_commands_are_declared():
    assert {
        "ahamask-train",
        "ahamask-evaluate",
        "ahamask-chat",
        "ahamask-score",
        "ahamask-sweep",
        "ahamask-tiny-bundle",
        "ahamask-inspect",
        "ahamask-compare",
        "ahamask-convert",
        "ahamask-import-masks",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_target_imports_and_is_callable(name):
    module, _, func = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), func)), SCRIPTS[name]


def test_help_of_every_command_runs_without_importing_torch():
    targets = {**SCRIPTS, **{path: path for path in ROOT_SCRIPTS}}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(targets)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(targets)
    for name, result in results.items():
        assert result == {"code": 0, "usage": True, "torch": False}, (name, result)
