"""Prompts around the speech embeddings, and their tokenisation exactly as the official code does it.

A prompt is ``prompt_template.format("<Speech><SpeechHere></Speech> " + instruction)``, e.g.
``"USER: <Speech><SpeechHere></Speech> \\nASSISTANT:"`` with no instruction (what AHAMask uses). It is split at
``<SpeechHere>``; each half is tokenised on its own with ``add_special_tokens=False`` and the speech
embeddings go in between, after a hand-added BOS.

Tokenisation: the official code uses the slow sentencepiece ``LlamaTokenizer`` of transformers 4.28;
transformers 5 only has the tokenizers-backed one. For text that does not start with a space and has no text
right after a special token (every prompt half and every ``target + "</s>"`` the toolkit builds), the two give
the same ids: sentencepiece's dummy prefix turns the after-part ``"</Speech> \\nASSISTANT:"`` into ``▁</...``
in both. :func:`encode_piece` is the single place where text becomes ids and forces what differs from the
tokenizer's defaults: no special tokens added (BOS is added by the model), no padding, no truncation
unless asked. Tests pin these ids against a sentencepiece emulation of the slow tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEECH_PLACEHOLDER = "<SpeechHere>"
SPEECH_PREFIX = "<Speech><SpeechHere></Speech> "
DEFAULT_TEMPLATE = "USER: {}\nASSISTANT:"

__all__ = [
    "SPEECH_PLACEHOLDER",
    "SPEECH_PREFIX",
    "DEFAULT_TEMPLATE",
    "PromptError",
    "wrap_instruction",
    "split_prompt",
    "encode_piece",
    "load_prompt_file",
]


class PromptError(ValueError):
    """A prompt or prompt file is malformed."""


def wrap_instruction(instruction: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Build the full prompt the official evaluate.py uses: template around ``<Speech>...</Speech> instruction``.

    Example:
        >>> wrap_instruction("")
        'USER: <Speech><SpeechHere></Speech> \\nASSISTANT:'
    """
    return (template or "{}").format(SPEECH_PREFIX + instruction.strip())


def split_prompt(prompt: str) -> tuple[str, str]:
    """Split a wrapped prompt into the text before and after the speech embeddings.

    Raises:
        PromptError: the prompt does not contain exactly one ``<SpeechHere>``.
    """
    if prompt.count(SPEECH_PLACEHOLDER) != 1:
        raise PromptError(f"prompt {prompt!r} must contain exactly one {SPEECH_PLACEHOLDER}")
    before, after = prompt.split(SPEECH_PLACEHOLDER)
    return before, after


def encode_piece(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """Token ids of one prompt half or target, as the official slow tokenizer gives them.

    Args:
        tokenizer: the LLaMA tokenizer.
        text: a prompt half or ``target + end_sym``; empty text gives no ids.
        max_length: truncate to this many ids (the official ``max_txt_len`` for targets).
    """
    if not text:
        return []
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids[:max_length] if max_length else ids)


def load_prompt_file(path: str | Path, template: str) -> dict[str, list[str]]:
    """Read a prompt file (task -> list of templates) and wrap each with ``template``.

    As in the official code, templates without ``<SpeechHere>`` are dropped.

    Raises:
        PromptError: unreadable JSON, not a dict of lists, or a task left with no usable template.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"{path}: no such prompt file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PromptError(f"{path}: expected a JSON object mapping task -> list of prompts")
    prompts: dict[str, list[str]] = {}
    for task, items in raw.items():
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise PromptError(f"{path}: task {task!r} must map to a list of strings")
        kept = [(template or "{}").format(p) for p in items if SPEECH_PLACEHOLDER in p]
        if not kept:
            raise PromptError(f"{path}: task {task!r} has no prompt containing {SPEECH_PLACEHOLDER}")
        prompts[task] = kept
    return prompts
