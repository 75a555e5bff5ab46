"""The entry points' error boundary: one line, the right exit code, library noise removed, --debug."""

from __future__ import annotations

import pickle

import pytest

from ahamask.config import ConfigError
from ahamask.data.manifest import ManifestError
from ahamask.utils.errors import describe_torch_load_error, exit_code_for, one_line, run_cli

# What torch 2.6+ says when weights_only=True refuses a file (shortened from the real text).
TORCH_REFUSAL = (
    "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument "
    "in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will "
    "likely succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
    "trusted source.\n\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\n"
    "Check the documentation of torch.load to learn more about types accepted by default with weights_only "
    "https://pytorch.org/docs/stable/generated/torch.load.html."
)


def _run(body, capsys, debug=False):
    code = run_cli(body, debug=debug)
    err = capsys.readouterr().err
    return code, err.splitlines()


def _raise(exc):
    def body():
        raise exc

    return body


def test_each_class_of_error_is_one_line_with_its_exit_code(capsys, monkeypatch):
    monkeypatch.delenv("AHAMASK_DEBUG", raising=False)
    cases = [
        (ConfigError("c.yaml: generate.num_beams: 0 must be >= 1"), 2, "generate.num_beams"),
        (ManifestError("m.json: entry 3 (path 'a.wav'): no such audio file"), 1, "entry 3"),
        (FileNotFoundError("model.ckpt: no such checkpoint file: x.pth"), 1, "model.ckpt"),
        (PermissionError(13, "Permission denied", "/out/pred.json"), 1, "/out/pred.json"),
        (KeyboardInterrupt(), 130, "interrupted: stopped by Ctrl-C"),
    ]
    for exc, code, fragment in cases:
        got, lines = _run(_raise(exc), capsys)
        assert got == code and len(lines) == 1 and fragment in lines[0], (exc, lines)
        assert "Traceback" not in lines[0]


def test_an_unexpected_error_names_its_type_and_the_debug_switch(capsys, monkeypatch):
    monkeypatch.delenv("AHAMASK_DEBUG", raising=False)
    code, lines = _run(_raise(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")), capsys)
    assert code == 1 and lines == [
        "error: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB "
        "(run with --debug or AHAMASK_DEBUG=1 for the traceback)"
    ]


def test_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv("AHAMASK_DEBUG", raising=False)
    with pytest.raises(ConfigError):
        run_cli(_raise(ConfigError("x")), debug=True)
    monkeypatch.setenv("AHAMASK_DEBUG", "1")
    with pytest.raises(KeyboardInterrupt):
        run_cli(_raise(KeyboardInterrupt()))
    monkeypatch.setenv("AHAMASK_DEBUG", "0")
    assert run_cli(_raise(ConfigError("x"))) == 2


def test_a_dataloader_worker_error_is_unwrapped():
    # What torch's ExceptionWrapper.reraise builds in the main process from a worker's exception.
    wrapped = ManifestError(
        "Caught ManifestError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "/x/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
        "    data = fetcher.fetch(index)\n"
        "ahamask.data.manifest.ManifestError: m.json: entry 199 (path 'b.wav'): cannot decode audio file b.wav\n"
    )
    assert one_line(wrapped) == "m.json: entry 199 (path 'b.wav'): cannot decode audio file b.wav"
    assert exit_code_for(wrapped) == 1


def test_torch_advice_to_disable_weights_only_never_reaches_the_user():
    line = one_line(
        ValueError(
            f"model.weight_mask_path: m.pth: cannot be read as a weights-only torch file ({TORCH_REFUSAL})"
        )
    )
    assert "weights_only" not in line.replace("weights-only", "") and "posix.system" in line
    assert line.startswith("model.weight_mask_path: m.pth: ")
    described = [
        describe_torch_load_error(pickle.UnpicklingError(TORCH_REFUSAL)),
        describe_torch_load_error(EOFError("Ran out of input")),
        describe_torch_load_error(
            RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")
        ),
        describe_torch_load_error(pickle.UnpicklingError("invalid load key, 'h'.")),
    ]
    assert [d.split(" (")[0].split(";")[0] for d in described] == [
        "it holds code, not only weights",
        "the file is empty or cut short",
        "a corrupt or truncated torch file",
        "not a torch checkpoint",
    ]
    assert all("\n" not in d and "weights_only=False" not in d for d in described)


def test_notes_are_kept_on_the_one_line():
    exc = OSError(28, "No space left on device")
    exc.add_note("kept 192 of 200 decoded entries in out.json.partial")
    assert one_line(exc).endswith("(kept 192 of 200 decoded entries in out.json.partial)")
