"""Cached speech embeddings: a frozen front end runs once per utterance, not once per epoch or condition.

In AHAMask training everything before the LLM (Whisper, BEATs, the Q-Former, the projection) is frozen and
in eval mode, so the speech embeddings of an utterance are the same in every epoch; in evaluation and in the
instruction sweep they do not depend on the instruction or the mask either. One cache serves all three (the
trainer by default, ``run.cache_speech_embeds``; the sweep for its N conditions; ``decode_dataset`` when
given one). It keeps the embeddings in memory and optionally on disk, keyed by

* the sample's content: its Whisper features (which are what the encoders see, so the feature settings are
  covered), or, for a batch without features (a ``features="device"`` dataset: the model computes them), its
  waveform and a digest of the model's Whisper feature extractor; when BEATs is in use, its waveform and the
  padded length of its batch; BEATs sees the
  batch-padded waveform (see REFERENCE_BEHAVIOUR.md), so the same clip padded differently is another entry,
  which keeps cached results equal to the uncached ones;
* a model fingerprint: a SHA-256 of every front-end tensor (names, dtypes, shapes, bytes), the window
  settings and the checkpoint paths; it is taken once when the cache is built;
* the compute context: device type and autocast state.

A changed clip, checkpoint or setting therefore gives new keys, never a stale entry. A batch with any
missing clip is encoded whole, so its embeddings are exactly the uncached ones. Disk entries are safetensors
files (no pickle) written atomically, one per utterance, under ``directory/<first 32 hex digits of the
fingerprint>/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..utils.io import atomic_open, atomic_write_json
from .backbone import pad_audio_rows

logger = logging.getLogger(__name__)

__all__ = ["FRONT_END_MODULES", "SpeechEmbeddingCache", "model_fingerprint", "tensor_digest"]

#: SALMONN attributes that produce the speech embeddings (everything the LLM does not own).
FRONT_END_MODULES = (
    "speech_encoder",
    "ln_speech",
    "beats",
    "ln_audio",
    "speech_Qformer",
    "speech_query_tokens",
    "speech_llama_proj",
)
_FORMAT = "ahamask-speech-cache-v1"


def tensor_digest(hasher: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes into ``hasher`` (any hashlib object)."""
    tensor = tensor.detach()
    hasher.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    # Bytes through a uint8 view: works for every dtype numpy lacks (bfloat16) and copies nothing on the CPU.
    flat = tensor.contiguous().reshape(-1).cpu().view(torch.uint8)
    hasher.update(memoryview(flat.numpy()))


def _front_end_parts(model: nn.Module) -> list[tuple[str, nn.Module | torch.Tensor]]:
    """The named parts before the LLM: SALMONN's :data:`FRONT_END_MODULES`, or for another backbone every
    top-level child that is not (and does not hold) its ``decoder``."""
    if any(hasattr(model, attr) for attr in FRONT_END_MODULES):
        return [(a, getattr(model, a)) for a in FRONT_END_MODULES if getattr(model, a, None) is not None]
    decoder_params = {id(p) for p in model.decoder.parameters()}
    return [
        (name, child)
        for name, child in model.named_children()
        if not any(id(p) in decoder_params for p in child.parameters())
    ]


def _front_end_tensors(model: nn.Module, parameters_only: bool = False) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter (and buffer, unless ``parameters_only``) before the LLM, in order."""
    items: list[tuple[str, torch.Tensor]] = []
    for attr, part in _front_end_parts(model):
        if isinstance(part, torch.Tensor):
            items.append((attr, part))
        elif parameters_only:
            items += [(f"{attr}.{name}", t) for name, t in part.named_parameters()]
        else:
            items += [(f"{attr}.{name}", t) for name, t in part.state_dict(keep_vars=True).items()]
    return items


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of everything that decides a SALMONN's speech embeddings.

    Args:
        model: a :class:`~ahamask.models.salmonn.SALMONN`.

    Returns:
        64 hex characters; any changed front-end weight, window setting or checkpoint path changes it.
    """
    start = time.perf_counter()
    hasher = hashlib.sha256(_FORMAT.encode())
    cfg = getattr(model, "cfg", None)
    settings = {
        "ckpt": getattr(cfg, "ckpt", ""),
        "speech_llama_proj_model": getattr(cfg, "speech_llama_proj_model", ""),
        "window_level_Qformer": getattr(cfg, "window_level_Qformer", None),
        "window": getattr(model, "window", None),
        "stride": getattr(model, "stride", None),
    }
    hasher.update(repr(sorted(settings.items())).encode())
    for name, tensor in _front_end_tensors(model):
        hasher.update(name.encode())
        tensor_digest(hasher, tensor)
    digest = hasher.hexdigest()
    logger.info("speech cache: model fingerprint %s (%.1f s)", digest[:16], time.perf_counter() - start)
    return digest


class SpeechEmbeddingCache:
    """Speech embeddings of a frozen SALMONN front end, computed once per utterance.

    Args:
        model: a SALMONN whose front end is frozen (no parameter requires grad) and in eval mode.
        directory: also keep entries on disk here (reused by later runs with the same model); ``None``:
            memory only.
        keep_in_memory: keep entries in memory (set False for large sets cached on disk).
        fingerprint: a precomputed :func:`model_fingerprint` (skips hashing the encoders again).

    Raises:
        ValueError: a front-end parameter requires grad (cached embeddings would go stale as it trains), or
            neither memory nor disk storage is enabled.

    Example:
        >>> cache = SpeechEmbeddingCache(model)
        >>> embeds = cache.get_or_compute(batch)  # [batch, windows * queries, llm_hidden]
        >>> loss = model(batch, speech_embeds=embeds)["loss"]
    """

    def __init__(
        self,
        model: nn.Module,
        directory: str | os.PathLike | None = None,
        *,
        keep_in_memory: bool = True,
        fingerprint: str | None = None,
    ) -> None:
        if not keep_in_memory and directory is None:
            raise ValueError("SpeechEmbeddingCache: keep_in_memory=False needs a directory")
        for name, tensor in _front_end_tensors(model, parameters_only=True):
            if tensor.requires_grad:
                raise ValueError(
                    f"SpeechEmbeddingCache: {name} requires grad, so its embeddings change as it trains; "
                    "freeze the front end (AHAMask training does) or turn run.cache_speech_embeds off"
                )
        self.model = model
        self.keep_in_memory = keep_in_memory
        key = getattr(model, "speech_cache_key", None)  # the backbone interface; plain modules: hashed here
        self.fingerprint = fingerprint or (key() if callable(key) else model_fingerprint(model))
        self.directory = Path(directory) / self.fingerprint[:32] if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            info = self.directory / "fingerprint.json"
            if not info.exists():
                cfg = getattr(model, "cfg", None)
                atomic_write_json(
                    {"fingerprint": self.fingerprint, "format": _FORMAT, "ckpt": getattr(cfg, "ckpt", "")},
                    info,
                    sort_keys=True,
                )
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ keys
    def _context(self) -> str:
        device = self.model.device.type
        enabled = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if enabled else None
        return f"{self.fingerprint}|{device}|{enabled}|{dtype}"

    def sample_keys(self, samples: Mapping[str, Any]) -> list[str]:
        """One key per sample of a collated batch.

        Args:
            samples: a collated batch with ``spectrogram`` [batch, n_mels, frames] (or None: then ``raw_wav``
                is hashed) and, for BEATs, ``raw_wav`` [batch, samples] and ``padding_mask`` [batch, samples]
                (True on padding).

        Returns:
            64-hex-character keys, in batch order.
        """
        spectrogram = samples.get("spectrogram")
        context = self._context().encode()
        if spectrogram is None:
            # Features computed by the model from the waveform: the waveform and the extractor decide them.
            from .frontend import extractor_fingerprint

            extractor = getattr(self, "_extractor_digest", None)
            if extractor is None:
                # SALMONN's extractor is not in its fingerprint; other backbones' speech_cache_key covers theirs.
                own = getattr(self.model, "whisper_feature_extractor", None)
                extractor = self._extractor_digest = (
                    extractor_fingerprint(own) if own is not None else "in-key"
                )
            context += f"|device-features|{extractor}".encode()
        with_beats = getattr(self.model, "beats", None) is not None and samples.get("raw_wav") is not None
        if with_beats or spectrogram is None:
            raw = torch.as_tensor(samples["raw_wav"])
            padding = samples.get("padding_mask")
            lengths = (
                (~padding).sum(dim=1) if padding is not None else torch.full((raw.shape[0],), raw.shape[1])
            )
        keys = []
        for i in range(len(samples["raw_wav"]) if spectrogram is None else spectrogram.shape[0]):
            hasher = hashlib.sha256(context)
            if spectrogram is None:
                tensor_digest(hasher, raw[i, : int(lengths[i])])
            else:
                tensor_digest(hasher, spectrogram[i])
            if with_beats:
                # BEATs output depends on the clip and on how far its batch padded it.
                tensor_digest(hasher, raw[i, : int(lengths[i])])
                hasher.update(f"|padded_to={raw.shape[1]}".encode())
            keys.append(hasher.hexdigest())
        return keys

    # ------------------------------------------------------------------ storage
    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def _lookup(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            return self._memory[key]
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            tensor = load_safetensors(path.read_bytes())["embeds"]
        except (SafetensorError, OSError, KeyError) as exc:
            logger.warning("speech cache: unreadable entry %s (%s); recomputing it", path, exc)
            return None
        if self.keep_in_memory:
            self._memory[key] = tensor
        return tensor

    def _store(self, key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cpu", copy=True)  # a copy: a row view would keep the whole batch alive
        if self.keep_in_memory:
            self._memory[key] = tensor
        if self.directory is not None:
            with atomic_open(self._path(key), "wb") as handle:
                handle.write(save_safetensors({"embeds": tensor.contiguous()}))

    # ------------------------------------------------------------------ public
    def _check_eval(self) -> None:
        for attr, part in _front_end_parts(self.model):
            if isinstance(part, nn.Module) and any(m.training for m in part.modules()):
                raise ValueError(
                    f"SpeechEmbeddingCache: model.{attr} is in training mode (dropout would make every pass "
                    "differ); call model.eval() first"
                )

    def get_or_compute(self, samples: Mapping[str, Any]) -> torch.Tensor:
        """Speech embeddings of a batch, from the cache where present, computed (and stored) otherwise.

        Args:
            samples: a collated batch (``spectrogram``, and ``raw_wav`` / ``padding_mask`` for BEATs).

        Returns:
            [batch, windows * queries, llm_hidden] on the model's device: ``model.encode_audio(...)`` of this
            batch when any sample is missing (counted in ``misses``; the others are recomputed with it and
            counted nowhere), else the stored rows (counted in ``hits``).

        Raises:
            ValueError: the front end is in training mode.
        """
        self._check_eval()
        keys = self.sample_keys(samples)
        found: list[torch.Tensor | None] = [self._lookup(key) for key in keys]
        missing = [i for i, tensor in enumerate(found) if tensor is None]
        self.misses += len(missing)
        if missing:
            # The whole batch is encoded, not just the missing rows: some CPU kernels round differently for
            # another batch size (Whisper: about 5e-7 between 1 and 4 clips), and the output must equal the
            # uncached run's bit for bit. Training batches all have the same size, so entries do too.
            with torch.no_grad():
                embeds = self.model.encode_audio(samples)
            for index in missing:
                self._store(keys[index], embeds[index])
            return embeds.detach()
        self.hits += len(keys)
        device = self.model.device
        # Rows of backbones whose clips give different audio-token counts are zero-padded (counts kept).
        return pad_audio_rows([t.to(device, non_blocking=True) for t in found])

    @property
    def hit_rate(self) -> float:
        """Share of samples served from the cache so far (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __len__(self) -> int:
        """Entries held in memory."""
        return len(self._memory)

    def clear(self) -> None:
        """Forget the in-memory entries and the counters (disk entries stay)."""
        self._memory.clear()
        self.hits = self.misses = 0
