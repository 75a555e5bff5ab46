"""SALMONN manifests: reading, checking and resolving `{"annotation": [...]}` files.

The schema is the official one (data/test/demo.json)::

    {"annotation": [{"path": "a.flac", "text": "...", "task": "asr", "Q": "", "expand_wav": ["b.flac"]}]}

`path` and `text` are required; `task` defaults to "asr", `Q` to "" and `expand_wav` to none. Other keys
are kept and ignored. A relative path is looked up in the manifest's folder first, then in the working
directory (the official code only tries the working directory), so a manifest can travel with its audio.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ahamask.data.audio import AudioError, probe_audio, read_audio
from ahamask.utils.logging import log_rank_zero

logger = logging.getLogger(__name__)

DEFAULT_TASK = "asr"
DEFAULT_QUESTION = ""
REQUIRED_KEYS = ("path", "text")
SPECIAL_TARGET_TOKENS = ("</s>", "<s>")
"""LLaMA's EOS / BOS written as text: the tokenizer turns them into the special ids 2 / 1."""

# Manifests (resolved paths) whose unusual targets were already reported in this process.
_TARGETS_REPORTED: set[str] = set()


class ManifestError(ValueError):
    """A manifest or one of its entries is unusable; the message names the manifest, entry and file.

    Attributes:
        issues: Every problem found, when several were collected before raising.
    """

    def __init__(self, message: str, issues: list[ManifestIssue] | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues or [])


@dataclass(frozen=True)
class ManifestIssue:
    """One problem in a manifest, printable as a single line.

    Attributes:
        manifest: The manifest path as the caller gave it.
        index: Position of the bad entry in "annotation", or None for a problem with the whole file.
        path: The entry's `path` as written, when it has one.
        message: What is wrong, naming the key or file at fault.
    """

    manifest: str
    index: int | None
    path: str | None
    message: str

    def __str__(self) -> str:
        where = self.manifest if self.index is None else f"{self.manifest}: entry {self.index}"
        if self.path is not None:
            where += f" (path {self.path!r})"
        return f"{where}: {self.message}"


@dataclass
class ManifestScan:
    """Result of reading a manifest: the usable entries and the problems found.

    Attributes:
        manifest: The manifest path as the caller gave it.
        entries: (index in the file, resolved entry) for every entry that passed the checks.
        issues: One ManifestIssue per rejected entry, in file order.
    """

    manifest: str
    entries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)


def resolve_audio_path(path: str, manifest_dir: Path) -> Path:
    """Find an entry's audio file: absolute as is, else the manifest's folder, then the working directory.

    Args:
        path: The path as written in the manifest.
        manifest_dir: Folder of the manifest file.

    Returns:
        The first candidate that exists, or the manifest-relative candidate when none does (so that the
        later "no such audio file" error shows where it was expected).
    """
    written = Path(path).expanduser()
    if written.is_absolute():
        return written
    beside_manifest = manifest_dir / written
    if beside_manifest.exists():
        return beside_manifest
    from_cwd = Path.cwd() / written
    return from_cwd if from_cwd.exists() else beside_manifest


def _schema_problem(raw: Any) -> str | None:
    """Say what is wrong with an entry's keys and types, or return None when it is well formed."""
    if not isinstance(raw, Mapping):
        return f"entry is a {type(raw).__name__}, expected an object with keys {list(REQUIRED_KEYS)}"
    for key in REQUIRED_KEYS:
        if key not in raw:
            return f"missing key {key!r}"
    if not isinstance(raw["path"], str) or not raw["path"]:
        return f"'path' must be a non-empty string, got {raw['path']!r}"
    for key in ("text", "task", "Q"):
        if key in raw and not isinstance(raw[key], str):
            return f"{key!r} must be a string, got {type(raw[key]).__name__} {raw[key]!r}"
    expand = raw.get("expand_wav", [])
    if not isinstance(expand, list) or not all(isinstance(p, str) and p for p in expand):
        return f"'expand_wav' must be a list of non-empty path strings, got {expand!r}"
    return None


def _resolve_entry(raw: Mapping[str, Any], manifest_dir: Path) -> dict[str, Any]:
    """Copy a well-formed entry with defaults filled, paths resolved and the written path kept as `id`."""
    entry = dict(raw)
    entry.setdefault("task", DEFAULT_TASK)
    entry.setdefault("Q", DEFAULT_QUESTION)
    # The official batches identify samples by the path as written; keep that, not the resolved path.
    entry["id"] = raw["path"]
    entry["path"] = str(resolve_audio_path(raw["path"], manifest_dir))
    entry["expand_wav"] = [str(resolve_audio_path(p, manifest_dir)) for p in raw.get("expand_wav", [])]
    return entry


def describe_audio_error(entry: Mapping[str, Any], err: Exception) -> str:
    """One-line account of an audio failure, adding where relative paths were searched.

    Args:
        entry: A resolved entry (as `load_manifest` returns it).
        err: The FileNotFoundError or AudioError raised while reading its audio.

    Returns:
        The error text, plus a lookup hint for a missing file given by a relative path.
    """
    message = str(err)
    if isinstance(err, FileNotFoundError) and not Path(entry["id"]).expanduser().is_absolute():
        message += " (relative paths are looked up in the manifest's folder, then the working directory)"
    return message


def _audio_problem(entry: Mapping[str, Any], quick: bool = False) -> str | None:
    """Decode (or with ``quick``, open) every file of an entry; the first failure, or None when all are usable."""
    check = probe_audio if quick else read_audio
    for audio_path in [entry["path"], *entry["expand_wav"]]:
        try:
            check(audio_path)
        except (FileNotFoundError, AudioError) as err:
            return describe_audio_error(entry, err)
    return None


def read_annotation(manifest: str | os.PathLike) -> list[Any]:
    """Parse a manifest file and return its raw "annotation" list.

    Args:
        manifest: Path of the JSON manifest.

    Returns:
        The list under "annotation", entries unchecked.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ManifestError: It is not valid JSON, or has no "annotation" list.
    """
    name = str(manifest)
    manifest_path = Path(manifest)
    if not name:
        raise FileNotFoundError("manifest path is empty: expected a JSON manifest file")
    if manifest_path.is_dir():
        raise ManifestError(f"{name}: is a directory, expected a JSON manifest file")
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{name}: no such manifest file")
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            document = json.load(fh)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{name}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{name}: not valid UTF-8 text ({err.reason} at byte {err.start})") from err
    if not isinstance(document, Mapping) or "annotation" not in document:
        raise ManifestError(f'{name}: expected a JSON object with an "annotation" list of entries')
    annotation = document["annotation"]
    if not isinstance(annotation, list):
        raise ManifestError(f'{name}: "annotation" must be a list, got {type(annotation).__name__}')
    return annotation


def scan_manifest(
    manifest: str | os.PathLike, check_audio: bool = False, quick: bool = False
) -> ManifestScan:
    """Check every entry of a manifest and sort them into usable entries and issues.

    Args:
        manifest: Path of the JSON manifest.
        check_audio: Also decode every audio file (main and expand_wav) completely; slow for large sets
            but it catches missing, empty, undecodable, truncated and NaN-bearing files before a run.
        quick: With ``check_audio``, only open each file's header (`probe_audio`): what entry points
            run before loading the model.

    Returns:
        A ManifestScan; entries are resolved as by `load_manifest`.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ManifestError: The file itself is unusable (invalid JSON, no "annotation" list).
    """
    name = str(manifest)
    annotation = read_annotation(manifest)
    manifest_dir = Path(manifest).resolve().parent
    scan = ManifestScan(manifest=name)
    for index, raw in enumerate(annotation):
        written = raw.get("path") if isinstance(raw, Mapping) and isinstance(raw.get("path"), str) else None
        problem = _schema_problem(raw)
        entry = None
        if problem is None:
            entry = _resolve_entry(raw, manifest_dir)
            if check_audio:
                problem = _audio_problem(entry, quick=quick)
        if problem is None:
            scan.entries.append((index, entry))
        else:
            scan.issues.append(ManifestIssue(name, index, written, problem))
    _report_unusual_targets(name, scan.entries)
    return scan


def unusual_targets(entries: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str]]:
    """Entries whose target tokenises differently from the official code: ``(index, text)`` pairs.

    Two shapes, both absent from the official data: a target starting with a space, and one holding ``</s>``
    or ``<s>`` as text. ahamask's tokenizer (transformers 5) drops the leading space (``" Male"`` gives the
    ids of ``"Male"``), where transformers 4.28's slow tokenizer keeps it as an extra ``▁`` piece; it turns
    ``</s>`` / ``<s>`` into the special ids 2 / 1 (as 4.28 does; a ``</s>`` mid-target teaches the model to stop
    there) and gives the text right after them no leading ``▁``, where 4.28 gives one.
    """
    return [
        (index, entry["text"])
        for index, entry in entries
        if entry["text"].startswith(" ") or any(token in entry["text"] for token in SPECIAL_TARGET_TOKENS)
    ]


def _report_unusual_targets(name: str, entries: list[tuple[int, dict[str, Any]]]) -> None:
    """Warn once per manifest and process about `unusual_targets`, naming the first entries."""
    found = unusual_targets(entries)
    key = str(Path(name).resolve())
    if not found or key in _TARGETS_REPORTED:
        return
    _TARGETS_REPORTED.add(key)
    shown = ", ".join(f"entry {index} ({text!r})" for index, text in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    log_rank_zero(
        logger,
        "%s: %d targets tokenise differently from the official code: %s%s. A leading space is dropped "
        "(the official 4.28 tokenizer adds a '▁' piece for it); '</s>' / '<s>' become the special ids 2 / 1 "
        "and the text after them gets no leading '▁' (the official gives one). Strip such targets to match.",
        name,
        len(found),
        shown,
        more,
        level=logging.WARNING,
    )


def load_manifest(manifest: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a manifest, with defaults filled and audio paths resolved; audio is not opened.

    Args:
        manifest: Path of the JSON manifest.

    Returns:
        One dict per entry with keys path (resolved), text, task, Q, expand_wav (resolved list), id (the
        path as written) and any extra keys of the entry.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ManifestError: The file or an entry is malformed; the first problem is named, with a count of
            the others (all are in `.issues`).

    Example:
        >>> load_manifest("data/test/demo.json")[0]["task"]
        'asr'
    """
    scan = scan_manifest(manifest, check_audio=False)
    if scan.issues:
        more = len(scan.issues) - 1
        suffix = f" (and {more} more bad entries; list them with scripts/check_manifest.py)" if more else ""
        raise ManifestError(f"{scan.issues[0]}{suffix}", scan.issues)
    return [entry for _, entry in scan.entries]


def validate_manifest(
    manifest: str | os.PathLike, check_audio: bool = True, quick: bool = False
) -> list[ManifestIssue]:
    """Report every problem of a manifest at once instead of stopping at the first.

    Args:
        manifest: Path of the JSON manifest.
        check_audio: Also decode every audio file (see `scan_manifest`).
        quick: Open each audio file's header only instead of decoding it (see `scan_manifest`).

    Returns:
        One issue per bad entry (or a single issue with index None when the file itself is unusable);
        an empty list means the manifest is fine.

    Example:
        >>> for issue in validate_manifest("train.json"):
        ...     print(issue)
    """
    try:
        return scan_manifest(manifest, check_audio=check_audio, quick=quick).issues
    except (FileNotFoundError, ManifestError) as err:
        # The whole-file messages already start with the manifest name; strip it for ManifestIssue.
        message = str(err).removeprefix(f"{manifest}: ")
        return [ManifestIssue(str(manifest), None, None, message)]
