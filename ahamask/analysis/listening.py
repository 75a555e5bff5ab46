"""The listening probe: which heads attend to the audio when the audio changes the answer.

Our reading of the paper ("Are Audio-Language Models Listening? Audio-Specialist Heads for Adaptive Audio
Steering"; only its abstract was reachable, so each choice below is ours, explicit and configurable):

* **Listening mass** of head ``(l, h)`` on an example: the attention probability from the answer position
  (the last prompt position, where the first answer token is predicted) summed over the audio tokens
  (:func:`ahamask.analysis.attention.audio_attention`).
* **Silence**: the same clip replaced by zeros of the same length (:func:`silence_like`), encoded by the
  model's own front end, so the prompt has the same number of audio tokens at the same positions; only what
  the audio says changes.
* **Audio effect** of an example: ``log p(answer | audio) - log p(answer | silence)`` of the first token of
  the answer, log-softmax over the whole vocabulary at the answer position. ``answer`` is the model's own
  prediction with the audio by default (``effect_answer="predicted"``: the paper's "audio evidence affects
  the model's output", needing no labels), or the reference (``"reference"``). Signed: positive means the
  audio raised the answer.
* **Head ranking**: per head, the Pearson correlation across examples of its listening mass with the audio
  effect (a head that listens more exactly when the audio matters); the top ``k`` are the audio-specialist
  heads. Baselines: ``k`` random heads (seeded) and the ``k`` heads of largest mean mass (attention alone).
* **Listening score** of a model on a set: per example, the mean mass of the selected heads; related to
  correctness by the mean score of correct and of wrong answers, the point-biserial correlation and the AUC
  of the score as a detector of correct answers.
* **Answers of a multiple-choice question**: the option whose first token has the highest log-probability at
  the answer position (closed-set scoring; the options' first tokens must differ).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.backbone import AudioLLM
from .attention import audio_attention
from .residual import prompt_forward

__all__ = [
    "ProbeBatch",
    "ProbeResult",
    "silence_like",
    "option_token_ids",
    "answer_logprobs",
    "predict_options",
    "probe_set",
    "head_correlation",
    "top_heads",
    "heads_by_mass",
    "random_heads",
    "listening_score",
    "score_vs_correctness",
    "head_table",
    "heatmap_png",
]


@dataclass
class ProbeBatch:
    """One batch of a labelled multiple-choice set.

    Attributes:
        samples: a collated batch (``raw_wav`` needed for silence).
        prompts: one full prompt per row (``model.prompt_for(question)``).
        options: per row, the candidate answers.
        answers: per row, the reference answer (one of its options), or None when unlabelled.
        info: per row, anything to carry into the report (e.g. the question type).
    """

    samples: Mapping[str, Any]
    prompts: list[str]
    options: list[list[str]]
    answers: list[str] | None = None
    info: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProbeResult:
    """The probe over a set (``N`` examples).

    Attributes:
        mass: [N, n_layers, n_heads] listening mass.
        effect: [N] audio effect.
        predicted: per example, the predicted option with the audio.
        predicted_silence: per example, the predicted option with silence.
        correct: [N] bool (None without references).
        info: per example info dicts.
    """

    mass: torch.Tensor
    effect: torch.Tensor
    predicted: list[str]
    predicted_silence: list[str]
    correct: torch.Tensor | None
    info: list[dict[str, Any]]

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.float().mean())


def silence_like(samples: Mapping[str, Any]) -> dict[str, Any]:
    """The batch with every waveform replaced by zeros of the same length (same audio-token count).

    The spectrogram, if any, is dropped so that the model computes the features of the silence itself
    (``encode_audio`` computes them from ``raw_wav``); padding masks and the rest are kept.

    Raises:
        ValueError: the batch has no ``raw_wav``.
    """
    if samples.get("raw_wav") is None:
        raise ValueError("silence_like: the batch has no raw_wav (load the dataset with its waveforms)")
    out = {k: v for k, v in samples.items() if k != "spectrogram"}
    out["raw_wav"] = torch.zeros_like(torch.as_tensor(samples["raw_wav"]))
    return out


def _tokenizer(model: AudioLLM) -> Any:
    tok = getattr(model, "llama_tokenizer", None) or getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(
            f"{type(model).__name__}: no tokenizer (llama_tokenizer / tokenizer) to score options"
        )
    return tok


def option_token_ids(model: AudioLLM, options: Sequence[str]) -> list[int]:
    """The first token of each option as the answer after the prompt (the target's first piece).

    Raises:
        ValueError: two options begin with the same token (closed-set scoring could not tell them apart).
    """
    from ..models.prompts import encode_piece

    tok = _tokenizer(model)
    ids = [encode_piece(tok, option)[0] for option in options]
    if len(set(ids)) != len(ids):
        raise ValueError(f"options {list(options)}: their first tokens {ids} are not distinct")
    return ids


def answer_logprobs(model: AudioLLM, speech_embeds: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """[batch, vocab] log-probabilities of the first answer token (at the answer position)."""
    out = prompt_forward(model, model.prompt_inputs(speech_embeds, prompts))
    return out.logits[:, -1].float().log_softmax(-1)


def predict_options(logprobs: torch.Tensor, options: Sequence[Sequence[str]], model: AudioLLM) -> list[str]:
    """Per row, the option whose first token is most probable."""
    out = []
    for row, opts in zip(logprobs, options, strict=True):
        ids = option_token_ids(model, opts)
        out.append(opts[int(torch.argmax(row[ids]))])
    return out


def _check_same_audio_positions(
    model: AudioLLM, audio: torch.Tensor, silence: torch.Tensor, prompts: Sequence[str]
) -> None:
    """Silence must give every row the audio tokens at the same positions (shape alone is not enough: on
    Qwen2-Audio / AF3 a row's count is read from its zero padding, see ``pad_audio_rows``)."""
    same = silence.shape == audio.shape
    if same:
        spans = model.prompt_inputs(audio, prompts).audio_spans
        same = spans == model.prompt_inputs(silence, prompts).audio_spans
    if not same:
        raise RuntimeError(
            f"silence gave {tuple(silence.shape)} audio embeddings at other positions than the audio's "
            f"{tuple(audio.shape)}"
        )


def probe_set(
    model: AudioLLM,
    batches: Iterable[ProbeBatch],
    *,
    effect_answer: str = "predicted",
) -> ProbeResult:
    """Listening mass, audio effect and correctness of every example of a set.

    Args:
        model: the backbone.
        batches: the set.
        effect_answer: ``"predicted"`` (the model's answer with audio) or ``"reference"``.

    Raises:
        ValueError: an unknown ``effect_answer``, or ``"reference"`` without references.
    """
    if effect_answer not in ("predicted", "reference"):
        raise ValueError(f"effect_answer: {effect_answer!r} is not 'predicted' or 'reference'")
    masses, effects, predicted, silent_pred, correct, info = [], [], [], [], [], []
    labelled = True
    with torch.no_grad():
        for batch in batches:
            audio = model.encode_audio(batch.samples)
            silence = model.encode_audio(silence_like(batch.samples))
            _check_same_audio_positions(model, audio, silence, batch.prompts)
            masses.append(audio_attention(model, audio, batch.prompts).audio_mass.cpu())
            lp_audio = answer_logprobs(model, audio, batch.prompts)
            lp_silence = answer_logprobs(model, silence, batch.prompts)
            pred = predict_options(lp_audio, batch.options, model)
            predicted += pred
            silent_pred += predict_options(lp_silence, batch.options, model)
            if batch.answers is None:
                labelled = False
                if effect_answer == "reference":
                    raise ValueError("effect_answer='reference' needs batches with answers")
            else:
                correct += [p == a for p, a in zip(pred, batch.answers, strict=True)]
            target = pred if effect_answer == "predicted" else batch.answers
            ids = torch.tensor([option_token_ids(model, [t])[0] for t in target], device=lp_audio.device)
            rows = torch.arange(len(ids), device=lp_audio.device)
            effects.append((lp_audio[rows, ids] - lp_silence[rows, ids]).cpu())
            info += batch.info or [{} for _ in batch.prompts]
    return ProbeResult(
        mass=torch.cat(masses),
        effect=torch.cat(effects),
        predicted=predicted,
        predicted_silence=silent_pred,
        correct=torch.tensor(correct) if labelled else None,
        info=info,
    )


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each column of ``x`` [N, ...] with ``y`` [N]; 0 where a variance is 0."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean()
    y = y.reshape(-1, *([1] * (x.dim() - 1)))
    den = (x.pow(2).sum(0) * y.pow(2).sum(0)).sqrt()
    num = (x * y).sum(0)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).float()


def head_correlation(mass: torch.Tensor, effect: torch.Tensor) -> torch.Tensor:
    """[n_layers, n_heads] Pearson correlation of each head's mass with the audio effect over examples."""
    if mass.shape[0] != effect.shape[0] or mass.shape[0] < 2:
        raise ValueError(
            f"mass {tuple(mass.shape)} and effect {tuple(effect.shape)}: need >= 2 matching examples"
        )
    return _pearson(mass, effect)


def top_heads(score: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads of highest ``score`` [n_layers, n_heads], best first (ties: lower index first)."""
    n_heads = score.shape[1]
    if not 1 <= k <= score.numel():
        raise ValueError(f"k: {k} must be in 1..{score.numel()}")
    order = sorted(range(score.numel()), key=lambda i: (-float(score.flatten()[i]), i))[:k]
    return [(i // n_heads, i % n_heads) for i in order]


def heads_by_mass(mass: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The baseline ranking by attention alone: the ``k`` heads of largest mean listening mass."""
    return top_heads(mass.float().mean(0), k)


def random_heads(n_layers: int, n_heads: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` distinct heads drawn uniformly with ``random.Random(seed)``."""
    picks = random.Random(seed).sample(range(n_layers * n_heads), k)
    return [(i // n_heads, i % n_heads) for i in picks]


def listening_score(mass: torch.Tensor, heads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """[N] mean listening mass of ``heads`` per example."""
    layers = torch.tensor([h[0] for h in heads])
    cols = torch.tensor([h[1] for h in heads])
    return mass[:, layers, cols].float().mean(-1)


def _auc(score: torch.Tensor, positive: torch.Tensor) -> float | None:
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def score_vs_correctness(score: torch.Tensor, correct: torch.Tensor) -> dict[str, float | None]:
    """Mean listening score of correct and wrong answers, point-biserial correlation, AUC."""
    correct = correct.bool()
    mean = lambda t: float(t.mean()) if len(t) else None  # noqa: E731
    return {
        "mean_correct": mean(score[correct]),
        "mean_wrong": mean(score[~correct]),
        "n_correct": int(correct.sum()),
        "n_wrong": int((~correct).sum()),
        "correlation": float(_pearson(score[:, None], correct.float())[0]),
        "auc": _auc(score, correct),
    }


def head_table(score: torch.Tensor, mass: torch.Tensor, k: int | None = None) -> list[dict[str, float | int]]:
    """Ranked rows ``{rank, layer, head, correlation, mean_mass}`` (all heads, or the top ``k``)."""
    heads = top_heads(score, k or score.numel())
    mean_mass = mass.float().mean(0)
    return [
        {
            "rank": r + 1,
            "layer": layer,
            "head": head,
            "correlation": round(float(score[layer, head]), 6),
            "mean_mass": round(float(mean_mass[layer, head]), 6),
        }
        for r, (layer, head) in enumerate(heads)
    ]


def heatmap_png(
    score: torch.Tensor, path: str | Path, title: str, selected: Sequence[tuple[int, int]] = ()
) -> Path:
    """A layers x heads heatmap of ``score`` (selected heads outlined), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_open

    data = score.float().numpy()
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.45 * data.shape[1] + 1.5), max(2.5, 0.45 * data.shape[0] + 1.2))
    )
    limit = float(abs(data).max()) or 1.0
    image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for layer, head in selected:
        ax.add_patch(
            plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2)
        )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path
