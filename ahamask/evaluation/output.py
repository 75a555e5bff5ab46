"""A decode run's output file: locked while the run lasts, progress kept in ``<output>.partial``.

Three ways a run used to lose results, and what this module does about each:

* **Two runs, one output.** The run holds ``<output>.lock`` (created exclusively, holding pid and host)
  from before the model loads until it has written; a second run stops at once with one line. A lock
  whose process is gone (same host) is taken over with a warning.
* **Someone else wrote the output meanwhile** (a run without the lock, a copy by hand). The file's state
  is noted at the start and compared before the final write; if it changed, it is not replaced.
* **A late failure** (Ctrl-C, a full disk, an audio file that only fails when decoded). Every decoded
  batch is appended to ``<output>.partial`` (JSON lines: a header with the run's settings, then one record
  per entry) and flushed, so the work is kept. Running the same command again decodes only the rest. A
  partial file left by a run with other settings is refused, naming the settings that differ.

Under ``torchrun`` each rank keeps ``<output>.partial-<rank>``; rank 0 alone holds the lock and writes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ..config import DecodeConfig
from ..utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "OutputBusyError",
    "OutputChangedError",
    "OutputGuard",
    "PartialMismatchError",
    "decode_fingerprint",
]

PARTIAL_FORMAT = 1

# Decode keys that do not change which answer an entry gets, so a run may continue with other values
# (e.g. a smaller batch after running out of memory).
_NOT_IN_FINGERPRINT = (
    "output_path",
    "num_workers",
    "device",
    "batch_size_eval",
    "bucket_by_length",
    "speech_cache_dir",
)


class OutputBusyError(ValueError):
    """Another run holds the output's lock."""


class OutputChangedError(ValueError):
    """The output file was written by someone else while this run decoded; it was not replaced."""


class PartialMismatchError(ValueError):
    """``<output>.partial`` comes from a run with other settings and cannot be continued."""


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_fingerprint(cfg: DecodeConfig) -> dict[str, Any]:
    """The settings that decide a decode run's answers: what a ``.partial`` file must match to be continued.

    The manifest and the mask enter by content (sha256), the model by its paths (hashing gigabytes of
    weights would cost more than it saves).
    """
    settings = asdict(cfg)
    for key in _NOT_IN_FINGERPRINT:
        settings.pop(key, None)
    settings["test_data_sha256"] = _sha256(cfg.test_data_path)
    mask = cfg.model.weight_mask_path
    settings["mask_sha256"] = _sha256(mask) if mask and Path(mask).is_file() else None
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    a, b = _flat(old), _flat(new)
    changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more" if len(changed) > limit else "")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of a file, or None when it does not exist: enough to see a rewrite."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class OutputGuard:
    """Lock, progress file and final write of one decode run's output.

    Args:
        output: the prediction file (``output_path``).
        fingerprint: :func:`decode_fingerprint` of the run.
        rank, world_size: this process's place under ``torchrun``.

    Example:
        >>> guard = OutputGuard(Path("exp/pred.json"), decode_fingerprint(cfg))  # doctest: +SKIP
        >>> guard.acquire(); done = guard.load_done(); guard.open()
        >>> guard.append([0, 1], records); guard.finish(result); guard.close(); guard.release()
    """

    def __init__(self, output: Path, fingerprint: Mapping[str, Any], rank: int = 0, world_size: int = 1):
        self.output = Path(output)
        self.fingerprint = dict(fingerprint)
        self.rank, self.world_size = rank, world_size
        self.lock_path = self.output.with_name(self.output.name + ".lock")
        suffix = ".partial" if world_size == 1 else f".partial-{rank}"
        self.partial_path = self.output.with_name(self.output.name + suffix)
        self._locked = False
        self._start_state: tuple[int, int, int] | None = None
        self._handle: IO[str] | None = None
        self.kept = 0  # records in this rank's partial file (loaded + appended)

    # ------------------------------------------------------------------ lock
    def acquire(self) -> None:
        """Take ``<output>.lock`` and note the output's state (rank 0, before the model loads).

        Raises:
            OutputBusyError: another live run holds the lock (its pid, host and start time are named).
        """
        self.output.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale_lock_removed():
                    continue  # once more, now that the dead run's lock is gone
                break
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(info, handle)
            self._locked = True
            self._start_state = _file_state(self.output)
            return
        holder = self._read_lock()
        raise OutputBusyError(
            f"output_path: {self.output} is being written by another run (pid {holder.get('pid')} on "
            f"{holder.get('host')} since {holder.get('started')}; lock {self.lock_path}); wait for it, choose "
            "another output_path, or delete the lock file if that run is gone"
        )

    def _read_lock(self) -> dict[str, Any]:
        try:
            data = json.loads(self.lock_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _stale_lock_removed(self) -> bool:
        """Remove a lock left by a process of this host that no longer runs; True when removed."""
        holder = self._read_lock()
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or _process_alive(pid):
            return False
        logger.warning("%s: taking over a stale lock of pid %d, which no longer runs", self.lock_path, pid)
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        return True

    def release(self) -> None:
        """Remove the lock if this run holds it (safe to call twice)."""
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            self._locked = False

    # ------------------------------------------------------------------ progress
    def _partial_files(self) -> list[Path]:
        return sorted(self.output.parent.glob(self.output.name + ".partial*"))

    def load_done(self) -> dict[int, dict[str, Any]]:
        """Records of earlier attempts of this run, by manifest index (every rank's file is read).

        Raises:
            PartialMismatchError: a partial file from a run with other settings (the differences are named).
        """
        done: dict[int, dict[str, Any]] = {}
        for path in self._partial_files():
            lines = path.read_text(encoding="utf-8").splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                header = {}
            if header.get("ahamask_partial") != PARTIAL_FORMAT:
                raise PartialMismatchError(
                    f"{path}: not an ahamask partial-output file; move it away to continue"
                )
            if header.get("fingerprint") != self.fingerprint:
                raise PartialMismatchError(
                    f"{path}: left by a run with other settings ({_differences(header.get('fingerprint', {}), self.fingerprint)}); "
                    "restore them to continue that run, or delete the file to start over"
                )
            for number, line in enumerate(lines[1:], start=2):
                try:
                    record = json.loads(line)
                    done[int(record["index"])] = record
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    # A crash can cut the last line short; anything else is damage worth a word.
                    if number != len(lines):
                        logger.warning("%s: line %d is unreadable and was skipped", path, number)
        return done

    def open(self) -> None:
        """Open this rank's partial file for appending (writing the header when it is new).

        A line cut short by a crash is dropped first, so the next record starts on a line of its own.
        """
        data = self.partial_path.read_bytes() if self.partial_path.exists() else b""
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with open(self.partial_path, "r+b") as handle:
                handle.truncate(len(data))
        self._handle = open(self.partial_path, "a", encoding="utf-8")
        if not data:
            header = {"ahamask_partial": PARTIAL_FORMAT, "fingerprint": self.fingerprint}
            self._handle.write(json.dumps(header) + "\n")
            self._flush()
        self.kept = max(data.count(b"\n") - 1, 0)

    def _flush(self) -> None:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def append(self, indices: Sequence[int], records: Sequence[Mapping[str, Any]]) -> None:
        """Keep one decoded batch: one JSON line per entry, flushed to disk before decoding goes on."""
        if self._handle is None:
            return
        for index, record in zip(indices, records, strict=True):
            self._handle.write(json.dumps({"index": int(index), **record}, ensure_ascii=False) + "\n")
        self._flush()
        self.kept += len(records)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # ------------------------------------------------------------------ final write
    def finish(self, result: Any) -> None:
        """Write the output atomically unless someone else wrote it meanwhile; then drop the partial files.

        Raises:
            OutputChangedError: the output changed since :meth:`acquire`; it is left as it is and this run's
                predictions stay in the partial file.
        """
        if self._locked and _file_state(self.output) != self._start_state:
            raise OutputChangedError(
                f"output_path: {self.output} was written by another process while this run decoded and was "
                f"not replaced; this run's predictions are kept in {self.partial_path} (run the same command "
                "again to write them, or choose another output_path)"
            )
        atomic_write_json(result, self.output, indent=4)
        self.close()
        for path in self._partial_files():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
