"""Pre-flight checks: every bad input or output location is one line naming its key and file, before any model.

Each case is checked against the property the issue asks for: a PreflightError whose message is one line,
names the config key and the file, never repeats torch's ``weights_only=False`` advice, and comes before
the model is built (``SALMONN.from_config`` is replaced by a function that fails the test).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from ahamask.config import load_decode_config, load_train_config
from ahamask.data.audio import AudioError, probe_audio
from ahamask.masking.checkpoint import save_mask
from ahamask.preflight import PreflightError, check_decode_inputs, check_train_inputs, llm_geometry


class _Payload:
    """Unpickles to a call of os.system: what a malicious checkpoint carries (never loaded here)."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _decode_cfg(bundle: Path, *overrides: str):
    return load_decode_config(bundle / "decode_config.yaml", list(overrides))


def _problem(cfg, config_path=None) -> str:
    with pytest.raises(PreflightError) as info:
        check_decode_inputs(cfg, config_path)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message and "Traceback" not in message
    return message


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if anything builds the model: every check here must come first."""
    from ahamask.models.salmonn import SALMONN

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the input was checked")

    monkeypatch.setattr(SALMONN, "from_config", classmethod(refuse))


def test_the_tiny_bundle_passes(tiny_bundle):
    check_decode_inputs(_decode_cfg(tiny_bundle, "output_path=/tmp/ahamask_ok/pred.json"))
    check_train_inputs(load_train_config(tiny_bundle / "config.yaml"))
    assert llm_geometry(tiny_bundle / "llama")[:2] == (2, 4)


# ------------------------------------------------------------------ output location
def _output_cases(bundle: Path, tmp: Path) -> list[tuple[str, str]]:
    """(output_path, what the message must say) for every way an output path can be unusable."""
    (tmp / "a_file").write_text("x")
    link = tmp / "link.json"
    link.symlink_to(bundle / "data" / "test.json")
    return [
        (str(bundle / "data"), "is a directory"),
        (str(tmp) + "/", "is a directory"),
        (str(tmp / "a_file" / "sub" / "pred.json"), "is a file"),
        (str(link), "test_data_path"),  # another name for the manifest (the same name is a config error)
        (str(bundle / "data" / "test_2.wav"), "audio file of the manifest"),
        (str(bundle / "salmonn.pth"), "model.ckpt"),
        (str(bundle / "decode_config.yaml"), "the config file"),
        (str(tmp / ("n" * 300 + ".json")), "too long"),
    ]


def test_every_unusable_output_path_is_named(tiny_bundle, tmp_path, no_model):
    for value, fragment in _output_cases(tiny_bundle, tmp_path):
        message = _problem(
            _decode_cfg(tiny_bundle, f"output_path={value}"), tiny_bundle / "decode_config.yaml"
        )
        assert message.startswith("output_path: ") and fragment in message, (value, message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in read-only folders")
def test_an_unwritable_folder_is_named(tiny_bundle, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = _problem(_decode_cfg(tiny_bundle, f"output_path={locked / 'sub' / 'p.json'}"))
    finally:
        locked.chmod(0o700)
    assert "output_path: cannot write in" in message and "permission denied" in message


def test_output_dir_of_training_must_be_a_folder(tiny_bundle, tmp_path):
    (tmp_path / "taken").write_text("")
    cfg = load_train_config(tiny_bundle / "config.yaml", [f"run.output_dir={tmp_path / 'taken'}"])
    with pytest.raises(PreflightError, match=r"^run.output_dir: .*taken is a file; expected a folder$"):
        check_train_inputs(cfg)


# ------------------------------------------------------------------ manifests and audio
def _manifest(folder: Path, bundle: Path, last: str) -> Path:
    """200 good entries (the bundle's clips) and one bad file at the end, as in the issue."""
    folder.mkdir(exist_ok=True)
    good = [{"path": str(bundle / "data" / f"test_{i % 4}.wav"), "text": "x"} for i in range(200)]
    path = folder / "m.json"
    path.write_text(json.dumps({"annotation": [*good, {"path": last, "text": "x"}]}))
    return path


def test_a_bad_audio_file_at_the_end_is_found_before_loading(tiny_bundle, tmp_path, no_model):
    (tmp_path / "garbage.wav").write_bytes(b"this is no audio" * 20)
    wav = (tiny_bundle / "data" / "test_0.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(wav[: len(wav) // 2])  # a cut-off download
    (tmp_path / "empty.wav").write_bytes(b"")
    for name, fragment in (
        ("garbage.wav", "cannot decode"),
        ("cut.wav", "truncated"),
        ("empty.wav", "empty"),
        ("missing.wav", "no such audio file"),
    ):
        manifest = _manifest(tmp_path, tiny_bundle, str(tmp_path / name))
        message = _problem(
            _decode_cfg(tiny_bundle, f"test_data_path={manifest}", f"output_path={tmp_path}/p.json")
        )
        assert message.startswith(f"test_data_path: {manifest}: entry 200 ") and name in message
        assert fragment in message, message


def test_manifest_paths_name_the_key(tiny_bundle, tmp_path):
    cases = [
        ("", "test_data_path: empty"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "no.json"), "no such file"),
    ]
    for value, fragment in cases:
        message = _problem(
            _decode_cfg(tiny_bundle, f"test_data_path={value}", f"output_path={tmp_path}/p.json")
        )
        assert message.startswith("test_data_path: ") and fragment in message, message


def test_training_manifests_name_their_key_and_skip_bad_entries_allows_them(tiny_bundle, tmp_path):
    manifest = _manifest(tmp_path, tiny_bundle, str(tmp_path / "missing.wav"))
    overrides = [f"datasets.train_ann_path={manifest}", f"run.output_dir={tmp_path / 'exp'}"]
    with pytest.raises(PreflightError, match=r"^datasets.train_ann_path: .*entry 200.*skip_bad_entries"):
        check_train_inputs(load_train_config(tiny_bundle / "config.yaml", overrides))
    check_train_inputs(
        load_train_config(tiny_bundle / "config.yaml", [*overrides, "datasets.skip_bad_entries=true"])
    )


def test_probe_audio_reads_headers_only(tiny_bundle, tmp_path):
    probe_audio(tiny_bundle / "data" / "test_0.wav")
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    with pytest.raises(AudioError, match="x.wav"):
        probe_audio(tmp_path / "x.wav")
    with pytest.raises(FileNotFoundError):
        probe_audio(tmp_path)


# ------------------------------------------------------------------ masks
def _mask_cases(tmp: Path) -> list[tuple[Path, str]]:
    (tmp / "garbage.pth").write_bytes(b"not a mask at all")
    (tmp / "plain.pth").write_bytes(pickle.dumps({"model": {"tensor": [1.0, 2.0]}}))
    torch.save({"model": {"tensor": _Payload()}}, tmp / "code.pth")
    save_mask(torch.zeros(1640), tmp / "big.pth")  # a SALMONN-13B mask on the 2 x 4 tiny model
    torch.save({"model": {"tensor": torch.full((10,), float("nan"))}}, tmp / "nan.pth")
    (tmp / "empty.pth").write_bytes(b"")
    return [
        (tmp / "garbage.pth", "garbage.pth"),
        (tmp / "plain.pth", "plain.pth"),
        (tmp / "code.pth", "GLOBAL posix.system"),
        (tmp / "big.pth", "1640"),
        (tmp / "nan.pth", "non-finite"),
        (tmp / "empty.pth", "empty.pth"),
        (tmp / "none.pth", "none.pth"),
    ]


def test_every_bad_mask_file_is_one_line_before_loading(tiny_bundle, tmp_path, no_model):
    for path, fragment in _mask_cases(tmp_path):
        message = _problem(
            _decode_cfg(tiny_bundle, f"model.weight_mask_path={path}", f"output_path={tmp_path}/p.json")
        )
        assert message.startswith("model.weight_mask_path: ") and fragment in message, message
        assert path.name in message, message


# ------------------------------------------------------------------ checkpoints and model folders
def test_checkpoint_key_sets_and_shapes_are_checked_without_a_model(tiny_bundle, tmp_path, no_model):
    torch.save({"model": {"encoder.layer.0.weight": torch.zeros(2)}}, tmp_path / "foreign.pth")
    torch.save({"model": {"speech_llama_proj.weight": _Payload()}}, tmp_path / "code.pth")
    torch.save({"state_dict": {}}, tmp_path / "nomodel.pth")
    out = f"output_path={tmp_path}/p.json"
    cases = [
        ([f"model.ckpt={tmp_path / 'foreign.pth'}"], "encoder.layer.0.weight"),
        ([f"model.ckpt={tmp_path / 'code.pth'}"], "it holds code"),
        ([f"model.ckpt={tmp_path / 'nomodel.pth'}"], "'model' state dict"),
        (["model.lora=false"], "model.lora is false"),
        (["model.lora_rank=4"], "model.lora_rank is 4"),
        (["model.num_speech_query_token=3"], "speech_query_tokens"),
        ([f"model.ckpt={tmp_path / 'missing.pth'}"], "no such file"),
    ]
    for overrides, fragment in cases:
        message = _problem(_decode_cfg(tiny_bundle, *overrides, out))
        assert message.startswith("model.") and fragment in message, message


def test_pickled_llm_weights_that_hold_code_are_refused(tiny_bundle, tmp_path, no_model):
    llama = tmp_path / "llama"
    shutil.copytree(tiny_bundle / "llama", llama)
    (llama / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _Payload()}, llama / "pytorch_model.bin")
    message = _problem(
        _decode_cfg(tiny_bundle, f"model.llama_path={llama}", f"output_path={tmp_path}/p.json")
    )
    assert message.startswith("model.llama_path: ") and "pytorch_model.bin" in message and "code" in message


def test_model_folders_and_files_are_named(tiny_bundle, tmp_path):
    (tmp_path / "empty_dir").mkdir()
    out = f"output_path={tmp_path}/p.json"
    cases = [
        (["model.llama_path="], "model.llama_path: empty"),
        ([f"model.llama_path={tmp_path / 'nope'}"], "model.llama_path: no such directory"),
        ([f"model.llama_path={tmp_path / 'empty_dir'}"], "has no config.json"),
        ([f"model.whisper_path={tiny_bundle / 'salmonn.pth'}"], "model.whisper_path: "),
        ([f"model.prompt_path={tmp_path / 'p.json'}"], "model.prompt_path: no such file"),
    ]
    for overrides, fragment in cases:
        assert fragment in _problem(_decode_cfg(tiny_bundle, *overrides, out))


def test_every_problem_of_a_stage_is_in_the_one_line(tiny_bundle, tmp_path):
    message = _problem(
        _decode_cfg(
            tiny_bundle, "model.llama_path=", "test_data_path=", f"output_path={tiny_bundle / 'data'}"
        )
    )
    starts = [message.find(f"{key}: ") for key in ("model.llama_path", "test_data_path", "output_path")]
    assert starts[0] == 0 and starts == sorted(starts), message


def test_evaluate_checks_before_building_the_model(tiny_bundle, tmp_path, no_model):
    from ahamask.evaluation.evaluator import evaluate

    with pytest.raises(PreflightError, match="^output_path: "):
        evaluate(_decode_cfg(tiny_bundle, f"output_path={tiny_bundle / 'data'}"))
