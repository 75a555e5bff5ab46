"""Talk to SALMONN from a terminal: one audio file in, one answer out, with or without an AHAMask mask.

Behaviour kept from the official ``cli_inference.py``: the model comes from the decode config; when
``model.weight_mask_path`` is set the mask is binarised with ``sigmoid >= prob_threshold``, its share of
active heads is printed, and only a wav path is asked for (AHAMask masks replace the instruction, so the
prompt carries none); without a mask a prompt is asked for too. In a session each answer is printed after
``Output:``.

Added: a bad path or unreadable audio prints a one-line ``error:`` message and the loop goes on (the
official prints whatever exception text it got); Ctrl-D / Ctrl-C end the session with a goodbye line and
exit code 0; ``--wav`` answers once and exits; ``:mask PATH`` / ``:nomask`` switch masks mid-session; the
audio goes through the dataset front end (:func:`ahamask.data.audio.prepare_audio` + ``collate``), so an
answer here equals the one ``evaluate.py`` writes for the same file; ``model.shuffle_mask`` is honoured as
in ``evaluate.py``; with ``--wav`` only the answer goes to standard output (the mask line, notes and errors go
to standard error), so ``answer=$(python cli_inference.py ... --wav x.wav)`` works; in a terminal session the
typed lines are kept with readline in ``~/.ahamask_history`` (``$AHAMASK_HISTORY`` moves it, an empty value
turns it off; nothing happens where readline is missing, e.g. on Windows). This module is the only library
code that prints: it talks to a person.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..analysis.steering import steering_from_file
from ..config import ConfigError, DecodeConfig, load_decode_config
from ..data.audio import AudioError, load_feature_extractor, prepare_audio
from ..data.collate import collate
from ..evaluation.decode import postprocess, prepare_config_mask
from ..masking.apply import decoding_mask
from ..masking.checkpoint import MaskFileError
from ..masking.mask import MaskShapeError
from ..masking.value import Mask
from ..utils.device import resolve_device
from ..utils.logging import setup_logging

if TYPE_CHECKING:  # the backbone module is only needed for the annotation
    from ..models.backbone import AudioLLM

logger = logging.getLogger(__name__)

__all__ = [
    "ChatSession",
    "chat",
    "main",
    "history_path",
    "line_history",
    "WAV_QUESTION",
    "PROMPT_QUESTION",
    "HELP",
]

# The official questions, kept verbatim so that scripts written against it keep working.
WAV_QUESTION = "Your Wav Path:\n"
PROMPT_QUESTION = "Your Prompt:\n"
SEPARATOR = "=" * 37
GOODBYE = "Bye."
HELP = """Type the path of an audio file (any format libsndfile reads; resampled to 16 kHz), or a command:
  :mask PATH   apply another mask (released .pth or .safetensors); no prompt is asked while a mask is on
  :nomask      drop the mask: the official SALMONN, which needs a prompt
  :help        this text
  :quit        leave (also !quit, Ctrl-D, Ctrl-C)"""
_QUIT = {":quit", ":q", ":exit", "!quit", "!exit"}
# What bad user input raises: missing files (OSError), undecodable audio and masks that do not fit
# (ValueError subclasses). Anything else is a bug and is not swallowed.
_INPUT_ERRORS = (OSError, ValueError)
HISTORY_ENV = "AHAMASK_HISTORY"
DEFAULT_HISTORY = "~/.ahamask_history"
_HISTORY_LENGTH = 1000


def history_path() -> Path | None:
    """Where the session's typed lines are kept: ``$AHAMASK_HISTORY``, else ``~/.ahamask_history``.

    Returns:
        The file, or None when ``$AHAMASK_HISTORY`` is set but empty (no history kept).
    """
    value = os.environ.get(HISTORY_ENV, DEFAULT_HISTORY)
    return Path(value).expanduser() if value.strip() else None


@contextlib.contextmanager
def line_history(path: str | os.PathLike | None) -> Iterator[Any]:
    """Readline history for ``input()``: read from ``path`` on entry, written back on exit.

    Up/down arrows then recall the wav paths and prompts of earlier sessions. A missing or unreadable file
    starts an empty history; a file that cannot be written is a warning, never a crash of the chat.

    Args:
        path: the history file, or None for none.

    Yields:
        The ``readline`` module, or None when there is no path or readline is not available.
    """
    try:
        import readline
    except ImportError:  # Windows and some minimal Pythons have no readline: plain input() then
        readline = None
    if readline is None or path is None:
        yield None
        return
    path = Path(path)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(_HISTORY_LENGTH)
    try:
        yield readline
    finally:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError as exc:
            logger.warning("chat history not saved to %s: %s", path, exc)


def _one_line(exc: BaseException) -> str:
    """An exception as a single line (libsndfile and omegaconf messages may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _clean_path(text: str) -> str:
    """A path as typed: surrounding quotes (terminal drag-and-drop adds them) removed, ``~`` expanded."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return os.path.expanduser(text)


class ChatSession:
    """A loaded model, its audio front end and the mask currently applied; answers one file at a time.

    Args:
        model: the backbone in eval mode (an :class:`~ahamask.models.backbone.AudioLLM`, e.g. SALMONN).
        cfg: the decode config (``generate``, ``prob_threshold`` and the ``model.shuffle_mask*`` keys are read).
        feature_extractor: the Whisper front end of ``cfg.model.whisper_path``.

    Example:
        >>> session = ChatSession(model, cfg, load_feature_extractor(cfg.model.whisper_path))
        >>> session.load_mask("legacy_checkpoints/gender_librispeech/checkpoint.pth")
        >>> session.answer("question.wav")
        'Male'
    """

    def __init__(self, model: AudioLLM, cfg: DecodeConfig, feature_extractor: Any) -> None:
        self.model = model
        self.cfg = cfg
        self.feature_extractor = feature_extractor
        self.mask_path: str | None = None
        self.weights: Mask | None = None  # 0/1 gates, on the model's device

    @property
    def masked(self) -> bool:
        """Whether a mask is applied (then no instruction is asked for)."""
        return self.weights is not None

    def load_mask(self, path: str | os.PathLike) -> str:
        """Apply the mask in ``path`` from now on; the current mask stays if this one cannot be used.

        Args:
            path: a released ``.pth`` mask or a ``.safetensors`` one.

        Returns:
            A line describing the mask, e.g. ``"... 75.0% of attention heads active (6/8) ..."``.

        Raises:
            MaskFileError: the file is missing or unreadable.
            MaskShapeError: the mask was made for another model (both geometries named).
        """
        model, cfg = self.model, self.cfg
        mask = prepare_config_mask(cfg, model, path)
        binary = mask.values
        # Counted on the applied 0/1 mask, so a shuffled mask reports what is really used (the same counts).
        heads = int(mask.head_gates().sum())
        n_heads = model.geometry.n_layers * model.geometry.n_heads
        self.weights, self.mask_path = mask.to(model.device), str(path)
        shuffled = " (shuffled: random-mask ablation)" if cfg.model.shuffle_mask else ""
        return (
            f"Using weight mask from {path}{shuffled}. After thresholding at {cfg.prob_threshold:g}, "
            f"{100.0 * heads / n_heads:.1f}% of attention heads are active ({heads}/{n_heads}); "
            f"{100.0 * float(binary.sum()) / binary.numel():.1f}% of all {binary.numel()} entries incl. "
            "FFN gates (the official figure)."
        )

    def drop_mask(self) -> None:
        """Go back to the official model (no mask)."""
        self.weights = self.mask_path = None

    @torch.no_grad()
    def answer(self, wav: str | os.PathLike, instruction: str = "") -> str:
        """Decode one answer for one audio file.

        Args:
            wav: the audio file; shorter than 1 s is zero-padded, longer than the Whisper chunk is cut.
            instruction: the text after the speech (``""`` with a mask, as AHAMask is trained).

        Returns:
            The answer, cleaned up as ``evaluate.py`` does (stripped, newlines to spaces, no ``</s>``).

        Raises:
            FileNotFoundError: no such file.
            AudioError: the file gives no usable waveform (the message names it).
        """
        spectrogram, raw_wav = prepare_audio(wav, self.feature_extractor, resampler=self.cfg.resampler)
        # The same batch dictionary a dataset gives, so the padding mask (BEATs) and shapes match evaluate.py.
        sample = dict(spectrogram=spectrogram, raw_wav=raw_wav, text="", task="", Q="", id=str(wav))
        samples = collate([sample])
        prompt = self.model.prompt_for(instruction)
        steering = steering_from_file(self.model, self.cfg.steering_path, self.cfg.steering_strength)
        with decoding_mask(self.model.decoder, self.weights, "hooks"), steering:
            answers = self.model.generate(samples, self.cfg.generate, prompts=[prompt])
        return postprocess(answers[0])


def _command(session: ChatSession, line: str, output: Callable[[str], Any]) -> bool:
    """Run a ``:command``; returns False when the session should end."""
    word, _, arg = line.partition(" ")
    word = word.lower()
    if word in _QUIT:
        return False
    if word == ":help":
        output(HELP)
    elif word == ":nomask":
        session.drop_mask()
        output("Mask dropped: the official SALMONN; a prompt will be asked for.")
    elif word == ":mask":
        if not arg.strip():
            output("usage: :mask PATH")
            return True
        try:
            output(session.load_mask(_clean_path(arg)))
        except _INPUT_ERRORS as exc:
            kept = f"still using {session.mask_path}" if session.masked else "still no mask"
            output(f"error: {_one_line(exc)} ({kept})")
    else:
        output(f"unknown command {word!r} (type :help)")
    return True


def _loop(session: ChatSession, input_fn: Callable[[str], str], output: Callable[[str], Any]) -> int:
    """The official loop: wav path, prompt when no mask is on, answer; until EOF, Ctrl-C or :quit."""
    output("Type :help for commands.")
    try:
        while True:
            output(SEPARATOR)
            line = input_fn(WAV_QUESTION).strip()
            if not line:
                continue
            # "!quit" too: the quit word of litgpt-style REPLs, which users may type out of habit.
            if line.startswith((":", "!")):
                if not _command(session, line, output):
                    break
                continue
            instruction = "" if session.masked else input_fn(PROMPT_QUESTION)
            try:
                answer = session.answer(_clean_path(line), instruction)
            except _INPUT_ERRORS as exc:
                output(f"error: {_one_line(exc)}")
                continue
            output("Output:")
            output(answer)
    except (EOFError, KeyboardInterrupt):
        # Ctrl-D / Ctrl-C mean "I am done", not a failure: the terminal line is finished first.
        output("")
    output(GOODBYE)
    return 0


def chat(
    cfg: DecodeConfig,
    device: str | None = None,
    wav: str | None = None,
    prompt: str | None = None,
    input_fn: Callable[[str], str] = input,
    output: Callable[[str], Any] = print,
    info: Callable[[str], Any] | None = None,
) -> int:
    """Load the model of a decode config and answer questions about audio files.

    Args:
        cfg: the decode config; ``model.weight_mask_path`` (if set) is applied from the start.
        device: ``auto``, ``cpu``, ``cuda[:i]`` or ``npu[:i]``; ``None`` uses ``cfg.device``.
        wav: answer for this file once and return (one-shot use) instead of starting the loop.
        prompt: the instruction for ``wav``; by default ``cfg.prompt`` without a mask and none with one.
        input_fn: reads a line after showing a question (tests pass a fake; EOFError ends the loop). The
            terminal's own ``input`` keeps a readline history (:func:`line_history`, :func:`history_path`).
        output: shows a line to the user: the whole conversation in a session, only the answer with ``wav``.
        info: shows the other lines of a one-shot answer (mask line, notes, errors); default: standard
            error, so standard output carries the answer alone. In a session everything goes to ``output``.

    Returns:
        The exit code: 0, or 1 when the one-shot file could not be read.

    Raises:
        ValueError: a device that does not exist.
        MaskFileError, MaskShapeError: ``model.weight_mask_path`` cannot be used (no silent fallback).
        FileNotFoundError: a model path of the config is missing.

    Example:
        >>> chat(load_decode_config("configs/decode_config.yaml"), wav="question.wav")
    """
    from ..models.backbone import build_backbone  # the model stack imports transformers: loaded on use

    # Seeded as evaluate.py seeds, so sampled decoding (generate.do_sample) answers as it does there.
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.model, device=resolve_device(device or cfg.device)).eval()
    session = ChatSession(model, cfg, load_feature_extractor(cfg.model.front_end_path()))
    if wav is not None:
        info = info or (lambda line: print(line, file=sys.stderr))
    else:
        info = output
    if cfg.model.weight_mask_path:
        info(session.load_mask(cfg.model.weight_mask_path))
    else:
        info("Not using a weight mask: the official SALMONN, which needs a prompt.")
    if wav is None:
        return _session(session, input_fn, output)
    return _one_shot(session, wav, prompt, cfg.prompt, output, info)


def _session(session: ChatSession, input_fn: Callable[[str], str], output: Callable[[str], Any]) -> int:
    """The interactive loop, with a readline history only for a person at a terminal: a fake input or
    piped lines have nothing to recall."""
    at_terminal = input_fn is builtins.input and sys.stdin is not None and sys.stdin.isatty()
    with line_history(history_path() if at_terminal else None):
        return _loop(session, input_fn, output)


def _one_shot(
    session: ChatSession,
    wav: str,
    prompt: str | None,
    default_prompt: str,
    output: Callable[[str], Any],
    info: Callable[[str], Any],
) -> int:
    """Answer ``wav`` once: the answer alone goes to ``output`` (so it can be piped), notes and errors to
    ``info``; 1 when the file could not be read. Without a ``prompt``, ``default_prompt`` (the config's) is
    asked unless a mask is on."""
    if prompt is None:
        prompt = "" if session.masked else default_prompt
    elif session.masked and prompt.strip():
        info("note: the mask was trained with no instruction; the given prompt is used anyway")
    try:
        answer = session.answer(_clean_path(wav), prompt)
    except _INPUT_ERRORS as exc:
        info(f"error: {_one_line(exc)}")
        return 1
    output(answer)
    return 0


def main(args: argparse.Namespace) -> int:
    """The body of ``cli_inference.py``: config errors and unusable masks become one line and exit code 2.

    Args:
        args: ``cfg_path``, ``options``, ``device``, ``wav`` and ``prompt`` from the command line.

    Returns:
        The process exit code.
    """
    # Warnings only: INFO records (the mask line that is printed anyway, decoding details) would interleave
    # with the conversation. Model loading is the exception: with a 13B model it takes minutes, and the
    # lines saying what loads from where (on standard error) show that something is happening.
    setup_logging(logging.WARNING, rank=0)
    logging.getLogger("ahamask.models").setLevel(logging.INFO)
    if args.prompt is not None and args.wav is None:
        print("error: --prompt needs --wav (in a session the prompt is asked for)", file=sys.stderr)
        return 2
    try:
        cfg = load_decode_config(args.cfg_path, args.options)
        return chat(cfg, device=args.device, wav=args.wav, prompt=args.prompt)
    except (ConfigError, MaskFileError, MaskShapeError, AudioError, FileNotFoundError, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
