"""The window-level Q-Former of SALMONN: a BERT encoder whose layers all cross-attend to audio frames.

SALMONN builds BLIP-2's ``BertLMHeadModel`` from ``bert-base-uncased`` and then deletes the word and
position embeddings, the text feed-forward blocks and the LM head, so what is left is: a LayerNorm on the
query embeddings, then per layer self-attention over the queries, cross-attention to the encoder frames and
the "query" feed-forward block. Only that surviving part is written here (BLIP-2's module is not in any
installed library), with the module names of the original so official state dicts load by name:
``bert.embeddings.LayerNorm``, ``bert.encoder.layer.N.{attention,crossattention}.{self.{query,key,value},
output.{dense,LayerNorm}}``, ``bert.encoder.layer.N.{intermediate_query.dense,output_query.{dense,LayerNorm}}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QFormerConfig", "QFormer"]


@dataclass
class QFormerConfig:
    """Sizes of the Q-Former; the defaults are BERT-base as used by SALMONN."""

    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_hidden_layers: int = 2
    encoder_width: int = 1280
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    # Kept only so the official checkpoint's ``embeddings.position_ids`` buffer has a home.
    max_position_embeddings: int = 512


class _Attention(nn.Module):
    """Multi-head attention with BERT's names (``query``/``key``/``value``); keys may come from the encoder."""

    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """hidden [batch, queries, width], context [batch, frames, kv_width] -> [batch, queries, width]."""
        q, k, v = (
            self._split(self.query(hidden)),
            self._split(self.key(context)),
            self._split(self.value(context)),
        )
        bias = None
        if context_mask is not None:
            # BERT's extended mask: 0 where attended, a large negative number where masked.
            bias = (1.0 - context_mask[:, None, None, :].to(q.dtype)) * torch.finfo(q.dtype).min
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=1 / math.sqrt(self.head_dim),
        )
        return out.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)


class _AttentionOutput(nn.Module):
    """BERT's ``SelfOutput``: projection, dropout, residual, LayerNorm."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _AttentionBlock(nn.Module):
    """``attention`` / ``crossattention`` of a BERT layer (names ``self`` and ``output``)."""

    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.self = _Attention(cfg, kv_width)
        self.output = _AttentionOutput(cfg)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.output(self.self(hidden, context, context_mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))  # BERT's "gelu" is the exact erf form


class _Output(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _Layer(nn.Module):
    """Self-attention over queries, cross-attention to audio, then the query feed-forward block."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.attention = _AttentionBlock(cfg, cfg.hidden_size)
        self.crossattention = _AttentionBlock(cfg, cfg.encoder_width)
        self.intermediate_query = _Intermediate(cfg)
        self.output_query = _Output(cfg)

    def forward(
        self, queries: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None
    ) -> torch.Tensor:
        hidden = self.attention(queries, queries)
        hidden = self.crossattention(hidden, audio, audio_mask)
        return self.output_query(self.intermediate_query(hidden), hidden)


class _Embeddings(nn.Module):
    """What SALMONN keeps of BERT's embeddings: the LayerNorm (and dropout) applied to the query tokens."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # Official checkpoints carry this buffer; nothing reads it once position embeddings are gone.
        self.register_buffer(
            "position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0), persistent=False
        )

    def forward(self, query_embeds: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(query_embeds))


class _Encoder(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class _Bert(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def forward(
        self,
        query_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.embeddings(query_embeds)
        for layer in self.encoder.layer:
            hidden = layer(hidden, encoder_hidden_states, encoder_attention_mask)
        return hidden


class QFormer(nn.Module):
    """SALMONN's speech Q-Former (the ``speech_Qformer`` attribute; parameters live under ``bert.``)."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.bert = _Bert(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorms.
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def forward(
        self,
        query_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the queries over the audio frames.

        Args:
            query_embeds: [batch, queries, hidden].
            encoder_hidden_states: [batch, frames, encoder_width].
            encoder_attention_mask: [batch, frames], 1 where a frame is real (``None``: all real).

        Returns:
            [batch, queries, hidden] last hidden states.
        """
        return self.bert(query_embeds, encoder_hidden_states, encoder_attention_mask)
