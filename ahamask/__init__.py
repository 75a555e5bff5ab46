"""ahamask: trigger tasks in SALMONN by masking attention heads instead of writing instructions.

Public API (imported lazily so ``import ahamask`` stays fast)::

    ahamask.load_mask(path) -> Mask                  # released .pth or .safetensors logits (+ geometry)
    ahamask.save_mask(mask, path)
    ahamask.build_backbone(model_cfg)                # SALMONN, Qwen2-Audio or AF3 by model.arch
    with ahamask.head_mask(model.decoder, mask): ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_mask": "ahamask.masking.checkpoint",
    "save_mask": "ahamask.masking.checkpoint",
    "head_mask": "ahamask.masking.hooks",
    "ablate_heads": "ahamask.masking.hooks",
    "attach_head_mask": "ahamask.masking.hooks",
    "remove_head_hooks": "ahamask.masking.hooks",
    "HeadMask": "ahamask.masking.mask",
    "binarize": "ahamask.masking.mask",
    "mask_stats": "ahamask.masking.mask",
    "fold_head_mask": "ahamask.masking.fold",
    "prune_heads": "ahamask.masking.prune",
    "SALMONN": "ahamask.models.salmonn",
    "build_backbone": "ahamask.models.backbone",
    "Mask": "ahamask.masking.value",
    "decoding_mask": "ahamask.masking.apply",
    "make_tiny_bundle": "ahamask.models.tiny",
    "load_train_config": "ahamask.config",
    "load_decode_config": "ahamask.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ahamask' has no attribute {name!r}")
