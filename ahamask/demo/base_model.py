"""Stages 1-2 of the demo: train a tiny instruction-following SALMONN from scratch, then save it as a bundle.

The "pretrained LALM" of the demo is made here. A tiny bundle (:func:`ahamask.models.tiny.make_tiny_bundle`,
with a tokenizer trained on the world's prompts and answers) gives the SALMONN architecture with random
weights. Training then has two phases:

1. the speech side alone (Whisper encoder, window-level Q-Former, projection) learns the clips' labels
   through linear probes on the speech embeddings (first symbol, bag of symbols, register, count, loudness,
   and CTC over the symbol sequence): the demo's stand-in for Whisper's own pretraining. The pilot found
   that without such probes the content tasks stay at chance, and our runs found that letting the decoder's
   gradient reach a random encoder from the start leaves transcription poor (held-out WER 45-95% after
   600 joint steps in our runs, against 3-20% with this phase first). Its learning rate is kept at 1e-3:
   at 3e-3 the CTC probe collapsed to all-blank outputs;
2. everything jointly (the LLaMA decoder's own weights: no LoRA), every clip asked for a random task with a
   random *training* paraphrase; the loss is the model's token cross-entropy through ``SALMONN.forward`` (so
   the real sequence layout ``[BOS] USER: <Speech> audio </Speech> instruction\\nASSISTANT: target</s>`` is
   what is learned) plus the probes. The probes are dropped afterwards.

The trained model is written back in the real formats (LLaMA folder via ``save_pretrained`` with the
tokenizer files, Whisper folder with the trained encoder, ``salmonn.pth`` in the official checkpoint layout)
with a decode and a training config pointing at it, so the later stages load it through
``SALMONN.from_config`` exactly as they would load the 13B model.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from ..config import load_decode_config, load_train_config
from ..data.dataset import SALMONNDataset
from ..models.salmonn import SALMONN
from ..models.tiny import make_tiny_bundle
from ..synth import SYMBOL_WORDS, WorldInfo, answer_words, make_target, task_instructions, world_corpus
from ..utils.io import atomic_torch_save, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "AuxiliaryHeads",
    "BaseModelSpec",
    "BaseTrainSettings",
    "ClipBank",
    "ClipBatches",
    "aux_targets",
    "build_initial_bundle",
    "lr_at",
    "pretrain_speech",
    "save_trained_bundle",
    "train_base_model",
    "training_model",
]

# Register and loudness label order of the auxiliary heads (closed sets of the world).
_REGISTERS = ("low", "high")
_LOUDNESS = ("quiet", "loud")
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class BaseModelSpec:
    """Sizes of the demo's SALMONN (the fields of :class:`ahamask.models.tiny.TinySpec` it sets).

    Attributes:
        n_layers, n_heads: LLaMA decoder geometry; the mask has ``n_layers * (n_heads + 1)`` entries.
            With 8 heads per layer only the tasks closest to the no-instruction behaviour could be reached
            by a mask in our runs; 16 (head size 8, the same compute) gave masks more heads to choose from.
        hidden_size, intermediate_size: LLaMA widths.
        vocab_size: sentencepiece vocabulary trained on the world's texts.
        whisper_d_model, whisper_layers, whisper_heads: the Whisper-style encoder.
        qformer_hidden_size, qformer_num_heads, qformer_intermediate_size, qformer_num_layers: the Q-Former.
        second_per_window: Q-Former window; 0.12 s gives 16 speech tokens for a 2 s clip, about one token
            per symbol slot (symbols last 0.2-0.3 s).
    """

    n_layers: int = 4
    n_heads: int = 16
    hidden_size: int = 128
    intermediate_size: int = 256
    vocab_size: int = 1000
    whisper_d_model: int = 128
    whisper_layers: int = 1
    whisper_heads: int = 4
    qformer_hidden_size: int = 128
    qformer_num_heads: int = 4
    qformer_intermediate_size: int = 256
    qformer_num_layers: int = 1
    second_per_window: float = 0.12


@dataclass
class BaseTrainSettings:
    """How the base model is trained.

    Attributes:
        steps: optimizer steps.
        batch_size: clips per step (each with its own task and paraphrase).
        lr: peak AdamW learning rate of the LLM (linear warm-up, cosine to 10% of it).
        speech_lr: peak learning rate of the speech side (Whisper encoder, Q-Former, projection, auxiliary
            heads); None means ``lr``.
        speech_steps: steps of speech-side pretraining on the auxiliary losses alone, before joint training.
        warmup_steps: warm-up length.
        weight_decay: AdamW weight decay.
        aux_weight: weight of the auxiliary speech losses (first symbol, bag of symbols, register, count,
            loudness, and a CTC transcript) added to the cross-entropy.
        max_new_tokens: generation budget written into the decode config (the longest target plus margin).
        bf16: "off" (float32, the default) or "on" (bf16 autocast, only when asked for: CPUs with native bf16
            run it ~5x faster, but the numbers differ from float32). Never chosen by timing: a result must
            not depend on how fast a matmul happened to be.
        seed: seed of the weights, the batches and the task/paraphrase draws.
        default_task: what the model does with an empty prompt, a declared part of the design as in SALMONN
            (whose instruction-free prompt falls back to speech recognition through its training): a share
            ``empty_share`` of the examples has no instruction and this task's target. Without it the
            empty-prompt behaviour is whatever one base model happens to learn, and every mask starts
            from a different default (the finding of one seed did not hold on another).
        empty_share: share of training examples with an empty instruction (0 disables the default).
    """

    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    speech_lr: float | None = 1e-3
    speech_steps: int = 300
    warmup_steps: int = 100
    weight_decay: float = 0.01
    aux_weight: float = 1.0
    max_new_tokens: int = 24
    bf16: str = "off"
    seed: int = 0
    default_task: str = "asr"
    empty_share: float = 0.2

    def __post_init__(self) -> None:
        if self.bf16 not in ("on", "off"):
            raise ValueError(f"base.bf16: {self.bf16!r} is not 'on' or 'off'")
        if not 0.0 <= self.empty_share < 1.0:
            raise ValueError(f"base.empty_share: {self.empty_share} must be in [0, 1)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"base.steps / base.batch_size must be >= 1, got {self.steps} / {self.batch_size}"
            )


def build_initial_bundle(world: WorldInfo, out: Path, spec: BaseModelSpec, seed: int = 0) -> Path:
    """Writes a randomly initialised tiny SALMONN bundle whose tokenizer knows the world's texts.

    The tokenizer corpus is the world's corpus plus the prompt pieces repeated and the answer words, so that
    instruction words and answer words become whole pieces (with a few hundred pieces "three" would be
    spelled letter by letter and held-out paraphrases would differ from training ones in their pieces).

    Args:
        world: the built world.
        out: bundle folder (created).
        spec: model sizes.
        seed: weight initialisation seed.

    Returns:
        ``out``.
    """
    corpus = world_corpus(world)
    pieces = [text for text in corpus if "Speech>" in text]
    # Repetition weights the rare prompt texts against the thousands of distinct transcripts.
    extra = corpus + pieces * 10 + answer_words(world.tasks) * 50
    return make_tiny_bundle(
        out,
        extra_corpus=extra,
        chunk_seconds=round(world.clip_seconds),
        seed=seed,
        lora_rank=8,
        **asdict(spec),
    )


@dataclass
class ClipBank:
    """The training clips held in memory: Whisper features once, labels from the manifest.

    Attributes:
        spectrograms: [clips, n_mels, frames] Whisper log-mel features.
        labels: one labels dict per clip (``symbols``, ``register``, ``count``, ...).
    """

    spectrograms: torch.Tensor
    labels: list[dict[str, Any]]

    @classmethod
    def from_manifest(cls, manifest: Path, whisper_path: Path, progress: bool = True) -> ClipBank:
        """Loads every clip of a one-entry-per-clip manifest through :class:`SALMONNDataset`.

        Args:
            manifest: manifest whose entries carry ``labels`` (a world's ``<split>/<task>.json``).
            whisper_path: Whisper folder giving the feature extractor.
            progress: show a progress bar.

        Raises:
            ValueError: if an entry has no ``labels``.
        """
        dataset = SALMONNDataset(manifest, str(whisper_path))
        specs = []
        for index in tqdm(range(len(dataset)), desc="whisper features", disable=not progress, leave=False):
            specs.append(dataset[index]["spectrogram"])
        labels = []
        for index, entry in enumerate(dataset.annotation):
            if not isinstance(entry.get("labels"), dict):
                raise ValueError(f"{manifest}: entry {index} has no 'labels' object (needed by the demo)")
            labels.append(entry["labels"])
        return cls(torch.stack(specs), labels)


class AuxiliaryHeads(nn.Module):
    """Linear probes on the speech embeddings that give the encoder a direct training signal.

    Pooled heads (mean over speech tokens): first symbol, bag of symbols, register, count, loudness. A
    per-token head is trained with CTC on the symbol sequence, which teaches the encoder where each symbol
    is. All are discarded after base training: the LALM itself never sees them.

    Args:
        width: LLM hidden size (the speech embeddings' width).
        n_counts: number of distinct counts (symbols per clip range).
    """

    def __init__(self, width: int, n_counts: int) -> None:
        super().__init__()
        n_symbols = len(SYMBOL_WORDS)
        self.first = nn.Linear(width, n_symbols)
        self.bag = nn.Linear(width, n_symbols)
        self.register = nn.Linear(width, len(_REGISTERS))
        self.count = nn.Linear(width, n_counts)
        self.loudness = nn.Linear(width, len(_LOUDNESS))
        self.ctc = nn.Linear(width, n_symbols + 1)  # index 0 is the CTC blank

    def forward(self, speech: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the auxiliary losses.

        Args:
            speech: [batch, tokens, width] speech embeddings.
            targets: ``first`` [batch], ``bag`` [batch, symbols] (0/1), ``register``, ``count``, ``loudness``
                [batch], ``ctc`` [batch, max_symbols] (1-based symbol ids, 0-padded), ``ctc_lengths`` [batch].
        """
        pooled = speech.mean(dim=1)
        loss = F.cross_entropy(self.first(pooled), targets["first"])
        loss = loss + F.binary_cross_entropy_with_logits(self.bag(pooled), targets["bag"])
        loss = loss + F.cross_entropy(self.register(pooled), targets["register"])
        loss = loss + F.cross_entropy(self.count(pooled), targets["count"])
        loss = loss + F.cross_entropy(self.loudness(pooled), targets["loudness"])
        log_probs = self.ctc(speech).log_softmax(-1).transpose(0, 1)  # [tokens, batch, classes]
        lengths = torch.full((speech.shape[0],), speech.shape[1], dtype=torch.long)
        loss = loss + F.ctc_loss(
            log_probs, targets["ctc"], lengths, targets["ctc_lengths"], zero_infinity=True
        )
        return loss


def aux_targets(labels: Sequence[dict[str, Any]], min_count: int) -> dict[str, torch.Tensor]:
    """The targets of :class:`AuxiliaryHeads` for a batch of clips, from their manifest labels.

    Args:
        labels: one labels dict per clip (``symbols``, ``register``, ``count``, ``loudness``).
        min_count: the smallest count in the training clips (class 0 of the count head).

    Returns:
        ``first``, ``bag``, ``register``, ``count``, ``loudness``, ``ctc`` (1-based symbol ids, 0-padded) and
        ``ctc_lengths``, as :meth:`AuxiliaryHeads.forward` takes them.
    """
    index = {word: i for i, word in enumerate(SYMBOL_WORDS)}
    symbols = [[index[w] for w in lab["symbols"]] for lab in labels]
    longest = max(len(s) for s in symbols)
    bag = torch.zeros(len(labels), len(SYMBOL_WORDS))
    ctc = torch.zeros(len(labels), longest, dtype=torch.long)
    for row, seq in enumerate(symbols):
        bag[row, seq] = 1.0
        ctc[row, : len(seq)] = torch.tensor(seq) + 1
    return {
        "first": torch.tensor([s[0] for s in symbols]),
        "bag": bag,
        "register": torch.tensor([_REGISTERS.index(lab["register"]) for lab in labels]),
        "count": torch.tensor([int(lab["count"]) - min_count for lab in labels]),
        "loudness": torch.tensor([_LOUDNESS.index(lab["loudness"]) for lab in labels]),
        "ctc": ctc,
        "ctc_lengths": torch.tensor([len(s) for s in symbols]),
    }


def lr_at(step: int, settings: BaseTrainSettings) -> float:
    """Learning-rate factor of ``step`` (0-based): linear warm-up to 1, then a cosine down to 0.1.

    The demo's base training multiplies each parameter group's peak rate by it; the analyses that train
    their own base models reuse it so that their schedules are the demo's.
    """
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(settings.steps - settings.warmup_steps, 1)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def training_model(bundle: Path, eager_attention: bool = False) -> SALMONN:
    """The bundle's SALMONN with every part trainable: Whisper unfrozen, LLaMA without LoRA.

    A base model is trained from scratch, so nothing is frozen, unlike the mask training's frozen LALM.

    Args:
        bundle: the initial bundle.
        eager_attention: use the plain (matmul + softmax) attention in the LLM and Whisper: under bf16
            autocast on CPU, torch's fused attention backward is ~8x slower than this at these sizes.
    """
    cfg = load_decode_config(
        bundle / "decode_config.yaml", ["model.lora=false", "model.freeze_whisper=false", "model.ckpt="]
    )
    model = SALMONN.from_config(cfg.model)
    if eager_attention:
        model.llama_model.set_attn_implementation("eager")
        model.speech_encoder.set_attn_implementation("eager")
    # load_llm freezes the LLM (for LoRA or masks); the base model trains its own weights.
    model.requires_grad_(True)
    return model


class ClipBatches:
    """Clip indices in shuffled passes: every clip once per pass, a fresh permutation per pass.

    A pass's tail that does not fill a batch is completed from the next pass, so every batch has
    ``batch_size`` clips and the draws depend on ``rng`` alone (the caller owns it).

    Args:
        n: number of clips.
        batch_size: clips per batch.
        rng: the generator of the permutations.
    """

    def __init__(self, n: int, batch_size: int, rng: random.Random) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order: list[int] = []

    def next(self) -> list[int]:
        """The next batch of clip indices."""
        if len(self.order) < self.batch_size:
            self.order += self.rng.sample(range(self.n), self.n)
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return batch


def pretrain_speech(
    model: SALMONN,
    heads: AuxiliaryHeads,
    bank: ClipBank,
    batches: ClipBatches,
    settings: BaseTrainSettings,
    min_count: int,
    use_bf16: bool,
    progress: bool,
) -> list[dict[str, float]]:
    """Trains the speech side alone on the auxiliary losses (the demo's stand-in for Whisper pretraining).

    The real SALMONN starts from a Whisper encoder pretrained on speech recognition; here the encoder,
    Q-Former and projection first learn per-token symbol identity (CTC) and the clip labels, without the LLM
    (so each step is cheap). Trained jointly from the start, the decoder's gradient reaches the encoder
    before the decoder is of any use, and transcription stayed poor in the runs that tried it.

    Args:
        model: the SALMONN being trained (its LLM is left alone).
        heads: the auxiliary probes, trained with the speech side.
        bank: the training clips.
        batches: the batch draws (shared with the joint phase that follows).
        settings: ``speech_steps``, ``speech_lr`` (else ``lr``) and ``weight_decay`` are read.
        min_count: the smallest count in ``bank`` (class 0 of the count probe).
        use_bf16: run the encoder under bf16 autocast.
        progress: show a progress bar.

    Returns:
        The auxiliary loss averaged over every 50 steps (empty when ``settings.speech_steps`` <= 0).
    """
    if settings.speech_steps <= 0:
        return []
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("llama_model.")]
    params += list(heads.parameters())
    optimizer = torch.optim.AdamW(
        params, lr=settings.speech_lr or settings.lr, weight_decay=settings.weight_decay
    )
    losses = []
    bar = tqdm(range(settings.speech_steps), desc="speech encoder", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        batch = batches.next()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            speech = model.encode_speech(bank.spectrograms[batch])
        loss = heads(speech.float(), aux_targets([bank.labels[i] for i in batch], min_count))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(aux=f"{loss.item():.3f}")
    bar.close()
    return [
        {"step": i + len(c), "aux": sum(c) / len(c)}
        for i in range(0, len(losses), 50)
        for c in [losses[i : i + 50]]
    ]


def train_base_model(
    world: WorldInfo,
    bundle: Path,
    out: Path,
    settings: BaseTrainSettings,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the tiny SALMONN of ``bundle`` to follow instructions on the world's tasks, saves it to ``out``.

    Args:
        world: the built world (its ``train/<task>.json`` manifests give clips and labels).
        bundle: an initial bundle from :func:`build_initial_bundle`.
        out: folder of the trained bundle (``llama/``, ``whisper/``, ``salmonn.pth``, configs).
        settings: optimisation settings.
        tasks: tasks to train on (default: all of the world's).
        progress: show progress bars.

    Returns:
        A summary: steps, seconds, final losses, parameter count (also written to ``out/base_training.json``).

    Raises:
        ValueError: if a task is not in the world.
    """
    tasks = _checked_tasks(world, tasks, settings)
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    # Mixed precision only where bf16 is native: float32 weights and optimizer, bf16 products.
    use_bf16 = settings.bf16 == "on"
    model = training_model(bundle, eager_attention=use_bf16)
    bank = ClipBank.from_manifest(world.manifests["train"][world.tasks[0]], bundle / "whisper", progress)
    counts = sorted({int(lab["count"]) for lab in bank.labels})
    heads = AuxiliaryHeads(model.llama_model.config.hidden_size, counts[-1] - counts[0] + 1)
    optimizer, params = _joint_optimizer(model, heads, settings)
    instructions = {t: task_instructions(t, "train") for t in tasks}
    n_params = _log_sizes(model, params, len(bank.labels), tasks, use_bf16)
    model.train()
    batches = ClipBatches(len(bank.labels), settings.batch_size, rng)
    speech_curve = pretrain_speech(model, heads, bank, batches, settings, counts[0], use_bf16, progress)
    history = _train_jointly(
        model,
        heads,
        bank,
        batches,
        optimizer,
        settings,
        tasks,
        instructions,
        rng,
        counts[0],
        use_bf16,
        progress,
    )
    model.eval()
    summary = _training_summary(history, speech_curve, settings, started, n_params, use_bf16, tasks)
    _save_base_model(model, world, tasks, bundle, out, settings.max_new_tokens, summary)
    return summary


def _log_sizes(
    model: SALMONN, params: list[nn.Parameter], n_clips: int, tasks: list[str], use_bf16: bool
) -> int:
    """Logs what is about to be trained; returns the model's parameter count (auxiliary heads excluded)."""
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "base model: %d parameters (%d trainable incl. auxiliary heads), %d clips, tasks %s, %s",
        n_params,
        sum(p.numel() for p in params),
        n_clips,
        tasks,
        "bf16 autocast" if use_bf16 else "float32",
    )
    return n_params


def _checked_tasks(world: WorldInfo, tasks: Sequence[str] | None, settings: BaseTrainSettings) -> list[str]:
    """The tasks to train on (default: the world's), after checking them and the default task."""
    tasks = list(tasks or world.tasks)
    unknown = [t for t in [*tasks, settings.default_task] if t not in world.tasks]
    if unknown:
        raise ValueError(f"tasks: {unknown} are not tasks of the world at {world.root} ({list(world.tasks)})")
    return tasks


def _save_base_model(
    model: SALMONN,
    world: WorldInfo,
    tasks: list[str],
    bundle: Path,
    out: Path,
    max_new_tokens: int,
    summary: dict[str, Any],
) -> None:
    """Saves the trained bundle (configs pointing at the world's manifests) and ``base_training.json``."""
    mixed = world.mixed_manifests
    save_trained_bundle(
        model,
        bundle,
        out,
        max_new_tokens,
        {"train": mixed["train"], "valid": mixed["valid"], "test": world.manifests["test"][tasks[0]]},
    )
    atomic_write_json(summary, out / "base_training.json")
    logger.info(
        "base model trained in %.0f s: CE %.3f, auxiliary %.3f -> %s",
        summary["seconds"],
        summary["final_ce"],
        summary["final_aux"],
        out,
    )


def _joint_optimizer(
    model: SALMONN, heads: AuxiliaryHeads, settings: BaseTrainSettings
) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """AdamW over the LLM and the speech side (with the probes), each group with its own peak rate.

    Returns:
        The optimizer (each group's ``peak`` is what :func:`lr_at` scales) and every parameter it trains,
        LLM first.
    """
    llm = [p for p in model.llama_model.parameters() if p.requires_grad]
    llm_ids = {id(p) for p in llm}
    speech_side = [p for p in model.parameters() if p.requires_grad and id(p) not in llm_ids]
    speech_side += list(heads.parameters())
    # Two rates: the speech side (encoder, Q-Former, projection, probes) collapses to CTC blanks above ~2e-3,
    # while the decoder learns faster with more.
    speech_lr = settings.speech_lr or settings.lr
    optimizer = torch.optim.AdamW(
        [{"params": llm, "peak": settings.lr}, {"params": speech_side, "peak": speech_lr}],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    return optimizer, llm + speech_side


def _train_jointly(
    model: SALMONN,
    heads: AuxiliaryHeads,
    bank: ClipBank,
    batches: ClipBatches,
    optimizer: torch.optim.Optimizer,
    settings: BaseTrainSettings,
    tasks: list[str],
    instructions: dict[str, Sequence[str]],
    rng: random.Random,
    min_count: int,
    use_bf16: bool,
    progress: bool,
) -> list[dict[str, float]]:
    """Phase 2: the whole model on its token cross-entropy plus the probes; returns each step's losses.

    Every clip is asked for a random task of ``tasks`` with a random paraphrase of ``instructions[task]``,
    or (a share ``settings.empty_share``) for the default task with no instruction. Gradients are clipped
    over every parameter of ``optimizer``.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    history: list[dict[str, float]] = []
    bar = tqdm(range(settings.steps), desc="base model", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = batches.next()
        labels = [bank.labels[i] for i in batch]
        # An empty instruction asks for the declared default task (see BaseTrainSettings.default_task).
        empty = [settings.empty_share > 0 and rng.random() < settings.empty_share for _ in batch]
        chosen = [settings.default_task if e else rng.choice(tasks) for e in empty]
        prompts = [
            model.prompt_for("" if e else rng.choice(instructions[t]))
            for t, e in zip(chosen, empty, strict=True)
        ]
        targets = [make_target(t, lab) for t, lab in zip(chosen, labels, strict=True)]
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * lr_at(step, settings)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            speech = model.encode_speech(bank.spectrograms[batch])
            ce = model({"text": targets}, prompts=prompts, speech_embeds=speech)["loss"].float()
            aux = heads(speech.float(), aux_targets(labels, min_count))
        loss = ce + settings.aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({"ce": ce.item(), "aux": aux.item()})
        bar.set_postfix(ce=f"{ce.item():.3f}", aux=f"{aux.item():.3f}")
    bar.close()
    return history


def _training_summary(
    history: list[dict[str, float]],
    speech_curve: list[dict[str, float]],
    settings: BaseTrainSettings,
    started: float,
    n_params: int,
    use_bf16: bool,
    tasks: list[str],
) -> dict[str, Any]:
    """What ``base_training.json`` holds: final losses (mean of the last 50 steps), curves, settings."""
    tail = history[-50:]
    return {
        "steps": settings.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "final_ce": sum(h["ce"] for h in tail) / len(tail),
        "final_aux": sum(h["aux"] for h in tail) / len(tail),
        "curve": [
            {"step": i + len(chunk), "ce": sum(h["ce"] for h in chunk) / len(chunk)}
            for i in range(0, len(history), 50)
            for chunk in [history[i : i + 50]]
        ],
        "speech_pretraining_curve": speech_curve,
        "parameters": n_params,
        "bf16": use_bf16,
        "tasks": tasks,
        "settings": asdict(settings),
    }


def _save_trained_weights(model: SALMONN, bundle: Path, staging: Path) -> None:
    """``llama/``, ``whisper/`` and ``salmonn.pth`` of a trained bundle, written into ``staging``."""
    from transformers import WhisperModel

    from ..models.loading import quiet_loading

    (staging / "llama").mkdir(parents=True)
    with quiet_loading():
        model.llama_model.save_pretrained(staging / "llama")
        for name in _TOKENIZER_FILES:
            shutil.copy2(bundle / "llama" / name, staging / "llama" / name)
        whisper = WhisperModel.from_pretrained(str(bundle / "whisper"), local_files_only=True)
        whisper.encoder.load_state_dict(model.speech_encoder.state_dict())
        whisper.save_pretrained(staging / "whisper")
    shutil.copy2(
        bundle / "whisper" / "preprocessor_config.json", staging / "whisper" / "preprocessor_config.json"
    )
    # The checkpoint holds what the official SALMONN checkpoint holds for this configuration: the encoder is
    # frozen from now on and lives in whisper/, so its weights are not part of salmonn.pth.
    state = {k: v for k, v in model.trainable_state_dict().items() if not k.startswith("speech_encoder.")}
    atomic_torch_save({"model": state}, staging / "salmonn.pth")


def _trained_bundle_config(
    cfg: Any,
    name: str,
    out: Path,
    paths: dict[str, Any],
    max_new_tokens: int,
    manifests: dict[str, Path] | None,
) -> Any:
    """The initial bundle's ``name`` config (decode or train) pointed at the trained bundle ``out``."""
    # The bundle's configs may hold paths relative to the working directory; the trained bundle's are
    # absolute so that it can be used from anywhere (the prompts now live in out/prompts).
    _absolute_paths(cfg)
    cfg.model.prompt_path = str((out / "prompts" / Path(cfg.model.prompt_path).name).resolve())
    for key, value in paths.items():
        cfg.model[key] = value
    manifests = manifests or {}
    if name == "decode_config.yaml":
        cfg.generate.max_new_tokens = max_new_tokens
        cfg.generate.num_beams = 1  # greedy: the demo's ~80 decodes stay cheap
        cfg.batch_size_eval = 50
        if "test" in manifests:
            cfg.test_data_path = str(manifests["test"].resolve())
            cfg.output_path = str((out / f"decode_{manifests['test'].stem}.json").resolve())
    else:
        cfg.datasets.whisper_path = paths["whisper_path"]
        for split in ("train", "valid", "test"):
            if split in manifests:
                cfg.datasets[f"{split}_ann_path"] = str(manifests[split].resolve())
    return cfg


_PATH_KEYS = (
    "model.prompt_path",
    "model.test_prompt_path",
    "model.beats_path",
    "datasets.train_ann_path",
    "datasets.valid_ann_path",
    "datasets.test_ann_path",
    "test_data_path",
    "output_path",
    "run.output_dir",
)


def _absolute_paths(cfg: Any) -> None:
    """Turns the non-empty relative paths of a bundle config into absolute ones, in place."""
    for key in _PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            OmegaConf.update(cfg, key, str(Path(value).resolve()))


def save_trained_bundle(
    model: SALMONN,
    bundle: Path,
    out: Path,
    max_new_tokens: int = 24,
    manifests: dict[str, Path] | None = None,
) -> Path:
    """Writes a trained model as a bundle in the real formats, loadable with ``SALMONN.from_config``.

    ``llama/``: the decoder via ``save_pretrained`` (its embeddings already hold the ``[PAD]`` row) plus the
    bundle's sentencepiece files; ``whisper/``: the bundle's Whisper model with the trained encoder
    weights and the same feature extractor; ``salmonn.pth``: the officially trainable parameters of a
    frozen-Whisper, no-LoRA model (Q-Former, query tokens, projection, ``ln_speech``), by official name;
    ``decode_config.yaml`` and ``config.yaml``: the bundle's configs with absolute paths into ``out`` and
    ``lora: false``.

    Args:
        model: the trained SALMONN (built from ``bundle`` with Whisper unfrozen and no LoRA).
        bundle: the bundle it was built from.
        out: destination folder (replaced if present).
        max_new_tokens: generation budget written into the decode config.
        manifests: ``train``/``valid``/``test`` manifests the configs should point at (the world's), so that
            ``python evaluate.py -c out/decode_config.yaml`` decodes the world's test clips.

    Returns:
        ``out``.
    """
    # Build next to the destination and swap in at the end, so an interrupted save never looks complete.
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    _save_trained_weights(model, bundle, staging)
    shutil.copytree(bundle / "prompts", staging / "prompts")
    paths = {
        "llama_path": str((out / "llama").resolve()),
        "whisper_path": str((out / "whisper").resolve()),
        "ckpt": str((out / "salmonn.pth").resolve()),
        "lora": False,
        "freeze_whisper": True,
    }
    for name in ("decode_config.yaml", "config.yaml"):
        cfg = _trained_bundle_config(
            OmegaConf.load(bundle / name), name, out, paths, max_new_tokens, manifests
        )
        atomic_write_text(OmegaConf.to_yaml(cfg), staging / name)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    # Both configs must load through the schemas the later stages use.
    load_decode_config(out / "decode_config.yaml")
    load_train_config(out / "config.yaml")
    return out
