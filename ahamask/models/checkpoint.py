"""Loading official SALMONN checkpoints (``{'model': state_dict}``) by name, accounting for every key.

The official loader calls ``load_state_dict(..., strict=False)`` and ignores what did not match, so a wrong
file loads "successfully" with random Q-Former weights (upstream SALMONN issue #91). Here every key is
accounted for: the officially trainable parameters must all be present with the right shapes, and the
extra entries official checkpoints are known to carry are skipped by name, each for a stated reason.
Anything else is an error that lists the keys.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from .qformer import official_name

__all__ = ["CheckpointKeyError", "load_salmonn_checkpoint", "load_projection", "KNOWN_EXTRA_KEYS"]

logger = logging.getLogger(__name__)

# Entries of official checkpoints that are not parameters of this model, and why they are not loaded.
KNOWN_EXTRA_KEYS: list[tuple[re.Pattern, str]] = [
    (
        re.compile(
            r"^llama_model\.(base_model\.model\.)?model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$"
        ),
        "LLaMA rotary frequencies: a buffer recomputed from the LLM config",
    ),
    (
        re.compile(r"^speech_Qformer\.bert\.embeddings\.position_ids$"),
        "Q-Former position ids: a constant buffer (the position embeddings are removed)",
    ),
    (
        re.compile(r"^beats\.encoder\.layers\.([1-9]\d*)\.self_attn\.relative_attention_bias\.weight$"),
        "alias of BEATs layer 0's relative position bias, which is loaded from beats_path",
    ),
]


class CheckpointKeyError(KeyError):
    """A checkpoint's keys do not match the model; the message lists the offending names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.{what}: no such checkpoint file: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path}: expected a dict with a 'model' state dict (the official SALMONN format)")
    return ckpt["model"]


def _skip_reason(key: str) -> str | None:
    for pattern, reason in KNOWN_EXTRA_KEYS:
        if pattern.match(key):
            return reason
    return None


def _copy_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy tensors keyed by official name into the model's parameters/buffers (dtype follows the model)."""
    # The Q-Former's module names differ from the official keys; official_name leaves other names as they are.
    targets = {official_name(k): t for k, t in model.named_parameters()}
    targets.update({official_name(k): t for k, t in model.named_buffers()})
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(targets[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(targets[k].shape)
    ]
    if bad_shapes:
        raise CheckpointKeyError(
            f"{path}: shape mismatch for {len(bad_shapes)} keys: " + "; ".join(bad_shapes[:10])
        )
    with torch.no_grad():
        for key, value in state.items():
            targets[key].copy_(value.to(targets[key].dtype))


def load_salmonn_checkpoint(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load an official SALMONN checkpoint into ``model`` (a :class:`~ahamask.models.salmonn.SALMONN`).

    Args:
        model: the SALMONN model.
        path: checkpoint file, e.g. ``salmonn_v1.pth``.

    Returns:
        ``{"loaded": [...], "skipped": [...]}`` key lists (skipped ones are logged with their reason).

    Raises:
        CheckpointKeyError: missing trainable keys, unknown keys or shape mismatches, listed by name.
    """
    path = Path(path)
    state = _read_state_dict(path, "ckpt")
    expected = set(model.official_trainable_names())
    skipped: list[str] = []
    unexpected: list[str] = []
    for key in state:
        if key in expected:
            continue
        reason = _skip_reason(key)
        if reason:
            skipped.append(key)
            logger.debug("%s: skipping %s (%s)", path, key, reason)
        else:
            unexpected.append(key)
    missing = sorted(expected - set(state))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            )
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected keys: {', '.join(sorted(unexpected)[:8])}"
                f"{' ...' if len(unexpected) > 8 else ''}"
            )
        raise CheckpointKeyError(f"{path}: does not match the model ({'; '.join(parts)})")
    loaded = {k: state[k] for k in expected}
    _copy_into(model, loaded, path)
    if skipped:
        logger.info(
            "%s: loaded %d tensors, skipped %d known extras (buffers/aliases)",
            path,
            len(loaded),
            len(skipped),
        )
    return {"loaded": sorted(loaded), "skipped": sorted(skipped)}


def load_projection(model: nn.Module, path: str | Path) -> None:
    """Load ``speech_llama_proj`` from a checkpoint (official ``speech_llama_proj_model``); other keys ignored.

    The official code loads the whole file non-strictly for this; here only the projection's two tensors are
    taken, and their absence is an error.
    """
    path = Path(path)
    state = _read_state_dict(path, "speech_llama_proj_model")
    wanted = {k: v for k, v in state.items() if k.startswith("speech_llama_proj.")}
    need = {"speech_llama_proj.weight", "speech_llama_proj.bias"}
    if set(wanted) != need:
        raise CheckpointKeyError(f"{path}: expected exactly {sorted(need)}, found {sorted(wanted)}")
    _copy_into(model, wanted, path)
