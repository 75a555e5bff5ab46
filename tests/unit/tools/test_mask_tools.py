"""The mask tools: inspect (text, --png, --all), compare (IoU table and figure), convert (both ways)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ahamask.masking.checkpoint import load_mask, save_mask
from ahamask.masking.mask import binarize, head_weights
from ahamask.masking.released import RELEASED_MASKS
from ahamask.tools import compare_masks, convert_mask, inspect_mask
from tests.conftest import REPO, reference_dir, run_repo_script


@pytest.fixture(scope="module")
def release() -> Path:
    return reference_dir("legacy_checkpoints")


def _assert_picture(path: Path, min_side: int = 200) -> None:
    """A real PNG of plausible size whose pixels are not all one colour."""
    import matplotlib.image

    assert path.stat().st_size > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_side
    assert float(pixels[..., :3].std()) > 0.05


def _one_error_line(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_inspect_png_of_a_released_mask(release, tmp_path, capsys):
    out = tmp_path / "gender.png"
    assert inspect_mask.main([str(release / "gender_librispeech" / "checkpoint.pth"), "--png", str(out)]) == 0
    text = capsys.readouterr().out
    assert "40 layers x 40 heads" in text and "SALMONN-13B, recognised by its length" in text
    assert "78.7% of attention heads active (1259/1600)" in text
    assert len(re.findall(r"^layer +\d+:", text, re.M)) == 40
    _assert_picture(out)


def test_inspect_reads_the_geometry_of_a_tiny_mask(tmp_path, capsys):
    logits = torch.tensor([1.0, -1, 1, 1, 9, -1, -1, -1, 1, 9])  # layer 0 keeps 3 heads, layer 1 keeps 1
    save_mask(logits, tmp_path / "tiny.safetensors", n_layers=2, n_heads=4)
    assert inspect_mask.main([str(tmp_path / "tiny.safetensors"), "--png", str(tmp_path / "t.png")]) == 0
    text = capsys.readouterr().out
    assert "2 layers x 4 heads" in text and "safetensors metadata" in text and "(4/8)" in text
    assert "layer   0:   3/4  #.##" in text and "layer   1:   1/4  ...#" in text
    _assert_picture(tmp_path / "t.png", min_side=150)
    # A bare .pth states nothing; a mask_config.json beside it does.
    folder = tmp_path / "run"
    save_mask(logits, folder / "checkpoint_0.pth")
    assert inspect_mask.main([str(folder / "checkpoint_0.pth")]) == 1
    _one_error_line(capsys, "checkpoint_0.pth", "10 logits fit no known geometry", "--n-layers")
    (folder / "mask_config.json").write_text(json.dumps({"n_layers": 2, "n_heads": 4}))
    assert inspect_mask.main([str(folder / "checkpoint_0.pth")]) == 0
    assert "geometry from mask_config.json" in capsys.readouterr().out
    # Flags are a fallback only: they cannot contradict what the file states.
    assert inspect_mask.main([str(tmp_path / "tiny.safetensors"), "--n-layers", "5", "--n-heads", "1"]) == 1
    _one_error_line(capsys, "states 2 layers x 4 heads")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    files = {
        "garbage.pth": os.urandom(512),
        "text.safetensors": b"not a safetensors file",
        "empty.pth": b"",
        "pickle2.pth": pickle.dumps({"model": {"tensor": Payload()}}, protocol=2),
        "pickle4.pth": pickle.dumps({"model": {"tensor": Payload()}}, protocol=4),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pth")
    return {p.name: p for p in tmp_path.iterdir()}


def test_inspect_bad_files_give_one_line_naming_the_file(tmp_path, capsys):
    bad = _bad_files(tmp_path)
    assert len(bad) == 6
    for name, path in bad.items():
        assert inspect_mask.main([str(path)]) == 1, name
        _one_error_line(capsys, f"{name}:", "inspect_mask: error:")


def test_inspect_all_table_matches_the_reference_fractions(release, capsys):
    assert inspect_mask.main(["--all", str(release)]) == 0
    rows = {
        line.split()[0]: line
        for line in capsys.readouterr().out.splitlines()
        if line.split() and line.split()[0] in RELEASED_MASKS
    }
    assert sorted(rows) == sorted(RELEASED_MASKS)
    # ../shared/reference/README.md: "aac 89.1%, asr_gender_json 70.2%, ..." (names without the dataset)
    text = (release.parent / "README.md").read_text()
    quoted = dict(re.findall(r"(\w+) (\d+\.\d)%", text.split("computed here")[1]))
    assert len(quoted) == 10
    for name, row in rows.items():
        short = name.rsplit("_", 1)[0]
        assert f" {quoted[short]}% " in row, (name, row)
        kept = int(head_weights(binarize(load_mask(release / name / "checkpoint.pth").values), 40, 40).sum())
        assert f" {kept}/1600 " in row
        assert len(re.findall(r"\s([0-9#]{40})$", row)) == 1  # one density character per layer


def test_inspect_all_of_a_folder_without_masks(tmp_path, capsys):
    assert inspect_mask.main(["--all", str(tmp_path)]) == 1
    _one_error_line(capsys, "no <name>/checkpoint.pth")


def test_compare_iou_table_and_figure(release, tmp_path, capsys):
    masks = [str(release / name / "checkpoint.pth") for name in sorted(RELEASED_MASKS)]
    assert compare_masks.main(masks) == 0
    text = capsys.readouterr().out
    kept = torch.stack([head_weights(binarize(load_mask(m).values), 40, 40).bool() for m in masks])
    names = sorted(RELEASED_MASKS)
    rows = {line.split()[1]: line.split()[3:] for line in text.splitlines() if line[:2].strip().isdigit()}
    for i, a in enumerate(names):
        for j in range(len(names)):
            union = int((kept[i] | kept[j]).sum())
            assert float(rows[a][j]) == pytest.approx(int((kept[i] & kept[j]).sum()) / union, abs=5e-4)
    assert rows["asr_librispeech"][names.index("asr_librispeech")] == "1.000"
    assert f"heads kept by all 10 masks: {int(kept.all(dim=0).sum())} of 1600" in text
    # The figure (IoU matrix + per-layer density) of three of them: drawing all ten takes a second.
    out = tmp_path / "iou.png"
    assert compare_masks.main([*masks[:3], "--png", str(out), "--dpi", "60"]) == 0
    assert "figure written to" in capsys.readouterr().out
    _assert_picture(out, min_side=250)


def test_iou_of_hand_made_sets():
    kept = torch.zeros(3, 1, 4, dtype=torch.bool)
    kept[0, 0, :2] = True  # {0, 1}
    kept[1, 0, 1:3] = True  # {1, 2}
    iou = compare_masks.iou_matrix(kept)
    assert iou[0, 1].item() == pytest.approx(1 / 3)
    assert iou[0, 2].item() == 0.0 and iou[2, 2].item() == 1.0  # an empty set is identical to itself


def test_compare_refuses_masks_of_two_geometries(release, tmp_path, capsys):
    save_mask(torch.zeros(10), tmp_path / "tiny.safetensors", n_layers=2, n_heads=4)
    code = compare_masks.main(
        [str(release / "asr_librispeech" / "checkpoint.pth"), str(tmp_path / "tiny.safetensors")]
    )
    assert code == 1
    _one_error_line(capsys, "only masks of one geometry")


def test_convert_round_trip_of_every_released_mask(release, tmp_path, capsys):
    for name in RELEASED_MASKS:
        source = release / name / "checkpoint.pth"
        folder, back = tmp_path / name, tmp_path / f"{name}.pth"
        assert convert_mask.main([str(source), str(folder)]) == 0
        assert convert_mask.main([str(folder), str(back)]) == 0
        original = load_mask(source).values
        assert torch.equal(load_mask(folder).values, original), name
        assert torch.equal(load_mask(back).values, original), name
        assert set(torch.load(back, weights_only=True)) == {"model"}
        text = (folder / "mask_config.json").read_text()
        config = json.loads(text)
        assert list(config) == sorted(config)
        assert (config["n_layers"], config["n_heads"], config["has_ffn"], config["task"]) == (
            40,
            40,
            True,
            name,
        )
        assert config["base_model"] == "tsinghua-ee/SALMONN" and config["ahamask_version"]
        assert config["source_sha256"] == RELEASED_MASKS[name].sha256
    assert not list(tmp_path.glob(".*.tmp"))


def test_convert_never_overwrites(release, tmp_path, capsys):
    source = str(release / "gender_librispeech" / "checkpoint.pth")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken.pth").write_bytes(b"keep me")
    assert convert_mask.main([source, str(tmp_path / "taken")]) == 1
    _one_error_line(capsys, "taken: already exists")
    assert convert_mask.main([source, str(tmp_path / "taken.pth")]) == 1
    _one_error_line(capsys, "never overwrites")
    assert (tmp_path / "taken.pth").read_bytes() == b"keep me" and not any((tmp_path / "taken").iterdir())


def test_tools_import_no_torch_before_parsing():
    code = (
        "import sys\n"
        "from ahamask.tools import compare_masks, convert_mask, import_masks, inspect_mask\n"
        "for m in (compare_masks, convert_mask, import_masks, inspect_mask): m.build_parser()\n"
        "print(sorted(k for k in ('torch', 'matplotlib', 'safetensors') if k in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_scripts_are_thin_callers_with_help():
    for script in ("inspect_mask", "compare_masks", "convert_mask", "import_released_masks"):
        text = (REPO / "scripts" / f"{script}.py").read_text()
        assert "from ahamask.tools." in text and "def " not in text, script
    result = run_repo_script(["scripts/inspect_mask.py", "--help"], timeout=60)
    assert result.returncode == 0 and "--png" in result.stdout and "--all" in result.stdout
