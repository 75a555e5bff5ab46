"""Applying a mask to a decoder for a run: the decoding mask from a file, and fold / hooks / prune chosen once.

Evaluation, the instruction sweep, the chat and the demo all decode under :func:`decoding_mask`; the choice
between folding the mask into ``o_proj``, running hooks, and pruning the masked heads is made here and
nowhere else (:func:`choose_application`). Training does not decode: it attaches
:class:`~ahamask.masking.hooks.HeadMaskHooks` once and sets new gates every step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from ..utils.logging import log_rank_zero
from .checkpoint import load_mask
from .fold import fold_head_mask
from .geometry import MaskGeometry, decoder_geometry
from .hooks import head_mask
from .value import Mask

logger = logging.getLogger(__name__)

__all__ = ["PRUNE_MAX_DENSITY", "prepare_mask", "choose_application", "decoding_mask"]

#: ``mask_application: auto`` prunes a mask that keeps at most this share of the heads and folds any denser
#: one (see :func:`choose_application` for the measurements behind it).
PRUNE_MAX_DENSITY = 0.8


def prepare_mask(
    path: str,
    geometry: MaskGeometry,
    prob_threshold: float = 0.5,
    shuffle: bool = False,
    shuffle_mode: str = "global",
    shuffle_seed: int = 0,
) -> Mask:
    """Load a mask file and return the 0/1 gates to decode with (optionally shuffled: random-mask ablation).

    Raises:
        MaskFileError / MaskShapeError: unreadable file or a mask made for another model (both shapes named).
    """
    mask = load_mask(path, n_layers=geometry.n_layers, n_heads=geometry.n_heads)
    log_rank_zero(
        logger,
        "mask %s: after thresholding at %.2f, %s",
        path,
        prob_threshold,
        mask.stats(prob_threshold).describe(),
    )
    gates = mask.gates(prob_threshold)
    if shuffle:
        gates = gates.shuffled(shuffle_mode, shuffle_seed)
        log_rank_zero(
            logger,
            "shuffle_mask: the same number of active heads placed at random (%s, seed %d)",
            shuffle_mode,
            shuffle_seed,
        )
    return gates


def choose_application(requested: str, mask: Mask | None) -> str | None:
    """How to apply a decoding mask: ``"fold"``, ``"hooks"``, ``"prune"``, or None without a mask.

    The rule of ``auto``: prune when the mask keeps at most :data:`PRUNE_MAX_DENSITY` (80%) of the heads, fold
    otherwise. Folding costs nothing over the unmasked model (the masked heads are still computed, their
    ``o_proj`` columns zeroed); pruning removes the masked heads' q/k/v rows and ``o_proj`` columns, which
    saves work in proportion to the heads removed but leaves layers with odd head counts and a pruning pass
    at start-up. Measured with ``scripts/bench_prune.py`` (one CPU thread on a loaded machine, LLaMA 8 x 40
    heads with the released patterns, folded time / pruned time, 7 repeats): 1.06-1.29 for the released
    masks keeping 52%-79% of the heads (asr_gender, asr_gender_json, emotion, gender), mixed at 82% (asv,
    gender_asr: 0.85-1.23 over two runs), within noise at 89% (aac) and slower at 95%-97% (asr, osr, s2tt:
    0.91); so ``auto`` prunes up to 80% and folds above. Pruning and folding need a binary mask shared by the
    whole batch; a per-sample or soft mask falls back to hooks.

    Args:
        requested: ``mask_application`` from the config: ``auto``, ``fold``, ``hooks`` or ``prune``
            (``fold`` and ``hooks`` are always honoured, so each path stays reachable).
        mask: the gates (a logits mask is binarised at 0.5 first), or None.

    Returns:
        The path to use, or None when there is no mask.

    Example:
        >>> choose_application("auto", load_mask("asr_gender").fit(40, 40).gates())  # 52% kept
        'prune'
    """
    if mask is None:
        return None
    if requested in ("fold", "hooks"):
        return requested
    gates = mask.gates()
    if not (gates.is_binary and gates.is_batch_uniform):
        log_rank_zero(logger, "mask_application=%s: the mask is soft or per-sample; using hooks", requested)
        return "hooks"
    density = float(gates.head_gates().reshape(-1, gates.n_layers, gates.n_heads)[0].float().mean())
    if requested == "prune" or density <= PRUNE_MAX_DENSITY:
        log_rank_zero(logger, "mask_application=%s: pruning (%.1f%% of heads kept)", requested, 100 * density)
        return "prune"
    log_rank_zero(logger, "mask_application=auto: folding (%.1f%% of heads kept)", 100 * density)
    return "fold"


@contextlib.contextmanager
def decoding_mask(
    decoder: nn.Module, mask: Mask | torch.Tensor | None, how: str = "auto", *, apply_ffn: bool = False
) -> Iterator[str | None]:
    """Decode under ``mask`` for the duration of a block; yields the path taken (None without a mask).

    ``prune`` removes the masked heads from ``decoder`` in place and for good (a copy would double a 13B
    model): only the owner of a model that decodes nothing else with it (``evaluate.py``) should ask for it,
    and ``auto`` resolves to it only where it is faster (:func:`choose_application`).

    Args:
        decoder: the backbone's ``decoder`` (the causal LM, peft-wrapped or not).
        mask: the decoding gates (see :func:`prepare_mask`), a logits Mask (binarised at 0.5), a tensor of
            gates, or None; checked against the decoder's geometry.
        how: ``auto``, ``fold``, ``hooks`` or ``prune``.
        apply_ffn: also gate each layer's FFN output with the mask's FFN entry (off in the official code).
    """
    if isinstance(mask, torch.Tensor):
        mask = Mask.from_gates(mask)
    if mask is not None:
        geo = decoder_geometry(decoder)
        mask = mask.fit(geo.n_layers, geo.n_heads)
    path = choose_application(how, mask)
    if path is None:
        yield None
        return
    gates = mask.gates()
    if path == "prune":
        from .prune import prune_heads

        prune_heads(decoder, gates.values, inplace=True)
        yield path
        return
    context = fold_head_mask if path == "fold" else head_mask
    with context(decoder, gates.values, apply_ffn=apply_ffn):
        yield path
