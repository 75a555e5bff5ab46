"""GPU check: the fast paths and mixed precision on one CUDA GPU, against CPU float32 (under 5 minutes).

Usage: python scripts/gpu_check.py [--device cuda] [--dry-run] [--skip-13b] [--bundle DIR]

Ready for the day a GPU is lent; ``--dry-run`` runs the same steps on the CPU at toy sizes (the test suite
does, tests/unit/core/test_gpu_check.py). Steps, each printing ``name: value`` lines:

1. builds a small SALMONN bundle (``ahamask.models.tiny``; LLaMA 4 x 8 heads of 64 on a 30 s Whisper chunk);
2. a mask-training step (loss + backward to the mask logits) in float32 on the CPU and under AMP float16 and
   bfloat16 on the device: the loss must be finite and within ``AMP_TOLERANCE`` (relative) of float32, the
   mask gradient finite;
3. greedy decoding with the mask folded into ``o_proj``, applied by hooks and with the heads pruned, in float32
   on the device (TF32 off): ids must equal the CPU float32 greedy ids; then the same three paths under fp16
   autocast for throughput (new tokens per second) and peak memory, ids reported as a count of equal rows;
4. a LLaMA-13B-shaped random model (40 layers x 40 heads, hidden 5120, fp16; toy width in the dry run) decoding
   with a folded mask keeping 52.3% of heads: throughput and peak memory, skipped when the free memory is short.

Exits 1 when a check fails (the failing lines end with ``FAIL``), 2 when no CUDA device is there (without
``--dry-run``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ahamask.masking.hooks import head_mask

# Relative |loss_amp - loss_fp32| / |loss_fp32| accepted for a training step (fp16 has 11 mantissa bits, bf16 8;
# a loss summed over a few hundred logits keeps about 1e-3 relative in fp16 and 1e-2 in bf16).
AMP_TOLERANCE = {"float16": 5e-3, "bfloat16": 3e-2}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

failures: list[str] = []


def report(name: str, value: Any, ok: bool = True) -> None:
    """Print ``name: value`` (``FAIL`` appended and remembered when ``ok`` is false)."""
    if isinstance(value, float):
        value = f"{value:.6g}"
    print(f"{name}: {value}{'' if ok else ' FAIL'}", flush=True)
    if not ok:
        failures.append(name)


@contextlib.contextmanager
def precision(model: Any, dtype: torch.dtype | None) -> Iterator[None]:
    """Run ``model`` (a SALMONN) under autocast ``dtype``, or in plain float32 when ``dtype`` is None.

    SALMONN autocasts by itself on an accelerator (``maybe_autocast``); on the CPU it does not, so the dry run
    wraps the call in CPU autocast instead. ``None`` switches the model's own autocast off for the float32 runs.
    """
    device = model.device.type
    saved = model.autocast_dtype
    if dtype is None:
        model.maybe_autocast = contextlib.nullcontext  # instance attribute: shadows the method for this run
        try:
            yield
        finally:
            del model.maybe_autocast
        return
    model.autocast_dtype = dtype
    outer = torch.autocast("cpu", dtype=dtype) if device == "cpu" else contextlib.nullcontext()
    try:
        with outer:
            yield
    finally:
        model.autocast_dtype = saved


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """(result, seconds, peak MiB allocated during ``run`` or None on the CPU)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = run()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return result, seconds, peak


def build_bundle(out: Path, dry_run: bool) -> Path:
    """Step 1: the small bundle (toy sizes in the dry run)."""
    from ahamask.models.tiny import make_tiny_bundle

    if dry_run:
        return make_tiny_bundle(out, n_layers=2, n_heads=8, hidden_size=64)
    from bench_masks import bench_bundle  # the benchmarks' small bundle, so the figures are comparable

    return bench_bundle(out)


def load_models(bundle: Path, device: torch.device) -> tuple[Any, Any, Any]:
    """(decode config, CPU float32 reference model, float32 model on ``device``)."""
    from ahamask.config import load_decode_config
    from ahamask.models.salmonn import SALMONN

    cfg = load_decode_config(bundle / "decode_config.yaml", ["model.llm_dtype=float32"])
    torch.manual_seed(0)
    reference = SALMONN.from_config(cfg.model, device="cpu").eval().requires_grad_(False)
    torch.manual_seed(0)
    model = SALMONN.from_config(cfg.model, device=device).eval().requires_grad_(False)
    return cfg, reference, model


def batch_of(cfg: Any, size: int) -> dict[str, Any]:
    """The bundle's test clips, waveforms only (features computed on the model's device)."""
    from torch.utils.data import DataLoader

    from ahamask.data.dataset import SALMONNDataset

    dataset = SALMONNDataset(cfg.test_data_path, cfg.model.whisper_path, features="device")
    return next(iter(DataLoader(dataset, batch_size=size, collate_fn=dataset.collater)))


def training_step(model: Any, samples: dict[str, Any], logits: torch.Tensor) -> tuple[float, bool]:
    """One mask-training step's loss (soft sigmoid mask, as the official without Gumbel) and grad finiteness."""
    logits = logits.detach().to(model.device).requires_grad_(True)
    weights = torch.sigmoid(logits).unsqueeze(0).expand(len(samples["id"]), -1)
    prompts = [model.prompt_for("")] * len(samples["id"])
    with head_mask(model.decoder, weights):
        loss = model(samples, prompts=prompts)["loss"]
    loss.float().backward()
    return float(loss.detach()), bool(torch.isfinite(logits.grad).all())


def check_training(reference: Any, model: Any, samples: dict[str, Any]) -> None:
    """Step 2: AMP float16 / bfloat16 losses against the CPU float32 loss."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(model.mask_size, generator=gen) + 2.0
    with precision(reference, None):
        base, grad_ok = training_step(reference, samples, logits)
    report("train_loss_fp32_cpu", base, math.isfinite(base) and grad_ok)
    for name, dtype in DTYPES.items():
        with precision(model, dtype):
            loss, grad_ok = training_step(model, samples, logits)
        relative = abs(loss - base) / max(abs(base), 1e-12)
        report(f"train_loss_{name}", loss, math.isfinite(loss))
        report(f"train_mask_grad_finite_{name}", grad_ok, grad_ok)
        report(f"train_loss_rel_diff_{name}", relative, relative <= AMP_TOLERANCE[name])
    report(
        "train_amp_tolerance",
        f"fp16 {AMP_TOLERANCE['float16']:g}, bf16 {AMP_TOLERANCE['bfloat16']:g} (relative)",
    )


def decode_paths(model: Any, mask: torch.Tensor) -> dict[str, Callable[[Any, Any, list[str]], list[str]]]:
    """fold / hooks / prune: each a function (samples, generate_cfg, prompts) -> answers."""
    from ahamask.masking.fold import fold_head_mask
    from ahamask.masking.prune import prune_heads

    pruned = prune_heads(model, mask)

    def fold(samples, gen, prompts):
        with fold_head_mask(model, mask):
            return model.generate(samples, gen, prompts=prompts)

    def hooks(samples, gen, prompts):
        with head_mask(model.decoder, mask):
            return model.generate(samples, gen, prompts=prompts)

    def prune(samples, gen, prompts):
        return pruned.generate(samples, gen, prompts=prompts)

    return {"fold": fold, "hooks": hooks, "prune": prune}


def greedy_ids(
    run: Callable[..., list[str]], model: Any, samples: dict[str, Any], gen: dict
) -> list[list[int]]:
    """Greedy answers as token ids (ids, not text, are compared)."""
    prompts = [model.prompt_for("")] * len(samples["id"])
    answers = run(samples, gen, prompts)
    return [model.llama_tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]


def check_decoding(reference: Any, model: Any, samples: dict[str, Any], new_tokens: int) -> None:
    """Step 3: fold / hooks / prune ids against CPU float32 greedy, then fp16 throughput and memory."""
    from bench_masks import random_mask

    mask = random_mask(model.n_layers, model.n_heads, 0.523, seed=0)
    gen = {"max_new_tokens": new_tokens, "num_beams": 1}
    with precision(reference, None), torch.inference_mode():
        expected = greedy_ids(decode_paths(reference, mask)["hooks"], reference, samples, gen)
    paths = decode_paths(model, mask)
    with precision(model, None), torch.inference_mode():
        for name, run in paths.items():
            ids = greedy_ids(run, model, samples, gen)
            report(f"decode_ids_equal_cpu_fp32_{name}", ids == expected, ids == expected)
    fixed = {**gen, "min_length": new_tokens + 1}  # every row generates exactly new_tokens tokens
    rows = len(samples["id"])
    with precision(model, torch.float16), torch.inference_mode():
        for name, run in paths.items():
            run(samples, fixed, [model.prompt_for("")] * rows)  # warm-up (kernels, allocator)
            answers, seconds, peak = peak_memory(
                model.device, lambda run=run: greedy_ids(run, model, samples, fixed)
            )
            same = sum(a == b for a, b in zip(answers, expected, strict=True))
            report(f"decode_fp16_rows_equal_cpu_fp32_{name}", f"{same}/{rows}")
            report(f"decode_fp16_tokens_per_s_{name}", rows * new_tokens / seconds)
            report(f"decode_fp16_peak_mib_{name}", "n/a" if peak is None else peak)


def check_13b(device: torch.device, dry_run: bool, new_tokens: int) -> None:
    """Step 4: a LLaMA-13B-shaped random model's masked decode at fp16 (toy width in the dry run)."""
    from bench_masks import random_mask
    from transformers import LlamaConfig, LlamaForCausalLM

    from ahamask.masking.fold import fold_head_mask

    hidden, intermediate, vocab = (160, 432, 1000) if dry_run else (5120, 13824, 32000)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=40,
        num_attention_heads=40,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    n_params = 40 * (4 * hidden * hidden + 3 * hidden * intermediate) + 2 * vocab * hidden
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    need = n_params * (2 if dtype == torch.float16 else 4) * 1.15 + 2**30  # weights, KV cache, workspace
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if free < need:
            report("llama13b_skipped", f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
            return
    report("llama13b_params_billion", n_params / 1e9)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(device):  # initialised on the device: no 52 GB float32 copy on the host
            llm = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    mask = random_mask(40, 40, 0.523, seed=0)
    batch, prompt_len = 4, 100  # 88 speech embeddings + the prompt, as SALMONN
    embeds = torch.randn(batch, prompt_len, hidden, device=device, dtype=dtype) * 0.02
    attention = torch.ones(batch, prompt_len, dtype=torch.long, device=device)
    kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }

    def run() -> Any:
        with fold_head_mask(llm, mask):
            return llm.generate(inputs_embeds=embeds, attention_mask=attention, **kwargs)

    with torch.inference_mode():
        run()  # warm-up
        out, seconds, peak = peak_memory(device, run)
    report("llama13b_fold_tokens_per_s", batch * out.shape[1] / seconds)
    report("llama13b_fold_peak_mib", "n/a" if peak is None else peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="the accelerator (default cuda)")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at toy sizes")
    parser.add_argument("--skip-13b", action="store_true", help="leave out step 4")
    parser.add_argument("--bundle", type=Path, help="use this tiny bundle instead of building one")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_masks' helpers
    if args.dry_run:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry-run to check the logic on the CPU)", file=sys.stderr)
            return 2
        device = torch.device(args.device)
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for the id comparisons
        torch.backends.cudnn.allow_tf32 = False
    from ahamask.utils.logging import setup_logging

    setup_logging("WARNING")
    failures.clear()
    started = time.perf_counter()
    report("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)")
    report("torch", torch.__version__)
    new_tokens = 4 if args.dry_run else 20
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or build_bundle(Path(tmp) / "bundle", args.dry_run)
        cfg, reference, model = load_models(bundle, device)
        samples = batch_of(cfg, 2 if args.dry_run else 4)
        check_training(reference, model, samples)
        check_decoding(reference, model, samples, new_tokens)
        del reference, model
    if not args.skip_13b:
        check_13b(device, args.dry_run, 2 if args.dry_run else 32)
    report("seconds", time.perf_counter() - started)
    report("result", "FAIL " + ", ".join(failures) if failures else "ok", not failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
