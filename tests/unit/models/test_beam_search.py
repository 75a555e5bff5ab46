"""Official (transformers 4.28) beam scoring and the official row-0 stop rule, on an EOS-prone tiny SALMONN.

The reference below is written from 4.28's documented rules, not from ahamask's loop: no KV cache (every step
recomputes the whole sequence of every beam), plain Python lists for beams and hypotheses. The rules:

* ids start with a dummy BOS that is never fed to the model; the candidates of a step are the top
  ``2 * num_beams`` of ``beam_score + log_softmax(logits)`` over all beams of a sample (beam 0 only at first);
* walking them in rank order, ``</s>`` ranked below ``num_beams`` is ignored, ``</s>`` ranked within adds
  the hypothesis (ids without ``</s>``, dummy BOS included) scored ``sum_logprobs / len ** length_penalty``,
  any other token extends a running beam, until ``num_beams`` beams run;
* at most ``num_beams`` hypotheses are kept (the worst leaves; the earliest added among equal scores);
* a sample is done once it holds ``num_beams`` of them and the worst is at least the step's best candidate
  divided by the current length (dummy BOS included, new token not);
* a done sample's rows get the pad id (and row 0's history); the search ends when every sample is done, at
  ``1 + max_new_tokens`` ids, or (official stop rule) when row 0's last id is ``</s>``;
* then the open beams of unfinished samples compete as hypotheses and the best (latest among ties) is
  returned with ``</s>`` appended when it fits.
"""

from __future__ import annotations

import pytest
import torch

from ahamask.config import ConfigError, GenerateConfig
from ahamask.masking.hooks import decoder_layers, head_mask
from ahamask.models.beam_search import (
    BeamHypotheses428,
    decode_rules,
    official_beam_kwargs,
    official_beam_search,
)
from ahamask.models.salmonn import SALMONN

EOS, BOS = 2, 1
INSTRUCTIONS = ["", "What is the gender of the speaker?", "Describe the speech.", "x"]


@pytest.fixture(scope="module")
def eos_model(tiny_decode_cfg):
    """A tiny SALMONN made to emit ``</s>`` early: the ``</s>`` row of ``lm_head`` is skewed towards the row of
    the token its answers repeat most, so ``</s>`` competes wherever that token does (with 1.5, some answers
    end after two tokens and others run to the limit, which the checks below require)."""
    torch.manual_seed(0)
    model = SALMONN.from_config(tiny_decode_cfg.model).eval()
    _, _, embeds, attention = _inputs(model, 1)
    with torch.no_grad():
        ids = _greedy_ids(model, embeds, attention, 12)[0]
        loop_token = int(torch.mode(ids).values)
        weight = model.llama_model.get_output_embeddings().weight
        weight[EOS] += 1.5 * weight[loop_token]
    return model


def _inputs(model: SALMONN, n: int, offset: int = 0):
    """n samples of random features; sample i gets instruction ``i + offset`` (they set the answer lengths)."""
    gen = torch.Generator().manual_seed(0)
    samples = {"spectrogram": torch.randn(n, 80, 400, generator=gen)}
    prompts = [model.prompt_for(INSTRUCTIONS[(i + offset) % len(INSTRUCTIONS)]) for i in range(n)]
    with torch.no_grad():
        speech = model.encode_speech(samples["spectrogram"])
        embeds, attention, _ = model.build_inputs(speech, prompts, None, pad_left=True)
    return samples, prompts, embeds, attention


def _masks(n: int) -> dict[str, torch.Tensor | None]:
    one = torch.ones(10)
    one[[1, 7]] = 0.0
    per_sample = torch.ones(n, 10)
    for i in range(n):
        per_sample[i, [i % 4, 5 + (i + 1) % 4]] = 0.0
    return {"none": None, "shared": one, "per_sample": per_sample}


# ------------------------------------------------------------------ the reference (no cache, 4.28's rules)
def _reference_logprobs(llm, embeds, attention, rows, masks):
    """log_softmax of the next token for each (sample, tokens) row, recomputing the whole sequence."""
    embed = llm.get_input_embeddings()
    seqs, atts = [], []
    for sample, tokens in rows:
        ids = torch.tensor(tokens, dtype=torch.long)
        seqs.append(torch.cat([embeds[sample], embed(ids)]) if tokens else embeds[sample])
        atts.append(torch.cat([attention[sample], torch.ones(len(tokens), dtype=torch.long)]))
    seqs, atts = torch.stack(seqs), torch.stack(atts)
    positions = (atts.cumsum(-1) - 1).clamp(min=0)
    row_masks = (
        None if masks is None else masks[[sample for sample, _ in rows]] if masks.dim() == 2 else masks
    )
    with torch.no_grad(), head_mask(llm, row_masks, logits=False):
        logits = llm(inputs_embeds=seqs, attention_mask=atts, position_ids=positions).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)


def reference_beam_search(
    llm, embeds, attention, masks, *, beams, max_new, pad, min_length=1, penalty=1.0, lp=1.0, stop_row0=False
):
    batch = embeds.shape[0]
    # running[b] = list of (tokens after the dummy BOS, float32 score); beam 0 only at first.
    running = [[([], torch.tensor(0.0 if k == 0 else -1e9)) for k in range(beams)] for _ in range(batch)]
    finished = [[] for _ in range(batch)]  # (normalised score, ids with BOS), in the order they were added
    done = [False] * batch

    def keep(b, ids, sum_logprobs):
        score = sum_logprobs / len(ids) ** lp
        hyps = finished[b]
        if len(hyps) < beams or score > min(s for s, _ in hyps):
            hyps.append((score, ids))
            if len(hyps) > beams:
                worst = min(range(len(hyps)), key=lambda i: (hyps[i][0], i))
                hyps.pop(worst)

    while True:
        rows = [(b, tokens) for b in range(batch) for tokens, _ in running[b]]
        logprobs = _reference_logprobs(llm, embeds, attention, rows, masks)
        cur_len = 1 + len(rows[0][1])
        new_running = []
        for b in range(batch):
            if done[b]:
                new_running.append([(running[0][0][0] + [pad], torch.tensor(0.0))] * beams)
                continue
            cands = []
            for k, (tokens, score) in enumerate(running[b]):
                lp_row = logprobs[b * beams + k].clone()
                seen = torch.tensor([BOS, *tokens])
                got = lp_row[seen]
                lp_row[seen] = torch.where(got < 0, got * penalty, got / penalty)
                if cur_len < min_length:
                    lp_row[EOS] = -float("inf")
                cands.append(score + lp_row)
            top_scores, top = torch.topk(torch.cat(cands), 2 * beams)
            vocab = logprobs.shape[-1]
            nxt = []
            for rank, (score, flat) in enumerate(zip(top_scores, top.tolist(), strict=True)):
                tokens, token = running[b][flat // vocab][0], flat % vocab
                if token == EOS:
                    if rank < beams:
                        keep(b, [BOS, *tokens], score.item())
                else:
                    nxt.append(([*tokens, token], score))
                if len(nxt) == beams:
                    break
            hyps = finished[b]
            worst = min((s for s, _ in hyps), default=None)
            done[b] = len(hyps) == beams and worst >= top_scores.max().item() / cur_len**lp
            new_running.append(nxt)
        running = new_running
        if all(done) or len(running[0][0][0]) >= max_new:
            break
        if stop_row0 and running[0][0][0][-1] == EOS:
            break
    answers = []
    for b in range(batch):
        if not done[b]:
            for tokens, score in running[b]:
                keep(b, [BOS, *tokens], score.item())
        best = max(range(len(finished[b])), key=lambda i: (finished[b][i][0], i))
        answers.append(finished[b][best][1])
    width = min(max(len(a) for a in answers) + 1, 1 + max_new)
    return [a + [EOS] + [pad] * (width - len(a) - 1) if len(a) < width else a for a in answers]


# ------------------------------------------------------------------ tests
CASES = [
    # (batch, beams, max_new_tokens, length_penalty, min_length, repetition_penalty)
    (1, 4, 12, 1.0, 1, 1.0),
    (4, 4, 12, 1.0, 1, 1.0),
    (4, 2, 10, 1.0, 3, 1.0),
    (3, 3, 12, 0.5, 1, 1.3),
]


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_sample"])
@pytest.mark.parametrize("case", CASES, ids=[f"b{c[0]}_k{c[1]}_lp{c[3]}_min{c[4]}_rp{c[5]}" for c in CASES])
def test_official_scoring_equals_the_reference(eos_model, case, mask_kind):
    batch, beams, max_new, lp, min_length, penalty = case
    _, _, embeds, attention = _inputs(eos_model, batch)
    llm = eos_model.llama_model
    mask = _masks(batch)[mask_kind]
    expected = reference_beam_search(
        llm, embeds, attention, mask, beams=beams, max_new=max_new, pad=EOS,
        min_length=min_length, penalty=penalty, lp=lp,
    )  # fmt: skip
    with torch.no_grad(), head_mask(llm, mask, logits=False):
        got = official_beam_search(
            llm, embeds, attention, num_beams=beams, max_new_tokens=max_new, bos_token_id=BOS,
            eos_token_id=EOS, pad_token_id=EOS, min_length=min_length, repetition_penalty=penalty,
            length_penalty=lp,
        )  # fmt: skip
    assert got.tolist() == expected


def test_the_eos_prone_model_separates_official_from_transformers_scoring(eos_model):
    # Without this the comparisons above could pass with either scoring.
    samples, prompts, _, _ = _inputs(eos_model, 4)
    cfg = {"max_new_tokens": 12, "num_beams": 4}
    official = eos_model.generate(samples, {**cfg, "beam_scoring": "official"}, prompts)
    current = eos_model.generate(samples, cfg, prompts)
    differ = sum(a != b for a, b in zip(official, current, strict=True))
    assert differ >= 1, (official, current)
    # ... and EOS comes early: some official answer is shorter than max_new_tokens.
    ids = official_beam_search(
        eos_model.llama_model, *_inputs(eos_model, 4)[2:], num_beams=4, max_new_tokens=12,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    assert (ids[:, 1:] == EOS).any(dim=1).sum() >= 1


def test_generate_with_official_scoring_decodes_the_reference_ids(eos_model):
    samples, prompts, embeds, attention = _inputs(eos_model, 3)
    mask = _masks(3)["per_sample"]
    cfg = GenerateConfig(max_new_tokens=9, num_beams=4, beam_scoring="official")
    with head_mask(eos_model.decoder, mask):
        texts = eos_model.generate(samples, cfg, prompts)
    expected = reference_beam_search(
        eos_model.llama_model, embeds, attention, mask, beams=4, max_new=9, pad=EOS
    )
    assert texts == eos_model.llama_tokenizer.batch_decode(expected, skip_special_tokens=True)


def test_prefill_runs_once_per_sample_and_steps_run_per_beam(eos_model):
    _, _, embeds, attention = _inputs(eos_model, 3)
    shapes = []
    o_proj = decoder_layers(eos_model.llama_model)[0].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape[:2])))
    try:
        official_beam_search(
            eos_model.llama_model, embeds, attention, num_beams=4, max_new_tokens=5,
            bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
        )  # fmt: skip
    finally:
        handle.remove()
    assert shapes[0] == (3, embeds.shape[1])  # the prompt: once per sample, not once per beam
    assert len(shapes) > 1 and all(s == (12, 1) for s in shapes[1:])  # then one token per beam


def test_transformers_scoring_is_the_default_and_equals_model_generate(eos_model):
    samples, prompts, embeds, attention = _inputs(eos_model, 3)
    cfg = {"max_new_tokens": 8, "num_beams": 4}
    with torch.no_grad():
        direct = eos_model.llama_model.generate(
            inputs_embeds=embeds, attention_mask=attention, **eos_model.generation_kwargs(cfg)
        )
    expected = eos_model.llama_tokenizer.batch_decode(direct, skip_special_tokens=True)
    assert eos_model.generate(samples, cfg, prompts) == expected
    assert eos_model.generate(samples, {**cfg, "beam_scoring": "transformers"}, prompts) == expected


@pytest.mark.parametrize("rule", ["per_sample", "official_row0"])
def test_greedy_is_unaffected_by_beam_scoring(eos_model, rule):
    samples, prompts, _, _ = _inputs(eos_model, 3)
    cfg = {"max_new_tokens": 8, "num_beams": 1, "stop_rule": rule}
    assert eos_model.generate(samples, {**cfg, "beam_scoring": "official"}, prompts) == eos_model.generate(
        samples, cfg, prompts
    )


def _greedy_ids(model, embeds, attention, max_new):
    kwargs = model.generation_kwargs({"max_new_tokens": max_new, "num_beams": 1})
    with torch.no_grad():
        return model.llama_model.generate(inputs_embeds=embeds, attention_mask=attention, **kwargs)


def _answer(ids: list[int]) -> list[int]:
    """The generated ids after the dummy BOS, up to the first </s>."""
    ids = ids[1:]
    return ids[: ids.index(EOS)] if EOS in ids else ids


def test_official_row0_cuts_the_greedy_batch_where_row_0_ends(eos_model):
    # Find an order where row 0 ends before another row: with the row-0 rule, every answer stops there.
    samples, prompts, embeds, attention = _inputs(eos_model, 4)
    ids = _greedy_ids(eos_model, embeds, attention, 12)
    ends = [(row == EOS).nonzero()[0, 0].item() if (row == EOS).any() else 12 for row in ids]
    first = min(range(4), key=lambda i: ends[i])
    assert ends[first] < max(ends), ends  # the model must give answers of different lengths
    order = [first] + [i for i in range(4) if i != first]
    samples = {"spectrogram": samples["spectrogram"][order]}
    prompts = [prompts[i] for i in order]
    cfg = {"max_new_tokens": 12, "num_beams": 1}
    per_sample = eos_model.generate(samples, cfg, prompts)
    cut = eos_model.generate(samples, {**cfg, "stop_rule": "official_row0"}, prompts)
    tokenizer = eos_model.llama_tokenizer
    expected = tokenizer.batch_decode(ids[order, : ends[first] + 1], skip_special_tokens=True)
    assert cut == expected and cut != per_sample


def test_official_row0_in_beam_mode_stops_one_step_after_sample_0_is_done(eos_model):
    # The running rows never end in </s>; the rule fires when sample 0 is done and its rows get pad == </s>.
    _, _, embeds, attention = _inputs(eos_model, 4, offset=1)  # sample 0 ends after two tokens
    llm = eos_model.llama_model
    kwargs = dict(num_beams=4, max_new_tokens=12, bos_token_id=BOS, eos_token_id=EOS)
    per_sample = official_beam_search(llm, embeds, attention, pad_token_id=EOS, **kwargs)
    row0 = official_beam_search(llm, embeds, attention, pad_token_id=EOS, stop_row0=True, **kwargs)
    expected = reference_beam_search(
        llm, embeds, attention, None, beams=4, max_new=12, pad=EOS, stop_row0=True
    )
    assert row0.tolist() == expected
    assert row0.tolist() != per_sample.tolist()  # some later sample was cut
    assert _answer(row0[0].tolist()) == _answer(per_sample[0].tolist())  # sample 0 is not cut


def test_official_row0_never_fires_in_beam_mode_when_the_pad_id_is_not_eos(eos_model):
    # Vicuna's generation config has pad id 0: the official rule then never stops a beam search.
    _, _, embeds, attention = _inputs(eos_model, 4, offset=1)
    llm = eos_model.llama_model
    kwargs = dict(num_beams=4, max_new_tokens=12, bos_token_id=BOS, eos_token_id=EOS)
    other = official_beam_search(llm, embeds, attention, pad_token_id=0, stop_row0=True, **kwargs)
    assert other.tolist() == official_beam_search(llm, embeds, attention, pad_token_id=0, **kwargs).tolist()


def test_official_pad_id_falls_back_to_eos_like_4_28(eos_model):
    kwargs = eos_model.generation_kwargs({"num_beams": 4, "max_new_tokens": 5, "min_length": 3})
    gen_cfg = eos_model.llama_model.generation_config
    assert gen_cfg.pad_token_id is None  # the tiny bundle, like a LLaMA checkpoint without a pad id
    got = official_beam_kwargs(kwargs, gen_cfg)
    assert got["pad_token_id"] == EOS and got["min_length"] == 3 and got["bos_token_id"] == BOS
    gen_cfg_copy = type(gen_cfg).from_dict({**gen_cfg.to_dict(), "pad_token_id": 0})
    assert official_beam_kwargs(kwargs, gen_cfg_copy)["pad_token_id"] == 0


def test_hypotheses_keep_the_best_and_break_ties_like_4_28():
    hyps = BeamHypotheses428(num_beams=2, length_penalty=1.0)
    a, b, c = torch.tensor([1, 5]), torch.tensor([1, 6]), torch.tensor([1, 7, 8])
    hyps.add(a, -2.0)  # -1.0
    hyps.add(b, -2.0)  # -1.0, a tie
    hyps.add(c, -1.5)  # -0.5: the earliest of the tied worst (a) leaves
    assert [h.tolist() for _, h in hyps.beams] == [[1, 6], [1, 7, 8]] and hyps.worst_score == -1.0
    assert hyps.is_done(best_sum_logprobs=-3.0, cur_len=3)  # -1.0 cannot beat the worst
    assert not hyps.is_done(best_sum_logprobs=-2.9, cur_len=3)
    tie = BeamHypotheses428(num_beams=3, length_penalty=1.0)
    tie.add(a, -2.0)
    tie.add(b, -2.0)
    assert tie.best()[1].tolist() == [1, 6]  # the latest among equal scores


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"beam_scoring": "hf"}, r"generate.beam_scoring: 'hf' is not 'transformers' or 'official'"),
        ({"stop_rule": "row0"}, r"generate.stop_rule: 'row0' is not 'per_sample' or 'official_row0'"),
        ({"beam_scoring": "official", "do_sample": True}, r"beam_scoring: 'official' is beam search without"),
        ({"stop_rule": "official_row0"}, r"'official_row0' with num_beams > 1 needs beam_scoring: official"),
    ],
)
def test_bad_decode_rules_name_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        decode_rules({"num_beams": 4, **cfg})
    with pytest.raises(ConfigError, match=message):
        GenerateConfig(num_beams=4, **cfg)


# ------------------------------------------------------------------ transformers scoring, prefill once
@pytest.mark.parametrize("mask_name", ["none", "shared", "per_sample"])
@pytest.mark.parametrize("beams", [2, 4])
def test_shared_prefill_gives_the_ids_of_plain_generate(eos_model, mask_name, beams):
    from ahamask.models.beam_search import generate_with_shared_prefill

    _, _, embeds, attention = _inputs(eos_model, 3)
    mask = _masks(3)[mask_name]
    kwargs = eos_model.generation_kwargs({"num_beams": beams, "max_new_tokens": 9, "length_penalty": 0.7})
    llm = eos_model.llama_model
    with torch.no_grad(), head_mask(llm, mask):
        plain = llm.generate(inputs_embeds=embeds, attention_mask=attention, **kwargs)
        shared = generate_with_shared_prefill(llm, embeds, attention, **kwargs)
    assert torch.equal(plain, shared)


def test_shared_prefill_runs_the_prompt_once_per_sample(eos_model):
    from ahamask.models.beam_search import generate_with_shared_prefill

    _, _, embeds, attention = _inputs(eos_model, 3)
    kwargs = eos_model.generation_kwargs({"num_beams": 4, "max_new_tokens": 3})
    rows: list[tuple[int, int]] = []
    o_proj = decoder_layers(eos_model.llama_model)[0].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda module, args: rows.append(tuple(args[0].shape[:2])))
    try:
        with torch.no_grad():
            generate_with_shared_prefill(eos_model.llama_model, embeds, attention, **kwargs)
    finally:
        handle.remove()
    length = embeds.shape[1]
    # The prompt (minus its last position) on 3 rows once; then one position per step on 3 x 4 beam rows.
    assert rows[0] == (3, length - 1)
    assert all(r == (12, 1) for r in rows[1:]) and len(rows) >= 2
    # Plain generate runs the whole prompt on 12 rows: four times the prefill work for identical rows.
    rows.clear()
    handle = o_proj.register_forward_pre_hook(lambda module, args: rows.append(tuple(args[0].shape[:2])))
    try:
        with torch.no_grad():
            eos_model.llama_model.generate(inputs_embeds=embeds, attention_mask=attention, **kwargs)
    finally:
        handle.remove()
    assert rows[0] == (12, length)
