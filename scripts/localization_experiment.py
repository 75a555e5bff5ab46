"""The localisation table in one command: world, base model, steering vectors, read-outs, over seeds.

Usage: python scripts/localization_experiment.py -c configs/experiments/localization.yaml [--options key=value ...]
Writes OUT/report.json, OUT/table.txt and OUT/seed_<s>/{world,base,vectors,plots,report.json}.
"""

from __future__ import annotations

import logging

from ahamask.utils.cli_args import entry_parser


def main(argv: list[str] | None = None) -> None:
    """Parses the command line, runs every seed and prints the table."""
    parser = entry_parser(__doc__, "experiment config (configs/experiments/localization.yaml)", device=False)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    from ahamask.analysis.localization_experiment import LocalizationConfig, run_experiment
    from ahamask.config import load_config

    cfg = load_config(args.cfg_path, LocalizationConfig, args.options)
    table, _ = run_experiment(cfg)
    print(table)


if __name__ == "__main__":
    main()
