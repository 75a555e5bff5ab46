"""The error boundary of the entry points: one line on stderr and an exit code, never a traceback.

Everything a user can get wrong (a config key, a manifest entry, a mask or checkpoint file, an output
path) raises an exception whose message names the culprit. ``train.py``, ``evaluate.py`` and
``cli_inference.py`` run their body through :func:`run_cli`, which turns any exception into ``error: ...``
on one line and exit code 2 (config and usage) or 1 (everything else), and Ctrl-C into one line and 130.
Library text is cut to what helps: a DataLoader worker's wrapping is removed, and torch's advice to
retry with ``weights_only=False`` (which would run the code in a malicious file) is replaced by what the
file is. ``--debug`` or ``AHAMASK_DEBUG=1`` lets the exception through with its full traceback.

This module imports nothing heavy, so ``--help`` and config errors answer before torch is loaded.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

__all__ = [
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "debug_requested",
    "describe_torch_load_error",
    "exit_code_for",
    "one_line",
    "run_cli",
]

EXIT_INPUT = 1
"""An input, an output location or the run itself failed (manifest, mask, checkpoint, output path)."""
EXIT_USAGE = 2
"""The command line or the config is wrong (argparse uses 2 as well)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT), as shells report it."""

DEBUG_ENV = "AHAMASK_DEBUG"

# Exception classes (by name, so that nothing has to be imported to classify) that mean "bad usage".
_USAGE_ERRORS = {"ConfigError", "ArgumentError"}
# Classes whose messages are written for users; anything else is named by its type, with the --debug hint.
_USER_ERRORS = {
    "ValueError",
    "OSError",
    "CheckpointKeyError",
    "NonFiniteLossError",
    "UnpicklingError",
    "EOFError",
}
_MAX_CHARS = 600


def debug_requested(flag: bool = False) -> bool:
    """Whether to show full tracebacks: the ``--debug`` flag or ``AHAMASK_DEBUG`` set to anything but 0/false."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _unwrap_worker(text: str) -> str:
    """The original message of an error that torch's DataLoader re-raised from a worker process.

    torch re-raises ``ExcType("Caught ExcType in DataLoader worker process 0.\\nOriginal Traceback ...")``;
    the last line of that traceback is ``module.ExcType: original message``.
    """
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    match = re.match(r"^[\w.]+: (.*)$", lines[-1].strip())
    return match.group(1) if match else lines[-1].strip()


def describe_torch_load_error(exc: BaseException) -> str:
    """What a failed ``torch.load(..., weights_only=True)`` says about the file, in a few words.

    torch's own text runs to 7-9 lines and ends by suggesting ``weights_only=False``, which would execute
    whatever code the file carries; ahamask never does that, so the advice is dropped.

    Args:
        exc: the exception ``torch.load`` raised.

    Returns:
        One line, e.g. ``"it holds code, not only weights (unsupported GLOBAL posix.system); only
        weights-only files are read"``.

    Example:
        >>> describe_torch_load_error(EOFError())
        'the file is empty or cut short'
    """
    return _describe_torch_text(str(exc), type(exc).__name__)


def _describe_torch_text(text: str, kind: str = "") -> str:
    refused = "only weights-only files are read, as code in a downloaded file could run"
    glob = re.search(r"unsupported GLOBAL ([\w.]+)", text, flags=re.IGNORECASE)
    if glob:
        return f"it holds code, not only weights (unsupported GLOBAL {glob.group(1)}); {refused}"
    if "Weights only load failed" in text:
        return f"not a weights-only torch file (a plain pickle or one that holds code); {refused}"
    if kind == "EOFError" or "Ran out of input" in text:
        return "the file is empty or cut short"
    if "PytorchStreamReader" in text or "central directory" in text:
        return "a corrupt or truncated torch file (its zip archive is unreadable)"
    if "invalid load key" in text or kind in ("KeyError", "UnpicklingError"):
        return "not a torch checkpoint (unrecognised content)"
    return " ".join(text.split())


def _clean_torch_advice(text: str) -> str:
    """Replace torch's weights-only failure text embedded in another message by a short description."""
    start = text.find("Weights only load failed")
    if start < 0:
        return text
    head = text[:start].rstrip(" (:")
    reason = _describe_torch_text(text[start:])
    return f"{head} ({reason})" if head else reason


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line that names the culprit, with library noise removed.

    Args:
        exc: any exception that reached an entry point.

    Returns:
        The message (worker wrapping removed, torch advice replaced, whitespace collapsed, notes added in
        parentheses); for an unexpected exception type its class name and the ``--debug`` hint are added.
    """
    text = _unwrap_worker(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    text = " ".join(_clean_torch_advice(text).split())
    names = _class_names(exc)
    if not text:
        text = type(exc).__name__
    elif not names & (_USER_ERRORS | _USAGE_ERRORS):
        text = f"{type(exc).__name__}: {text} (run with --debug or {DEBUG_ENV}=1 for the traceback)"
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS - 3] + "..."
    for note in getattr(exc, "__notes__", ()):
        text += f" ({' '.join(str(note).split())})"
    return text


def exit_code_for(exc: BaseException) -> int:
    """2 for config and usage errors, 130 for Ctrl-C, 1 for everything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if _class_names(exc) & _USAGE_ERRORS else EXIT_INPUT


def run_cli(body: Callable[[], int | None], debug: bool = False) -> int:
    """Run an entry point's body and turn any exception into one stderr line and an exit code.

    Args:
        body: does the work; returns an exit code or None (0).
        debug: let exceptions through with their traceback (also with ``AHAMASK_DEBUG=1``).

    Returns:
        The process exit code: the body's, 1 or 2 on an error, 130 on Ctrl-C.

    Example:
        >>> sys.exit(run_cli(lambda: train(cfg), debug=args.debug))  # doctest: +SKIP
    """
    debug = debug_requested(debug)
    try:
        return int(body() or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        if debug:
            raise
        detail = " ".join(str(exc).split()) or "stopped by Ctrl-C"  # what was kept, when the body says
        print(f"interrupted: {detail}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # the boundary: every error ends here as one line
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        return exit_code_for(exc)
