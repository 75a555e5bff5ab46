"""SALMONN as used by AHAMask: Whisper (+ BEATs) -> window-level Q-Former -> LLaMA with LoRA.

Attribute names follow the official ``models/salmonn.py`` so that official checkpoints load by key
(``speech_Qformer``, ``speech_query_tokens``, ``speech_llama_proj``, ``ln_speech``, ``ln_audio``,
``llama_model``, ``beats``). Head masks are not arguments of ``forward`` / ``generate``: a run attaches them
to :attr:`SALMONN.decoder` once (hooks, folded weights or pruned heads: :mod:`ahamask.masking.apply`), which
replaces the official forked ``modeling_llama.py``. Where this module departs from the official behaviour it says so:

* each sample's sequence is packed without inner padding (the official pads prompt halves to the batch's
  longest, leaving pad tokens between prompt and target); identical when prompts have the same length,
  which is always the case for AHAMask's instruction-free prompt;
* generation left-pads and lets every sample run to its own EOS (the official stops the whole batch when
  row 0 ends), so the batch size never changes an answer; ``generate.stop_rule: official_row0`` keeps the
  official rule and ``generate.beam_scoring: official`` transformers 4.28's beam scoring, for comparisons
  (:mod:`ahamask.models.beam_search`);
* the ``[PAD]`` row added to the embeddings is the mean of the existing rows, not random at every load;
* it runs on CPU in float32 (the official hard-codes CUDA and fp16).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..masking.geometry import MaskGeometry, decoder_geometry
from ..masking.hooks import model_geometry
from .backbone import PromptInputs
from .beam_search import (
    Row0StoppingCriteria,
    StoppingCriteriaList,
    decode_rules,
    generate_with_shared_prefill,
    generation_kwargs,
    official_beam_kwargs,
    official_beam_search,
)
from .loading import load_llm, load_tokenizer, load_whisper_encoder, weights_size
from .prompts import encode_piece, load_prompt_file, split_prompt, wrap_instruction
from .qformer import build_qformer, official_name

logger = logging.getLogger(__name__)

__all__ = ["SALMONN", "model_config_from"]

# The official window arithmetic assumes Whisper's 1500 encoder frames per 30 s (50 frames/s).
_ENCODER_FRAMES_PER_30S = 1500


def model_config_from(cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """Accept a ``ModelConfig``, a dict or an OmegaConf node (validated against the schema)."""
    if isinstance(cfg, ModelConfig):
        return cfg
    from omegaconf import OmegaConf

    from ..config import ConfigError

    base = OmegaConf.structured(ModelConfig)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(dict(cfg) if not OmegaConf.is_config(cfg) else cfg))
        return OmegaConf.to_object(merged)
    except Exception as exc:  # omegaconf's errors: unknown key, bad type, missing value
        raise ConfigError(f"model config: {str(exc).splitlines()[0]}") from None


def _id_grid(rows_before: list[list[int]], rows_after: list[list[int]], pad_id: int) -> torch.Tensor:
    """``[batch, 2, width]`` ids (before-part, after-part), padded with ``pad_id``, so all the text of a
    batch is embedded in one lookup."""
    width = max(max(len(b) for b in rows_before), max(len(a) for a in rows_after), 1)
    ids = torch.full((len(rows_before), 2, width), pad_id, dtype=torch.long)
    for i, (b, a) in enumerate(zip(rows_before, rows_after, strict=True)):
        ids[i, 0, : len(b)] = torch.tensor(b, dtype=torch.long)
        ids[i, 1, : len(a)] = torch.tensor(a, dtype=torch.long)
    return ids


class SALMONN(nn.Module):
    """The SALMONN speech-language model with head-mask support.

    Build it with :meth:`from_config`; ``forward`` gives the training loss, ``generate`` decodes.
    """

    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        device = torch.device(device)
        self.llama_tokenizer = load_tokenizer(cfg.llama_path)
        self.llama_model = load_llm(cfg, self.llama_tokenizer, device)
        self.n_layers, self.n_heads, _ = model_geometry(self.llama_model)

        self.speech_encoder = load_whisper_encoder(cfg.whisper_path)
        self.ln_speech = nn.LayerNorm(self.speech_encoder.config.d_model)
        if cfg.freeze_whisper:
            self.speech_encoder.requires_grad_(False).eval()
        speech_width = self.speech_encoder.config.d_model

        self.beats = None
        if cfg.beats_path:
            from .beats import load_beats  # BEATs is optional: imported only when configured

            logger.info("loading BEATs from %s (%s)", cfg.beats_path, weights_size(cfg.beats_path))
            self.beats = load_beats(cfg.beats_path)
            self.ln_audio = nn.LayerNorm(self.beats.cfg.encoder_embed_dim)
            if cfg.freeze_beats:
                self.beats.requires_grad_(False).eval()
            speech_width += self.beats.cfg.encoder_embed_dim

        self.speech_Qformer = build_qformer(
            cfg.qformer_hidden_size,
            cfg.qformer_num_heads,
            cfg.qformer_intermediate_size,
            cfg.qformer_num_layers,
            encoder_width=speech_width,
        )
        qcfg = self.speech_Qformer.config
        self.speech_query_tokens = nn.Parameter(
            torch.zeros(1, cfg.num_speech_query_token, qcfg.hidden_size).normal_(0.0, qcfg.initializer_range)
        )
        if cfg.freeze_speech_QFormer:
            self.speech_Qformer.requires_grad_(False).eval()
            self.speech_query_tokens.requires_grad_(False)
        self.speech_llama_proj = nn.Linear(qcfg.hidden_size, self.llama_model.config.hidden_size)
        if cfg.speech_llama_proj_model:
            from .checkpoint import load_projection

            load_projection(self, cfg.speech_llama_proj_model)
        if cfg.freeze_speech_llama_proj:
            self.speech_llama_proj.requires_grad_(False).eval()

        self.window = round(_ENCODER_FRAMES_PER_30S * cfg.second_per_window / 30.0)
        self.stride = round(_ENCODER_FRAMES_PER_30S * cfg.second_stride / 30.0)
        self.prompt_dict = load_prompt_file(cfg.prompt_path, cfg.prompt_template) if cfg.prompt_path else {}
        self.autocast_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.autocast_dtype]
        self._piece_cache: dict[tuple[str, int | None], list[int]] = {}
        self.to(device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: ModelConfig | Mapping[str, Any], device: torch.device | str = "cpu") -> SALMONN:
        """Build the model from a ``model:`` config section and load ``ckpt`` when set.

        The model comes back in eval mode (dropout off in the LoRA layers and the Q-Former), so two calls
        give the same greedy answers; training code that wants dropout calls ``.train()`` itself (the mask
        trainer keeps eval mode, as the official).

        Args:
            cfg: the ``model`` section (``ModelConfig``, dict or OmegaConf node).
            device: where the model runs; decides the LLM dtype when ``llm_dtype`` is ``auto``.

        Returns:
            The model on ``device``, in eval mode.

        Raises:
            FileNotFoundError: a configured path does not exist (the message names the config key).
            CheckpointKeyError: ``ckpt`` has missing or unexpected keys.

        Example:
            >>> model = SALMONN.from_config(load_decode_config("decode_config.yaml").model, device="cuda")
        """
        cfg = model_config_from(cfg)
        started = time.perf_counter()
        model = cls(cfg, device=device)
        if cfg.ckpt:
            from .checkpoint import load_salmonn_checkpoint

            load_salmonn_checkpoint(model, cfg.ckpt)
        logger.info(
            "SALMONN ready in %.1f s: LLM of %d layers x %d heads on %s",
            time.perf_counter() - started,
            model.n_layers,
            model.n_heads,
            model.device,
        )
        return model.eval()

    @property
    def device(self) -> torch.device:
        return self.speech_llama_proj.weight.device

    @property
    def decoder(self) -> nn.Module:
        """The LLaMA (peft-wrapped with LoRA) whose heads masks act on (the backbone interface)."""
        return self.llama_model

    @property
    def geometry(self) -> MaskGeometry:
        """Layers, query heads, KV heads and head size of the LLM."""
        geo = self._geometry = getattr(self, "_geometry", None) or decoder_geometry(self.llama_model)
        return geo

    @property
    def frozen_front_end(self) -> bool:
        """True when Whisper, BEATs, the Q-Former and the projection all are frozen (mask training)."""
        return not any(
            p.requires_grad for n, p in self.named_parameters() if not n.startswith("llama_model.")
        )

    def speech_cache_key(self) -> str:
        """SHA-256 of the front-end weights and window settings (:func:`.speech_cache.model_fingerprint`)."""
        from .speech_cache import model_fingerprint

        return model_fingerprint(self)

    def encode_audio(self, samples: Mapping[str, Any]) -> torch.Tensor:
        """The backbone interface's audio encoder: :meth:`encode_speech` of a collated batch."""
        return self.encode_speech(
            samples.get("spectrogram"), samples.get("raw_wav"), samples.get("padding_mask")
        )

    def prompt_inputs(self, speech_embeds: torch.Tensor, prompts: Sequence[str]) -> PromptInputs:
        """Left-padded generation inputs (as :meth:`generate` builds them) and each row's speech span."""
        embeds, attention, _ = self.build_inputs(speech_embeds, prompts, None, pad_left=True)
        total, n_speech = embeds.shape[1], speech_embeds.shape[1]
        spans = []
        for i, prompt in enumerate(prompts):
            before, after = split_prompt(prompt)
            pad = total - int(attention[i].sum())
            start = pad + 1 + len(self._encode_cached(before))  # [BOS] + the text before <SpeechHere>
            spans.append((start, start + n_speech))
        return PromptInputs(embeds, attention, spans)

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        """[n_tokens, 2] seconds: each Q-Former window gives ``num_speech_query_token`` tokens; windows start every
        ``stride`` encoder frames and span ``window`` frames (``second_stride`` / ``second_per_window`` rounded
        to frames, 0.34 s for the official 0.333333 s)."""
        queries = max(self.cfg.num_speech_query_token, 1)
        window = torch.arange(n_tokens) // queries
        # The windows advance by whole encoder frames (50 per second), as encode_auditory_features cuts them.
        per_frame = 30.0 / _ENCODER_FRAMES_PER_30S
        start = window * self.stride * per_frame
        return torch.stack([start, start + self.window * per_frame], dim=-1).float()

    @property
    def mask_size(self) -> int:
        """Length of a mask vector for this model: ``n_layers * (n_heads + 1)``."""
        return self.n_layers * (self.n_heads + 1)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] ids -> [batch, tokens, hidden] LLM input embeddings."""
        return self.llama_model.get_input_embeddings()(ids)

    def maybe_autocast(self) -> contextlib.AbstractContextManager:
        """fp16/bf16 autocast on an accelerator, as the official; nothing on CPU."""
        if self.device.type == "cpu":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ speech side
    @property
    def whisper_feature_extractor(self) -> Any:
        """The ``WhisperFeatureExtractor`` of ``model.whisper_path`` (loaded on first use, then kept).

        Raises:
            FileNotFoundError: ``model.whisper_path`` has no ``preprocessor_config.json``.
        """
        extractor = getattr(self, "_whisper_feature_extractor", None)
        if extractor is None:
            from ..data.audio import load_feature_extractor

            extractor = self._whisper_feature_extractor = load_feature_extractor(self.cfg.whisper_path)
        return extractor

    def whisper_features(self, raw_wav: torch.Tensor) -> torch.Tensor:
        """[batch, samples] zero-padded 16 kHz waveforms -> [batch, n_mels, frames] log-mel, on the device.

        One batched call (:func:`ahamask.models.frontend.whisper_features_batched`) with the model's own
        Whisper front end; equal to the dataset's per-clip features (bit for bit on the CPU).
        """
        from .frontend import whisper_features_batched

        return whisper_features_batched(raw_wav, self.whisper_feature_extractor, self.device)

    def encode_speech(
        self,
        spectrogram: torch.Tensor | None,
        raw_wav: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Audio -> LLM-space speech embeddings.

        Args:
            spectrogram: [batch, n_mels, frames] Whisper log-mel features, or None to compute them here from
                ``raw_wav`` in one batched call on the model's device (a dataset built with
                ``features="device"`` leaves them out).
            raw_wav: [batch, samples] waveform for BEATs (ignored without BEATs), zero-padded on the right.
            padding_mask: [batch, samples] bool, True on padding (BEATs).

        Returns:
            [batch, windows * num_speech_query_token, llm_hidden].

        Raises:
            ValueError: BEATs is configured (or the spectrogram is None) and ``raw_wav`` is missing.
        """
        if self.beats is not None and raw_wav is None:
            raise ValueError("this SALMONN has BEATs (model.beats_path): pass raw_wav (and padding_mask) too")
        if spectrogram is None:
            if raw_wav is None:
                raise ValueError(
                    "encode_speech: give the Whisper spectrogram or the raw_wav to compute it from"
                )
            spectrogram = self.whisper_features(torch.as_tensor(raw_wav))
        frozen = self.cfg.freeze_whisper and (self.beats is None or self.cfg.freeze_beats)
        with self.maybe_autocast(), torch.no_grad() if frozen else contextlib.nullcontext():
            speech = self.speech_encoder(spectrogram.to(self.device)).last_hidden_state
            audio = None
            if self.beats is not None:
                mask = padding_mask.to(self.device) if padding_mask is not None else None
                audio, _ = self.beats.extract_features(
                    raw_wav.to(self.device), padding_mask=mask, feature_only=True
                )
        return self.encode_auditory_features(speech, audio)

    def encode_auditory_features(
        self, speech: torch.Tensor, audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encoder states -> windows -> Q-Former -> projection (everything after the frozen encoders).

        Args:
            speech: [batch, frames, whisper_dim] Whisper encoder states.
            audio: [batch, beats_frames, beats_dim] BEATs features, or None.

        Returns:
            [batch, windows * queries, llm_hidden].
        """
        with self.maybe_autocast():
            speech = self.ln_speech(speech)
            if audio is not None:
                audio = self.ln_audio(audio)
                # Zero-pad the shorter stream in time, then concatenate on channels (official).
                diff = speech.size(1) - audio.size(1)
                if diff > 0:
                    audio = F.pad(audio, (0, 0, 0, diff))
                elif diff < 0:
                    speech = F.pad(speech, (0, 0, 0, -diff))
                speech = torch.cat([speech, audio], dim=-1)
            batch, frames, width = speech.shape
            if self.cfg.window_level_Qformer:
                if frames < self.window:
                    raise ValueError(
                        f"{frames} encoder frames are fewer than one Q-Former window ({self.window})"
                    )
                # [batch, windows, width, window] -> [batch*windows, window, width]; trailing frames that do
                # not fill a window are dropped, as F.unfold does in the official code.
                speech = speech.unfold(1, self.window, self.stride).permute(0, 1, 3, 2)
                n_windows = speech.shape[1]
                speech = speech.reshape(batch * n_windows, self.window, width)
            queries = self.speech_query_tokens.expand(speech.shape[0], -1, -1)
            hidden = self.speech_Qformer(query_embeds=queries, encoder_hidden_states=speech).last_hidden_state
            out = self.speech_llama_proj(hidden)
            return out.reshape(batch, -1, out.shape[-1])

    # ------------------------------------------------------------------ text side
    def _encode_cached(self, text: str, max_length: int | None = None) -> list[int]:
        key = (text, max_length)
        if key not in self._piece_cache:
            if len(self._piece_cache) > 4096:
                self._piece_cache.clear()
            self._piece_cache[key] = encode_piece(self.llama_tokenizer, text, max_length)
        return self._piece_cache[key]

    def _text_rows(
        self, batch: int, prompts: Sequence[str] | None, targets: Sequence[str] | None
    ) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """Per sample, the ids before the speech (``[BOS] + before``), after it (``after + target + end_sym``)
        and the number of target ids at the end of the latter (what the labels cover)."""
        bos = self.llama_tokenizer.bos_token_id
        rows_before, rows_after, n_targets = [], [], []
        for i in range(batch):
            before, after = split_prompt(prompts[i]) if prompts is not None else ("", "")
            rows_before.append([bos, *self._encode_cached(before)])
            target_ids = (
                self._encode_cached(targets[i] + self.cfg.end_sym, self.cfg.max_txt_len)
                if targets is not None
                else []
            )
            rows_after.append([*self._encode_cached(after), *target_ids])
            n_targets.append(len(target_ids))
        return rows_before, rows_after, n_targets

    def build_inputs(
        self,
        speech: torch.Tensor,
        prompts: Sequence[str] | None,
        targets: Sequence[str] | None = None,
        pad_left: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Assemble ``[BOS] + before + speech + after (+ target + end_sym)`` for each sample.

        Args:
            speech: [batch, n_speech, hidden] speech embeddings.
            prompts: one wrapped prompt per sample (containing ``<SpeechHere>``), or None for no prompt.
            targets: target texts (training); ``end_sym`` is appended and the ids truncated to ``max_txt_len``.
            pad_left: pad on the left (generation) instead of the right (training).

        Returns:
            inputs_embeds [batch, length, hidden], attention_mask [batch, length],
            labels [batch, length] (-100 outside targets) or None.
        """
        batch = speech.shape[0]
        if prompts is not None and len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
        rows_before, rows_after, n_targets = self._text_rows(batch, prompts, targets)
        n_speech = speech.shape[1]
        lengths = [len(b) + n_speech + len(a) for b, a in zip(rows_before, rows_after, strict=True)]
        total = max(lengths)
        pad_id = self.llama_tokenizer.pad_token_id
        ids = _id_grid(rows_before, rows_after, pad_id)
        text_embeds = self.embed_tokens(ids.to(self.device))
        speech = speech.to(text_embeds.dtype)
        pad_embed = self.embed_tokens(torch.tensor([pad_id], device=self.device))[0]
        embeds = pad_embed.expand(batch, total, -1).clone()
        attention = torch.zeros(batch, total, dtype=torch.long, device=self.device)
        labels = (
            torch.full((batch, total), -100, dtype=torch.long, device=self.device)
            if targets is not None
            else None
        )
        for i, (b, a) in enumerate(zip(rows_before, rows_after, strict=True)):
            start = total - lengths[i] if pad_left else 0
            row = torch.cat([text_embeds[i, 0, : len(b)], speech[i], text_embeds[i, 1, : len(a)]])
            embeds[i, start : start + lengths[i]] = row
            attention[i, start : start + lengths[i]] = 1
            if labels is not None and n_targets[i]:
                end = start + lengths[i]
                labels[i, end - n_targets[i] : end] = ids[i, 1, len(a) - n_targets[i] : len(a)].to(
                    self.device
                )
        return embeds, attention, labels

    def choose_prompts(
        self, samples: Mapping[str, Any], rng: random.Random | None = None
    ) -> list[str] | None:
        """Pick training prompts from ``prompt_path`` as the official does (random template per task).

        Args:
            samples: the collated batch (its ``task`` and ``Q`` entries are read).
            rng: the generator to draw templates from; ``None`` uses Python's global one, as the official.
                The trainer passes its own, saved in checkpoints, so a resumed run draws the same templates.
        """
        draw = rng if rng is not None else random
        if not self.prompt_dict:
            return None
        tasks = list(samples["task"])
        for task in set(tasks):
            if task not in self.prompt_dict:
                raise KeyError(
                    f"task {task!r} has no prompt in {self.cfg.prompt_path} (tasks: {sorted(self.prompt_dict)})"
                )
        multi = self.cfg.multi_prompt or len(set(tasks)) > 1 or "QA" in tasks
        if multi:
            prompts = [draw.choice(self.prompt_dict[t]) for t in tasks]
        else:
            prompts = [draw.choice(self.prompt_dict[tasks[0]])] * len(tasks)
        questions = samples.get("Q")
        if questions is not None:
            prompts = [p.format(q) if "{}" in p else p for p, q in zip(prompts, questions, strict=True)]
        return prompts

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        samples: Mapping[str, Any],
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token cross-entropy of the targets (mean over all target tokens of the batch, as the official).

        Args:
            samples: a collated batch (``spectrogram``, ``raw_wav``, ``padding_mask``, ``text``, ``task``, ``Q``).
            prompts: wrapped prompts, one per sample; ``None`` draws them from ``prompt_path`` (or none).
            speech_embeds: precomputed :meth:`encode_speech` output (cached training skips the encoders).

        Returns:
            ``{"loss": scalar, "logits": [batch, length, vocab], "labels": [batch, length]}``.
        """
        if speech_embeds is None:
            speech_embeds = self.encode_speech(
                samples["spectrogram"], samples.get("raw_wav"), samples.get("padding_mask")
            )
        if prompts is None:
            prompts = self.choose_prompts(samples)
        embeds, attention, labels = self.build_inputs(speech_embeds, prompts, samples["text"])
        with self.maybe_autocast():
            out = self.llama_model(
                inputs_embeds=embeds, attention_mask=attention, labels=labels, return_dict=True
            )
        return {"loss": out.loss, "logits": out.logits, "labels": labels}

    def generation_kwargs(self, generate_cfg: Any) -> dict[str, Any]:
        """Translate the official ``generate`` keys into transformers 5 ``generate`` arguments."""
        tok = self.llama_tokenizer
        return generation_kwargs(
            generate_cfg or {},
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
        )

    @torch.no_grad()
    def generate(
        self,
        samples: Mapping[str, Any],
        generate_cfg: Any = None,
        prompts: Sequence[str] | None = None,
        speech_embeds: torch.Tensor | None = None,
    ) -> list[str]:
        """Decode answers for a batch.

        Args:
            samples: a collated batch.
            generate_cfg: the official ``generate`` keys (dict or ``GenerateConfig``).
            prompts: wrapped prompts per sample (see :func:`wrap_instruction`), or None for no prompt.
            speech_embeds: precomputed speech embeddings.

        Returns:
            One decoded string per sample (special tokens removed).
        """
        if speech_embeds is None:
            speech_embeds = self.encode_speech(
                samples["spectrogram"], samples.get("raw_wav"), samples.get("padding_mask")
            )
        embeds, attention, _ = self.build_inputs(speech_embeds, prompts, None, pad_left=True)
        kwargs = self.generation_kwargs(generate_cfg or {})
        scoring, stop_rule = decode_rules(generate_cfg or {})
        with self.maybe_autocast():
            if scoring == "official" and kwargs["num_beams"] > 1:
                # transformers 4.28's beam search, as the paper decoded (ahamask.models.beam_search).
                out = official_beam_search(
                    self.llama_model,
                    embeds,
                    attention,
                    **official_beam_kwargs(kwargs, self.llama_model.generation_config),
                    stop_row0=stop_rule == "official_row0",
                )
            else:
                if stop_rule == "official_row0":  # the official defect, kept for comparisons only
                    kwargs["stopping_criteria"] = StoppingCriteriaList(
                        [Row0StoppingCriteria(kwargs["eos_token_id"])]
                    )
                # Beam search: the prompt's prefill runs once per sample, not once per beam.
                out = generate_with_shared_prefill(self.llama_model, embeds, attention, **kwargs)
        return self.llama_tokenizer.batch_decode(out, skip_special_tokens=True)

    def prompt_for(self, instruction: str = "") -> str:
        """The evaluation prompt: the config's template around ``<Speech>...</Speech> instruction``."""
        return wrap_instruction(instruction, self.cfg.prompt_template or "{}")

    # ------------------------------------------------------------------ parameters
    def official_trainable_names(self) -> list[str]:
        """Official checkpoint keys of the parameters the official SALMONN trains (and saves).

        They equal this model's parameter names except inside the Q-Former (see :mod:`.qformer`).
        """
        names = []
        for name, _ in self.named_parameters():
            if name.startswith(("speech_encoder.", "beats.")):
                if name.startswith("speech_encoder.") and not self.cfg.freeze_whisper:
                    names.append(name)
                elif name.startswith("beats.") and not self.cfg.freeze_beats:
                    names.append(name)
                continue
            if name.startswith("llama_model."):
                if "lora_" in name:
                    names.append(name)
                continue
            if name.startswith(("speech_Qformer.", "speech_query_tokens")) and self.cfg.freeze_speech_QFormer:
                continue
            if name.startswith("speech_llama_proj.") and self.cfg.freeze_speech_llama_proj:
                continue
            names.append(official_name(name))  # the Q-Former's module names differ from the official keys
        return names

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The official checkpoint content: every officially trainable parameter, by official name."""
        params = {official_name(name): param for name, param in self.named_parameters()}
        return {name: params[name].detach().cpu() for name in self.official_trainable_names()}
