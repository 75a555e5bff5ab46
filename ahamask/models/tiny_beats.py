"""A tiny random BEATs checkpoint in the official format, for tests and the tiny SALMONN bundle.

Real BEATs weights (90 M parameters) are not available in CI. This writes a checkpoint with the same
``{'cfg': dict, 'model': state_dict}`` layout, the same cfg keys and the same state-dict names as the
released ``BEATs_iter3_plus_AS2M*`` files, only smaller. The 16x16 patch embedding over 128 mel bins is
kept, so a tiny model yields as many tokens per second of audio (48) as the real one.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ahamask.models.beats import BEATs, BEATsConfig

__all__ = ["make_tiny_beats_checkpoint", "tiny_beats_config"]

logger = logging.getLogger(__name__)


def tiny_beats_config(
    *,
    embed_dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn_dim: int = 64,
    conv_pos: int = 16,
    finetuned: bool = True,
    n_classes: int = 5,
) -> dict[str, Any]:
    """The cfg dict of a tiny BEATs with the architecture options of BEATs_iter3 (the SALMONN encoder).

    Same keys as the released checkpoints' cfg: DeepNorm post-LN blocks, gated relative position bias
    (320 buckets, max distance 800), 16x16 patches, layer-wise gradient decay 0.6. Dropouts are 0 so a
    tiny model is deterministic in train mode too. The patch embedding is half as wide as the encoder so
    that ``post_extract_proj`` exists, as in the real model (512 -> 768).

    Args:
        embed_dim: Encoder width (``encoder_embed_dim``); must be divisible by ``heads``.
        layers: Number of transformer layers.
        heads: Attention heads.
        ffn_dim: FFN hidden size.
        conv_pos: Kernel size of the convolutional positional embedding.
        finetuned: Include the AudioSet-style ``predictor`` head (as the fine-tuned release does).
        n_classes: Number of predictor classes.

    Returns:
        A cfg dict accepted by :class:`ahamask.models.beats.BEATsConfig`.

    Raises:
        ValueError: If a size is not positive or ``embed_dim`` is not divisible by ``heads``.

    It stays over 60 lines because it is the full cfg literal, one line per key of the released cfg.
    """
    _check_sizes(
        embed_dim=embed_dim,
        layers=layers,
        heads=heads,
        ffn_dim=ffn_dim,
        conv_pos=conv_pos,
        n_classes=n_classes,
    )
    return {
        "encoder_layers": layers,
        "encoder_embed_dim": embed_dim,
        "encoder_ffn_embed_dim": ffn_dim,
        "encoder_attention_heads": heads,
        "activation_fn": "gelu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "dropout_input": 0.0,
        "layer_norm_first": False,
        "conv_bias": False,
        "conv_pos": conv_pos,
        # The real model uses 16 groups; keep that where the width allows it.
        "conv_pos_groups": math.gcd(16, embed_dim),
        "relative_position_embedding": True,
        "num_buckets": 320,
        "max_distance": 800,
        "gru_rel_pos": True,
        "deep_norm": True,
        "input_patch_size": 16,
        "layer_wise_gradient_decay_ratio": 0.6,
        "embed_dim": embed_dim // 2,
        "finetuned_model": finetuned,
        "predictor_dropout": 0.0,
        "predictor_class": n_classes,
    }


def _check_sizes(**sizes: int) -> None:
    """Reject non-positive sizes and an ``embed_dim`` that ``heads`` does not divide, naming the values,
    before they reach :class:`BEATsConfig` as an obscure shape error."""
    bad = [f"{name}={value!r}" for name, value in sizes.items() if not isinstance(value, int) or value <= 0]
    if bad:
        raise ValueError(f"tiny BEATs: sizes must be positive ints, got {', '.join(bad)}")
    embed_dim, heads = sizes["embed_dim"], sizes["heads"]
    if embed_dim % heads or embed_dim < 2:
        raise ValueError(f"tiny BEATs: embed_dim={embed_dim} must be >= 2 and divisible by heads={heads}")


def make_tiny_beats_checkpoint(
    path: str | Path,
    *,
    embed_dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn_dim: int = 64,
    conv_pos: int = 16,
    seed: int = 0,
    finetuned: bool = True,
    n_classes: int = 5,
) -> Path:
    """Write a tiny random BEATs checkpoint ``{'cfg': dict, 'model': state_dict}`` to ``path``.

    The weights depend only on the arguments (the global RNG state is saved and restored around the
    seeded initialisation). The file is written atomically; missing parent folders are created.

    Args:
        path: Output file (``.pt``).
        embed_dim: Encoder width.
        layers: Number of transformer layers.
        heads: Attention heads.
        ffn_dim: FFN hidden size.
        conv_pos: Kernel size of the positional convolution.
        seed: Seed of the random weights.
        finetuned: Include the ``predictor`` head.
        n_classes: Predictor classes.

    Returns:
        The path written.

    Raises:
        ValueError: On invalid sizes (see :func:`tiny_beats_config`).

    Example:
        >>> from ahamask.models.beats import load_beats
        >>> model = load_beats(make_tiny_beats_checkpoint(tmp_path / "beats.pt"))  # doctest: +SKIP
    """
    cfg = tiny_beats_config(
        embed_dim=embed_dim,
        layers=layers,
        heads=heads,
        ffn_dim=ffn_dim,
        conv_pos=conv_pos,
        finetuned=finetuned,
        n_classes=n_classes,
    )
    state = _seeded_state_dict(cfg, seed)
    path = Path(path)
    _save_atomically({"cfg": cfg, "model": state}, path)
    logger.debug("Wrote tiny BEATs checkpoint %s (%d tensors)", path, len(state))
    return path


def _seeded_state_dict(cfg: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a BEATs built from ``cfg`` with weights drawn from ``seed`` alone (the global RNG
    state is restored afterwards), gates and biases perturbed so tests exercise them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BEATs(BEATsConfig(cfg))
        # Official init leaves the gates at 1 and the biases at 0; perturb them so tests exercise them.
        with torch.no_grad():
            for layer in model.encoder.layers:
                layer.self_attn.grep_a.uniform_(0.5, 1.5)
            for name, param in model.named_parameters():
                if name.endswith(".bias") and "layer_norm" not in name:
                    param.normal_(0.0, 0.02)
    # state_dict() repeats the shared relative_attention_bias under every layer, as the official one does.
    return model.state_dict()


def _save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder and a rename, so a reader never sees a
    half-written checkpoint; missing parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
