"""Instruction-contrast steering vectors on a trained model and a localisation world (any backbone).

Usage:
  python scripts/steering_vectors.py build -c configs/experiments/localization.yaml --options decode_config=B/decode_config.yaml world_dir=W
  python scripts/steering_vectors.py localize -c configs/experiments/localization.yaml --options decode_config=... world_dir=W

``build`` writes OUT/vectors/<event>.safetensors (one per event type, from the world's calibration clips);
``localize`` reads them and writes OUT/report.json, OUT/table.txt and OUT/plots/example_NNN.png (attention
over time with the true and predicted intervals). OUT is ``out_dir``. The model is built by ``model.arch`` of
the decode config. The full multi-seed experiment (world and base model included) is
scripts/localization_experiment.py. The command lives in ahamask.analysis.steering_vectors_cli.
"""

import sys

from ahamask.analysis.steering_vectors_cli import main

if __name__ == "__main__":
    sys.exit(main())
