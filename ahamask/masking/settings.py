"""The mask's settings, read in one place from the official config keys.

The official configs spread what concerns the mask over three sections: ``model.*`` (Gumbel switches, the
mask file, the random-mask ablation), ``run.*`` (initialisation, the temperature schedule, the sparsity
weight) and top-level decode keys (``prob_threshold``; ahamask's ``mask_application``). The YAML keys stay
the official ones; :class:`MaskConfig` is the single reader, so the trainer, the evaluator, the sweep and
the chat all see the same values under one name. ``model.norm_lambda`` is not read: the official train.py
overwrites it with ``run.norm_lambda`` (the config loader warns when the two differ).

The config objects are read by attribute (duck-typed), so this module imports nothing above ``masking``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MaskConfig"]


@dataclass(frozen=True)
class MaskConfig:
    """Everything about the mask that a run is configured with.

    Training: ``use_gumbel``, ``gumbel_hard``, ``gumbel_noise`` (model.*), ``init_mean``, ``init_std``,
    ``tau_decay_steps``, ``tau_begin``, ``tau_end``, ``norm_lambda`` (run.*). Applying: ``apply_ffn``
    (model.apply_ffn_mask), ``path`` (model.weight_mask_path), ``prob_threshold``, ``application``
    (mask_application), ``shuffle``, ``shuffle_mode``, ``shuffle_seed`` (model.shuffle_mask*).
    """

    use_gumbel: bool = True
    gumbel_hard: bool = True
    gumbel_noise: str = "left"
    apply_ffn: bool = False
    init_mean: float = 4.0
    init_std: float = 0.02
    tau_decay_steps: float = 0.3
    tau_begin: float = 4.0
    tau_end: float = 0.05
    norm_lambda: float = 1e-4
    path: str | None = None
    prob_threshold: float = 0.5
    application: str = "auto"
    shuffle: bool = False
    shuffle_mode: str = "global"
    shuffle_seed: int = 0

    @classmethod
    def _model_part(cls, model: Any) -> dict[str, Any]:
        return {
            "use_gumbel": model.use_gumbel,
            "gumbel_hard": model.gumbel_hard,
            "gumbel_noise": model.gumbel_noise,
            "apply_ffn": model.apply_ffn_mask,
            "path": model.weight_mask_path or None,
            "shuffle": model.shuffle_mask,
            "shuffle_mode": model.shuffle_mask_mode,
            "shuffle_seed": model.shuffle_mask_seed,
        }

    @classmethod
    def from_train_config(cls, cfg: Any) -> MaskConfig:
        """From a :class:`~ahamask.config.TrainConfig` (``model`` and ``run`` sections)."""
        run = cfg.run
        return cls(
            **cls._model_part(cfg.model),
            init_mean=run.mask_init_mean,
            init_std=run.mask_init_std,
            tau_decay_steps=run.tau_decay_steps,
            tau_begin=run.tau_temp_begin,
            tau_end=run.tau_temp_end,
            norm_lambda=run.norm_lambda,
        )

    @classmethod
    def from_decode_config(cls, cfg: Any) -> MaskConfig:
        """From a :class:`~ahamask.config.DecodeConfig` (``model`` section and the top-level decode keys)."""
        return cls(
            **cls._model_part(cfg.model),
            prob_threshold=cfg.prob_threshold,
            application=cfg.mask_application,
        )
