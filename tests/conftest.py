"""Shared fixtures: a tiny SALMONN bundle built once per session, loaded models, reference data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("AHAMASK_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / ".." / "shared" / "reference"


def reference_dir(*parts: str) -> Path:
    """A folder of ../shared/reference, or skip the test with the reason."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"reference data not found at {path} (../shared/reference is only present beside the repo)"
        )
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from ahamask.models.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def tiny_decode_cfg(tiny_bundle):
    from ahamask.config import load_decode_config

    return load_decode_config(tiny_bundle / "decode_config.yaml")


@pytest.fixture()
def tiny_model(tiny_decode_cfg):
    """A fresh tiny SALMONN in eval mode (function scope: tests may change it)."""
    from ahamask.models.salmonn import SALMONN

    torch.manual_seed(0)
    return SALMONN.from_config(tiny_decode_cfg.model).eval()


@pytest.fixture(scope="session")
def shared_tiny_model(tiny_decode_cfg):
    """A tiny SALMONN shared by read-only tests (do not modify it)."""
    from ahamask.models.salmonn import SALMONN

    torch.manual_seed(0)
    return SALMONN.from_config(tiny_decode_cfg.model).eval()


def run_repo_script(args: list[str], timeout: int = 300):
    """Run ``python ARGS`` from the repository root with one thread and the package importable."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
