"""Training prompt choice: decided per batch, not the official's sticky ``multi_prompt``.

The official ``SALMONN.forward`` sets ``self.multi_prompt = True`` the first time a batch holds several tasks
or a QA sample, and never resets it, so every later single-task batch draws one template per sample instead
of one for the batch. ahamask decides for each batch. The two agree when every task has one template (the
AHAMask prompt files); with several templates, ``model.multi_prompt: true`` gives the official behaviour
from the first batch on (the official's after its first mixed batch).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from ahamask.models.salmonn import SALMONN

TEMPLATES = {
    "asr": [f"asr {i} <SpeechHere>" for i in range(4)],
    "gr": [f"gr {i} <SpeechHere>" for i in range(4)],
}


def choose(multi_prompt: bool, tasks: list[str], rng: random.Random) -> list[str]:
    model = SimpleNamespace(
        prompt_dict=TEMPLATES, cfg=SimpleNamespace(multi_prompt=multi_prompt, prompt_path="p")
    )
    return SALMONN.choose_prompts(model, {"task": tasks}, rng)


def test_a_mixed_batch_does_not_switch_multi_prompt_on_for_later_batches():
    rng = random.Random(0)
    mixed = choose(False, ["asr", "gr", "asr", "gr"], rng)
    assert len(set(mixed)) > 1  # a mixed batch draws per sample
    for _ in range(20):  # ... and every later single-task batch still shares one template
        assert len(set(choose(False, ["asr"] * 6, rng))) == 1


def test_multi_prompt_true_draws_per_sample_as_the_official_after_a_mixed_batch():
    rng = random.Random(0)
    draws = [choose(True, ["asr"] * 6, rng) for _ in range(20)]
    assert sum(len(set(d)) > 1 for d in draws) >= 15  # all 6 equal has probability 4 * 4**-6 per batch


def test_one_template_per_task_makes_the_rule_irrelevant():
    model = SimpleNamespace(
        prompt_dict={"asr": ["only <SpeechHere>"]}, cfg=SimpleNamespace(multi_prompt=False, prompt_path="p")
    )
    per_batch = SALMONN.choose_prompts(model, {"task": ["asr"] * 3}, random.Random(1))
    model.cfg.multi_prompt = True
    assert SALMONN.choose_prompts(model, {"task": ["asr"] * 3}, random.Random(1)) == per_batch
