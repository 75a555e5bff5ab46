"""Benchmark: a mask-training step (frozen SALMONN) against one also training Q-Former, projection, LoRA.

Usage: python scripts/bench_train.py [--threads 1] [--repeats 5] [--batch 4] [--beats]

AHAMask trains only the mask logits; the official SALMONN set-up would also train the Q-Former, the query
tokens, ``ln_speech``, the projection and the LoRA matrices (``official_trainable_names``). Both steps run on
the same small bundle (see ``bench_masks.bench_bundle``: 30 s Whisper chunk, 88 speech tokens, 4-layer LLM)
with the same batch: forward, backward and an AdamW step, dropout off in both. Prints steps/s and memory of
each and the ratios ``train_speed_ratio`` (mask-only / official, > 1 is faster) and ``train_memory_ratio``
(< 1 is smaller). Memory is what the step adds: on CUDA the allocator's peak; on the CPU, which has no peak
counter, the bytes of the tensors autograd saves for backward plus the gradients and the AdamW state.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

from ahamask.masking.hooks import head_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks import base_parser, bench_bundle, figure, interleaved, median_ratio, note, setup  # noqa: E402


class Step:
    """One training step of a SALMONN whose trainable set is given; remembers the step's memory."""

    def __init__(self, model, mask_logits: torch.Tensor, samples, official: bool) -> None:
        from ahamask.masking.gumbel import gumbel_sigmoid

        self.gumbel_sigmoid = gumbel_sigmoid
        self.model = model
        self.samples = samples
        self.logits = mask_logits.clone().requires_grad_(True)
        params = dict(model.named_parameters())
        self.trainable = [self.logits]
        if official:
            self.trainable += [params[name] for name in model.official_trainable_names()]
        for param in self.trainable[1:]:
            param.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)
        self.prompts = [model.prompt_for("")] * len(samples["id"])
        self.memory = 0

    def __call__(self) -> None:
        batch = len(self.samples["id"])
        weights = self.gumbel_sigmoid(self.logits.unsqueeze(0).repeat(batch, 1), 1.0, hard=True)
        with head_mask(self.model.decoder, weights):
            loss = self.model(self.samples, prompts=self.prompts)["loss"]
        (loss + 1e-4 * weights.sum(1).mean()).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def measure_memory(self) -> int:
        """Bytes the step holds beyond the model (see the module docstring for what is counted)."""
        device = self.model.device
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            self()
            return torch.cuda.max_memory_allocated() - before
        resident = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in resident:  # weights are resident anyway; count activations only
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        batch = len(self.samples["id"])
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            weights = self.gumbel_sigmoid(self.logits.unsqueeze(0).repeat(batch, 1), 1.0, hard=True)
            with head_mask(self.model.decoder, weights):
                loss = self.model(self.samples, prompts=self.prompts)["loss"]
            (loss + 1e-4 * weights.sum(1).mean()).backward()
        grads = sum(p.grad.nbytes for p in self.trainable if p.grad is not None)
        self.optimizer.step()
        state = sum(t.nbytes for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        self.optimizer.zero_grad(set_to_none=True)
        return sum(saved.values()) + grads + state


def main() -> None:
    parser = base_parser(__doc__, repeats=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--beats", action="store_true", help="add a tiny BEATs to the bundle")
    args = parser.parse_args()
    setup(args)

    from torch.utils.data import DataLoader

    from ahamask.config import load_train_config
    from ahamask.data.dataset import SALMONNDataset
    from ahamask.models.salmonn import SALMONN

    with tempfile.TemporaryDirectory() as tmp:
        bundle = bench_bundle(Path(tmp), with_beats=args.beats)
        cfg = load_train_config(bundle / "config.yaml")
        dataset = SALMONNDataset(cfg.datasets.train_ann_path, cfg.model.whisper_path)
        samples = next(iter(DataLoader(dataset, batch_size=args.batch, collate_fn=dataset.collater)))
        steps = {}
        for name, official in (("mask_only", False), ("official", True)):
            torch.manual_seed(args.seed)
            model = SALMONN.from_config(cfg.model).eval().requires_grad_(False)
            logits = torch.full((model.mask_size,), 4.0)
            steps[name] = Step(model, logits, samples, official)
        counts = {name: sum(p.numel() for p in step.trainable) for name, step in steps.items()}
        note(
            f"LLM {model.n_layers} layers x {model.n_heads} heads; batch {len(samples['id'])}; "
            f"trainable values: mask only {counts['mask_only']}, official set-up {counts['official']}"
        )
        times = interleaved(steps, args.repeats)
        for name, step in steps.items():
            figure(f"train_steps_per_s_{name}", 1.0 / statistics.median(times[name]))
            step.memory = step.measure_memory()
            figure(f"train_memory_mb_{name}", step.memory / 2**20, digits=1)
        figure("train_speed_ratio", median_ratio(times, "official", "mask_only"))
        figure("train_memory_ratio", steps["mask_only"].memory / steps["official"].memory)


if __name__ == "__main__":
    main()
