"""What ahamask needs from an audio-language model: one small protocol, and the registry of backbones.

The trainer, evaluator, sweep, chat and the analyses (listening probe, steering) talk to a model only
through :class:`AudioLLM`; nothing outside ``ahamask/models/`` names a concrete backbone. A new LALM family
is one module under ``models/`` implementing the protocol plus its tiny bundle, and one line in
:data:`BACKBONES`.

The contract, in the order a run uses it:

* ``from_config(cfg.model, device)`` builds the model frozen and in eval mode;
* ``geometry`` and ``decoder``: the causal LM whose attention heads masks act on (hooks, fold and prune
  only read ``decoder`` through :mod:`ahamask.masking.hf_layout`);
* ``encode_audio(samples)``: a collated batch -> ``[batch, n_audio_tokens, hidden]`` LLM input
  embeddings of the audio; everything it runs is frozen, so the result can be cached
  (:mod:`ahamask.models.speech_cache`, keyed by ``speech_cache_key``);
* ``prompt_for(instruction)``: the full prompt text with its audio placeholder; ``prompt_for("")`` is the
  instruction-free prompt AHAMask trains and decodes with;
* ``forward(samples, prompts, speech_embeds)``: teacher-forced loss; ``generate(...)``: decoded strings;
* ``prompt_inputs(speech_embeds, prompts)``: the left-padded LLM inputs of a generation batch with the
  position of each row's audio tokens, for analyses that read or steer the decoder themselves;
* ``audio_token_times(n_tokens)``: the time span each audio token covers (temporal read-outs).

Masks never travel through these methods: a run attaches them to ``decoder`` once
(:mod:`ahamask.masking.apply`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..masking.geometry import MaskGeometry

__all__ = [
    "AudioLLM",
    "MaskGeometry",
    "PromptInputs",
    "BACKBONES",
    "backbone_class",
    "build_backbone",
    "pad_audio_rows",
]


@dataclass
class PromptInputs:
    """Left-padded LLM inputs of a generation batch and where each row's audio tokens sit.

    Attributes:
        embeds: [batch, length, hidden] input embeddings.
        attention_mask: [batch, length] (0 on left padding).
        audio_spans: per row ``(start, end)``: positions ``start <= p < end`` hold the audio tokens.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    audio_spans: list[tuple[int, int]]


@runtime_checkable
class AudioLLM(Protocol):
    """The interface every backbone implements (SALMONN, Qwen2-Audio, Audio Flamingo 3, test doubles)."""

    cfg: Any
    geometry: MaskGeometry

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device | str = "cpu") -> AudioLLM: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def decoder(self) -> nn.Module:
        """The causal LM (possibly peft-wrapped) whose decoder layers masks and analyses hook."""
        ...

    @property
    def frozen_front_end(self) -> bool:
        """True when nothing before the LLM trains (mask training: always), so audio embeddings can be cached."""
        ...

    def speech_cache_key(self) -> str:
        """Digest of everything ``encode_audio`` depends on besides the audio (weights, feature settings)."""
        ...

    def encode_audio(self, samples: Mapping[str, Any]) -> torch.Tensor:
        """A collated batch -> [batch, n_audio_tokens, hidden] audio embeddings in the LLM's input space."""
        ...

    def prompt_for(self, instruction: str = "") -> str:
        """The prompt around the audio placeholder; ``""`` gives the instruction-free prompt."""
        ...

    def choose_prompts(self, samples: Mapping[str, Any], rng: Any = None) -> list[str] | None:
        """Training prompts for a batch (``None``: the instruction-free prompt for every row)."""
        ...

    def forward(
        self,
        samples: Mapping[str, Any],
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "logits", "labels"}``: teacher-forced cross-entropy of ``samples["text"]``."""
        ...

    def generate(
        self,
        samples: Mapping[str, Any],
        generate_cfg: Any = None,
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> list[str]:
        """One decoded answer per row (special tokens removed)."""
        ...

    def prompt_inputs(self, speech_embeds: torch.Tensor, prompts: Sequence[str]) -> PromptInputs:
        """The left-padded generation inputs with each row's audio span."""
        ...

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        """[n_tokens, 2] start and end second of the audio each token summarises."""
        ...


#: ``model.arch`` -> ``module:Class`` (imported on use, so a backbone's optional dependencies load only
#: when it is configured).
BACKBONES: dict[str, str] = {
    "salmonn": "ahamask.models.salmonn:SALMONN",
    "qwen2_audio": "ahamask.models.qwen2_audio:Qwen2Audio",
    "audio_flamingo3": "ahamask.models.audio_flamingo3:AudioFlamingo3",
}


def backbone_class(arch: str) -> type:
    """The class registered for ``model.arch``.

    Raises:
        ValueError: an unknown arch, naming the key and the known ones.
    """
    if arch not in BACKBONES:
        raise ValueError(f"model.arch: {arch!r} is not one of {sorted(BACKBONES)}")
    module, name = BACKBONES[arch].split(":")
    return getattr(importlib.import_module(module), name)


def build_backbone(cfg: Any, device: torch.device | str = "cpu") -> AudioLLM:
    """Build the backbone named by ``cfg.arch`` (``salmonn`` when the section has no ``arch``)."""
    arch = cfg.get("arch", "salmonn") if isinstance(cfg, Mapping) else getattr(cfg, "arch", "salmonn")
    return backbone_class(arch or "salmonn").from_config(cfg, device=device)


def pad_audio_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``[n_i, hidden]`` audio embeddings (or ``[batch_i, n_i, hidden]`` chunks, concatenated) into one
    batch, zero-padding the token axis to the longest.

    Backbones whose clips give different audio-token counts (Qwen2-Audio, AF3) pad with zero vectors and read
    each row's count back as the position after its last non-zero vector, so padding here keeps the counts;
    SALMONN's rows all have the same length and come back exactly stacked.
    """
    longest = max(r.shape[-2] for r in rows)
    padded = [torch.nn.functional.pad(r, (0, 0, 0, longest - r.shape[-2])) for r in rows]
    return torch.cat(padded) if rows[0].dim() == 3 else torch.stack(padded)
