"""``steering_vectors build|localize``: instruction-contrast vectors and the localisation read-out on any backbone.

    python scripts/steering_vectors.py build -c configs/experiments/localization.yaml \
        --options decode_config=B/decode_config.yaml world_dir=W
    python scripts/steering_vectors.py localize -c configs/experiments/localization.yaml \
        --options decode_config=B/decode_config.yaml world_dir=W

``build`` writes OUT/vectors/<event>.safetensors (one per event type, from the world's calibration clips);
``localize`` reads them and writes OUT/report.json, OUT/table.txt and OUT/plots/example_NNN.png (attention
over time with the true and predicted intervals). OUT is ``out_dir``. The model is the decode config's
``model`` section built by ``model.arch`` (:func:`ahamask.models.backbone.build_backbone`: SALMONN,
Qwen2-Audio or Audio Flamingo 3), so the same two commands run on every backbone; the world must be built
first (:func:`ahamask.synth.localization_world.build_localization_world`). The full multi-seed experiment
(world and SALMONN base model included) is ``scripts/localization_experiment.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "run"]


def build_parser():
    """The command line: the shared ``-c``, ``--options``, ``--debug`` and the sub-command."""
    from ..utils.cli_args import entry_parser

    parser = entry_parser(__doc__, "experiment config (configs/experiments/localization.yaml)", device=False)
    parser.add_argument("command", choices=("build", "localize"))
    return parser


def run(command: str, cfg: Any) -> dict[str, Any]:
    """Run ``build`` or ``localize`` on a loaded :class:`LocalizationConfig`.

    Returns:
        ``{"vectors": {event: path}}`` for ``build``; the localisation result plus ``"table"`` for ``localize``.

    Raises:
        ValueError: ``decode_config`` / ``world_dir`` unset; FileNotFoundError: vectors missing for localize.
    """
    from ..config import load_decode_config
    from ..models.backbone import build_backbone
    from ..synth.localization_world import load_localization_world
    from ..utils.io import atomic_write_json, atomic_write_text
    from .localization_experiment import build_event_vectors, format_table, localize

    for key in ("decode_config", "world_dir"):
        if not getattr(cfg, key):
            raise ValueError(f"{key}: not set (pass --options {key}=PATH)")
    world = load_localization_world(cfg.world_dir)
    out = Path(cfg.out_dir)
    files = {event: out / "vectors" / f"{event}.safetensors" for event in world.event_types}
    if command == "localize":
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"vectors missing: {missing[0]} (run the build command first)")
    model = build_backbone(load_decode_config(cfg.decode_config).model).eval()
    if command == "build":
        return {"vectors": build_event_vectors(model, world, out / "vectors", cfg.steering, cfg.batch_size)}
    result = localize(model, world, files, cfg, world.seed, plot_dir=out / "plots")
    table = format_table([result])
    atomic_write_json(result, out / "report.json")
    atomic_write_text(table + "\n", out / "table.txt")
    return {**result, "table": table}


def main(argv: Sequence[str] | None = None) -> int:
    """0 on success; 2 with one ``error:`` line on a bad config, world or missing vectors."""
    import sys

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    from ..config import ConfigError, load_config
    from .localization_experiment import LocalizationConfig

    try:
        cfg = load_config(args.cfg_path, LocalizationConfig, args.options)
        result = run(args.command, cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"steering_vectors: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "build":
        print("\n".join(f"{event}: {path}" for event, path in result["vectors"].items()))
    else:
        print(result["table"])
    return 0
