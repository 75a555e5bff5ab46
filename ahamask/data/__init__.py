"""Data side of ahamask: manifests, the audio front end, the SALMONN dataset and its collate function.

Names are imported lazily: `ahamask.data.manifest` and `ahamask.data.audio` need no torch, so manifest
checks and scorers start in a fraction of a second; torch loads with the dataset or at the first
`collate` call.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported eagerly: the function shares its name with the submodule, and a lazy export would return
# the submodule once anything imported `ahamask.data.collate`. It needs no torch until called.
from ahamask.data.collate import collate

_EXPORTS = {
    "AudioError": "ahamask.data.audio",
    "assemble_waveform": "ahamask.data.audio",
    "default_feature_extractor": "ahamask.data.audio",
    "load_audio": "ahamask.data.audio",
    "load_feature_extractor": "ahamask.data.audio",
    "prepare_audio": "ahamask.data.audio",
    "prepare_waveform": "ahamask.data.audio",
    "read_audio": "ahamask.data.audio",
    "resample": "ahamask.data.audio",
    "whisper_features": "ahamask.data.audio",
    "SALMONNDataset": "ahamask.data.dataset",
    "ManifestError": "ahamask.data.manifest",
    "ManifestIssue": "ahamask.data.manifest",
    "load_manifest": "ahamask.data.manifest",
    "scan_manifest": "ahamask.data.manifest",
    "validate_manifest": "ahamask.data.manifest",
}

__all__ = ["collate", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ahamask.data' has no attribute {name!r}")
