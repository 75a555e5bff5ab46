"""Audio-silence steering: add the mean (audio - silence) difference to the final representation.

Our reading of the paper (abstract only; each choice explicit and configurable):

* **Direction** (``source="residual"``, the default): the mean over a calibration set of
  ``h_l(audio) - h_l(silence)``, ``h_l`` being the output of decoder layer ``l`` at the answer position (the
  last prompt position) and silence zeros of the clip's length (:func:`ahamask.analysis.listening.silence_like`).
  The default layer is the **final decoder layer** (``n_layers - 1``, before the final norm): the abstract
  says the intervention acts on "the final representation". Any layer can be configured (e.g. the deepest
  layer holding a selected head).
* **Heads direction** (``source="heads"``): the mean over the calibration set of the audio-minus-silence
  difference of what a set of heads *writes* into the residual stream at the answer position (each head's
  slice of the attention output through its columns of the output projection, LoRA included), summed over
  the heads. Because the residual stream is a sum, this is the part of the residual direction the heads are
  responsible for; it is added at the same (final) layer. With the audio-specialist heads it is the
  localised direction; **with ``k`` random heads it is the "direction from random heads" control**.
* **Normalisation**: ``"raw"`` keeps the mean difference (``beta = 1`` adds one average audio effect),
  ``"unit"`` divides it by its norm (``beta`` is then a length in hidden-state units). The original norm is
  kept in the metadata either way. :func:`rescaled` gives a direction the norm of another, so the controls of
  the experiment differ from the steered direction in direction only.
* **Random direction** control: a Gaussian vector (seeded ``torch.Generator``) rescaled to the norm of the
  direction it controls.
* **Application**: at inference, ``beta * direction`` is added to the output of the direction's layer at the
  answer position through :func:`ahamask.analysis.residual.add_to_residual`, and by default at every
  generated token too (``prefill_only=False``: each new token's "final representation" is steered; a
  multiple-choice answer read from the first token is unaffected by the choice). No parameter changes.

A direction file is safetensors: one tensor ``direction`` [hidden] and string metadata ``format``,
``model``, ``layer``, ``source``, ``heads`` (JSON), ``normalise``, ``raw_norm``, ``n_calibration`` and
``built_by``. :func:`steering_context` is the one call an evaluator needs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..masking.hf_layout import decoder_layers, output_projection
from ..models.backbone import AudioLLM
from .listening import ProbeBatch, answer_logprobs, predict_options, silence_like
from .residual import add_to_residual, capture_residual, prompt_forward

__all__ = [
    "DIRECTION_FORMAT",
    "SteeringDirection",
    "audio_silence_direction",
    "random_direction",
    "rescaled",
    "save_direction",
    "load_direction",
    "steering_context",
    "steered_accuracy",
    "beta_sweep",
]

DIRECTION_FORMAT = "ahamask-steering-direction-v1"
SOURCES = ("residual", "heads")
NORMALISE = ("raw", "unit")


@dataclass
class SteeringDirection:
    """A steering vector and where and how it was built.

    Attributes:
        vector: [hidden] float32.
        layer: the decoder layer whose output it is added to.
        meta: ``source``, ``heads``, ``normalise``, ``raw_norm``, ``n_calibration``, ``model``, ``built_by``.
    """

    vector: torch.Tensor
    layer: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())


def _model_name(model: AudioLLM) -> str:
    cfg = getattr(model, "cfg", None)
    for key in ("llama_path", "name", "arch"):
        value = getattr(cfg, key, None) if cfg is not None else None
        if value:
            return str(value)
    return type(model).__name__


def _head_writes(model: AudioLLM, inputs: Any, heads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """[batch, hidden]: sum over ``heads`` of what each writes into the residual at the answer position."""
    stack = decoder_layers(model.decoder)
    head_dim = model.geometry.head_dim
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    captured: dict[int, torch.Tensor] = {}

    def pre_hook_for(layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[layer] = args[0][:, -1].detach()

        return hook

    handles = [
        output_projection(stack[layer]).register_forward_pre_hook(pre_hook_for(layer)) for layer in by_layer
    ]
    try:
        prompt_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    total = None
    with torch.no_grad():
        for layer, cols in by_layer.items():
            proj = output_projection(stack[layer])
            x = captured[layer]
            keep = torch.zeros_like(x)
            for head in cols:
                keep[:, head * head_dim : (head + 1) * head_dim] = 1
            # o_proj(x * keep) - o_proj(0): the heads' columns applied (LoRA included), the bias removed.
            write = proj(x * keep) - proj(torch.zeros_like(x))
            total = write if total is None else total + write
    assert total is not None
    return total.float()


def _check_direction_args(
    model: AudioLLM, layer: int | None, source: str, normalise: str, heads: Sequence[tuple[int, int]] | None
) -> int:
    """Checks the options of :func:`audio_silence_direction` before any forward; returns the layer
    (default: the final one)."""
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not one of {SOURCES}")
    if normalise not in NORMALISE:
        raise ValueError(f"normalise: {normalise!r} is not one of {NORMALISE}")
    if source == "heads" and not heads:
        raise ValueError("source='heads' needs a non-empty list of heads")
    n_layers = model.geometry.n_layers
    layer = n_layers - 1 if layer is None else int(layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer: {layer} outside 0..{n_layers - 1}")
    return layer


def _mean_audio_minus_silence(
    model: AudioLLM,
    batches: Iterable[ProbeBatch],
    layer: int,
    source: str,
    heads: Sequence[tuple[int, int]] | None,
) -> tuple[torch.Tensor, int]:
    """The mean over every calibration row of (read with the audio - read with silence of the same
    length), on the CPU, and the number of rows; summed batch by batch in the order given."""
    total, count = None, 0
    with torch.no_grad():
        for batch in batches:
            diffs = []
            for samples in (batch.samples, silence_like(batch.samples)):
                inputs = model.prompt_inputs(model.encode_audio(samples), batch.prompts)
                if source == "residual":
                    diffs.append(capture_residual(model, inputs, [layer])[layer])
                else:
                    diffs.append(_head_writes(model, inputs, heads or []))
            delta = (diffs[0] - diffs[1]).sum(0)
            total = delta if total is None else total + delta
            count += diffs[0].shape[0]
    if total is None or count == 0:
        raise ValueError("audio_silence_direction: the calibration set is empty")
    return (total / count).cpu(), count


def audio_silence_direction(
    model: AudioLLM,
    batches: Iterable[ProbeBatch],
    *,
    layer: int | None = None,
    source: str = "residual",
    heads: Sequence[tuple[int, int]] | None = None,
    normalise: str = "raw",
    built_by: str = "",
) -> SteeringDirection:
    """The mean (audio - silence) difference over a calibration set (see the module docstring).

    Args:
        model: the backbone.
        batches: the calibration set (its answers are not used).
        layer: where the direction is read and added (default: the final layer).
        source: ``"residual"`` (the layer's output) or ``"heads"`` (the summed writes of ``heads``).
        heads: the heads of ``source="heads"``.
        normalise: ``"raw"`` or ``"unit"``.
        built_by: free text stored in the metadata (e.g. "audio-specialist top-8").

    Raises:
        ValueError: an unknown source or normalisation, ``heads`` missing for ``"heads"``, an empty set.
    """
    layer = _check_direction_args(model, layer, source, normalise, heads)
    mean, count = _mean_audio_minus_silence(model, batches, layer, source, heads)
    raw_norm = float(mean.norm())
    vector = mean / raw_norm if normalise == "unit" and raw_norm > 0 else mean
    meta = {
        "model": _model_name(model),
        "source": source,
        "heads": [list(map(int, h)) for h in heads] if heads else [],
        "normalise": normalise,
        "raw_norm": raw_norm,
        "n_calibration": count,
        "built_by": built_by or f"audio-silence mean difference ({source})",
    }
    return SteeringDirection(vector.float(), layer, meta)


def rescaled(direction: SteeringDirection, norm: float, note: str = "") -> SteeringDirection:
    """The same direction with the given norm (controls compared at equal step length)."""
    current = direction.norm
    vector = direction.vector * (norm / current) if current > 0 else direction.vector.clone()
    meta = {**direction.meta, "rescaled_to": float(norm)}
    if note:
        meta["built_by"] = f"{meta.get('built_by', '')}; {note}"
    return SteeringDirection(vector, direction.layer, meta)


def random_direction(like: SteeringDirection, seed: int = 0) -> SteeringDirection:
    """A Gaussian direction with the norm of ``like``, at its layer (the random-direction control)."""
    gen = torch.Generator().manual_seed(int(seed))
    vector = torch.randn(like.vector.shape, generator=gen)
    vector = vector * (like.norm / float(vector.norm()))
    meta = {
        **like.meta,
        "source": "random",
        "heads": [],
        "seed": int(seed),
        "built_by": f"random, norm of {like.meta.get('built_by', 'the direction')}",
    }
    return SteeringDirection(vector, like.layer, meta)


def save_direction(path: str | Path, direction: SteeringDirection) -> Path:
    """Write a direction file (safetensors + metadata), atomically."""
    from safetensors.torch import save

    from ..utils.io import atomic_open

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in direction.meta.items()}
    meta.update(format=DIRECTION_FORMAT, layer=str(direction.layer))
    data = save({"direction": direction.vector.detach().float().contiguous().cpu()}, metadata=meta)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return path


def load_direction(path: str | Path) -> SteeringDirection:
    """Read a direction file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a direction file (format, tensor or layer missing).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such direction file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            if meta.get("format") != DIRECTION_FORMAT or "direction" not in fh.keys() or "layer" not in meta:
                raise ValueError(f"{path}: not a steering direction file (format {meta.get('format')!r})")
            vector = fh.get_tensor("direction")
    except ValueError:
        raise
    except Exception as exc:  # safetensors' own errors for a damaged file
        raise ValueError(f"{path}: unreadable direction file ({exc})") from None
    layer = int(meta.pop("layer"))
    parsed: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            parsed[k] = json.loads(v)
        except json.JSONDecodeError:
            parsed[k] = v
    return SteeringDirection(vector.float(), layer, parsed)


def steering_context(
    model: AudioLLM,
    direction_file: str | Path | SteeringDirection,
    beta: float,
    *,
    prefill_only: bool = False,
) -> contextlib.AbstractContextManager:
    """The context an evaluator decodes in: ``beta * direction`` added at the answer position (and generated
    tokens unless ``prefill_only``) of the direction's layer.

    Raises:
        ValueError: the direction's layer or width does not fit the model.
    """
    direction = (
        direction_file if isinstance(direction_file, SteeringDirection) else load_direction(direction_file)
    )
    if not 0 <= direction.layer < model.geometry.n_layers:
        raise ValueError(
            f"direction layer {direction.layer} outside the model's 0..{model.geometry.n_layers - 1}"
        )
    vector = direction.vector.to(model.device)
    return add_to_residual(
        model, {direction.layer: vector}, scale=float(beta), positions="last", prefill_only=prefill_only
    )


@contextlib.contextmanager
def _maybe(ctx: contextlib.AbstractContextManager | None) -> Iterator[None]:
    if ctx is None:
        yield
    else:
        with ctx:
            yield


def steered_accuracy(
    model: AudioLLM,
    batches: Sequence[ProbeBatch],
    direction: SteeringDirection | None,
    beta: float,
    embeds: Sequence[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Multiple-choice accuracy with ``beta * direction`` (None: unsteered).

    Args:
        embeds: the batches' audio embeddings, if already computed (the sweep reuses them).

    Returns:
        ``{"accuracy", "n", "predicted"}``.
    """
    predicted, correct = [], []
    with torch.no_grad():
        for i, batch in enumerate(batches):
            audio = embeds[i] if embeds is not None else model.encode_audio(batch.samples)
            ctx = None if direction is None else steering_context(model, direction, beta, prefill_only=True)
            with _maybe(ctx):
                lp = answer_logprobs(model, audio, batch.prompts)
            pred = predict_options(lp, batch.options, model)
            predicted += pred
            if batch.answers is not None:
                correct += [p == a for p, a in zip(pred, batch.answers, strict=True)]
    return {
        "accuracy": sum(correct) / len(correct) if correct else None,
        "n": len(predicted),
        "predicted": predicted,
    }


def beta_sweep(
    model: AudioLLM,
    batches: Sequence[ProbeBatch],
    directions: Mapping[str, SteeringDirection],
    betas: Sequence[float],
) -> dict[str, dict[float, float]]:
    """Accuracy per direction and beta on a labelled set (the audio is encoded once)."""
    with torch.no_grad():
        embeds = [model.encode_audio(b.samples) for b in batches]
    return {
        name: {float(beta): steered_accuracy(model, batches, d, beta, embeds)["accuracy"] for beta in betas}
        for name, d in directions.items()
    }
