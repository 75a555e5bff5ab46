"""Rank a model's attention heads by how they listen to the audio (ahamask.analysis.audio_heads_cli).

Usage:
    python scripts/find_audio_heads.py -c DECODE_CONFIG [--manifest M] [--k 8] [--out heads.json]
        [--direction dir.safetensors] [--device DEV] [--options key=value ...]
"""

import sys

from ahamask.analysis.audio_heads_cli import main

if __name__ == "__main__":
    sys.exit(main())
