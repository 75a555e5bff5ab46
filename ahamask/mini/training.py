"""Training the mini SALMONN's connector and LoRA: Whisper-base (frozen) + window Q-Former + projection +
SmolLM2-135M-Instruct with LoRA, on the espeak-ng world (:mod:`ahamask.mini.world`).

This is SALMONN's own recipe at laptop size: the encoder and the LLM are frozen, the Q-Former, its query
tokens, ``ln_speech``, the projection and LoRA (r 8 on q/v, peft's LLaMA default) train on the token cross-
entropy of ``SALMONN.forward``. Each step asks every clip for a random task with a random training paraphrase,
or (``empty_share`` of them) for ASR with no instruction: the empty-prompt default is part of the design.

Hand-written here (no library does it for this model): the loop and its resume. The Whisper encoder is frozen,
so its states are computed once per clip and kept in ``encoder_states.safetensors`` in the run folder (keyed by
the manifest and the encoder weights' digest); a step then costs the Q-Former and the LLM only. A run folder
holds ``last.pt`` (trainable weights, optimizer, step, the run's Python generator and torch's generator, which
dropout draws from), written atomically every ``save_every`` steps and on Ctrl-C, so a resumed run continues
the same sequence of batches, prompts and dropout masks. The result is ``salmonn_mini.pth`` in the official
checkpoint layout (``{"model": trainable state}``), loadable through ``model.ckpt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..config import ModelConfig
from ..demo.base_model import ClipBank
from ..evaluation.metrics import wer
from ..utils.io import atomic_torch_save, atomic_write_json
from ..utils.seed import python_rng_state, set_python_rng_state
from .world import MINI_TASKS, instructions, parse_answer

logger = logging.getLogger(__name__)

__all__ = ["MiniTrainSettings", "encoder_states", "train_connector", "validate"]

CHECKPOINT_NAME = "salmonn_mini.pth"


@dataclass
class MiniTrainSettings:
    """The ``train:`` section of ``configs/mini_salmonn.yaml``.

    Attributes:
        steps: optimizer steps; batch_size: clips per step.
        lr: peak rate of the connector (Q-Former, queries, ``ln_speech``, projection); lora_lr: of LoRA.
        warmup: linear warm-up steps, then cosine to ``min_lr_ratio`` of the peak.
        empty_share: share of clips asked with no instruction (the default task, ``default_task``).
        tasks: the instructed tasks.
        seed: the run's generator (batches, tasks, paraphrases) and torch's (dropout, initialisation).
        save_every, valid_every: steps between checkpoints and between validation decodes.
        valid_clips: validation clips decoded per task.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    lora_lr: float = 3e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    empty_share: float = 0.2
    default_task: str = "asr"
    tasks: list[str] = field(default_factory=lambda: list(MINI_TASKS))
    seed: int = 0
    save_every: int = 50
    valid_every: int = 250
    valid_clips: int = 32


def lr_factor(step: int, settings: MiniTrainSettings) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` (a factor of each group's peak)."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encoder_states(
    model: Any, manifest: Path, cache: Path, batch_size: int = 16
) -> tuple[torch.Tensor, list]:
    """Whisper encoder states of every clip of ``manifest`` ([clips, frames, width]) and the entries' labels.

    Read from ``cache`` when it was written for the same manifest bytes and encoder weights; computed (and
    written atomically) otherwise.
    """
    enc = model.speech_encoder
    weights = hashlib.sha256()
    for name, tensor in sorted(enc.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().float().numpy().tobytes())
    key = _digest(hashlib.sha256(manifest.read_bytes()).hexdigest(), weights.hexdigest())
    if cache.exists():
        stored = load_file(str(cache))
        if stored.get("key") is not None and bytes(stored["key"].tolist()).decode() == key:
            # A hit needs only the labels: no audio is read or featurised again.
            entries = json.loads(manifest.read_text(encoding="utf-8"))["annotation"]
            return stored["states"], [e["labels"] for e in entries]
    bank = ClipBank.from_manifest(manifest, Path(model.cfg.whisper_path), progress=False)
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(bank.labels), batch_size), desc="whisper encoder", dynamic_ncols=True):
            chunks.append(enc(bank.spectrograms[start : start + batch_size]).last_hidden_state)
    states = torch.cat(chunks)
    tmp = cache.with_name(f".{cache.name}.tmp")
    save_file(
        {"states": states.contiguous(), "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}, str(tmp)
    )
    tmp.replace(cache)
    return states, bank.labels


def _optimizer(model: Any, settings: MiniTrainSettings) -> tuple[torch.optim.AdamW, list[torch.nn.Parameter]]:
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    lora_ids = {id(p) for p in lora}
    connector = [p for p in model.parameters() if p.requires_grad and id(p) not in lora_ids]
    optimizer = torch.optim.AdamW(
        [{"params": connector, "peak": settings.lr}, {"params": lora, "peak": settings.lora_lr}],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    return optimizer, connector + lora


def _batch_prompts(
    model: Any, labels: Sequence[dict], settings: MiniTrainSettings, rng: random.Random
) -> tuple[list[str], list[str]]:
    prompts, targets = [], []
    for lab in labels:
        if rng.random() < settings.empty_share:
            task, text = settings.default_task, ""
        else:
            task = rng.choice(settings.tasks)
            text = rng.choice(instructions(task, "train"))
        prompts.append(model.prompt_for(text))
        targets.append(lab[task])
    return prompts, targets


@torch.no_grad()
def validate(
    model: Any, states: torch.Tensor, labels: Sequence[dict], tasks: Sequence[str], batch_size: int = 16
) -> dict[str, float]:
    """Greedy decodes of the given clips: WER of no instruction and of the first training paraphrase (asr),
    exact-format accuracy of the first paraphrase (classification tasks)."""
    model.eval()
    out: dict[str, float] = {}
    plans = [("asr_none", "asr", "")] + [(t, t, instructions(t, "train")[0]) for t in tasks]
    for name, task, text in plans:
        hyps = []
        for start in range(0, len(labels), batch_size):
            speech = model.encode_auditory_features(states[start : start + batch_size])
            prompts = [model.prompt_for(text)] * speech.shape[0]
            hyps += model.generate(
                {}, {"max_new_tokens": 24, "num_beams": 1}, prompts=prompts, speech_embeds=speech
            )
        refs = [lab[task] for lab in labels]
        if task == "asr":
            out[f"{name}_wer"] = round(wer(refs, [h.strip() for h in hyps])["value"], 2)
        else:
            hits = sum(parse_answer(task, h) == r for h, r in zip(hyps, refs, strict=True))
            out[f"{name}_accuracy"] = round(100.0 * hits / len(refs), 2)
    return out


def _save_state(path: Path, model: Any, optimizer: Any, step: int, rng: random.Random, history: list) -> None:
    atomic_torch_save(
        {
            "step": step,
            "model": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "rng": python_rng_state(rng),
            "torch_rng": torch.get_rng_state(),
            "history": history,
        },
        path,
    )


def _restore_state(path: Path, model: Any, optimizer: Any, rng: random.Random) -> tuple[int, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(state["model"]) != set(trainable):
        raise ValueError(
            f"{path}: its tensors are not this model's trainable ones (a run of another config?)"
        )
    with torch.no_grad():
        for name, tensor in state["model"].items():
            trainable[name].copy_(tensor)
    optimizer.load_state_dict(state["optimizer"])
    set_python_rng_state(rng, state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["history"])


def train_connector(
    model: Any,
    model_cfg: ModelConfig,
    settings: MiniTrainSettings,
    world_root: Path,
    world_info: dict[str, Any],
    run_dir: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Trains (or resumes) the connector and LoRA; writes ``salmonn_mini.pth`` and ``training.json``.

    Args:
        model: a SALMONN built from ``model_cfg`` (LoRA on, encoder frozen), freshly initialised with
            ``torch.manual_seed(settings.seed)``.
        model_cfg: its config (recorded in ``training.json``).
        settings: the schedule.
        world_root, world_info: the espeak-ng world (:func:`ahamask.mini.world.build_speech_world`).
        run_dir: the run folder (``last.pt`` there is resumed).
        progress: show a progress bar.
        stop_after: stop after this many steps of this call (saving ``last.pt``, as Ctrl-C does), e.g. to
            train in chunks; the same call again resumes.

    Returns:
        The ``training.json`` content (final validation scores, loss curve, seconds, settings), or None when
        stopped by ``stop_after`` before the last step.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    manifests = world_info["manifests"]
    train_states, train_labels = encoder_states(
        model, world_root / manifests["train"]["asr"], run_dir / "encoder_states_train.safetensors"
    )
    valid_states, valid_labels = encoder_states(
        model, world_root / manifests["valid"]["asr"], run_dir / "encoder_states_valid.safetensors"
    )
    valid_states, valid_labels = valid_states[: settings.valid_clips], valid_labels[: settings.valid_clips]
    optimizer, params = _optimizer(model, settings)
    rng = random.Random(settings.seed)
    step, history = 0, []
    last = run_dir / "last.pt"
    if last.exists():
        step, history = _restore_state(last, model, optimizer, rng)
        logger.info("resuming %s at step %d of %d", last, step, settings.steps)
    started, first = time.perf_counter(), step
    bar = tqdm(
        total=settings.steps, initial=step, desc="mini SALMONN", disable=not progress, dynamic_ncols=True
    )
    try:
        while step < settings.steps:
            model.train()
            model.speech_encoder.eval()
            batch = [rng.randrange(len(train_labels)) for _ in range(settings.batch_size)]
            prompts, targets = _batch_prompts(model, [train_labels[i] for i in batch], settings, rng)
            for group in optimizer.param_groups:
                group["lr"] = group["peak"] * lr_factor(step, settings)
            speech = model.encode_auditory_features(train_states[batch])
            loss = model({"text": targets}, prompts=prompts, speech_embeds=speech)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            record: dict[str, Any] = {"step": step, "loss": round(loss.item(), 4)}
            if step % settings.valid_every == 0 or step == settings.steps:
                record["valid"] = validate(model, valid_states, valid_labels, settings.tasks)
                logger.info("step %d: %s", step, record["valid"])
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % settings.save_every == 0 or step == settings.steps:
                _save_state(last, model, optimizer, step, rng, history)
            if stop_after is not None and step - first >= stop_after and step < settings.steps:
                _save_state(last, model, optimizer, step, rng, history)
                return None
    except KeyboardInterrupt:
        _save_state(last, model, optimizer, step, rng, history)
        raise
    finally:
        bar.close()
    atomic_torch_save({"model": _connector_state(model)}, run_dir / CHECKPOINT_NAME)
    valids = [h["valid"] for h in history if "valid" in h]
    summary = {
        "steps": settings.steps,
        "resumed_from": first,
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "final_valid": valids[-1] if valids else {},
        "valid_curve": [{"step": h["step"], **h["valid"]} for h in history if "valid" in h],
        "loss_curve": [
            {"step": history[i]["step"], "loss": round(sum(h["loss"] for h in chunk) / len(chunk), 4)}
            for i in range(0, len(history), 100)
            for chunk in [history[i : i + 100]]
        ],
        "settings": asdict(settings),
        "model": asdict(model_cfg),
    }
    atomic_write_json(summary, run_dir / "training.json")
    return summary


def _connector_state(model: Any) -> dict[str, torch.Tensor]:
    """What the official SALMONN checkpoint holds for this set-up: every trained tensor (not the frozen
    encoder or LLM)."""
    return {
        k: v.detach().clone()
        for k, v in model.trainable_state_dict().items()
        if not k.startswith("speech_encoder.")
    }
