"""Logging set-up, rank-0 helpers and metric sinks.

Diagnostics go through the standard ``logging`` module. Training metrics go through the small
:class:`MetricLogger` protocol (``log_dict(payload, step)`` and ``close()``) so the trainer does not care
whether they end up on stdout, in a JSON-lines file (like the official ``log.json``) or in TensorBoard.
Metric sinks write files, so create them on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = [
    "JsonlLogger",
    "MetricLogger",
    "MultiLogger",
    "StdoutLogger",
    "TensorBoardLogger",
    "get_logger",
    "log_rank_zero",
    "quiet_third_party_warnings",
    "setup_logging",
]

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"

# Marks the handler that setup_logging installed, so a second call replaces it instead of duplicating.
_HANDLER_FLAG = "_ahamask_handler"

# Third-party deprecation warnings that every normal run would print and that no user can act on: each is
# (category, message regex, module regex of the warning's origin, why it is safe to hide). Filtering by all
# three keeps every other warning, including new ones from the same libraries, visible.
THIRD_PARTY_NOISE: tuple[tuple[type[Warning], str, str, str], ...] = (
    (
        FutureWarning,
        r"`is_gradient_checkpointing` is deprecated",
        r"transformers\.modeling_utils",
        "peft's get_peft_model reads the old property name of transformers 5; nothing we call uses it",
    ),
)


def quiet_third_party_warnings() -> None:
    """Hide the known third-party deprecation warnings of :data:`THIRD_PARTY_NOISE` (idempotent).

    Example:
        >>> quiet_third_party_warnings()
    """
    for category, message, module, _why in THIRD_PARTY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def get_rank() -> int:
    """Global rank, or 0 without a process group.

    torch is consulted only once something has imported it: entry points set up logging and report config
    errors before the heavy libraries load, and without torch there can be no process group.
    """
    if "torch.distributed" not in sys.modules:
        return 0
    from ahamask.utils.distributed import get_rank as process_group_rank

    return process_group_rank()


def get_logger(name: str) -> logging.Logger:
    """Returns ``logging.getLogger(name)``; use ``get_logger(__name__)`` in every module."""
    return logging.getLogger(name)


def setup_logging(
    level: int | str = logging.INFO, rank: int | None = None, stream: TextIO | None = None
) -> None:
    """Configures the root logger for an entry point (train, evaluate, chat).

    Non-main ranks log warnings and errors only, as in the official set-up, so an 8-GPU job does not
    print every message 8 times. Calling it again replaces the handler it installed earlier.

    Args:
        level: Level for rank 0, e.g. ``logging.INFO`` or ``"DEBUG"``.
        rank: This process's rank; defaults to :func:`ahamask.utils.distributed.get_rank`.
        stream: Output stream; standard error by default.

    Raises:
        ValueError: If ``level`` is an unknown level name.

    Example:
        >>> setup_logging("INFO", rank=0)
    """
    if isinstance(level, str):
        numeric = logging.getLevelName(level.strip().upper())
        if not isinstance(numeric, int):
            raise ValueError(
                f"logging: unknown level {level!r}; expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        level = numeric
    rank = get_rank() if rank is None else rank
    effective = level if rank == 0 else max(level, logging.WARNING)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    root.setLevel(effective)
    quiet_third_party_warnings()


def log_rank_zero(logger: logging.Logger, msg: str, *args: Any, level: int = logging.INFO) -> None:
    """Logs ``msg % args`` on rank 0 only (e.g. the resolved config, parameter counts).

    Args:
        logger: The module's logger.
        msg: Message with %-style placeholders.
        *args: Values for the placeholders.
        level: Logging level.

    Example:
        >>> log_rank_zero(get_logger(__name__), "trainable parameters: %d", 1640)
    """
    if get_rank() == 0:
        logger.log(level, msg, *args)


def _to_number(value: Any) -> Any:
    """Turns 0-d tensors and numpy scalars into Python numbers; other values pass through."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is loaded
    if torch is not None and isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric value must be a scalar, got a tensor of shape {list(value.shape)}")
        return value.item()
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@runtime_checkable
class MetricLogger(Protocol):
    """A sink for training metrics."""

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        """Records ``payload`` (name -> scalar or short string) at global ``step``."""

    def close(self) -> None:
        """Flushes and releases resources; calling it twice is safe."""


class StdoutLogger:
    """Writes one human-readable line per call: ``step 10 | loss 1.2346 | lr 1.000e-02``.

    This is a metric sink, not a diagnostic, so it writes to the stream directly rather than through
    ``logging`` (whose level would otherwise decide whether training progress is visible).

    Args:
        stream: Destination; ``sys.stdout`` at the time of each call by default.

    Example:
        >>> StdoutLogger().log_dict({"loss": 1.23456}, step=10)
        step 10 | loss 1.2346
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @staticmethod
    def _format(value: Any) -> str:
        value = _to_number(value)
        if isinstance(value, bool) or not isinstance(value, float):
            return str(value)
        # Learning rates (1e-6) and normaliser sums (1e3) need scientific notation to stay readable.
        if value != 0.0 and math.isfinite(value) and not 1e-3 <= abs(value) < 1e4:
            return f"{value:.3e}"
        return f"{value:.4f}"

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        """Writes ``step <step> | key value | ...`` in payload order."""
        parts = [f"step {step}"] + [f"{key} {self._format(value)}" for key, value in payload.items()]
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(" | ".join(parts) + "\n")
        stream.flush()

    def close(self) -> None:
        """Flushes the stream (it is not ours to close)."""
        stream = self._stream if self._stream is not None else sys.stdout
        stream.flush()


class JsonlLogger:
    """Appends one JSON object per call to a file, ``{"step": step, **payload}``.

    Same layout as the lines of the official ``log.json`` (one JSON object per line), but every line
    is a single object, so the file can be read with ``[json.loads(l) for l in open(path)]``.
    Appending resumes an existing file; each line is flushed so a crash loses at most the last one.

    Args:
        path: Output file; parent folders are created.

    Example:
        >>> sink = JsonlLogger("/tmp/ahamask_doc/log.jsonl")
        >>> sink.log_dict({"train_loss": 0.5}, step=100)
        >>> sink.close()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        """Appends one line.

        Raises:
            ValueError: If the logger was closed or a value is a non-scalar tensor.
            TypeError: If a value is not JSON-serialisable.
        """
        if self._file is None:
            raise ValueError(f"JsonlLogger({self.path}): log_dict called after close()")
        record = {"step": int(step), **{key: _to_number(value) for key, value in payload.items()}}
        # Serialise first so a bad value raises before anything reaches the file.
        line = json.dumps(record, ensure_ascii=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger:
    """Writes numeric metrics as TensorBoard scalars via ``torch.utils.tensorboard.SummaryWriter``.

    Non-numeric values (strings) are skipped, since TensorBoard scalars must be numbers.

    Args:
        log_dir: Folder for the event files.

    Example:
        >>> sink = TensorBoardLogger("/tmp/ahamask_doc/tb")
        >>> sink.log_dict({"loss": 0.5, "tau": 4.0}, step=1)
        >>> sink.close()
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        # Imported here: tensorboard is slow to import and only needed when this sink is used.
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir))

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        """Adds one scalar per numeric entry at ``step``."""
        if self._writer is None:
            raise ValueError(f"TensorBoardLogger({self.log_dir}): log_dict called after close()")
        for key, value in payload.items():
            value = _to_number(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """Adds a matplotlib figure as an image at ``step`` (the mask heatmap); the figure is closed."""
        if self._writer is None:
            raise ValueError(f"TensorBoardLogger({self.log_dir}): log_figure called after close()")
        self._writer.add_figure(tag, figure, global_step=step, close=True)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MultiLogger:
    """Fans every call out to several sinks.

    Args:
        loggers: The sinks, called in order.

    Example:
        >>> sink = MultiLogger([StdoutLogger()])
        >>> sink.log_dict({"loss": 0.5}, step=1)
        step 1 | loss 0.5000
    """

    def __init__(self, loggers: Iterable[MetricLogger]) -> None:
        self.loggers = list(loggers)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        """Forwards to every sink."""
        for sink in self.loggers:
            sink.log_dict(payload, step)

    def close(self) -> None:
        """Closes every sink, even if one of them fails; the first error is re-raised afterwards."""
        first_error: BaseException | None = None
        for sink in self.loggers:
            try:
                sink.close()
            except Exception as error:  # noqa: BLE001 - close the rest, then re-raise
                first_error = first_error or error
        if first_error is not None:
            raise first_error
