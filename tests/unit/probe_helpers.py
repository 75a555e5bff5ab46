"""Probe batches of the tiny bundle shared by the listening and silence-steering tests."""

from __future__ import annotations

from ahamask.analysis.listening import ProbeBatch
from ahamask.data.dataset import SALMONNDataset

OPTIONS = ["male", "female"]


def tiny_probe_batches(tiny_bundle, tiny_decode_cfg, model) -> list[ProbeBatch]:
    """Two batches of two test clips: a gender question and the instruction-free prompt, male/female options."""
    ds = SALMONNDataset(
        tiny_bundle / "data" / "test.json", tiny_decode_cfg.model.whisper_path, features="device"
    )
    out = []
    for rows in ([0, 1], [2, 3]):
        samples = ds.collater([ds[i] for i in rows])
        prompts = [model.prompt_for("What is the gender of the speaker?"), model.prompt_for("")]
        labels = [t.lower() for t in samples["text"]]
        out.append(ProbeBatch(samples, prompts, [OPTIONS, OPTIONS], labels, [{"row": r} for r in rows]))
    return out
