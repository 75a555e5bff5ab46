"""The window-level Q-Former of SALMONN, as transformers' ``Blip2QFormerModel``, and its official key names.

SALMONN builds BLIP-2's ``BertLMHeadModel`` from ``bert-base-uncased`` and deletes the word and position
embeddings, the text feed-forward blocks and the LM head. What is left (a LayerNorm on the query embeddings,
then per layer self-attention over the queries, cross-attention to the audio frames and the "query"
feed-forward block) is exactly ``Blip2QFormerModel`` with cross-attention in every layer and no text input.
Its outputs equal the hand-written BERT module this replaced bit for bit (max abs difference 0.0, with and
without a padded cross-attention mask; ``tests/unit/models/test_qformer.py``), and it draws its random initial
weights in the same order, so seeded tiny models are unchanged.

Only the module names differ from the official checkpoints' (``speech_Qformer.bert.…``): three renames map
one to the other (:func:`module_name`, :func:`official_name`); everything that reads or writes official
checkpoints goes through them.
"""

from __future__ import annotations

import re

from transformers import Blip2QFormerConfig, Blip2QFormerModel

__all__ = ["build_qformer", "module_name", "official_name"]

_PREFIX = "speech_Qformer."
# (official, module) pairs of the renames, applied after the SALMONN prefix; the attention rename is a regex.
_RENAMES = (("bert.embeddings.LayerNorm.", "layernorm."), ("bert.encoder.", "encoder."))
_OFFICIAL_ATTENTION = re.compile(r"\.(attention|crossattention)\.self\.")
_MODULE_ATTENTION = re.compile(r"\.(attention|crossattention)\.attention\.")


def build_qformer(
    hidden_size: int,
    num_attention_heads: int,
    intermediate_size: int,
    num_hidden_layers: int,
    encoder_width: int,
) -> Blip2QFormerModel:
    """SALMONN's speech Q-Former: BERT layers that all cross-attend to ``encoder_width``-wide audio frames.

    Args:
        hidden_size, num_attention_heads, intermediate_size, num_hidden_layers: the BERT sizes
            (768, 12, 3072, 2 in the official SALMONN).
        encoder_width: width of the audio frames (Whisper's ``d_model``, plus BEATs' when used).

    Returns:
        A ``Blip2QFormerModel``; call it as ``qformer(query_embeds=[batch, queries, hidden],
        encoder_hidden_states=[batch, frames, encoder_width]).last_hidden_state``.
    """
    config = Blip2QFormerConfig(
        hidden_size=hidden_size,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        encoder_hidden_size=encoder_width,
        # SALMONN: cross-attention in every layer, no text tokens, BERT's epsilon, dropouts and init.
        cross_attention_frequency=1,
        use_qformer_text_input=False,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.02,
        hidden_act="gelu",  # BERT's exact erf form
    )
    return Blip2QFormerModel(config)


def module_name(name: str) -> str:
    """An official checkpoint key -> this model's parameter name (keys outside the Q-Former unchanged).

    Example:
        >>> module_name("speech_Qformer.bert.encoder.layer.0.crossattention.self.key.weight")
        'speech_Qformer.encoder.layer.0.crossattention.attention.key.weight'
    """
    if not name.startswith(_PREFIX):
        return name
    rest = name[len(_PREFIX) :]
    for official, module in _RENAMES:
        if rest.startswith(official):
            rest = module + rest[len(official) :]
    return _PREFIX + _OFFICIAL_ATTENTION.sub(r".\1.attention.", rest)


def official_name(name: str) -> str:
    """This model's parameter name -> the official checkpoint key (the inverse of :func:`module_name`).

    Example:
        >>> official_name("speech_Qformer.layernorm.weight")
        'speech_Qformer.bert.embeddings.LayerNorm.weight'
    """
    if not name.startswith(_PREFIX):
        return name
    rest = _MODULE_ATTENTION.sub(r".\1.self.", name[len(_PREFIX) :])
    for official, module in _RENAMES:
        if rest.startswith(module):
            rest = official + rest[len(module) :]
    return _PREFIX + rest
