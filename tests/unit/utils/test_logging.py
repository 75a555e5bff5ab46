"""Logging set-up, rank-0 gating and the metric sinks."""

import io
import json
import logging

import numpy as np
import pytest
import torch

from ahamask.utils import logging as alog
from ahamask.utils.logging import (
    JsonlLogger,
    MetricLogger,
    MultiLogger,
    StdoutLogger,
    TensorBoardLogger,
    get_logger,
    log_rank_zero,
    setup_logging,
)


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_setup_logging_levels_per_rank_and_single_handler(restore_root_logger):
    root = restore_root_logger
    stream = io.StringIO()
    setup_logging("INFO", rank=0, stream=stream)
    setup_logging("DEBUG", rank=0, stream=stream)  # a second call replaces, not duplicates, the handler
    ours = [h for h in root.handlers if getattr(h, "_ahamask_handler", False)]
    assert len(ours) == 1 and root.level == logging.DEBUG
    get_logger("ahamask.test").info("hello %d", 5)
    assert stream.getvalue().rstrip().endswith("[INFO] ahamask.test: hello 5")

    setup_logging("INFO", rank=3, stream=stream)
    assert root.level == logging.WARNING  # non-main ranks only warn
    with pytest.raises(ValueError, match="unknown level 'LOUD'"):
        setup_logging("LOUD")


def test_log_rank_zero(monkeypatch, caplog):
    logger = get_logger("ahamask.test.rank")
    with caplog.at_level(logging.INFO, logger="ahamask.test.rank"):
        monkeypatch.setattr(alog, "get_rank", lambda: 1)
        log_rank_zero(logger, "from rank %d", 1)
        monkeypatch.setattr(alog, "get_rank", lambda: 0)
        log_rank_zero(logger, "from rank %d", 0, level=logging.WARNING)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.WARNING, "from rank 0")]


def test_stdout_logger_formats_numbers():
    stream = io.StringIO()
    sink = StdoutLogger(stream)
    sink.log_dict(
        {"loss": torch.tensor(1.234567), "lr": 1e-6, "normalizer": 1640.0, "tau": 4, "task": "asr"}, step=10
    )
    assert (
        stream.getvalue()
        == "step 10 | loss 1.2346 | lr 1.000e-06 | normalizer 1640.0000 | tau 4 | task asr\n"
    )
    sink.log_dict({"big": 25000.0, "zero": 0.0}, step=11)
    assert stream.getvalue().splitlines()[1] == "step 11 | big 2.500e+04 | zero 0.0000"


def test_jsonl_logger_writes_one_object_per_line_and_appends(tmp_path):
    path = tmp_path / "run" / "log.jsonl"
    sink = JsonlLogger(path)
    sink.log_dict({"train_loss": torch.tensor(0.5), "lr": np.float32(0.25)}, step=1)
    sink.log_dict({"valid_loss": 0.75, "split": "valid"}, step=2)
    sink.close()
    sink.close()  # idempotent
    resumed = JsonlLogger(path)  # a resumed run appends
    resumed.log_dict({"train_loss": 0.125}, step=3)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"step": 1, "train_loss": 0.5, "lr": 0.25},
        {"step": 2, "valid_loss": 0.75, "split": "valid"},
        {"step": 3, "train_loss": 0.125},
    ]
    with pytest.raises(ValueError, match="after close"):
        sink.log_dict({"x": 1}, step=4)
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        resumed.log_dict({"x": torch.zeros(2)}, step=5)
    resumed.close()
    assert len(path.read_text().splitlines()) == 3  # the bad record wrote nothing


def test_tensorboard_logger_writes_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardLogger(tmp_path / "tb")
    sink.log_dict({"loss": 2.5, "tau": torch.tensor(4.0), "task": "skipped"}, step=7)
    sink.log_dict({"loss": 1.5}, step=8)
    sink.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "tau"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(7, 2.5), (8, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("tau")] == [(7, 4.0)]


class _Recorder:
    def __init__(self, fail_close=False):
        self.calls, self.closed, self.fail_close = [], False, fail_close

    def log_dict(self, payload, step):
        self.calls.append((dict(payload), step))

    def close(self):
        self.closed = True
        if self.fail_close:
            raise OSError("disk full")


def test_multi_logger_fans_out_and_closes_every_sink():
    first, second = _Recorder(fail_close=True), _Recorder()
    multi = MultiLogger([first, second])
    multi.log_dict({"loss": 1.0}, step=3)
    assert first.calls == second.calls == [({"loss": 1.0}, 3)]
    with pytest.raises(OSError, match="disk full"):
        multi.close()
    assert first.closed and second.closed  # the failing sink did not stop the second one closing


def test_sinks_satisfy_the_protocol(tmp_path):
    sinks = [StdoutLogger(io.StringIO()), JsonlLogger(tmp_path / "l.jsonl"), MultiLogger([]), _Recorder()]
    assert all(isinstance(sink, MetricLogger) for sink in sinks)
    assert not isinstance(object(), MetricLogger)
    sinks[1].close()


def test_setup_logging_hides_only_the_known_third_party_deprecation(restore_root_logger):
    import warnings

    message = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_logging("INFO", rank=0, stream=io.StringIO())
        warnings.warn_explicit(
            message, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils"
        )
        # The same text from our code, another FutureWarning of that module, another category: all still shown.
        warnings.warn_explicit(message, FutureWarning, "salmonn.py", 1, module="ahamask.models.salmonn")
        warnings.warn_explicit(
            "`x` is deprecated", FutureWarning, "m.py", 1, module="transformers.modeling_utils"
        )
        warnings.warn_explicit(message, DeprecationWarning, "m.py", 1, module="transformers.modeling_utils")
    shown = [(str(w.message), w.category, w.filename) for w in caught]
    assert shown == [
        (message, FutureWarning, "salmonn.py"),
        ("`x` is deprecated", FutureWarning, "m.py"),
        (message, DeprecationWarning, "m.py"),
    ]
