"""Instruction-contrast steering vectors on a trained model and a localisation world.

Usage:
  python scripts/steering_vectors.py build -c configs/experiments/localization.yaml --options decode_config=B/decode_config.yaml world_dir=W
  python scripts/steering_vectors.py localize -c configs/experiments/localization.yaml --options decode_config=... world_dir=W

``build`` writes OUT/vectors/<event>.safetensors (one per event type, from the world's calibration clips);
``localize`` reads them and writes OUT/report.json, OUT/table.txt and OUT/plots/example_NNN.png (attention
over time with the true and predicted intervals). OUT is ``out_dir``. The full multi-seed experiment (world
and base model included) is scripts/localization_experiment.py.
"""

from __future__ import annotations

import logging
import sys

from ahamask.utils.cli_args import entry_parser


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and runs ``build`` or ``localize``."""
    parser = entry_parser(__doc__, "experiment config (configs/experiments/localization.yaml)", device=False)
    parser.add_argument("command", choices=("build", "localize"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    from pathlib import Path

    from ahamask.analysis.localization_experiment import (
        LocalizationConfig,
        build_event_vectors,
        format_table,
        localize,
    )
    from ahamask.config import load_config, load_decode_config
    from ahamask.models.salmonn import SALMONN
    from ahamask.synth.localization_world import load_localization_world
    from ahamask.utils.io import atomic_write_json, atomic_write_text

    cfg = load_config(args.cfg_path, LocalizationConfig, args.options)
    for key in ("decode_config", "world_dir"):
        if not getattr(cfg, key):
            sys.exit(f"{key}: not set (pass --options {key}=PATH)")
    world = load_localization_world(cfg.world_dir)
    model = SALMONN.from_config(load_decode_config(cfg.decode_config).model).eval()
    out = Path(cfg.out_dir)
    if args.command == "build":
        files = build_event_vectors(model, world, out / "vectors", cfg.steering, cfg.batch_size)
        print("\n".join(f"{event}: {path}" for event, path in files.items()))
        return
    files = {event: out / "vectors" / f"{event}.safetensors" for event in world.event_types}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        sys.exit(f"vectors missing: {missing[0]} (run the build command first)")
    result = localize(model, world, files, cfg, world.seed, plot_dir=out / "plots")
    table = format_table([result])
    atomic_write_json(result, out / "report.json")
    atomic_write_text(table + "\n", out / "table.txt")
    print(table)


if __name__ == "__main__":
    main()
