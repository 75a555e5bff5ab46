"""What Qwen2-Audio and Audio Flamingo 3 share: a transformers ``*ForConditionalGeneration`` behind the
:class:`~ahamask.models.backbone.AudioLLM` protocol.

Both are a Whisper-style audio encoder, a projector and a Qwen2 causal LM whose input embeddings at the audio
placeholder tokens are replaced by the projected audio. ahamask never runs the composite model's forward:
it encodes the audio itself (:meth:`HFAudioLLM.encode_audio`, each subclass with its own length rules) and
gives the LLM ``inputs_embeds`` in which the placeholder is expanded to the clip's audio tokens, exactly the
sequence the transformers processor and ``model.model`` build (tests compare the two).

``decoder`` is a ``*ForCausalLM`` that *shares* the composite model's ``model.model.language_model`` and
``lm_head`` (built on the meta device, so no weight is allocated twice): masks, folds, prunes and analyses see
an ordinary causal LM, and ``decoder.generate(inputs_embeds=...)`` decodes. It is kept outside the module
tree so parameters are not listed twice.

Audio tokens per row differ with the clip's length. :meth:`encode_audio` pads rows to the batch's longest
with all-zero vectors; :func:`audio_token_counts` reads each row's true count back as the position after its
last non-zero row (a projected audio vector is never exactly zero: both projectors end in a biased Linear).
The count therefore travels with the tensor through caches, stacking and slicing, and zero-padding a tensor
further (to stack batches) keeps it right.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..masking.geometry import MaskGeometry, decoder_geometry
from .backbone import PromptInputs
from .beam_search import generate_with_shared_prefill
from .loading import llm_dtype_for, quiet_loading, require_dir

__all__ = ["AudioTooLongError", "HFAudioLLM", "audio_token_counts", "causal_lm_view", "pad_rows"]

SECONDS_PER_AUDIO_TOKEN = 0.04  # 100 mel frames/s, conv stride 2, average pool 2: one token per 40 ms
_SALMONN_SPEECH_TAGS = ("<Speech><SpeechHere></Speech>", "<SpeechHere>")


class AudioTooLongError(ValueError):
    """A clip is longer than the model's audio encoder can take (the message names the limit)."""


def audio_token_counts(speech_embeds: torch.Tensor) -> list[int]:
    """Each row's audio-token count: the position after its last not-all-zero vector (see module docstring)."""
    nonzero = speech_embeds.detach().ne(0).any(dim=-1)  # [batch, tokens]
    positions = torch.arange(1, nonzero.shape[1] + 1, device=nonzero.device)
    return [int(v) for v in (nonzero * positions).amax(dim=1).tolist()]


def pad_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n_i, hidden] rows -> [batch, max n_i, hidden], zero-padded at the end of each row."""
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=0.0)


def causal_lm_view(model: nn.Module) -> nn.Module:
    """A ``*ForCausalLM`` sharing ``model.model.language_model`` and ``model.lm_head`` (no copied weights)."""
    from transformers import AutoModelForCausalLM

    language_model = model.model.language_model
    with torch.device("meta"):  # from_config may set attributes on its config: give it a copy
        lm = AutoModelForCausalLM.from_config(copy.deepcopy(language_model.config))
    lm.model = language_model
    lm.lm_head = model.lm_head
    lm.config = language_model.config  # the one the shared layers read (attention implementation)
    leftovers = [name for name, t in [*lm.named_parameters(), *lm.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"causal_lm_view: {type(lm).__name__} kept unshared tensors {leftovers[:3]}")
    return lm.eval()


class HFAudioLLM(nn.Module):
    """Shared base of the transformers-native backbones; subclasses set the class names and the audio rules.

    Subclasses define ``hf_class`` (the transformers class name), ``audio_placeholder`` (the text the chat
    template writes where the audio goes), ``variants``, :meth:`_encode_rows` and :meth:`_check_front_end`.
    """

    hf_class: str = ""
    audio_placeholder: str = ""
    variants: tuple[str, ...] = ("instruct",)

    def __init__(self, cfg: Any, device: torch.device | str = "cpu") -> None:
        super().__init__()
        import transformers
        from transformers import AutoProcessor

        self.cfg = cfg
        folder = str(require_dir(cfg.model_path, "model_path"))
        if cfg.variant not in self.variants:
            raise ValueError(
                f"model.variant: {cfg.variant!r} is not one of {list(self.variants)} for {cfg.arch}"
            )
        device = torch.device(device)
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        with quiet_loading():
            self.model = getattr(transformers, self.hf_class).from_pretrained(
                folder,
                local_files_only=True,
                dtype=llm_dtype_for(cfg.llm_dtype, device),
                attn_implementation=cfg.attn_implementation,
            )
        self.model.requires_grad_(False).eval().to(device)
        self._views = [causal_lm_view(self.model)]  # a list: outside the module tree (see module docstring)
        self._check_front_end()
        self._ids_cache: dict[str, list[int]] = {}
        self._prompt_dict: dict[str, list[str]] | None = None

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device | str = "cpu") -> HFAudioLLM:
        """Build from a ``model:`` section (``model_path`` a local transformers folder), frozen, in eval mode."""
        from .salmonn import model_config_from

        return cls(model_config_from(cfg), device=device).eval()

    # ------------------------------------------------------------------ protocol properties
    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def decoder(self) -> nn.Module:
        """The causal LM (shared weights) whose heads masks act on."""
        return self._views[0]

    @property
    def geometry(self) -> MaskGeometry:
        geo = self._geometry = getattr(self, "_geometry", None) or decoder_geometry(self.decoder)
        return geo

    @property
    def frozen_front_end(self) -> bool:
        """True: every weight is frozen (``from_config`` freezes the whole model; masks are the only training)."""
        return not any(p.requires_grad for p in self.model.model.audio_tower.parameters())

    @property
    def feature_extractor(self) -> Any:
        """The folder's ``WhisperFeatureExtractor`` (its chunk length and mel settings apply)."""
        return self.processor.feature_extractor

    whisper_feature_extractor = feature_extractor  # the name the speech cache reads for SALMONN

    def speech_cache_key(self) -> str:
        """SHA-256 of the audio tower, projector and feature settings (everything ``encode_audio`` reads)."""
        key = getattr(self, "_speech_key", None)
        if key is None:
            from .frontend import extractor_fingerprint
            from .speech_cache import tensor_digest

            hasher = hashlib.sha256(
                f"{self.hf_class}|{extractor_fingerprint(self.feature_extractor)}".encode()
            )
            for part in ("audio_tower", "multi_modal_projector"):
                for name, tensor in getattr(self.model.model, part).state_dict().items():
                    hasher.update(f"{part}.{name}".encode())
                    tensor_digest(hasher, tensor)
            key = self._speech_key = hasher.hexdigest()
        return key

    # ------------------------------------------------------------------ audio
    def _check_front_end(self) -> None:
        """Raise one line when the folder's feature extractor and encoder disagree (subclasses)."""

    def _encode_rows(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """16 kHz clips -> one [n_tokens, hidden] LLM-space tensor per clip (subclasses)."""
        raise NotImplementedError

    def _expected_frames(self) -> int:
        tower = self.model.model.audio_tower
        expected = 2 * int(tower.config.max_source_positions)
        frames = int(self.feature_extractor.nb_max_frames)
        if frames != expected:
            raise ValueError(
                f"model.model_path: preprocessor_config.json gives {frames} mel frames per window "
                f"(chunk_length {self.feature_extractor.chunk_length} s) but the audio encoder needs exactly "
                f"{expected} (2 x max_source_positions {tower.config.max_source_positions})"
            )
        return frames

    @torch.no_grad()
    def encode_audio(self, samples: Mapping[str, Any]) -> torch.Tensor:
        """``raw_wav`` [batch, samples] (+ ``padding_mask``, True on padding) -> [batch, max_tokens, hidden].

        Rows shorter than the batch's longest are zero-padded (:func:`audio_token_counts` reads the counts).

        Raises:
            AudioTooLongError: a clip exceeds what the encoder takes (one line, with the limit).
        """
        raw = torch.as_tensor(samples["raw_wav"])
        padding = samples.get("padding_mask")
        lengths = (
            (~torch.as_tensor(padding)).sum(1)
            if padding is not None
            else torch.full((len(raw),), raw.shape[1])
        )
        waves = [raw[i, : int(n)].float() for i, n in enumerate(lengths)]
        return pad_rows(self._encode_rows(waves))

    def encode_speech(
        self, spectrogram: Any, raw_wav: torch.Tensor, padding_mask: torch.Tensor | None = None
    ):
        """SALMONN's name, for callers not yet on the protocol (the spectrogram is ignored: no features given)."""
        return self.encode_audio({"raw_wav": raw_wav, "padding_mask": padding_mask})

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        """[n_tokens, 2] seconds: token ``i`` covers ``[0.04 i, 0.04 (i + 1))`` (windows of AF3 included)."""
        start = torch.arange(n_tokens, dtype=torch.float32) * SECONDS_PER_AUDIO_TOKEN
        return torch.stack([start, start + SECONDS_PER_AUDIO_TOKEN], dim=-1)

    # ------------------------------------------------------------------ prompts
    @property
    def stop_tokens(self) -> list[str]:
        """Tokens that end an answer: ``<|im_end|>`` (chat) before ``<|endoftext|>``; the first ends targets."""
        return ["<|endoftext|>"] if self.cfg.variant == "base" else ["<|im_end|>", "<|endoftext|>"]

    def prompt_for(self, instruction: str = "") -> str:
        """The chat template around the audio placeholder; ``""``: the audio alone in the user turn."""
        content: list[dict[str, str]] = [{"type": "audio"}]
        if instruction.strip():
            content.append({"type": "text", "text": instruction.strip()})
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _ids(self, text: str) -> list[int]:
        if text not in self._ids_cache:
            if len(self._ids_cache) > 4096:
                self._ids_cache.clear()
            self._ids_cache[text] = (
                list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
            )
        return self._ids_cache[text]

    def _split(self, prompt: str) -> tuple[list[int], list[int]]:
        if prompt.count(self.audio_placeholder) != 1:
            raise ValueError(f"prompt {prompt!r} must contain exactly one {self.audio_placeholder}")
        before, after = prompt.split(self.audio_placeholder)
        return self._ids(before), self._ids(after)

    def choose_prompts(
        self, samples: Mapping[str, Any], rng: random.Random | None = None
    ) -> list[str] | None:
        """Training prompts from ``prompt_path`` as SALMONN draws them; ``None`` without a prompt file.

        Entries are instructions; SALMONN's ``<Speech><SpeechHere></Speech>`` tags are removed, so the same
        files serve every backbone (the official AHAMask file gives the instruction-free prompt).
        """
        if not self.cfg.prompt_path:
            return None
        if self._prompt_dict is None:
            from .prompts import load_prompt_file

            raw = load_prompt_file(self.cfg.prompt_path, "{}")
            self._prompt_dict = {
                task: [self.prompt_for(_strip_tags(p)) for p in items] for task, items in raw.items()
            }
        draw, tasks = rng if rng is not None else random, list(samples["task"])
        missing = sorted(set(tasks) - set(self._prompt_dict))
        if missing:
            raise KeyError(
                f"task {missing[0]!r} has no prompt in {self.cfg.prompt_path} (tasks: {sorted(self._prompt_dict)})"
            )
        if self.cfg.multi_prompt or len(set(tasks)) > 1 or "QA" in tasks:
            prompts = [draw.choice(self._prompt_dict[t]) for t in tasks]
        else:
            prompts = [draw.choice(self._prompt_dict[tasks[0]])] * len(tasks)
        questions = samples.get("Q")
        if questions is not None:
            prompts = [
                p.replace("{}", q, 1) if "{}" in p else p for p, q in zip(prompts, questions, strict=True)
            ]
        return prompts

    # ------------------------------------------------------------------ inputs
    def _rows(self, counts: list[int], prompts: Sequence[str], targets: Sequence[str] | None):
        """Per row: (ids with -1 at the audio tokens, audio start, number of target ids at the end)."""
        end = self.stop_tokens[0]
        rows = []
        for i, (prompt, n_audio) in enumerate(zip(prompts, counts, strict=True)):
            before, after = self._split(prompt)
            target = self._ids(targets[i] + end)[: self.cfg.max_txt_len] if targets is not None else []
            rows.append(([*before, *[-1] * n_audio, *after, *target], len(before), len(target)))
        return rows

    def build_inputs(
        self,
        speech: torch.Tensor,
        prompts: Sequence[str] | None,
        targets: Sequence[str] | None = None,
        pad_left: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[tuple[int, int]]]:
        """``before + audio + after (+ target + end)`` per row: embeds, attention mask, labels, audio spans."""
        batch = speech.shape[0]
        prompts = list(prompts) if prompts is not None else [self.prompt_for("")] * batch
        if len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
        counts = audio_token_counts(speech)
        rows = self._rows(counts, prompts, targets)
        total = max(len(ids) for ids, _, _ in rows)
        ids = torch.full((batch, total), int(self.tokenizer.pad_token_id), dtype=torch.long)
        attention = torch.zeros(batch, total, dtype=torch.long)
        labels = torch.full((batch, total), -100, dtype=torch.long) if targets is not None else None
        spans = []
        for i, (row, audio_at, n_target) in enumerate(rows):
            shift = total - len(row) if pad_left else 0
            ids[i, shift : shift + len(row)] = torch.tensor(row).clamp(min=0)
            attention[i, shift : shift + len(row)] = 1
            if labels is not None and n_target:
                labels[i, shift + len(row) - n_target : shift + len(row)] = torch.tensor(row[-n_target:])
            spans.append((shift + audio_at, shift + audio_at + counts[i]))
        embeds = self.decoder.get_input_embeddings()(ids.to(self.device))
        for i, (start, stop) in enumerate(spans):
            embeds[i, start:stop] = speech[i, : stop - start].to(embeds)
        labels = labels.to(self.device) if labels is not None else None
        return embeds, attention.to(self.device), labels, spans

    def prompt_inputs(self, speech_embeds: torch.Tensor, prompts: Sequence[str]) -> PromptInputs:
        """Left-padded generation inputs (as :meth:`generate` builds them) and each row's audio span."""
        embeds, attention, _, spans = self.build_inputs(speech_embeds, prompts, None, pad_left=True)
        return PromptInputs(embeds, attention, spans)

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        samples: Mapping[str, Any],
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced cross-entropy of ``text + end token`` (mean over the batch's target tokens)."""
        if speech_embeds is None:
            speech_embeds = self.encode_audio(samples)
        if prompts is None:
            prompts = self.choose_prompts(samples)
        embeds, attention, labels, _ = self.build_inputs(speech_embeds, prompts, samples["text"])
        out = self.decoder(inputs_embeds=embeds, attention_mask=attention, labels=labels, return_dict=True)
        return {"loss": out.loss, "logits": out.logits, "labels": labels}

    def generation_kwargs(self, generate_cfg: Any) -> dict[str, Any]:
        """The ``generate`` section as transformers arguments, stopping at the model's end tokens.

        Raises:
            ValueError: ``beam_scoring: official`` / ``stop_rule: official_row0`` (SALMONN-only emulations).
        """
        from .beam_search import decode_rules, generation_kwargs

        if decode_rules(generate_cfg) != ("transformers", "per_sample"):
            raise ValueError(
                f"generate.beam_scoring / stop_rule: the official emulations exist for SALMONN only, not {self.cfg.arch}"
            )
        return generation_kwargs(
            generate_cfg,
            eos_token_id=self.tokenizer.convert_tokens_to_ids(self.stop_tokens),
            pad_token_id=int(self.tokenizer.pad_token_id),
        )

    @torch.no_grad()
    def generate(
        self,
        samples: Mapping[str, Any],
        generate_cfg: Any = None,
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> list[str]:
        """Decode one answer per row (``None`` prompts: the instruction-free prompt), special tokens removed."""
        if speech_embeds is None:
            speech_embeds = self.encode_audio(samples)
        embeds, attention, _, _ = self.build_inputs(speech_embeds, prompts, None, pad_left=True)
        kwargs = self.generation_kwargs(generate_cfg or {})
        # Beam search: the prompt's prefill runs once per sample, not once per beam.
        out = generate_with_shared_prefill(self.decoder, embeds, attention, **kwargs)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def _strip_tags(entry: str) -> str:
    for tag in _SALMONN_SPEECH_TAGS:
        entry = entry.replace(tag, "")
    return entry.strip()
