"""A second backbone is one module: a minimal fake LALM that the trainer and the evaluator run end to end.

:class:`FakeBackbone` implements :class:`ahamask.models.backbone.AudioLLM` with nothing of SALMONN: its audio
encoder is a linear map of waveform statistics, its LLM a random 2-layer x 2-head LLaMA (mask length 6, not
the tiny SALMONN's 10). Registered under ``model.arch: fake``, ``train.py``'s trainer learns a mask for it and
``evaluate.py``'s evaluator decodes with that mask, through the same code paths as SALMONN.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ahamask.config import load_decode_config, load_train_config
from ahamask.masking.checkpoint import load_mask
from ahamask.masking.geometry import decoder_geometry
from ahamask.masking.mask import MaskShapeError
from ahamask.models import backbone
from ahamask.models.backbone import PromptInputs
from ahamask.models.loading import load_tokenizer

N_AUDIO_TOKENS = 4


class FakeBackbone(nn.Module):
    """The smallest AudioLLM: audio -> 4 tokens of waveform statistics -> a random LLaMA."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.llama_path)
        torch.manual_seed(0)
        llm_cfg = LlamaConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        self.llm = LlamaForCausalLM(llm_cfg).eval()
        self.audio = nn.Linear(2, 32)
        self.geometry = decoder_geometry(self.llm)

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device | str = "cpu") -> FakeBackbone:
        return cls(cfg).requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return self.audio.weight.device

    @property
    def decoder(self) -> nn.Module:
        return self.llm

    @property
    def frozen_front_end(self) -> bool:
        return not any(p.requires_grad for p in self.audio.parameters())

    def speech_cache_key(self) -> str:
        return hashlib.sha256(self.audio.weight.detach().numpy().tobytes()).hexdigest()

    def encode_audio(self, samples: Mapping[str, Any]) -> torch.Tensor:
        wav = torch.as_tensor(samples["raw_wav"], dtype=torch.float32)
        chunks = wav[:, : wav.shape[1] // N_AUDIO_TOKENS * N_AUDIO_TOKENS].reshape(
            len(wav), N_AUDIO_TOKENS, -1
        )
        return self.audio(torch.stack([chunks.mean(-1), chunks.std(-1)], dim=-1))

    def prompt_for(self, instruction: str = "") -> str:
        return instruction

    def choose_prompts(self, samples: Mapping[str, Any], rng: Any = None) -> list[str] | None:
        return None

    def _rows(self, prompts: Sequence[str] | None, n: int, targets: Sequence[str] | None) -> list[list[int]]:
        text = [self.tokenizer(p or "", add_special_tokens=False)["input_ids"] for p in (prompts or [""] * n)]
        eos = self.tokenizer.eos_token_id
        tails = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in targets or []]
        return [t + (tails[i] if targets else []) for i, t in enumerate(text)], [len(x) for x in tails]

    def _inputs(self, speech: torch.Tensor, prompts, targets=None, pad_left=False):
        rows, n_targets = self._rows(prompts, len(speech), targets)
        embed = self.llm.get_input_embeddings()
        bos = embed(torch.tensor([self.tokenizer.bos_token_id]))[0]
        seqs = [
            torch.cat([bos[None], speech[i], embed(torch.tensor(r, dtype=torch.long))])
            for i, r in enumerate(rows)
        ]
        total = max(len(s) for s in seqs)
        embeds = torch.zeros(len(seqs), total, speech.shape[-1])
        attention = torch.zeros(len(seqs), total, dtype=torch.long)
        labels = torch.full((len(seqs), total), -100)
        for i, seq in enumerate(seqs):
            start = total - len(seq) if pad_left else 0
            embeds[i, start : start + len(seq)], attention[i, start : start + len(seq)] = seq, 1
            if targets:
                end = start + len(seq)
                labels[i, end - n_targets[i] : end] = torch.tensor(rows[i][-n_targets[i] :])
        return embeds, attention, labels

    def forward(self, samples, prompts=None, speech_embeds=None) -> dict[str, torch.Tensor]:
        speech = speech_embeds if speech_embeds is not None else self.encode_audio(samples)
        embeds, attention, labels = self._inputs(speech, prompts, samples["text"])
        out = self.llm(inputs_embeds=embeds, attention_mask=attention, labels=labels)
        return {"loss": out.loss, "logits": out.logits, "labels": labels}

    @torch.no_grad()
    def generate(self, samples, generate_cfg=None, prompts=None, speech_embeds=None) -> list[str]:
        speech = speech_embeds if speech_embeds is not None else self.encode_audio(samples)
        embeds, attention, _ = self._inputs(speech, prompts, pad_left=True)
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=attention,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def prompt_inputs(self, speech_embeds: torch.Tensor, prompts: Sequence[str]) -> PromptInputs:
        embeds, attention, _ = self._inputs(speech_embeds, prompts, pad_left=True)
        pads = (attention == 0).sum(dim=1).tolist()
        return PromptInputs(embeds, attention, [(p + 1, p + 1 + N_AUDIO_TOKENS) for p in pads])

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        start = torch.arange(n_tokens, dtype=torch.float32)
        return torch.stack([start, start + 1], dim=-1)


@pytest.fixture()
def fake_arch(monkeypatch):
    monkeypatch.setitem(backbone.BACKBONES, "fake", f"{__name__}:FakeBackbone")


def _fake_options(bundle) -> list[str]:
    # model_path: a folder with a feature extractor (the dataset's chunk length) and weights (preflight).
    return ["model.arch=fake", f"model.model_path={bundle / 'whisper'}", "model.whisper_path=", "model.ckpt="]


def test_the_trainer_and_the_evaluator_run_a_second_backbone(fake_arch, tiny_bundle, tmp_path):
    from ahamask.evaluation.evaluator import evaluate
    from ahamask.training.trainer import train

    options = _fake_options(tiny_bundle)
    train_cfg = load_train_config(
        tiny_bundle / "config.yaml",
        [
            *options,
            f"run.output_dir={tmp_path}",
            "run.job_id=fake",
            "run.iters_per_epoch=3",
            "run.optims.max_epoch=1",
            "run.mask_init_mean=0.2",
            "run.optims.init_lr=0.2",
        ],
    )
    out = train(train_cfg)
    mask = load_mask(out)  # the folder form the trainer writes, with its mask_config.json
    assert (mask.n_layers, mask.n_heads, mask.values.shape) == (2, 2, (6,))
    assert not torch.allclose(mask.values, torch.full((6,), 0.2), atol=1e-3)  # trained, not the init
    sidecar = json.loads((out / "mask_config.json").read_text())
    assert (sidecar["n_layers"], sidecar["n_heads"]) == (2, 2)

    decode_cfg = load_decode_config(
        tiny_bundle / "decode_config.yaml",
        [
            *options,
            f"model.weight_mask_path={out}",
            f"output_path={tmp_path / 'pred.json'}",
            "mask_application=auto",
        ],
    )
    written = json.loads(evaluate(decode_cfg).read_text())
    test_ids = [e["path"] for e in json.loads((tiny_bundle / "data" / "test.json").read_text())["annotation"]]
    assert [p["id"].rsplit("/", 1)[-1] for p in written["prediction"]] == [
        i.rsplit("/", 1)[-1] for i in test_ids
    ]


def test_a_mask_for_one_backbone_is_refused_by_another(fake_arch, tiny_bundle, tmp_path):
    from ahamask.masking.checkpoint import save_mask_folder
    from ahamask.models.backbone import build_backbone

    cfg = load_decode_config(tiny_bundle / "decode_config.yaml", _fake_options(tiny_bundle))
    fake = build_backbone(cfg.model)
    assert isinstance(fake, backbone.AudioLLM) and fake.geometry.mask_size == 6
    folder = save_mask_folder(torch.zeros(10), tmp_path / "salmonn_mask", 2, 4).parent  # a tiny-SALMONN mask
    with pytest.raises(MaskShapeError, match="n_heads differs: the mask was made for 4, the model has 2"):
        load_mask(folder, n_layers=fake.geometry.n_layers, n_heads=fake.geometry.n_heads)
