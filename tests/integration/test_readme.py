"""The README's Quickstart runs as written: its tiny-model shell and Python blocks, in a temporary folder.

The blocks are taken from the README itself, so an edit that breaks a pasted command breaks this test. They
run from a folder outside the repository, as a newcomer would paste them, with the console commands of
pyproject.toml on the PATH (shims calling this interpreter, so the test does not depend on when
``pip install -e .`` last ran).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
TINY_SECTION = "### On a tiny model"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quickstart_section(heading: str) -> str:
    """The text of one ``###`` subsection of the README's ``## Quickstart``."""
    text = README.read_text(encoding="utf-8")
    quickstart = text.index("\n## Quickstart\n")
    start = text.index(f"\n{heading}", quickstart)
    ends = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i != -1]
    return text[start : min(ends)]


def code_blocks(section: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block in ``section``."""
    return re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.S | re.M)


def _write_command_shims(bin_dir: Path) -> None:
    """One executable per ``[project.scripts]`` entry, as pip would install it, run by this interpreter."""
    bin_dir.mkdir()
    for name, target in SCRIPTS.items():
        module, _, func = target.partition(":")
        shim = bin_dir / name
        shim.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        shim.chmod(0o755)


def test_quickstart_uses_only_declared_commands_and_has_its_blocks():
    tiny = code_blocks(quickstart_section(TINY_SECTION))
    assert [lang for lang, _ in tiny] == ["bash", "python"]
    real = code_blocks(quickstart_section("### On the real SALMONN-13B"))
    used = set()
    for _, code in tiny + real:
        used |= set(re.findall(r"(?m)^\s*(ahamask-[\w-]+)", code))
    assert used and used <= set(SCRIPTS), used - set(SCRIPTS)
    # The five steps and the picture, on the tiny model.
    assert {
        "ahamask-tiny-bundle",
        "ahamask-train",
        "ahamask-evaluate",
        "ahamask-score",
        "ahamask-sweep",
    } <= used
    assert "--png" in tiny[0][1]


@pytest.mark.slow
def test_quickstart_tiny_steps_run_from_another_folder(tmp_path):
    (_, shell), (_, python) = code_blocks(quickstart_section(TINY_SECTION))
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    _write_command_shims(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{argv[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        # Normal runs carry no third-party deprecation noise.
        assert "Warning:" not in proc.stderr, proc.stderr
        return proc

    steps = run(["bash", "-e", "-o", "pipefail", "-c", shell])
    run_dir = work / "tiny" / "exp" / "quickstart"
    for name in (
        "checkpoint_0.pth",
        "checkpoint_1.pth",
        "steps.jsonl",
        "log.json",
        "config.yaml",
        "mask.safetensors",
        "mask_config.json",
        "README.md",
        "curves.png",
    ):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    predictions = json.loads((work / "decode.json").read_text())["prediction"]
    assert len(predictions) == 4 and {"id", "ground_truth", "output"} <= set(predictions[0])
    assert "accuracy %" in steps.stdout and "mean over 2 instructions" in steps.stdout
    picture = (work / "mask.png").read_bytes()
    assert picture.startswith(PNG_MAGIC) and len(picture) > 2000
    # Nothing was written into the repository: every path resolved under the working folder.
    assert not (REPO / "tiny").exists() and not (REPO / "decode.json").exists()

    answers = ast.literal_eval(run([sys.executable, "-c", python]).stdout.strip().splitlines()[-1])
    assert isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) for a in answers)
