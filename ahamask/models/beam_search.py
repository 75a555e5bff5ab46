"""Beam search as transformers 4.28 runs it for SALMONN-AHAMask, and the official row-0 stop rule.

The paper's beam-4 numbers come from ``LlamaForCausalLM.generate(inputs_embeds=..., num_beams=4)`` under
transformers 4.28. Generating from embeddings only, 4.28 starts the token ids with a dummy BOS that is never
fed to the model but is counted everywhere a length is used:

* a finished hypothesis scores ``sum_logprobs / len(ids) ** length_penalty`` with the dummy BOS in
  ``len(ids)`` and without the ``</s>`` (so the length equals the number of generated tokens, ``</s>``
  included); newer transformers divide by the generated length without that shift;
* a sample is done once it holds ``num_beams`` hypotheses and the best candidate of the step (finished or
  not), divided by the current length with the BOS, cannot beat the worst kept hypothesis (newer
  transformers compare the best running beam);
* ``min_length`` and the repetition penalty see the dummy BOS (``min_length=1`` is therefore a no-op);
* a sample that is done is padded with the pad id (the LLM's ``generation_config.pad_token_id``, or
  ``</s>`` when it has none, as 4.28 falls back), and its rows are reordered from row 0.

:func:`official_beam_search` is that algorithm as a small loop over the model's cached forward: the prompt is
run once per sample and the KV cache is then repeated per beam (4.28 ran the prefill once per beam), which
gives the same logits. Head-mask hooks see ``batch`` rows during the prefill and ``batch * num_beams`` rows
after, sample-major, which :func:`ahamask.masking.hooks._expand_rows` maps back to each sample's mask.

:class:`Row0StoppingCriteria` is the official ``StoppingCriteriaSub``: it looks at row 0 only, so the whole
batch stops when sample 0 ends. It is a defect, reachable for comparisons only (``generate.stop_rule:
official_row0``). In beam mode the running rows never end in ``</s>`` (finished hypotheses leave the beam),
so it fires only when sample 0 is done *and* the pad id is ``</s>``: the batch then stops one step after
sample 0 is done, and every other sample keeps its best hypothesis so far.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.generation import (
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BeamHypotheses428",
    "Row0StoppingCriteria",
    "StoppingCriteriaList",
    "decode_rules",
    "official_beam_kwargs",
    "official_beam_search",
    "generate_with_shared_prefill",
    "generation_kwargs",
]

BEAM_SCORINGS = ("transformers", "official")
STOP_RULES = ("per_sample", "official_row0")

# 4.28 gives every beam but the first -1e9 at the start, so the first step expands beam 0 only.
_INACTIVE_BEAM_SCORE = -1e9


class BeamHypotheses428:
    """The n-best list of one sample, with transformers 4.28's ``BeamHypotheses`` rules.

    Scores are Python floats, as in 4.28 (``tensor.item()`` then float64 arithmetic), so that ties and
    rounding break the same way.

    Args:
        num_beams: how many finished hypotheses are kept.
        length_penalty: exponent of the length in the score's denominator.
        early_stopping: ``False`` (4.28's default heuristic), ``True`` or ``"never"``.
        max_length: the longest ids (dummy BOS included); needed by ``"never"`` only.
    """

    def __init__(
        self, num_beams: int, length_penalty: float, early_stopping: bool | str = False, max_length: int = 0
    ) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def add(self, hyp: torch.Tensor, sum_logprobs: float) -> None:
        """Offer a finished hypothesis ``hyp`` ([length] ids, dummy BOS first, no ``</s>``)."""
        score = sum_logprobs / (hyp.shape[-1] ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                # Drop the worst; among equal scores the earliest added goes (sorted on (score, index)).
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        """Whether no running beam can still enter the list (4.28: judged on the step's best candidate)."""
        if len(self) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            return self.worst_score >= best_sum_logprobs / self.max_length**self.length_penalty
        return self.worst_score >= best_sum_logprobs / cur_len**self.length_penalty

    def best(self) -> tuple[float, torch.Tensor]:
        """The highest-scoring hypothesis; among equal scores the latest added (4.28 sorts, then pops)."""
        return sorted(self.beams, key=lambda item: item[0])[-1]


class Row0StoppingCriteria(StoppingCriteria):
    """Stop the whole batch when row 0 ends with ``stop_id`` (the official ``StoppingCriteriaSub``).

    Kept for comparisons with the official code only: every other row is cut where row 0 ended.

    Args:
        stop_id: the token that ends row 0 (``</s>``, id 2 in LLaMA).
    """

    def __init__(self, stop_id: int) -> None:
        self.stop_id = stop_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        """[batch, length] ids -> [batch] bools, all equal: row 0's last id is ``stop_id``."""
        if input_ids.shape[-1] == 0:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        stop = bool(input_ids[0, -1] == self.stop_id)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def decode_rules(generate_cfg: Any) -> tuple[str, str]:
    """Read and check ``beam_scoring`` and ``stop_rule`` from a ``generate`` section (dict or dataclass).

    ``GenerateConfig`` checks the same when a YAML is loaded; this covers plain dicts passed to ``generate``.

    Returns:
        ``(beam_scoring, stop_rule)``, defaults ``("transformers", "per_sample")``.

    Raises:
        ValueError: an unknown value, or a combination that has no official counterpart, naming the key.
    """
    get = generate_cfg.get if isinstance(generate_cfg, Mapping) else lambda k, d: getattr(generate_cfg, k, d)
    scoring, stop_rule = str(get("beam_scoring", "transformers")), str(get("stop_rule", "per_sample"))
    if scoring not in BEAM_SCORINGS:
        raise ValueError(f"generate.beam_scoring: {scoring!r} is not 'transformers' or 'official'")
    if stop_rule not in STOP_RULES:
        raise ValueError(f"generate.stop_rule: {stop_rule!r} is not 'per_sample' or 'official_row0'")
    beams = int(get("num_beams", 4)) > 1
    if beams and scoring == "official" and bool(get("do_sample", False)):
        raise ValueError(
            "generate.beam_scoring: 'official' is beam search without sampling (set do_sample: false)"
        )
    if beams and stop_rule == "official_row0" and scoring != "official":
        raise ValueError(
            "generate.stop_rule: 'official_row0' with num_beams > 1 needs beam_scoring: official"
        )
    return scoring, stop_rule


def generation_kwargs(
    generate_cfg: Any, *, eos_token_id: int | list[int], pad_token_id: int, bos_token_id: int | None = None
) -> dict[str, Any]:
    """The official ``generate`` keys (dict or ``GenerateConfig``) as transformers 5 ``generate`` arguments.

    Shared by every backbone; each passes its own end, pad (and BOS) ids. ``min_length`` becomes
    ``min_new_tokens = min_length - 1``: transformers 4.28 counted a dummy BOS in ``min_length`` when
    generating from embeddings. Sampling keys are passed only when sampling (greedy/beam search would warn).
    """
    get = generate_cfg.get if isinstance(generate_cfg, Mapping) else lambda k, d: getattr(generate_cfg, k, d)
    do_sample = bool(get("do_sample", False))
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(get("max_new_tokens", 200)),
        "num_beams": int(get("num_beams", 4)),
        "do_sample": do_sample,
        "min_new_tokens": max(int(get("min_length", 1)) - 1, 0),
        "repetition_penalty": float(get("repetition_penalty", 1.0)),
        "length_penalty": float(get("length_penalty", 1.0)),
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }
    if bos_token_id is not None:
        kwargs["bos_token_id"] = bos_token_id
    if do_sample:
        kwargs.update(temperature=float(get("temperature", 1.0)), top_p=float(get("top_p", 0.9)))
    return kwargs


def official_beam_kwargs(kwargs: Mapping[str, Any], generation_config: Any) -> dict[str, Any]:
    """Arguments of :func:`official_beam_search` from :meth:`SALMONN.generation_kwargs` output.

    Args:
        kwargs: the transformers-5 ``generate`` arguments (``min_new_tokens`` is ``min_length - 1`` there).
        generation_config: the LLM's ``generation_config``; its ``pad_token_id`` is what 4.28 padded with,
            ``</s>`` when unset (4.28's fallback). ahamask's ``[PAD]`` is not used: the official passes no pad id.

    Returns:
        Keyword arguments for :func:`official_beam_search` (without ``stop_row0``).
    """
    eos = kwargs["eos_token_id"]
    pad = getattr(generation_config, "pad_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    return {
        "num_beams": kwargs["num_beams"],
        "max_new_tokens": kwargs["max_new_tokens"],
        "bos_token_id": kwargs["bos_token_id"],
        "eos_token_id": eos,
        "pad_token_id": eos if pad is None else int(pad),
        # 4.28's min_length counts the dummy BOS; generation_kwargs stored it as min_new_tokens = min_length - 1.
        "min_length": kwargs["min_new_tokens"] + 1,
        "repetition_penalty": kwargs["repetition_penalty"],
        "length_penalty": kwargs["length_penalty"],
        "early_stopping": getattr(generation_config, "early_stopping", False) or False,
    }


def _cache_argument(llm: nn.Module) -> str:
    """The keyword the LM's forward takes its KV cache by: ``cache`` (transformers >= 5.2x) or ``past_key_values``.

    An unknown keyword would be swallowed by ``**kwargs`` and the cache silently not used, hence the check.
    """
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # a peft wrapper forwards **kwargs
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _cached_step(
    llm: nn.Module,
    cache: DynamicCache,
    attention: torch.Tensor,
    positions: torch.Tensor,
    *,
    inputs_embeds: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """One forward through the cache; returns the float32 log-probabilities of the next token, [rows, vocab]."""
    out = llm(
        inputs_embeds=inputs_embeds,
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        **{_cache_argument(llm): cache},
        use_cache=True,
        logits_to_keep=1,  # as transformers' own generate: only the last position's logits are needed
        return_dict=True,
    )
    return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


@torch.no_grad()
def official_beam_search(
    llm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    min_length: int = 1,
    repetition_penalty: float = 1.0,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    stop_row0: bool = False,
) -> torch.LongTensor:
    """Beam search with transformers 4.28's scoring, from prompt embeddings.

    (Over 60 lines only through its signature and argument documentation, the 4.28 generation keys; the
    body is the step loop, its parts in :func:`_prefill`, :func:`_beam_step` and :func:`_finalize`.)

    Args:
        llm: a causal LM taking ``inputs_embeds`` / ``input_ids``, ``position_ids`` and a ``DynamicCache``
            (LLaMA, peft-wrapped or not; mask hooks attached to it apply).
        inputs_embeds: [batch, length, hidden] prompt embeddings, left-padded.
        attention_mask: [batch, length] 1 on real positions.
        num_beams: beams per sample (> 1).
        max_new_tokens: tokens generated at most; the ids are at most ``1 + max_new_tokens`` long.
        bos_token_id: the dummy first id (never fed to the model, counted in lengths).
        eos_token_id: ends a hypothesis.
        pad_token_id: fills the rows of finished samples and the tail of shorter answers.
        min_length: 4.28's ``min_length``, counting the dummy BOS: ``</s>`` is banned while
            ``len(ids) < min_length``.
        repetition_penalty: 4.28's penalty on the log-probabilities of ids already present (dummy BOS included).
        length_penalty: exponent of the hypothesis length in its score.
        early_stopping: 4.28's ``early_stopping`` (the official runs ``False``).
        stop_row0: also stop the whole batch when row 0 ends in ``</s>`` (the official stopping criterion).

    Returns:
        [batch, n] ids exactly as 4.28's ``generate`` returns them: dummy BOS first, then the best hypothesis,
        then ``</s>`` when it fits within ``1 + max_new_tokens``, then ``pad_token_id``.

    Raises:
        ValueError: ``num_beams`` < 2 or ``max_new_tokens`` < 1.

    Example:
        >>> ids = official_beam_search(model.llama_model, embeds, attention, num_beams=4, max_new_tokens=20,
        ...                            bos_token_id=1, eos_token_id=2, pad_token_id=2)
    """
    if num_beams < 2:
        raise ValueError(f"generate.num_beams: {num_beams}; beam search needs at least 2 (1 is greedy)")
    if max_new_tokens < 1:
        raise ValueError(f"generate.max_new_tokens: {max_new_tokens} must be >= 1")
    batch = inputs_embeds.shape[0]
    rows = batch * num_beams
    max_length = 1 + max_new_tokens  # 4.28: max_new_tokens + the dummy BOS's length
    processors = _logits_processors(repetition_penalty, min_length, eos_token_id, inputs_embeds.device)
    cache, logprobs, attention, next_position = _prefill(llm, inputs_embeds, attention_mask, num_beams)
    ids = torch.full((rows, 1), bos_token_id, dtype=torch.long, device=inputs_embeds.device)
    beam_scores = torch.zeros(batch, num_beams, dtype=torch.float32, device=inputs_embeds.device)
    beam_scores[:, 1:] = _INACTIVE_BEAM_SCORE
    beam_scores = beam_scores.view(-1)
    hyps = [BeamHypotheses428(num_beams, length_penalty, early_stopping, max_length) for _ in range(batch)]
    done = [False] * batch
    while True:
        scores = processors(ids, logprobs) + beam_scores[:, None]
        beam_scores, beam_rows, next_tokens = _beam_step(
            scores, ids, hyps, done, num_beams, eos_token_id, pad_token_id
        )
        ids = torch.cat([ids[beam_rows], next_tokens.view(-1, 1)], dim=-1)
        if all(done) or ids.shape[-1] >= max_length:
            break
        if stop_row0 and int(ids[0, -1]) == eos_token_id:
            break
        cache.reorder_cache(beam_rows)
        attention = torch.cat([attention, attention.new_ones(rows, 1)], dim=-1)
        next_position = next_position + 1
        logprobs = _cached_step(llm, cache, attention, next_position, input_ids=ids[:, -1:])
    return _finalize(ids, beam_scores, hyps, done, num_beams, max_length, eos_token_id, pad_token_id)


@torch.no_grad()
def generate_with_shared_prefill(
    llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """transformers' ``generate`` with the prompt run once per sample instead of once per beam.

    transformers expands the inputs to ``batch * num_beams`` rows before its prefill, so the prompt and the
    speech embeddings go through the LLM ``num_beams`` times for identical rows. Here the prompt minus its
    last position is run once on ``batch`` rows, the KV cache is repeated per beam (sample-major, as
    transformers orders beams) and handed to ``generate`` through its public cache argument, which then runs
    only the last prompt position per beam. The ids equal plain ``generate``'s (tested on the tiny bundles
    with shared and per-sample masks); greedy and sampling (``num_beams`` 1) call ``generate`` unchanged.

    Returns:
        The generated ids, as ``generate(inputs_embeds=...)`` returns them (new tokens only).
    """
    beams = int(kwargs.get("num_beams", 1) or 1)
    if beams <= 1 or inputs_embeds.shape[1] < 2:
        return llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
    attention = attention_mask.long()
    # The positions generate derives from a left-padded mask (prepare_inputs_for_generation).
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
    cache = DynamicCache()
    llm(
        inputs_embeds=inputs_embeds[:, :-1],
        attention_mask=attention[:, :-1],
        position_ids=positions[:, :-1],
        **{_cache_argument(llm): cache},
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
    )
    if cache.get_seq_length() != inputs_embeds.shape[1] - 1:
        raise RuntimeError(f"{type(llm).__name__} did not fill the KV cache for the shared prefill")
    cache.batch_repeat_interleave(beams)
    return llm.generate(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, **{_cache_argument(llm): cache}, **kwargs
    )


def _logits_processors(
    repetition_penalty: float, min_length: int, eos_token_id: int, device: torch.device
) -> LogitsProcessorList:
    """4.28's processors of beam search without sampling: the repetition penalty, then ``min_length``."""
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if min_length > 0:
        processors.append(MinLengthLogitsProcessor(min_length, eos_token_id, device=device))
    return processors


def _prefill(
    llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, num_beams: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the prompt once per sample, then gives every beam its own copy of the cache (sample-major rows).

    Returns:
        The cache, the first step's log-probabilities, the attention mask and the next position per row
        (``batch * num_beams`` rows each).

    Raises:
        RuntimeError: the model did not fill the cache (the loop would then decode without the prompt).
    """
    attention = attention_mask.long()
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
    cache = DynamicCache()
    logprobs = _cached_step(llm, cache, attention, positions, inputs_embeds=inputs_embeds)
    if cache.get_seq_length() != inputs_embeds.shape[1]:
        raise RuntimeError(
            f"{type(llm).__name__} did not fill the KV cache; beam_scoring: official needs one"
        )
    cache.batch_repeat_interleave(num_beams)
    logprobs = logprobs.repeat_interleave(num_beams, dim=0)
    attention = attention.repeat_interleave(num_beams, dim=0)
    next_position = positions[:, -1:].repeat_interleave(num_beams, dim=0)
    return cache, logprobs, attention, next_position


def _beam_step(
    scores: torch.Tensor,
    ids: torch.Tensor,
    hyps: list[BeamHypotheses428],
    done: list[bool],
    num_beams: int,
    eos_token_id: int,
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of 4.28's ``BeamSearchScorer.process``: picks each sample's next beams from ``scores``.

    Candidates ending in ``</s>`` go to the sample's hypotheses (only from the top ``num_beams``); the best
    ``num_beams`` others continue. ``hyps`` and ``done`` are updated in place.

    Args:
        scores: [batch * num_beams, vocab] running beam score plus the processed log-probabilities.
        ids: [batch * num_beams, length] the running ids (dummy BOS first).

    Returns:
        The next beam scores and the rows they continue ([batch * num_beams] each), and the next tokens
        ([batch, num_beams]).
    """
    batch, device = len(hyps), scores.device
    cur_len = ids.shape[-1]
    vocab = scores.shape[-1]
    top_scores, top = torch.topk(scores.view(batch, num_beams * vocab), 2 * num_beams, dim=1)
    top_beams, top_tokens = top // vocab, top % vocab

    next_scores = torch.zeros(batch, num_beams, dtype=top_scores.dtype, device=device)
    next_tokens = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
    next_rows = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
    for b in range(batch):
        if done[b]:
            # 4.28 pads a finished sample and reorders its rows from row 0 (not its own).
            next_tokens[b] = pad_token_id
            continue
        kept = 0
        for rank, (token, score, beam) in enumerate(
            zip(top_tokens[b].tolist(), top_scores[b].tolist(), top_beams[b].tolist(), strict=True)
        ):
            row = b * num_beams + beam
            if token == eos_token_id:
                if rank < num_beams:  # an EOS outside the top num_beams candidates is ignored
                    hyps[b].add(ids[row].clone(), score)
            else:
                next_scores[b, kept], next_tokens[b, kept], next_rows[b, kept] = score, token, row
                kept += 1
            if kept == num_beams:
                break
        done[b] = hyps[b].is_done(float(top_scores[b].max()), cur_len)
    return next_scores.view(-1), next_rows.view(-1), next_tokens


def _finalize(
    ids: torch.Tensor,
    beam_scores: torch.Tensor,
    hyps: list[BeamHypotheses428],
    done: list[bool],
    num_beams: int,
    max_length: int,
    eos_token_id: int,
    pad_token_id: int,
) -> torch.LongTensor:
    """4.28's ``BeamSearchScorer.finalize``: open beams of unfinished samples compete, the best one is returned."""
    best = []
    for b, hyp in enumerate(hyps):
        if not done[b]:
            for beam in range(num_beams):
                row = b * num_beams + beam
                hyp.add(ids[row], float(beam_scores[row]))
        best.append(hyp.best()[1])
    lengths = [len(h) for h in best]
    width = min(max(lengths) + 1, max_length)
    out = ids.new_full((len(best), width), pad_token_id)
    for i, (hyp, length) in enumerate(zip(best, lengths, strict=True)):
        out[i, :length] = hyp
        if length < width:
            out[i, length] = eos_token_id
    return out
