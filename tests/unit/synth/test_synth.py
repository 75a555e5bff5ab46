"""Tests of the synthetic world (ahamask.synth): determinism, labels checked from the audio itself,
instructions, prompt files, manifests, targets, corpus, CLI.

The label checks use simple DSP written here (FFT peak picking, a frame-energy detector), not the
generator's own code, so a labelling bug shows up as a disagreement with what the audio contains.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ahamask.synth import audio, instructions, world
from ahamask.synth.audio import ALPHABET, SYMBOL_WORDS
from ahamask.synth.world import (
    TASKS,
    build_world,
    detect_task,
    load_world,
    make_target,
    parse_output,
    world_corpus,
)

SR = audio.SAMPLE_RATE
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[world.WorldInfo, float]:
    """A 200-clip world (seed 0) shared by the read-only tests, with its build time."""
    root = tmp_path_factory.mktemp("synth") / "world"
    start = time.perf_counter()
    info = build_world(root, seed=0, n_train=100, n_valid=20, n_test=80)
    return info, time.perf_counter() - start


def _entries(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["annotation"]


def _test_clips(info: world.WorldInfo) -> list[tuple[np.ndarray, dict]]:
    manifest = info.manifests["test"]["asr"]
    out = []
    for e in _entries(manifest):
        wav, sr = sf.read(manifest.parent / e["path"], dtype="float64")
        assert sr == SR
        out.append((wav, e["labels"]))
    return out


# ---------------------------------------------------------------- DSP written for the checks


def _estimate_f0(wav: np.ndarray) -> float:
    """Strongest spectral peak in 80-320 Hz: the buzz fundamental (the lowest symbol tone is 400 Hz)."""
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    freqs = np.fft.rfftfreq(len(wav), 1 / SR)
    band = (freqs >= 80) & (freqs <= 320)
    return float(freqs[band][np.argmax(spec[band])])


def _count_segments(wav: np.ndarray, min_frames: int = 5) -> int:
    """Runs of 10 ms frames within 8 dB of the loud frames, at least 50 ms long."""
    hop = SR // 100
    frames = wav[: len(wav) // hop * hop].reshape(-1, hop)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    on = np.concatenate([[0], (energy > np.percentile(energy, 95) - 8).astype(int), [0]])
    edges = np.flatnonzero(np.diff(on))
    return int(np.sum(edges[1::2] - edges[0::2] >= min_frames))


def _identify_symbol(segment: np.ndarray) -> str:
    """Nearest symbol to the two strongest tones, over the tones of *both* registers (x1.0 and x1.12)."""
    spec = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), 8192))
    freqs = np.fft.rfftfreq(8192, 1 / SR)

    def peak(lo: float, hi: float) -> float:
        band = (freqs >= lo) & (freqs < hi)
        return float(freqs[band][np.argmax(spec[band])])

    f_lo, f_hi = peak(350, 1500), peak(1500, 3200)
    best = min(
        (abs(np.log(f_lo / (s.tones_hz[0] * k))) + abs(np.log(f_hi / (s.tones_hz[1] * k))), s.word)
        for s in ALPHABET
        for k in (1.0, 1.12)
    )
    return best[1]


def _segments(wav: np.ndarray, labels: dict) -> list[np.ndarray]:
    return [
        wav[round(a * SR) : round(b * SR)]
        for a, b in zip(labels["onsets_s"], labels["offsets_s"], strict=True)
    ]


# ---------------------------------------------------------------- audio and labels


def test_small_world_builds_in_under_five_seconds(small_world):
    info, elapsed = small_world
    assert sum(info.splits.values()) == 200
    assert len(list((info.root / "train" / "wav").glob("*.wav"))) == 100
    assert elapsed < 5.0, f"building 200 clips took {elapsed:.1f} s"


def test_wavs_are_16k_mono_pcm16_of_clip_length(small_world):
    info, _ = small_world
    for path in sorted((info.root / "valid" / "wav").glob("*.wav")):
        meta = sf.info(str(path))
        assert (meta.samplerate, meta.channels, meta.subtype, meta.frames) == (16000, 1, "PCM_16", 32000)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, small_world):
    kwargs = {"n_train": 4, "n_valid": 2, "n_test": 3}
    a = build_world(tmp_path / "a", seed=0, **kwargs)
    b = build_world(tmp_path / "b", seed=0, **kwargs)
    c = build_world(tmp_path / "c", seed=1, **kwargs)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 9 + 3 * (len(world.DEFAULT_TASKS) + 1) + 5 + 1
    for rel in files_a:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    wavs = [rel for rel in files_a if rel.suffix == ".wav"]
    assert all((a.root / rel).read_bytes() != (c.root / rel).read_bytes() for rel in wavs)
    # A clip depends on (seed, split, index) only, not on the size of the world around it.
    big = small_world[0].root
    assert (a.root / "test/wav/test_00002.wav").read_bytes() == (big / "test/wav/test_00002.wav").read_bytes()


def test_f0_from_audio_separates_registers_and_matches_label(small_world):
    f0 = {"low": [], "high": []}
    for wav, lab in _test_clips(small_world[0]):
        est = _estimate_f0(wav)
        f0[lab["register"]].append(est)
        lo, hi = sorted((lab["f0_hz"], lab["f0_hz"] * (1 + lab["f0_slope"])))
        assert 0.95 * lo <= est <= 1.05 * hi, (lab["clip_id"], est, lab["f0_hz"])
    assert len(f0["low"]) >= 20 and len(f0["high"]) >= 20
    assert max(f0["low"]) < 150 < 180 < min(f0["high"])


def test_energy_segments_equal_count(small_world):
    clips = _test_clips(small_world[0])
    hits = sum(_count_segments(wav) == lab["count"] for wav, lab in clips)
    assert hits / len(clips) >= 0.95, f"{hits}/{len(clips)} clips"


def test_symbols_identified_from_tones_in_both_registers(small_world):
    correct, total = Counter(), Counter()
    for wav, lab in _test_clips(small_world[0]):
        for seg, word in zip(_segments(wav, lab), lab["symbols"], strict=True):
            total[lab["register"]] += 1
            correct[lab["register"]] += _identify_symbol(seg) == word
    for reg in ("low", "high"):
        assert total[reg] >= 60 and correct[reg] / total[reg] >= 0.98, (reg, correct[reg], total[reg])


def test_level_and_snr_measured_from_audio(small_world):
    levels = {"quiet": [], "loud": []}
    for wav, lab in _test_clips(small_world[0]):
        voiced = np.zeros(len(wav), dtype=bool)
        for a, b in zip(lab["onsets_s"], lab["offsets_s"], strict=True):
            voiced[round(a * SR) : round(b * SR)] = True
        level = 10 * np.log10(np.mean(wav[voiced] ** 2))
        noise = 10 * np.log10(np.mean(wav[~voiced] ** 2))
        levels[lab["loudness"]].append(level)
        assert abs(level - lab["level_dbfs"]) < 0.5, lab["clip_id"]
        assert abs((lab["level_dbfs"] - noise) - lab["snr_db"]) < 1.0, lab["clip_id"]
    assert max(levels["quiet"]) + 8 < min(levels["loud"])


def test_sample_clip_spec_respects_ranges():
    specs = [audio.sample_clip_spec(np.random.default_rng([7, i])) for i in range(400)]
    assert {s.count for s in specs} == {2, 3, 4, 5, 6}
    assert 0.4 < np.mean([s.register == "low" for s in specs]) < 0.6
    assert 0.4 < np.mean([s.loudness == "quiet" for s in specs]) < 0.6
    for s in specs:
        assert set(s.symbols) <= set(SYMBOL_WORDS)
        ends = [o + n for o, n in zip(s.onsets, s.lengths, strict=True)]
        assert s.onsets[0] >= 0.05 * SR - 1 and ends[-1] <= s.n_samples - 0.05 * SR + 1
        assert all(0.2 * SR - 1 <= n <= 0.3 * SR + 1 for n in s.lengths)
        assert all(nxt - end >= 0.06 * SR - 2 for end, nxt in zip(ends, s.onsets[1:], strict=False))
    with pytest.raises(ValueError, match="clip_seconds"):
        audio.sample_clip_spec(np.random.default_rng(0), clip_seconds=1.0)


def test_clean_clip_is_silent_between_symbols_and_write_wav_rejects_stereo(tmp_path):
    spec = audio.sample_clip_spec(np.random.default_rng(3), snr_db=None)
    wav = audio.render_clip(spec)
    assert wav.dtype == np.float32 and wav.shape == (32000,) and np.abs(wav).max() < 1.0
    assert np.all(wav[: spec.onsets[0]] == 0) and np.abs(wav[spec.onsets[0] :]).max() > 0.01
    with pytest.raises(ValueError, match="stereo|mono"):
        audio.write_wav(tmp_path / "x.wav", np.zeros((10, 2), dtype=np.float32))


# ---------------------------------------------------------------- instructions and prompt files


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9|]+", text.lower()))


@pytest.mark.parametrize("task", list(TASKS))
def test_instructions_count_disjoint_and_varied(task):
    train = instructions.task_instructions(task, "train")
    held = instructions.task_instructions(task, "heldout")
    assert len(train) >= 10 and len(held) >= 10
    # Disjoint even after dropping case and punctuation: a held-out wording is a new wording.
    assert len({_norm(t) for t in train}) == len(train) and len({_norm(t) for t in held}) == len(held)
    assert not {_norm(t) for t in train} & {_norm(t) for t in held}
    for group in (train, held):
        assert not any(c in t for t in group for c in "{}<>"), (
            "braces or tags would break str.format/prompt_wrap"
        )
        assert any(t[0].islower() for t in group) and any(t[0].isupper() for t in group)
        assert any(w.isupper() and len(w) >= 3 and w != "JSON" for t in group for w in re.findall(r"\w+", t))
        assert len({t[-1] for t in group}) >= 2


def test_heldout_words_all_occur_in_training_instructions():
    seen = {w for group in instructions.TRAIN_INSTRUCTIONS.values() for t in group for w in _norm(t).split()}
    unseen = {
        w for group in instructions.HELDOUT_INSTRUCTIONS.values() for t in group for w in _norm(t).split()
    } - seen
    assert not unseen


def test_unknown_instruction_set_or_task_is_rejected():
    with pytest.raises(ValueError, match="which"):
        instructions.task_instructions("asr", "dev")
    with pytest.raises(ValueError, match="'emotion'"):
        instructions.task_instructions("emotion")


def test_prompt_files_have_the_official_format(small_world):
    info, _ = small_world
    load = {k: json.loads(p.read_text()) for k, p in info.prompt_files.items()}
    assert set(load) == {
        "train_prompt",
        "heldout_prompt",
        "test_prompt",
        "ahamask_train_prompt",
        "ahamask_test_prompt",
    }
    for content in load.values():
        assert list(content) == list(info.tasks)
    for task in info.tasks:
        for stem in ("train_prompt", "heldout_prompt"):
            templates = load[stem][task]
            assert len(templates) >= 10
            assert all(
                t.startswith("<Speech><SpeechHere></Speech> ") and t.count("<SpeechHere>") == 1
                for t in templates
            )
        assert load["test_prompt"][task] == load["train_prompt"][task][0]
        # The official AHAMask training prompt: speech only, no instruction (trailing space kept).
        assert load["ahamask_train_prompt"][task] == ["<Speech><SpeechHere></Speech> "]
        assert load["ahamask_test_prompt"][task] == "<Speech><SpeechHere></Speech> "
    assert instructions.wrapped_halves(load["ahamask_test_prompt"]["asr"]) == (
        "USER: <Speech>",
        "</Speech> \nASSISTANT:",
    )


# ---------------------------------------------------------------- manifests and targets


def test_manifests_schema_paths_and_targets(small_world):
    info, _ = small_world
    for split, by_task in info.manifests.items():
        for task, path in by_task.items():
            entries = _entries(path)
            assert len(entries) == info.splits[split]
            for i, e in enumerate(entries):
                assert set(e) == {"path", "text", "task", "Q", "labels"}, (path, i)
                assert not Path(e["path"]).is_absolute() and (path.parent / e["path"]).is_file(), (path, i)
                assert e["task"] == task and e["Q"] == "" and e["text"] == make_target(task, e["labels"])
                assert e["labels"]["count"] == len(e["labels"]["symbols"])


def test_mixed_manifest_gives_each_clip_every_task(small_world):
    info, _ = small_world
    entries = _entries(info.mixed_manifests["train"])
    per_clip: dict[str, set[str]] = {}
    for e in entries:
        per_clip.setdefault(e["labels"]["clip_id"], set()).add(e["task"])
        assert (info.mixed_manifests["train"].parent / e["path"]).is_file()
    assert len(per_clip) == 100 and all(tasks == set(info.tasks) for tasks in per_clip.values())


def test_mixed_tasks_per_clip_rotates_tasks_evenly(tmp_path):
    info = build_world(tmp_path / "w", n_train=12, n_valid=0, n_test=0, mixed_tasks_per_clip=2)
    entries = _entries(info.mixed_manifests["train"])
    assert len(entries) == 24
    by_clip = Counter(e["labels"]["clip_id"] for e in entries)
    assert set(by_clip.values()) == {2}
    assert set(Counter(e["task"] for e in entries).values()) == {4}  # 24 entries over 6 tasks
    assert _entries(info.manifests["test"]["asr"]) == []


def test_composite_targets_are_well_formed(small_world):
    labels = {"symbols": ["ba", "di", "ko"], "register": "low", "count": 3}
    assert make_target("asr", labels) == "ba di ko"
    assert make_target("count", labels) == "three"
    assert make_target("asr_gender", labels) == "ba di ko|low"
    assert make_target("gender_asr", labels) == "low|ba di ko"
    assert make_target("asr_gender_json", labels) == '{"asr": "ba di ko", "gender": "low"}'
    test = {t: _entries(p) for t, p in small_world[0].manifests["test"].items()}
    for i, asr in enumerate(test["asr"]):
        gender = test["gender"][i]["text"]
        assert test["asr_gender"][i]["text"].split("|") == [asr["text"], gender]
        assert test["gender_asr"][i]["text"].split("|") == [gender, asr["text"]]
        assert json.loads(test["asr_gender_json"][i]["text"]) == {"asr": asr["text"], "gender": gender}
    with pytest.raises(ValueError, match="'register'"):
        make_target("gender", {"symbols": ["ba"]})


def test_detect_and_parse_output_formats(small_world):
    for task, path in small_world[0].manifests["test"].items():
        for e in _entries(path)[:20]:
            assert detect_task(e["text"]) == task
            assert parse_output(task, e["text"]) is not None
    assert parse_output("asr_gender", " ba di | low ") == {"asr": "ba di", "gender": "low"}
    assert parse_output("asr_gender_json", '{"gender": "high", "asr": "vo"}') == {
        "gender": "high",
        "asr": "vo",
    }
    assert parse_output("asr_gender", "ba di|loud") is None
    assert parse_output("asr_gender_json", '{"asr": "vo", "gender": "low", "x": "1"}') is None
    assert parse_output("asr", "ba  di") is None and parse_output("count", "seven") is None
    assert detect_task("hello") is None and detect_task("quiet") == "loudness"
    assert detect_task("quiet", tasks=world.DEFAULT_TASKS) is None


def test_world_corpus_covers_prompts_instructions_and_targets(small_world):
    info, _ = small_world
    corpus = world_corpus(info)
    assert len(corpus) == len(set(corpus))
    assert "USER: <Speech>" in corpus and "</Speech> \nASSISTANT:" in corpus
    assert "</Speech> Transcribe the audio.\nASSISTANT:" in corpus
    joined = "\n".join(corpus)
    for task in info.tasks:
        for which in ("train", "heldout"):
            assert all(t in joined for t in instructions.task_instructions(task, which))
    targets = {e["text"] for p in info.manifests["test"].values() for e in _entries(p)}
    assert targets <= set(corpus)
    words = set(joined.replace("|", " ").replace('"', " ").split())
    assert set(SYMBOL_WORDS) | {"low", "high", "two", "three", "four", "five", "six"} <= words


def test_answer_words_cover_every_target_word(small_world):
    words = world.answer_words(small_world[0].tasks)
    assert words[:8] == list(SYMBOL_WORDS) and len(words) == len(set(words))
    assert {"low", "high", "two", "six", "asr", "gender"} <= set(words) and "quiet" not in words
    for path in small_world[0].manifests["test"].values():
        for e in _entries(path):
            assert set(re.findall(r"[a-z]+", e["text"])) <= set(words), e["text"]


def test_load_world_round_trip(small_world):
    info, _ = small_world
    assert load_world(info.root) == info
    assert [t.name for t in info.task_specs()] == list(world.DEFAULT_TASKS)


# ---------------------------------------------------------------- errors and CLI


def test_bad_arguments_are_reported_together(tmp_path):
    with pytest.raises(ValueError) as err:
        build_world(tmp_path / "w", n_train=-1, clip_seconds=1.0, tasks=["asr", "emotion"])
    msg = str(err.value)
    assert "n_train" in msg and "clip_seconds" in msg and "'emotion'" in msg
    assert not (tmp_path / "w").exists()


def test_existing_folders_are_protected_and_overwrite_removes_stale_clips(tmp_path):
    root = tmp_path / "w"
    build_world(root, n_train=3, n_valid=0, n_test=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_world(root, n_train=1, n_valid=0, n_test=0)
    build_world(root, n_train=1, n_valid=0, n_test=0, overwrite=True)
    assert [p.name for p in (root / "train" / "wav").iterdir()] == ["train_00000.wav"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        build_world(other, n_train=1, n_valid=0, n_test=0, overwrite=True)
    with pytest.raises(FileNotFoundError, match="world.json"):
        load_world(other)


def test_cli_builds_a_clean_world(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_synth_world", REPO / "scripts" / "make_synth_world.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cli"
    module.main([str(out), "--seed", "3", "--n-train", "2", "--n-valid", "1", "--n-test", "1", "--clean"])
    data = json.loads((out / "world.json").read_text())
    assert (
        data["seed"] == 3 and data["snr_db"] is None and data["splits"] == {"train": 2, "valid": 1, "test": 1}
    )
    entry = _entries(out / "train" / "asr.json")[0]
    wav, _ = sf.read(out / "train" / entry["path"])
    assert np.all(wav[: round(entry["labels"]["onsets_s"][0] * SR)] == 0)
