"""BEATs audio encoder (Chen et al., 2022), key-compatible with the official microsoft/unilm checkpoints.

SALMONN runs BEATs next to Whisper and concatenates their features. The official code is not packaged on
PyPI, so the encoder is written here. Module attribute names follow the official ones so that the
released checkpoints (``{'cfg': dict, 'model': state_dict}``) load by name with no renaming:

- ``patch_embedding`` (16x16 Conv2d over the [frames, 128 mel] fbank), ``layer_norm``, ``post_extract_proj``;
- ``encoder.pos_conv.0.{weight_g,weight_v,bias}``: a grouped Conv1d with weight normalisation over dim 2,
  stored in the pre-parametrization ``torch.nn.utils.weight_norm`` layout;
- ``encoder.layers.N.self_attn.{q,k,v,out}_proj``, ``grep_linear``, ``grep_a``, and
  ``relative_attention_bias``: owned by layer 0 and shared (the same module) by every other layer, so it
  appears under each layer's name in the state dict, as in the official model;
- ``encoder.layers.N.{self_attn_layer_norm,fc1,fc2,final_layer_norm}``, ``encoder.layer_norm``;
- ``predictor`` for fine-tuned (AudioSet-tagging) checkpoints.

The arithmetic mirrors the official one step by step (including the ``alpha = 32`` rescaling of the
attention logits, the gated relative position bias and the way the sample-level padding mask is reduced
to patches), so the features agree with the official code to float32 rounding.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ahamask.models.fbank import BEATS_FBANK_MEAN, BEATS_FBANK_STD, beats_fbank

__all__ = ["BEATs", "BEATsConfig", "load_beats"]

logger = logging.getLogger(__name__)

# Field names and defaults of the official ``BEATsConfig``; a checkpoint's ``cfg`` overrides them.
_CONFIG_DEFAULTS: dict[str, Any] = {
    "input_patch_size": -1,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0,
    "layer_norm_first": False,
    "deep_norm": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False,
    "predictor_dropout": 0.1,
    "predictor_class": 527,
}

# Fixed in the official attention: logits are computed with q / alpha, shifted by their row maximum and
# scaled back by alpha, which keeps fp16 logits in range.
_ATTN_ALPHA = 32.0


class BEATsConfig:
    """Hyper-parameters of a BEATs model, with the official field names and defaults.

    Any key of the given dict becomes an attribute, as in the official class (checkpoints written by other
    versions may carry extra keys); the fields the model uses are validated when :class:`BEATs` is built.

    Args:
        cfg: The ``'cfg'`` dict of a BEATs checkpoint, or None for the defaults.

    Example:
        >>> BEATsConfig({"encoder_layers": 2}).encoder_layers
        2
    """

    input_patch_size: int
    embed_dim: int
    conv_bias: bool
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    activation_fn: str
    layer_wise_gradient_decay_ratio: float
    layer_norm_first: bool
    deep_norm: bool
    dropout: float
    attention_dropout: float
    activation_dropout: float
    encoder_layerdrop: float
    dropout_input: float
    conv_pos: int
    conv_pos_groups: int
    relative_position_embedding: bool
    num_buckets: int
    max_distance: int
    gru_rel_pos: bool
    finetuned_model: bool
    predictor_dropout: float
    predictor_class: int

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        self.__dict__.update(_CONFIG_DEFAULTS)
        if cfg is not None:
            self.update(cfg)

    def update(self, cfg: Mapping[str, Any]) -> None:
        """Override fields from a mapping.

        Raises:
            ValueError: If ``cfg`` is not a mapping with string keys.
        """
        if not isinstance(cfg, Mapping):
            raise ValueError(f"BEATsConfig: expected a dict, got {type(cfg).__name__}")
        bad = [repr(k) for k in cfg if not isinstance(k, str)]
        if bad:
            raise ValueError(f"BEATsConfig: keys must be strings, got {', '.join(bad)}")
        unknown = sorted(set(cfg) - set(_CONFIG_DEFAULTS))
        if unknown:
            logger.debug("BEATsConfig: keeping keys the model does not use: %s", unknown)
        self.__dict__.update(cfg)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (the checkpoint ``'cfg'`` format)."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"BEATsConfig({self.__dict__!r})"

    def validate(self) -> None:
        """Check the fields the model is built from; raise once, naming every bad field.

        Raises:
            ValueError: Listing each invalid field with its value and the expected form.
        """
        errors: list[str] = []
        for name in (
            "input_patch_size",
            "embed_dim",
            "encoder_layers",
            "encoder_embed_dim",
            "encoder_ffn_embed_dim",
            "encoder_attention_heads",
            "conv_pos",
            "conv_pos_groups",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                errors.append(f"{name}={value!r} (expected a positive int)")
        if not errors:
            if self.encoder_embed_dim % self.encoder_attention_heads:
                errors.append(
                    f"encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                    f"encoder_attention_heads={self.encoder_attention_heads}"
                )
            if self.encoder_embed_dim % self.conv_pos_groups:
                errors.append(
                    f"encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                    f"conv_pos_groups={self.conv_pos_groups}"
                )
        if self.activation_fn not in _ACTIVATIONS:
            errors.append(f"activation_fn={self.activation_fn!r} (expected one of {sorted(_ACTIVATIONS)})")
        if self.deep_norm and self.layer_norm_first:
            errors.append("deep_norm=True and layer_norm_first=True cannot be combined")
        if self.relative_position_embedding and (self.num_buckets < 4 or self.max_distance <= 0):
            errors.append(
                f"num_buckets={self.num_buckets} / max_distance={self.max_distance} "
                "(expected num_buckets >= 4 and max_distance > 0)"
            )
        if self.finetuned_model and (not isinstance(self.predictor_class, int) or self.predictor_class <= 0):
            errors.append(f"predictor_class={self.predictor_class!r} (expected a positive int)")
        if errors:
            raise ValueError("BEATsConfig: " + "; ".join(errors))


def _gelu(x: torch.Tensor) -> torch.Tensor:
    # The official computes GELU in float32 whatever the input dtype.
    return F.gelu(x.float()).type_as(x)


def _gelu_accurate(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": _gelu,
    "gelu_fast": _gelu_accurate,
    "gelu_accurate": _gelu_accurate,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (BEATs' layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class _WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``g * v / ||v||`` with the norm over every dim but ``dim``.

    Written as a module with explicit ``weight_g`` / ``weight_v`` parameters (instead of
    ``torch.nn.utils.parametrizations.weight_norm``, whose state dict says ``parametrizations.weight.
    original0``) so the state dict keeps the official checkpoint names on every torch version. The weight
    is computed by ``torch._weight_norm``, the kernel behind both torch weight-norm APIs, so the numbers are
    those of the official model.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int, dim: int = 2) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.dim = dim
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))

    def compute_weight(self) -> torch.Tensor:
        """The effective convolution weight [out, in / groups, kernel]."""
        return torch._weight_norm(self.weight_v, self.weight_g, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, channels, time] -> [batch, channels, time + 1 - kernel % 2]."""
        return F.conv1d(x, self.compute_weight(), self.bias, padding=self.padding, groups=self.groups)


class _TrimLast(nn.Module):
    """Drops the extra output step a "same" padding produces with an even kernel (fairseq's SamePad)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


@functools.lru_cache(maxsize=4)
def _relative_position_buckets(num_buckets: int, max_distance: int, q_len: int, k_len: int) -> torch.Tensor:
    """T5-style bidirectional buckets [q_len, k_len] of ``key_pos - query_pos``, computed on the CPU.

    The official computes the log-spaced buckets on the CPU in float32 over the full [q_len, k_len] grid;
    doing the same (not on the GPU, not on a 1-D shortcut) keeps the truncation to integer buckets exact.
    """
    relative = torch.arange(k_len, dtype=torch.long)[None, :] - torch.arange(q_len, dtype=torch.long)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    max_exact = half // 2
    # Zero distances take the exact branch below; clamping them keeps log() away from -inf -> long casts.
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).to(torch.long)
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class BEATsAttention(nn.Module):
    """BEATs self-attention with a (gated) bucketed relative position bias.

    Args:
        embed_dim: Model width.
        num_heads: Number of heads.
        dropout: Dropout on the attention probabilities.
        relative_attention_bias: The bucket embedding [num_buckets, num_heads] (shared across layers), or
            None when the model has no relative position bias.
        num_buckets: Number of relative position buckets.
        max_distance: Distance beyond which buckets stop growing.
        gru_rel_pos: Whether each query gates the bias through ``grep_linear`` / ``grep_a``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float,
        relative_attention_bias: nn.Embedding | None,
        num_buckets: int,
        max_distance: int,
        gru_rel_pos: bool,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.dropout_module = nn.Dropout(dropout)
        # Either a registered submodule (the shared embedding) or a plain None attribute.
        self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gru_rel_pos = gru_rel_pos
        if gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def compute_bias(self, q_len: int, k_len: int) -> torch.Tensor:
        """Relative position bias [heads, q_len, k_len] from the bucket embedding."""
        if self.relative_attention_bias is None:
            raise RuntimeError("BEATsAttention.compute_bias: this model has no relative position bias")
        buckets = _relative_position_buckets(self.num_buckets, self.max_distance, q_len, k_len)
        weight = self.relative_attention_bias.weight
        return self.relative_attention_bias(buckets.to(weight.device)).permute(2, 0, 1)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention over patches.

        Args:
            x: [batch, time, dim] hidden states.
            key_padding_mask: [batch, time] bool, True where the key is padding.
            position_bias: [heads, time, time] raw bias from an earlier layer, or None to compute it here.

        Returns:
            ([batch, time, dim] output, the raw [heads, time, time] position bias for the next layer).
        """
        batch, length, _ = x.shape
        if self.relative_attention_bias is not None and position_bias is None:
            position_bias = self.compute_bias(length, length)

        # Scaling and the 1/alpha factor are applied in the official order (two separate products).
        q = self.q_proj(x) * self.scaling
        q = q * (1 / _ATTN_ALPHA)
        q = q.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # [batch, heads, time, d]
        k = self.k_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        scores = q @ k.transpose(-1, -2)  # [batch, heads, time, time]
        scores = (scores - scores.amax(dim=-1, keepdim=True)) * _ATTN_ALPHA
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))

        if position_bias is not None:
            bias = position_bias.unsqueeze(0)  # [1, heads, time, time]
            if self.gru_rel_pos:
                # Each query scales the shared bias by a gate in (1, 2+...), from its unscaled projection.
                query = q * _ATTN_ALPHA / self.scaling
                gates = self.grep_linear(query).view(batch, self.num_heads, length, 2, 4).sum(-1)
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)
                gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [batch, heads, time, 1]
                bias = gate * bias
            scores = scores + bias

        probs = F.softmax(scores, dim=-1).type_as(scores)
        probs = self.dropout_module(probs)
        out = (probs @ v).transpose(1, 2).reshape(batch, length, self.embed_dim)
        return self.out_proj(out), position_bias


class BEATsEncoderLayer(nn.Module):
    """One transformer block: attention then FFN, post-norm (optionally DeepNorm-scaled) or pre-norm."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        self.layer_norm_first = cfg.layer_norm_first
        self.activation_fn = _ACTIVATIONS[cfg.activation_fn]
        self.self_attn = BEATsAttention(
            cfg.encoder_embed_dim,
            cfg.encoder_attention_heads,
            cfg.attention_dropout,
            relative_attention_bias,
            cfg.num_buckets,
            cfg.max_distance,
            cfg.gru_rel_pos,
        )
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.activation_dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)
        self.fc1 = nn.Linear(cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, cfg.encoder_embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)
        # DeepNorm up-weights the residual branch by (2N)^(1/4).
        self.deep_norm_alpha = math.pow(2 * cfg.encoder_layers, 1 / 4) if cfg.deep_norm else 1.0

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.fc2(self.dropout2(self.activation_fn(self.fc1(x)))))

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None, position_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [batch, time, dim] -> ([batch, time, dim], position bias passed on to the next layer)."""
        if self.layer_norm_first:
            attn, position_bias = self.self_attn(self.self_attn_layer_norm(x), padding_mask, position_bias)
            x = x + self.dropout1(attn)
            return x + self._ffn(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.self_attn(x, padding_mask, position_bias)
        x = self.self_attn_layer_norm(x * self.deep_norm_alpha + self.dropout1(attn))
        x = self.final_layer_norm(x * self.deep_norm_alpha + self._ffn(x))
        return x, position_bias


class BEATsTransformerEncoder(nn.Module):
    """Convolutional positional embedding followed by the transformer layers."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.dropout = cfg.dropout
        self.layerdrop = cfg.encoder_layerdrop
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_wise_gradient_decay_ratio = cfg.layer_wise_gradient_decay_ratio
        self.pos_conv = nn.Sequential(
            _WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups), _TrimLast(cfg.conv_pos), nn.GELU()
        )
        # One bucket embedding for the whole stack: registered under every layer (as the official does by
        # re-assigning layer 0's module), so each layer's name is in the state dict but there is one tensor.
        shared_bias = (
            nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
            if cfg.relative_position_embedding
            else None
        )
        self.layers = nn.ModuleList(BEATsEncoderLayer(cfg, shared_bias) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [batch, time, dim], padding_mask [batch, time] (True = pad) -> [batch, time, dim]."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)

        position_bias = None
        for layer in self.layers:
            if self.layer_wise_gradient_decay_ratio != 1.0:
                x = _GradScale.apply(x, self.layer_wise_gradient_decay_ratio)
            # LayerDrop (training only). The official draws from numpy's global RNG; torch's is used here.
            if self.training and self.layerdrop > 0 and torch.rand(()).item() <= self.layerdrop:
                continue
            x, position_bias = layer(x, padding_mask, position_bias)

        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


def _zero_padded_lengths(source: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[batch] unpadded lengths when the batch is right-padded with zeros (collate's padding), else None.

    With them the fbank skips the frames that read only padding (their values are known exactly); any other
    padding (inner, non-zero) gets every frame computed, as the official does.
    """
    if padding_mask is None or not padding_mask.any():
        return None
    padding_mask = padding_mask.bool()
    lengths = (~padding_mask).sum(dim=1)
    right = torch.arange(source.shape[1], device=source.device).unsqueeze(0) >= lengths.unsqueeze(1)
    if not torch.equal(right, padding_mask) or source.masked_select(padding_mask).any():
        return None
    return lengths


def _reduce_padding_mask(padding_mask: torch.Tensor, length: int) -> torch.Tensor:
    """Shrink a [batch, n] padding mask to [batch, length], as the official ``forward_padding_mask``.

    The trailing ``n % length`` entries are dropped and each run of ``n // length`` consecutive entries
    becomes one, True only if the whole run is padding. For patches this treats the (time-major, 8 mel
    patches per step) patch sequence as if it were linear in time; that is the official behaviour.
    """
    extra = padding_mask.size(1) % length
    if extra > 0:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.view(padding_mask.size(0), length, -1).all(-1)


class BEATs(nn.Module):
    """The BEATs encoder (and, for fine-tuned checkpoints, its AudioSet tagging head).

    Args:
        cfg: A :class:`BEATsConfig`, or the checkpoint's cfg dict.

    Raises:
        ValueError: If a config field is invalid (all bad fields are named at once).

    Example:
        >>> model = BEATs(BEATsConfig({"input_patch_size": 16, "encoder_layers": 1, "encoder_embed_dim": 32,
        ...                            "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
        ...                            "embed_dim": 16, "conv_pos": 16})).eval()
        >>> feats, mask = model.extract_features(torch.zeros(1, 16000))
        >>> feats.shape
        torch.Size([1, 48, 32])
    """

    def __init__(self, cfg: BEATsConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(cfg, BEATsConfig):
            cfg = BEATsConfig(cfg)
        cfg.validate()
        self.cfg = cfg
        self.embed = cfg.embed_dim
        self.post_extract_proj = (
            nn.Linear(self.embed, cfg.encoder_embed_dim) if self.embed != cfg.encoder_embed_dim else None
        )
        self.input_patch_size = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, self.embed, kernel_size=cfg.input_patch_size, stride=cfg.input_patch_size, bias=cfg.conv_bias
        )
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.encoder = BEATsTransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(self.embed)
        if cfg.finetuned_model:
            self.predictor_dropout = nn.Dropout(cfg.predictor_dropout)
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
        else:
            self.predictor = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation close to the official one (BERT-style normal(0, 0.02) linears).

        Only tiny test models rely on it; real weights come from :func:`load_beats`.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.xavier_normal_(module.weight)
        conv = self.encoder.pos_conv[0]
        conv.weight_v.normal_(0.0, math.sqrt(4.0 / (self.cfg.conv_pos * self.cfg.encoder_embed_dim)))
        # weight_norm starts with g = ||v||, i.e. the effective weight equals v.
        conv.weight_g.copy_(torch.linalg.vector_norm(conv.weight_v, dim=(0, 1), keepdim=True))
        conv.bias.zero_()

    def extract_features(
        self,
        source: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        fbank_mean: float = BEATS_FBANK_MEAN,
        fbank_std: float = BEATS_FBANK_STD,
        feature_only: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode a batch of 16 kHz waveforms.

        The fbank is computed on the source's device in float64 (see
        :func:`ahamask.models.fbank.beats_fbank`), then 16x16 patches over [frames, 128 mel] give
        ``(frames // 16) * 8`` tokens, ordered time-major (8 mel patches per 160 ms step): 48 tokens for 1 s.

        Args:
            source: [batch, samples] float waveform in [-1, 1]; at least 2800 samples (16 fbank frames).
            padding_mask: [batch, samples] bool, True where the sample is padding, or None.
            fbank_mean: Normalisation mean of the fbank.
            fbank_std: Normalisation std of the fbank.
            feature_only: Return encoder features (True, what SALMONN uses) or, for fine-tuned models,
                the clip-level sigmoid class probabilities (False). The official default is False.

        Returns:
            ``(features [batch, tokens, encoder_embed_dim], padding_mask [batch, tokens] or None)``; with
            ``feature_only=False`` on a fine-tuned model, ``(probs [batch, predictor_class], padding_mask)``.

        Raises:
            ValueError: If the source is not [batch, samples], is shorter than one patch, or the padding
                mask's shape differs from the source's.
        """
        _check_source(source, padding_mask)
        fbank = beats_fbank(  # [batch, frames, 128] fp32
            source,
            fbank_mean=fbank_mean,
            fbank_std=fbank_std,
            lengths=_zero_padded_lengths(source, padding_mask),
        )
        if fbank.shape[1] < self.input_patch_size:
            raise ValueError(
                f"BEATs.extract_features: {source.shape[1]} samples give {fbank.shape[1]} fbank frames, fewer "
                f"than one {self.input_patch_size}-frame patch"
            )
        if padding_mask is not None:
            padding_mask = _reduce_padding_mask(padding_mask.bool(), fbank.shape[1])

        features = self.patch_embedding(fbank.unsqueeze(1))  # [batch, embed, frames / 16, 128 / 16]
        features = features.reshape(features.shape[0], features.shape[1], -1).transpose(1, 2)
        features = self.layer_norm(features)
        if padding_mask is not None:
            padding_mask = _reduce_padding_mask(padding_mask, features.shape[1])
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)

        x = self.encoder(self.dropout_input(features), padding_mask=padding_mask)
        if feature_only or self.predictor is None:
            return x, padding_mask

        logits = self.predictor(self.predictor_dropout(x))  # [batch, tokens, classes]
        return torch.sigmoid(_mean_over_tokens(logits, padding_mask)), padding_mask

    def forward(
        self, source: torch.Tensor, padding_mask: torch.Tensor | None = None, feature_only: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same as :meth:`extract_features` (so forward hooks see the encoder call)."""
        return self.extract_features(source, padding_mask, feature_only=feature_only)


def _check_source(source: torch.Tensor, padding_mask: torch.Tensor | None) -> None:
    """Reject a source that is not [batch, samples] or a padding mask of another shape, before the fbank
    turns the mistake into an obscure shape error."""
    if source.dim() != 2:
        raise ValueError(
            f"BEATs.extract_features: source must be [batch, samples], got {tuple(source.shape)}"
        )
    if padding_mask is not None and padding_mask.shape != source.shape:
        raise ValueError(
            f"BEATs.extract_features: padding_mask shape {tuple(padding_mask.shape)} != source shape "
            f"{tuple(source.shape)}"
        )


def _mean_over_tokens(logits: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Clip-level logits [batch, classes]: the mean over the non-padded tokens only, as the official."""
    if padding_mask is not None and padding_mask.any():
        logits = logits.masked_fill(padding_mask.unsqueeze(-1), 0.0).sum(dim=1)
        return logits / (~padding_mask).sum(dim=1, keepdim=True)
    return logits.mean(dim=1)


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_beats(path: str | Path, map_location: str | torch.device = "cpu") -> BEATs:
    """Build a :class:`BEATs` from an official checkpoint ``{'cfg': dict, 'model': state_dict}``.

    Every key must match: missing or unexpected names and shape mismatches are reported together (never a
    silent partial load). The model is returned in eval mode, on ``map_location``. Because layers share one relative position
    embedding, the checkpoint's copies under layers 1.. must equal layer 0's; if they differ, a warning is
    logged and, as in the official ``load_state_dict``, the last layer's copy wins.

    Args:
        path: Checkpoint file, e.g. ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``.
        map_location: Device the tensors are loaded to and the model is placed on.

    Returns:
        The loaded model, in eval mode.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be read as a weights-only torch checkpoint, is not a dict with
            ``'cfg'`` and ``'model'``, has an invalid cfg, or its state dict does not match the model.

    Example:
        >>> model = load_beats("BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")  # doctest: +SKIP
        >>> model.cfg.encoder_embed_dim  # doctest: +SKIP
        768
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such BEATs checkpoint file")
    cfg, state = _read_beats_checkpoint(path, map_location)
    try:
        model = BEATs(BEATsConfig(cfg))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    problems = _state_dict_problems(model.state_dict(), state)
    if problems:
        raise ValueError(f"{path}: state dict does not match the BEATs config; " + "; ".join(problems))
    _warn_if_shared_bias_differs(state, path)
    model.load_state_dict(state, strict=True)
    logger.info(
        "Loaded BEATs from %s (%d layers, dim %d, fine-tuned=%s)",
        path,
        model.cfg.encoder_layers,
        model.cfg.encoder_embed_dim,
        model.cfg.finetuned_model,
    )
    return model.to(torch.device(map_location)).eval()


def _read_beats_checkpoint(
    path: Path, map_location: str | torch.device
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The ``cfg`` and ``model`` dicts of an official checkpoint, read weights-only (no code is unpickled);
    any unreadable or misshapen file becomes one ``ValueError`` line naming it."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types (pickle, zip, weights-only unpickler errors).
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable weights-only torch checkpoint ({first_line})") from exc
    if not isinstance(checkpoint, Mapping) or "cfg" not in checkpoint or "model" not in checkpoint:
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(
            f"{path}: expected a dict with 'cfg' and 'model' (official BEATs format), got {found}"
        )
    state = checkpoint["model"]
    if not isinstance(checkpoint["cfg"], Mapping) or not isinstance(state, Mapping):
        raise ValueError(
            f"{path}: 'cfg' and 'model' must be dicts, got {type(checkpoint['cfg']).__name__} and "
            f"{type(state).__name__}"
        )
    return checkpoint["cfg"], state


def _state_dict_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> list[str]:
    """Every way ``state`` differs from the model's state dict (missing, unexpected, non-tensor or
    mis-shaped entries), so one error reports them all instead of the first."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    mismatched = []
    for key in sorted(set(expected) & set(state)):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            mismatched.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(expected[key].shape)}")
    if mismatched:
        problems.append(f"shape mismatches: {_describe(mismatched)}")
    return problems


def _warn_if_shared_bias_differs(state: Mapping[str, Any], path: Path) -> None:
    """Warn when the checkpoint's per-layer copies of the one shared relative position embedding differ:
    loading keeps the last layer's (as the official load does), which may not be what was trained."""
    shared = [key for key in state if key.endswith("self_attn.relative_attention_bias.weight")]
    if shared and any(not torch.equal(state[key], state[shared[0]]) for key in shared[1:]):
        logger.warning(
            "%s: the per-layer copies of the shared relative_attention_bias differ; using the "
            "last layer's, as the official load does",
            path,
        )
