"""Instruction-contrast steering vectors: build them from two prompts on the same audio, store, inject.

For instructions A (e.g. "Listen for the whistle.") and B (neutral; ``""`` is the instruction-free prompt) on
the same clips, the vector of decoder layer ``l`` is the mean over the calibration clips of
``residual_l(A) - residual_l(B)``; at inference ``alpha * v_l`` is added to the output of the chosen layers
(:func:`ahamask.analysis.residual.add_to_residual`, forward hooks on the stock decoder layers). Our reading of
the paper, each an argument recorded in the file's metadata:

* **position** (``position``): ``"last"`` (default): the last prompt position, where the answer is predicted
  (after "ASSISTANT:", the same text in A and B, so the difference is what the instruction left there);
  ``"instruction_mean"``: the mean over every position after the audio (the instruction and the template
  text around it; A and B differ in length, so each prompt's own span is averaged);
* **layers**: vectors are built for every layer by default; which are *injected* is chosen at use
  (``inject_layers``, default the middle layer ``n_layers // 2 - 1``, so later layers read the steered state);
* **normalisation** (``normalize``): ``"none"`` (default: the raw mean difference, so ``alpha = 1`` moves the
  state by the average A-B shift), or ``"unit"`` (each layer's vector scaled to norm 1, ``alpha`` then is an
  absolute norm);
* **strength and scope**: ``alpha`` (0 is bit-identical to no steering), added at the last position of the
  prompt and of every decoding step (``positions="last"``) or everywhere (``"all"``), prefill and decoding or
  the prefill only (``prefill_only``).

Files are safetensors: tensors ``layer.<l>`` ([hidden] float32) and string metadata (``format``, ``model``,
``hidden_size``, ``layers``, ``inject_layers``, ``position``, ``normalize``, ``positions``, ``prefill_only``,
``instruction_a``, ``instruction_b``, ``n_calibration``, ``built_by``, ``norms``), JSON-encoded values.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..models.backbone import AudioLLM, PromptInputs
from .residual import POSITIONS, add_to_residual, capture_residual

__all__ = [
    "VECTOR_POSITIONS",
    "NORMALIZATIONS",
    "FORMAT",
    "instruction_spans",
    "contrast_vectors",
    "normalize_vectors",
    "default_inject_layers",
    "model_identity",
    "save_vectors",
    "load_vectors",
    "steering",
    "steering_context",
]

FORMAT = "ahamask-contrast-steering/1"
VECTOR_POSITIONS = ("last", "instruction_mean")
NORMALIZATIONS = ("none", "unit")


def instruction_spans(inputs: PromptInputs) -> list[tuple[int, int]]:
    """Per row ``(start, end)`` of the positions after the audio (the instruction and template text)."""
    total = inputs.embeds.shape[1]
    return [(end, total) for _, end in inputs.audio_spans]


def _capture(
    model: AudioLLM, speech: torch.Tensor, prompts: Sequence[str], layers: Sequence[int], position: str
):
    inputs = model.prompt_inputs(speech, list(prompts))
    if position == "last":
        return capture_residual(model, inputs, layers, position="last")
    return capture_residual(model, inputs, layers, position="mean_span", spans=instruction_spans(inputs))


def contrast_vectors(
    model: AudioLLM,
    speech_embeds: torch.Tensor,
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    layers: Sequence[int] | None = None,
    position: str = "last",
    batch_size: int = 32,
) -> dict[int, torch.Tensor]:
    """layer -> [hidden]: the mean over rows of ``residual(A) - residual(B)`` at ``position``.

    Args:
        model: the backbone (eval mode; hooks such as a head mask stay active).
        speech_embeds: [n_clips, n_audio_tokens, hidden] calibration audio (``model.encode_audio``).
        prompts_a, prompts_b: one full prompt per clip (``model.prompt_for(...)``); the same audio under both.
        layers: decoder layers (default all).
        position: ``"last"`` or ``"instruction_mean"``.
        batch_size: clips per forward.

    Raises:
        ValueError: an unknown position, no clips, or prompt lists of the wrong length.
    """
    if position not in VECTOR_POSITIONS:
        raise ValueError(f"steering.position: {position!r} is not one of {VECTOR_POSITIONS}")
    n = speech_embeds.shape[0]
    if n == 0 or len(prompts_a) != n or len(prompts_b) != n:
        raise ValueError(
            f"contrast_vectors: {n} clips, {len(prompts_a)} A prompts, {len(prompts_b)} B prompts"
        )
    layers = list(range(model.geometry.n_layers)) if layers is None else [int(layer) for layer in layers]
    sums: dict[int, torch.Tensor] = {}
    for lo in range(0, n, batch_size):
        speech = speech_embeds[lo : lo + batch_size]
        a = _capture(model, speech, prompts_a[lo : lo + batch_size], layers, position)
        b = _capture(model, speech, prompts_b[lo : lo + batch_size], layers, position)
        for layer in layers:
            diff = (a[layer].double() - b[layer].double()).sum(0)
            sums[layer] = diff if layer not in sums else sums[layer] + diff
    return {layer: (sums[layer] / n).float().cpu() for layer in layers}


def normalize_vectors(vectors: Mapping[int, torch.Tensor], how: str = "none") -> dict[int, torch.Tensor]:
    """``"none"``: unchanged; ``"unit"``: each vector divided by its norm (a zero vector stays zero)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"steering.normalize: {how!r} is not one of {NORMALIZATIONS}")
    if how == "none":
        return dict(vectors)
    return {
        layer: v / v.norm().clamp_min(1e-12) if v.norm() > 0 else v.clone() for layer, v in vectors.items()
    }


def default_inject_layers(n_layers: int) -> list[int]:
    """The middle layer (``n_layers // 2 - 1``, at least 0): later layers see the steered state."""
    return [max(n_layers // 2 - 1, 0)]


def model_identity(model: AudioLLM) -> dict[str, Any]:
    """What a vector file records of its model: arch, decoder path, checkpoint and geometry."""
    cfg = model.cfg
    get = cfg.get if isinstance(cfg, Mapping) else lambda k, d=None: getattr(cfg, k, d)
    geo = model.geometry
    return {
        "arch": get("arch", "salmonn") or "salmonn",
        "llama_path": str(get("llama_path", "") or ""),
        "ckpt": str(get("ckpt", "") or ""),
        "n_layers": geo.n_layers,
        "n_heads": geo.n_heads,
        "hidden_size": int(model.decoder.get_input_embeddings().weight.shape[-1]),
    }


def save_vectors(
    path: str | os.PathLike[str], vectors: Mapping[int, torch.Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Write ``layer.<l>`` tensors and JSON-encoded metadata as safetensors, atomically (temp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer.{int(layer)}": v.detach().float().contiguous().cpu() for layer, v in vectors.items()}
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    meta["layers"] = json.dumps(sorted(int(layer) for layer in vectors))
    meta["norms"] = json.dumps({str(int(k)): round(float(v.norm()), 6) for k, v in vectors.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_vectors(path: str | os.PathLike[str]) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """(layer -> vector, decoded metadata) of a file written by :func:`save_vectors`.

    Raises:
        FileNotFoundError: no such file; ValueError: not a steering-vector file (naming it).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such steering-vector file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
            vectors = {int(k.split(".", 1)[1]): fh.get_tensor(k) for k in fh.keys() if k.startswith("layer.")}
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: metadata format is {raw.get('format')!r}, expected {FORMAT!r}")
    meta = {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}
    return vectors, meta


@contextlib.contextmanager
def steering(
    model: AudioLLM,
    vectors: Mapping[int, torch.Tensor],
    alpha: float,
    *,
    layers: Sequence[int] | None = None,
    positions: str = "last",
    prefill_only: bool = False,
) -> Iterator[None]:
    """Add ``alpha * vectors[l]`` at each of ``layers`` (default: every layer given) inside the context.

    ``vectors[l]`` may be [hidden] or [batch, hidden] (one vector per row, e.g. one event per row).
    """
    if positions not in POSITIONS:
        raise ValueError(f"steering.positions: {positions!r} is not one of {POSITIONS}")
    chosen = list(vectors) if layers is None else [int(layer) for layer in layers]
    missing = [layer for layer in chosen if layer not in vectors]
    if missing:
        raise ValueError(f"steering layers {missing} have no vector (vectors for {sorted(vectors)})")
    device = model.device
    selected = {layer: vectors[layer].to(device) for layer in chosen}
    with add_to_residual(model, selected, scale=float(alpha), positions=positions, prefill_only=prefill_only):
        yield


def steering_context(
    model: AudioLLM,
    vector_file: str | os.PathLike[str] | None,
    alpha: float,
    *,
    layers: Sequence[int] | None = None,
    positions: str | None = None,
    prefill_only: bool | None = None,
) -> contextlib.AbstractContextManager:
    """The context manager evaluate.py / cli_inference.py wrap decoding in (``None`` file: no steering).

    Layers, positions and prefill-only default to the file's ``inject_layers``, ``positions`` and
    ``prefill_only`` metadata. The file is checked against the model before any decoding.

    Raises:
        FileNotFoundError / ValueError: a missing or foreign file, or vectors of another hidden size.
    """
    if vector_file is None or str(vector_file) == "":
        return contextlib.nullcontext()
    vectors, meta = load_vectors(vector_file)
    hidden = model_identity(model)["hidden_size"]
    wrong = [layer for layer, v in vectors.items() if v.shape[-1] != hidden]
    if wrong:
        raise ValueError(
            f"{vector_file}: vectors of width {vectors[wrong[0]].shape[-1]}, the model's hidden size is {hidden}"
        )
    chosen = (
        list(layers)
        if layers is not None
        else meta.get("inject_layers") or default_inject_layers(len(vectors))
    )
    return steering(
        model,
        vectors,
        alpha,
        layers=chosen,
        positions=positions or meta.get("positions", "last"),
        prefill_only=bool(meta.get("prefill_only", False)) if prefill_only is None else prefill_only,
    )
