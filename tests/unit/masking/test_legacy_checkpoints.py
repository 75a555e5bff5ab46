"""legacy_checkpoints/: the tracked README and SHA256SUMS, the import of the release, and names of masks."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch

from ahamask.masking import names
from ahamask.masking.checkpoint import MaskFileError, load_mask, resolve_mask_path
from ahamask.masking.mask import mask_stats
from ahamask.masking.released import RELEASED_MASKS, released_sums
from ahamask.tools.import_masks import LICENCE_NAME, import_release, main
from tests.conftest import REPO, reference_dir

TRACKED = REPO / "legacy_checkpoints"


@pytest.fixture(scope="module")
def release() -> Path:
    return reference_dir("legacy_checkpoints")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_release(release: Path, dst: Path) -> Path:
    """A writable copy of the release (the reference files and folders are read-only)."""
    for path in release.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(release)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / path.relative_to(release))
    return dst


def _parse_sums(text: str) -> dict[str, str]:
    """``{path: digest}`` of a sha256sum file, paths without a leading legacy_checkpoints/."""
    out = {}
    for line in text.splitlines():
        digest, path = line.split(maxsplit=1)
        out[path.strip().removeprefix("legacy_checkpoints/")] = digest
    return out


def test_tracked_readme_and_sums_exist_and_match_the_reference(release):
    assert (TRACKED / "README.md").is_file()
    tracked = _parse_sums((TRACKED / "SHA256SUMS").read_text())
    reference = _parse_sums((release.parent / "SHA256SUMS.masks").read_text())
    assert len(tracked) == 10
    assert tracked == reference
    assert tracked == {m.relpath: m.sha256 for m in RELEASED_MASKS.values()}
    assert (TRACKED / "SHA256SUMS").read_text() == released_sums()
    for relpath, digest in tracked.items():
        assert _sha(release / relpath) == digest, relpath


def test_the_masks_are_git_ignored_here():
    ignore = (TRACKED / ".gitignore").read_text().splitlines()
    assert "*/checkpoint.pth" in ignore and LICENCE_NAME in ignore
    assert "git-ignored" in (TRACKED / "README.md").read_text()


def test_readme_table_states_the_counts_of_the_files(release):
    rows = re.findall(
        r"^\| `(\w+)` \|.*\| (\d+)/1600 \| (\d+\.\d)% \|$", (TRACKED / "README.md").read_text(), re.M
    )
    assert sorted(name for name, _, _ in rows) == sorted(RELEASED_MASKS)
    for name, active, fraction in rows:
        stats = mask_stats(load_mask(release / name / "checkpoint.pth").values, 40, 40)
        assert stats.active_heads == int(active), name
        assert f"{stats.head_fraction:.1%}" == f"{fraction}%", name


def test_import_copies_the_ten_and_their_licence(release, tmp_path, capsys):
    dest = tmp_path / "legacy_checkpoints"
    assert main([str(release), "--dest", str(dest)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 10
    assert lines[-1].startswith("10 of 10 released masks")
    for mask in RELEASED_MASKS.values():
        assert _sha(dest / mask.relpath) == mask.sha256
    assert (dest / LICENCE_NAME).read_bytes() == (release.parent / "LICENSE-AHAMask-MIT.txt").read_bytes()
    assert not list(dest.rglob(".*.tmp"))
    again = import_release(release, dest)
    assert len(again.present) == 10 and not again.copied and again.exit_code == 0


def test_an_altered_copy_is_refused(release, tmp_path, capsys):
    src = _copy_release(release, tmp_path / "src")
    victim = src / "gender_librispeech" / "checkpoint.pth"
    data = bytearray(victim.read_bytes())
    data[3000] ^= 0x01  # one bit inside the tensor data: the file still loads, but it is not the release
    victim.write_bytes(bytes(data))
    assert load_mask(victim).values.shape == (1640,)
    dest = tmp_path / "dest"
    assert main([str(src), "--dest", str(dest)]) == 1
    out = capsys.readouterr().out.splitlines()
    altered = [line for line in out if line.startswith("altered")]
    assert len(altered) == 1 and "gender_librispeech/checkpoint.pth" in altered[0]
    assert not (dest / "gender_librispeech").exists()
    assert sum(line.startswith("ok ") for line in out) == 9
    # A verified copy already in DEST is not replaced by the altered source either.
    (dest / "gender_librispeech").mkdir()
    shutil.copyfile(
        release / "gender_librispeech" / "checkpoint.pth", dest / "gender_librispeech" / "checkpoint.pth"
    )
    assert import_release(src, dest).altered == ["gender_librispeech/checkpoint.pth"]
    assert _sha(dest / "gender_librispeech" / "checkpoint.pth") == RELEASED_MASKS["gender_librispeech"].sha256


def test_missing_and_extra_files_get_one_line_each(release, tmp_path, capsys):
    src = _copy_release(release, tmp_path / "src")
    shutil.rmtree(src / "asv_voxceleb1")
    shutil.rmtree(src / "osr_libri2mix")
    (src / "my_mask").mkdir()
    torch.save({"model": {"tensor": torch.zeros(1640)}}, src / "my_mask" / "checkpoint.pth")
    (src / "notes.bin").write_bytes(b"x")
    (src / "README.md").write_text("docs are not extra")
    assert main([str(src), "--dest", str(tmp_path / "dest")]) == 0
    out = capsys.readouterr().out.splitlines()
    missing = [line for line in out if line.startswith("missing")]
    extra = [line for line in out if line.startswith("extra")]
    assert (
        len(missing) == 2
        and any("asv_voxceleb1/" in m for m in missing)
        and any("osr_libri2mix/" in m for m in missing)
    )
    assert (
        len(extra) == 2
        and any("my_mask/checkpoint.pth" in e for e in extra)
        and any("notes.bin" in e for e in extra)
    )
    assert "8 of 10" in out[-1] and "2 missing" in out[-1] and "2 extra" in out[-1]
    assert not (tmp_path / "dest" / "my_mask").exists()


def test_import_from_a_file_is_one_error_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: no such folder" in err[0]


@pytest.fixture()
def imported(release, tmp_path, monkeypatch) -> Path:
    """A working directory with the release imported into ./legacy_checkpoints; the repository has none."""
    work = tmp_path / "work"
    import_release(release, work / "legacy_checkpoints")
    monkeypatch.chdir(work)
    monkeypatch.setattr(names, "REPO_ROOT", tmp_path / "no_repo")
    return work


def test_every_released_name_resolves_and_loads(imported, release):
    for name in RELEASED_MASKS:
        path = resolve_mask_path(name)
        assert path == Path.cwd() / "legacy_checkpoints" / name / "checkpoint.pth"
        assert torch.equal(load_mask(name).values, load_mask(release / name / "checkpoint.pth").values)


def test_names_fall_back_to_the_repository(release, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    import_release(release, repo / "legacy_checkpoints")
    monkeypatch.setattr(names, "REPO_ROOT", repo)
    monkeypatch.chdir(tmp_path)
    assert (
        resolve_mask_path("asr_librispeech")
        == repo / "legacy_checkpoints" / "asr_librispeech" / "checkpoint.pth"
    )


def test_an_unknown_name_lists_the_known_ones(imported):
    with pytest.raises(MaskFileError) as info:
        resolve_mask_path("gender_librispeec", key="model.weight_mask_path")
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.weight_mask_path: gender_librispeec:")
    assert all(name in message for name in RELEASED_MASKS)


def test_a_released_name_not_imported_says_how_to_import(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(names, "REPO_ROOT", tmp_path / "no_repo")
    with pytest.raises(MaskFileError, match="import_released_masks.py"):
        load_mask("gender_librispeech")


def test_paths_are_not_names(imported):
    # A suffix or a folder part makes it a path: no lookup under legacy_checkpoints/.
    assert resolve_mask_path("gender_librispeech.pth") == Path("gender_librispeech.pth")
    with pytest.raises(MaskFileError, match="no such mask file"):
        load_mask("sub/gender_librispeech")
    # The released folder itself is a mask folder.
    assert resolve_mask_path("legacy_checkpoints/gender_librispeech").name == "checkpoint.pth"


def test_a_decode_config_names_a_released_mask(imported, tiny_bundle):
    from ahamask.config import load_decode_config
    from ahamask.preflight import PreflightError, check_decode_inputs

    cfg = load_decode_config(
        tiny_bundle / "decode_config.yaml", ["model.weight_mask_path=gender_librispeech"]
    )
    assert cfg.model.weight_mask_path == "gender_librispeech"  # a name, not turned into a path
    # The pre-flight check finds the imported file: what it reports is the geometry, not a missing file.
    with pytest.raises(
        PreflightError, match=r"legacy_checkpoints/gender_librispeech/checkpoint.pth: has 1640 entries"
    ):
        check_decode_inputs(cfg)
    cfg = load_decode_config(tiny_bundle / "decode_config.yaml", ["model.weight_mask_path=gender_librispeec"])
    with pytest.raises(
        PreflightError, match=r"model.weight_mask_path: gender_librispeec: .*known names: aac_audiocaps"
    ):
        check_decode_inputs(cfg)


def test_a_folder_without_a_mask_file_points_at_its_checkpoints(tmp_path):
    torch.save({"model": {"tensor": torch.zeros(10)}}, tmp_path / "checkpoint_0.pth")
    with pytest.raises(
        MaskFileError, match=r"neither mask.safetensors nor checkpoint.pth; it has checkpoint_0.pth"
    ):
        load_mask(tmp_path)


def test_the_recorded_head_fractions_are_those_of_the_files(release):
    from ahamask.masking.released import RELEASED_HEAD_FRACTIONS

    assert set(RELEASED_HEAD_FRACTIONS) == set(RELEASED_MASKS)
    for name, fraction in RELEASED_HEAD_FRACTIONS.items():
        stats = mask_stats(load_mask(release / name / "checkpoint.pth").values, 40, 40)
        assert abs(stats.active_heads / 1600 - fraction) <= 0.0005 + 1e-9, name  # the table rounds to 0.1%
