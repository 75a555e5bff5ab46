"""SALMONNDataset and collate: items, batches, padding masks, bad entries and the real demo files."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader
from transformers import WhisperFeatureExtractor

from ahamask.data import ManifestError, SALMONNDataset, collate

REPO = Path(__file__).resolve().parents[3]
DEMO_WAVS = REPO / ".." / "shared" / "reference" / "demo_wavs"


def write_wav(path: Path, seconds: float, freq: float = 440.0, sr: int = 16000) -> Path:
    t = np.arange(round(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="FLOAT")
    return path


def write_manifest(path: Path, entries) -> Path:
    path.write_text(json.dumps({"annotation": entries}))
    return path


@pytest.fixture(scope="module")
def short_whisper(tmp_path_factory) -> Path:
    """A Whisper checkpoint folder with a 2 s chunk (200 frames), as tiny test bundles use."""
    folder = tmp_path_factory.mktemp("whisper")
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
    return folder


@pytest.fixture
def three_clips(tmp_path) -> Path:
    for name, seconds in [("a.wav", 1.0), ("b.wav", 1.5), ("c.wav", 0.4)]:
        write_wav(tmp_path / name, seconds)
    return write_manifest(
        tmp_path / "m.json",
        [
            {"path": "a.wav", "text": "one", "labels": [1]},
            {"path": "b.wav", "text": "two", "task": "gender_recognition", "Q": "Who?"},
            {"path": "c.wav", "text": "three", "expand_wav": ["c.wav"]},
        ],
    )


def test_item_keys_types_and_shapes(three_clips, short_whisper):
    ds = SALMONNDataset(three_clips, whisper_path=short_whisper)
    assert len(ds) == 3
    item = ds[1]
    assert set(item) == {"spectrogram", "raw_wav", "text", "task", "Q", "id"}
    assert item["spectrogram"].shape == (80, 200) and item["spectrogram"].dtype == torch.float32
    assert item["raw_wav"].dtype == np.float32 and item["raw_wav"].shape == (24000,)
    assert (item["text"], item["task"], item["Q"], item["id"]) == (
        "two",
        "gender_recognition",
        "Who?",
        "b.wav",
    )
    assert ds[0]["task"] == "asr" and ds[0]["Q"] == ""
    # 0.4 s + 0.1 s gap + 0.4 s = 14400 samples, padded to 1 s.
    assert ds[2]["raw_wav"].shape == (16000,)
    assert ds.annotation[0]["labels"] == [1]


def test_default_front_end_gives_80_by_3000(three_clips):
    assert SALMONNDataset(three_clips)[0]["spectrogram"].shape == (80, 3000)


def test_whisper_path_and_extractor_are_exclusive(three_clips, short_whisper):
    with pytest.raises(ValueError, match="not both"):
        SALMONNDataset(three_clips, whisper_path=short_whisper, feature_extractor=WhisperFeatureExtractor())


def test_collate_pads_waveforms_and_marks_padding(three_clips, short_whisper):
    ds = SALMONNDataset(three_clips, whisper_path=short_whisper)
    batch = ds.collater([ds[0], ds[1], ds[2]])
    assert batch["spectrogram"].shape == (3, 80, 200)
    assert batch["raw_wav"].shape == (3, 24000) and batch["raw_wav"].dtype == torch.float32
    assert batch["padding_mask"].dtype == torch.bool
    assert batch["padding_mask"].sum(dim=1).tolist() == [8000, 0, 8000]
    assert not batch["padding_mask"][0, :16000].any() and batch["padding_mask"][0, 16000:].all()
    assert not batch["raw_wav"][0, 16000:].any()
    np.testing.assert_array_equal(batch["raw_wav"][1].numpy(), ds[1]["raw_wav"])
    assert batch["text"] == ["one", "two", "three"]
    assert batch["task"] == ["asr", "gender_recognition", "asr"]
    assert batch["Q"] == ["", "Who?", ""] and batch["id"] == ["a.wav", "b.wav", "c.wav"]


def test_dataloader_uses_collater(three_clips, short_whisper):
    ds = SALMONNDataset(three_clips, whisper_path=short_whisper)
    sizes = [batch["raw_wav"].shape for batch in DataLoader(ds, batch_size=2, collate_fn=ds.collater)]
    assert sizes == [(2, 24000), (1, 16000)]


def test_collate_rejects_bad_batches():
    sample = {
        "spectrogram": torch.zeros(80, 200),
        "raw_wav": np.zeros(16000, np.float32),
        "text": "",
        "task": "asr",
        "Q": "",
        "id": "a",
    }
    with pytest.raises(ValueError, match="empty list"):
        collate([])
    with pytest.raises(ValueError, match=r"sample 1 lacks keys \['Q'\]"):
        collate([sample, {k: v for k, v in sample.items() if k != "Q"}])
    with pytest.raises(ValueError, match=r"spectrograms differ in shape \(a: \(80, 200\), b: \(128, 200\)\)"):
        collate([sample, {**sample, "spectrogram": torch.zeros(128, 200), "id": "b"}])


def test_package_collate_is_the_function_not_the_submodule():
    import importlib

    import ahamask.data

    module = importlib.import_module("ahamask.data.collate")
    assert ahamask.data.collate is module.collate
    assert ahamask.data.SALMONNDataset.collater is collate


def make_bad_file(folder: Path, kind: str) -> str:
    """Create one kind of unusable audio file and return its name."""
    if kind == "missing":
        return "gone.wav"
    if kind == "empty":
        (folder / "empty.wav").write_bytes(b"")
        return "empty.wav"
    if kind == "unreadable":
        (folder / "junk.flac").write_text("plain text, not FLAC")
        return "junk.flac"
    if kind == "truncated":
        full = write_wav(folder / "full.wav", 1.0)
        (folder / "cut.wav").write_bytes(full.read_bytes()[:30000])
        return "cut.wav"
    data = np.zeros(16000, np.float32)
    data[7] = np.nan
    sf.write(folder / "nan.wav", data, 16000, subtype="FLOAT")
    return "nan.wav"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such audio file"),
        ("empty", r"empty \(0 bytes\)"),
        ("unreadable", "cannot decode audio file"),
        ("truncated", "truncated audio file"),
        ("nonfinite", r"1 non-finite samples \(first at sample 7\)"),
    ],
)
def test_bad_audio_error_names_manifest_index_and_file(tmp_path, short_whisper, kind, reason):
    write_wav(tmp_path / "ok.wav", 1.0)
    name = make_bad_file(tmp_path, kind)
    manifest = write_manifest(
        tmp_path / "train.json", [{"path": "ok.wav", "text": ""}, {"path": name, "text": ""}]
    )
    ds = SALMONNDataset(manifest, whisper_path=short_whisper)
    assert ds[0]["raw_wav"].shape == (16000,)
    with pytest.raises(ManifestError, match=rf"train\.json: entry 1 \(path '{name}'\): .*{reason}") as info:
        ds[1]
    message = str(info.value)
    assert str(tmp_path / name) in message and "\n" not in message


def test_malformed_entry_stops_construction(tmp_path, short_whisper):
    manifest = write_manifest(tmp_path / "m.json", [{"path": "a.wav", "text": None}])
    with pytest.raises(ManifestError, match=r"m\.json: entry 0 \(path 'a.wav'\): 'text' must be a string"):
        SALMONNDataset(manifest, whisper_path=short_whisper)


def test_skip_bad_entries_drops_and_logs_them(tmp_path, short_whisper, caplog):
    write_wav(tmp_path / "a.wav", 1.0)
    write_wav(tmp_path / "b.wav", 1.25)
    (tmp_path / "empty.wav").write_bytes(b"")
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {"path": "a.wav", "text": "keep 0"},
            {"text": "no path"},
            {"path": "gone.wav", "text": ""},
            {"path": "b.wav", "text": "keep 3"},
            {"path": "empty.wav", "text": ""},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="ahamask.data.dataset"):
        ds = SALMONNDataset(manifest, whisper_path=short_whisper, skip_bad_entries=True)
    assert len(ds) == 2 and [ds[i]["text"] for i in range(2)] == ["keep 0", "keep 3"]
    assert [issue.index for issue in ds.skipped] == [1, 2, 4]
    assert "skipping 3 of 5 entries" in caplog.text
    assert "entry 2 (path 'gone.wav')" in caplog.text and "entry 4 (path 'empty.wav')" in caplog.text

    # An error after skipping still names the entry's position in the manifest file, not in the dataset.
    (tmp_path / "b.wav").unlink()
    with pytest.raises(ManifestError, match=r"m\.json: entry 3 \(path 'b.wav'\): no such audio file"):
        ds[1]


def test_skip_bad_entries_with_nothing_usable(tmp_path, short_whisper):
    manifest = write_manifest(tmp_path / "m.json", [{"path": "gone.wav", "text": ""}])
    with pytest.raises(ManifestError, match=r"m\.json: no usable entries \(first problem: .*entry 0"):
        SALMONNDataset(manifest, whisper_path=short_whisper, skip_bad_entries=True)


def test_batch_of_the_ten_real_demo_files():
    demo = REPO / "data" / "test" / "demo.json"
    if not DEMO_WAVS.is_dir():
        pytest.skip(f"reference audio not found at {DEMO_WAVS.resolve()}")
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=30)
    ds = SALMONNDataset(demo, feature_extractor=fe)
    assert len(ds) == 10
    batch = collate([ds[i] for i in range(10)])
    lengths = [sf.info(DEMO_WAVS / Path(i).name).frames for i in batch["id"]]
    assert lengths[:3] == [166960, 52400, 106000]
    assert batch["spectrogram"].shape == (10, 80, 3000)
    assert batch["raw_wav"].shape == (10, 169200)
    assert (~batch["padding_mask"]).sum(dim=1).tolist() == lengths
    assert batch["id"][0] == "../../../shared/reference/demo_wavs/1089-134686-0000.flac"
    assert set(batch["task"]) == {"gender_recognition"} and set(batch["text"]) == {"Male"}
    # 16-bit FLAC at 16 kHz: the waveform is the file's samples exactly, and the features are the extractor's.
    samples, _ = sf.read(DEMO_WAVS / "1089-134686-0001.flac", dtype="float32")
    np.testing.assert_array_equal(batch["raw_wav"][1, :52400].numpy(), samples)
    expected = fe(samples, sampling_rate=16000, return_tensors="pt")["input_features"][0]
    torch.testing.assert_close(batch["spectrogram"][1], expected)
    assert torch.isfinite(batch["spectrogram"]).all()
