"""Decoding manifests, scoring predictions with the paper's metrics, and the instruction-sensitivity sweep."""
