"""Length-bucketed decoding: same answers as manifest-order decoding, returned in manifest order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from ahamask.data.audio import prepare_waveform
from ahamask.data.buckets import WaveformDataset, collate_waveforms, entry_durations, length_buckets
from ahamask.data.dataset import SALMONNDataset
from ahamask.data.manifest import ManifestError
from ahamask.evaluation.decode import decode_dataset
from ahamask.masking.apply import decoding_mask
from ahamask.masking.hooks import current_weights
from ahamask.models.frontend import whisper_features_batched
from ahamask.models.salmonn import SALMONN

MASK = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def decode_bucketed(
    model, dataset, *, generate_cfg, batch_size=4, features="device", head_weights=None, fold=True, **kwargs
):
    """Length buckets through the one decode loop, under the mask (folded, or hooks with ``fold=False``).

    ``features="device"``: workers load waveforms only and each batch's features are computed in one call;
    ``"dataset"``: the dataset's own per-clip features.
    """
    if features not in ("device", "dataset"):
        raise ValueError(f"features: {features!r} is not 'device' or 'dataset'")
    batches = length_buckets(entry_durations(dataset), batch_size)
    source, collate_fn = dataset, None
    if features == "device":
        source = WaveformDataset(dataset)

        def collate_fn(items):
            batch = collate_waveforms(items)
            batch["spectrogram"] = whisper_features_batched(batch["raw_wav"], dataset.wav_processor)
            return batch

    decoder = getattr(model, "decoder", None)
    with (
        decoding_mask(decoder, head_weights, "fold" if fold else "hooks") if decoder is not None else _null()
    ):
        return decode_dataset(
            model, source, generate_cfg=generate_cfg, batches=batches, collate_fn=collate_fn, **kwargs
        )


def _null():
    import contextlib

    return contextlib.nullcontext()


@pytest.fixture()
def mixed_set(tiny_bundle, tmp_path):
    """Seven clips of 0.5 s to 6 s (padded to 1 s, cut at the 4 s chunk), listed out of length order."""
    rng = np.random.default_rng(0)
    entries = []
    for i, seconds in enumerate([2.0, 0.5, 3.5, 1.2, 6.0, 2.6, 1.2]):
        t = np.arange(int(16000 * seconds)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (100 + 40 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"clip{i}.wav", wav.astype(np.float32), 16000)
        entries.append({"path": f"clip{i}.wav", "text": f"ref {i}", "task": "asr"})
    manifest = tmp_path / "mixed.json"
    manifest.write_text(json.dumps({"annotation": entries}))
    return SALMONNDataset(manifest, tiny_bundle / "whisper")


def test_buckets_sort_by_duration_and_cover_every_entry_once():
    assert length_buckets([3.0, 1.0, 2.0, 5.0], 2) == [[3, 0], [2, 1]]
    assert length_buckets([3.0, 1.0, 2.0, 5.0], 3, descending=False) == [[1, 2, 0], [3]]
    assert length_buckets([1.0, 2.0, 1.0, 2.0, 1.0], 2) == [[1, 3], [0, 2], [4]]  # ties keep manifest order
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets([1.0], 0)


def test_durations_come_from_headers_and_match_the_loaded_waveforms(mixed_set):
    durations = entry_durations(mixed_set)
    loaded = [
        len(prepare_waveform(e["path"], e["expand_wav"], mixed_set.wav_processor)) / 16000
        for e in mixed_set.annotation
    ]
    assert durations == pytest.approx(loaded, abs=1 / 16000)
    assert durations == pytest.approx([2.0, 1.0, 3.5, 1.2, 4.0, 2.6, 1.2])


def test_batched_features_equal_the_per_clip_extractor(mixed_set):
    waves = collate_waveforms([WaveformDataset(mixed_set)[i] for i in range(len(mixed_set))])
    per_clip = torch.stack([mixed_set[i]["spectrogram"] for i in range(len(mixed_set))])
    batched = whisper_features_batched(waves["raw_wav"], mixed_set.wav_processor)
    assert batched.shape == per_clip.shape == (7, 80, 400)
    assert (batched - per_clip).abs().max() <= 1e-5  # 0.0 with torch 2.13 on CPU
    assert torch.equal(waves["lengths"], torch.tensor([32000, 16000, 56000, 19200, 64000, 41600, 19200]))


class _EchoModel:
    """Stands in for SALMONN: answers with a fingerprint of each clip's features and records its batches."""

    device = torch.device("cpu")

    class cfg:  # noqa: N801 - mimics the model's config attribute
        apply_ffn_mask = False

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def prompt_for(self, instruction: str) -> str:
        return f"<Speech><SpeechHere></Speech> {instruction}"

    def generate(self, samples, generate_cfg, prompts=None, **kwargs):
        self.batches.append(list(samples["id"]))
        energy = samples["spectrogram"].float().mean(dim=(1, 2))
        return [f"{p[-3:]}|{e:.5f}\n" for p, e in zip(prompts, energy.tolist(), strict=True)]


def test_records_come_back_in_manifest_order(mixed_set):
    model = _EchoModel()
    prompts = [model.prompt_for(f"q{i}") for i in range(len(mixed_set))]
    records = decode_bucketed(
        model, mixed_set, generate_cfg={}, prompts=prompts, batch_size=3, progress=False
    )
    assert [r["id"] for r in records] == [f"clip{i}.wav" for i in range(7)]
    assert [r["ground_truth"] for r in records] == [f"ref {i}" for i in range(7)]
    assert [r["output"][:3] for r in records] == [f"q{i}|" for i in range(7)]  # each entry kept its prompt
    # Longest first, in threes: 4.0 3.5 2.6 | 2.0 1.2 1.2 | 1.0.
    assert model.batches == [
        ["clip4.wav", "clip2.wav", "clip5.wav"],
        ["clip0.wav", "clip3.wav", "clip6.wav"],
        ["clip1.wav"],
    ]
    # The same features as the dataset computes for each clip on its own.
    unbucketed = decode_dataset(
        model, mixed_set, generate_cfg={}, prompts=prompts, batch_size=7, progress=False
    )
    assert records == unbucketed


@pytest.mark.parametrize("features", ["device", "dataset"])
@pytest.mark.parametrize("weights", [None, MASK], ids=["no_mask", "mask"])
def test_answers_equal_unbucketed_decoding(tiny_bundle, shared_tiny_model, features, weights):
    dataset = SALMONNDataset(tiny_bundle / "data" / "test.json", tiny_bundle / "whisper")
    cfg = {"max_new_tokens": 5, "num_beams": 2}
    with decoding_mask(shared_tiny_model.decoder, weights, "hooks"):
        expected = decode_dataset(shared_tiny_model, dataset, generate_cfg=cfg, batch_size=2, progress=False)
    got = decode_bucketed(
        shared_tiny_model,
        dataset,
        generate_cfg=cfg,
        head_weights=weights,
        batch_size=2,
        features=features,
        progress=False,
    )
    assert got == expected


def test_a_binary_mask_is_folded_instead_of_hooked(tiny_bundle, shared_tiny_model, monkeypatch):
    dataset = SALMONNDataset(tiny_bundle / "data" / "test.json", tiny_bundle / "whisper")
    seen = []
    original = SALMONN.generate

    def spy(self, samples, generate_cfg=None, prompts=None, **kwargs):
        o_proj = self.llama_model.base_model.model.model.layers[0].self_attn.o_proj.weight
        # head 1 of layer 0 is masked
        seen.append((current_weights(self.decoder), float(o_proj[:, 16:32].abs().sum())))
        return original(self, samples, generate_cfg, prompts=prompts, **kwargs)

    monkeypatch.setattr(SALMONN, "generate", spy)
    decode_bucketed(
        shared_tiny_model,
        dataset,
        generate_cfg={"max_new_tokens": 2},
        head_weights=MASK,
        batch_size=4,
        progress=False,
    )
    assert seen == [(None, 0.0)]
    seen.clear()
    decode_bucketed(
        shared_tiny_model,
        dataset,
        generate_cfg={"max_new_tokens": 2},
        head_weights=MASK,
        batch_size=4,
        fold=False,
        progress=False,
    )
    assert seen[0][0] is MASK and seen[0][1] > 0


def test_bad_input_is_named(mixed_set, tmp_path):
    with pytest.raises(ValueError, match="features"):
        decode_bucketed(_EchoModel(), mixed_set, generate_cfg={}, features="gpu")
    with pytest.raises(ValueError, match="2 prompts for 7"):
        decode_bucketed(_EchoModel(), mixed_set, generate_cfg={}, prompts=["a", "b"])
    (tmp_path / "clip3.wav").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match=r"entry 3 \(path 'clip3.wav'\)"):
        entry_durations(mixed_set)
    loader = DataLoader(WaveformDataset(mixed_set), batch_size=7, collate_fn=collate_waveforms)
    with pytest.raises(ManifestError, match="entry 3"):
        next(iter(loader))


def test_dithering_extractors_are_refused(mixed_set, monkeypatch):
    monkeypatch.setattr(mixed_set.wav_processor, "dither", 1e-5)
    with pytest.raises(ValueError, match="dithers"):
        whisper_features_batched(torch.zeros(1, 16000), mixed_set.wav_processor)
