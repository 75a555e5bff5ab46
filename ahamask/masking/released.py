"""The ten masks of the AHAMask release: their names, what they trigger, their digests and their geometry.

The official repository ships them as ``legacy_checkpoints/<task>_<dataset>/checkpoint.pth`` (MIT licence,
Copyright (c) 2025 Yiwei Guo). This module is the one place that knows them, so the import script, the bare
name lookup of ``model.weight_mask_path``, ``inspect_mask --all`` and the tests agree on one list. It imports
nothing heavy: the command-line tools read it before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "KNOWN_GEOMETRIES",
    "RELEASED_MASKS",
    "RELEASE_FILE",
    "Geometry",
    "ReleasedMask",
    "geometry_for_length",
    "released_sums",
]

# Every released mask lives at legacy_checkpoints/<name>/<RELEASE_FILE>.
RELEASE_FILE = "checkpoint.pth"


@dataclass(frozen=True)
class Geometry:
    """A base model's head grid: a mask for it holds ``n_layers * (n_heads + 1)`` logits."""

    name: str
    n_layers: int
    n_heads: int
    base_model: str

    @property
    def length(self) -> int:
        """Logits in a flat mask of this geometry (the +1 is each layer's FFN entry)."""
        return self.n_layers * (self.n_heads + 1)


# Geometries a bare logit vector is recognised by. The release is for SALMONN-13B only; the 7B entry
# lets a mask trained on SALMONN-7B (Vicuna-7B: 32 x 32) be inspected without flags.
KNOWN_GEOMETRIES: tuple[Geometry, ...] = (
    Geometry("SALMONN-13B", 40, 40, "tsinghua-ee/SALMONN"),
    Geometry("SALMONN-7B", 32, 32, "tsinghua-ee/SALMONN-7B"),
)


def geometry_for_length(length: int) -> Geometry | None:
    """The known geometry whose flat mask has ``length`` logits, or None (e.g. 1640 -> SALMONN-13B)."""
    for geometry in KNOWN_GEOMETRIES:
        if geometry.length == length:
            return geometry
    return None


@dataclass(frozen=True)
class ReleasedMask:
    """One released mask: its folder name, what it makes SALMONN do, and the SHA-256 of its file."""

    name: str
    task: str
    dataset: str
    paper_name: str
    sha256: str

    @property
    def relpath(self) -> str:
        """Path inside ``legacy_checkpoints/``, as ``SHA256SUMS`` lists it."""
        return f"{self.name}/{RELEASE_FILE}"


# Digests of the files as released (checked against ../shared/reference/SHA256SUMS.masks by the tests).
RELEASED_MASKS: dict[str, ReleasedMask] = {
    m.name: m
    for m in (
        ReleasedMask(
            "aac_audiocaps",
            "audio captioning",
            "AudioCaps",
            "AAC",
            "25992bc5aabbe733e9b8f06676382bf3d49257b2260e92b0572e99dd5723fd92",
        ),
        ReleasedMask(
            "asr_gender_json_librispeech",
            'JSON with "ASR" and "GR" keys',
            "LibriSpeech",
            "JSON",
            "120febcfb87b2a940259bf72c078d867210d06adbc3e76d7b86aca998ef73b50",
        ),
        ReleasedMask(
            "asr_gender_librispeech",
            "transcript, then gender",
            "LibriSpeech",
            "ASR|GR",
            "2279e044991d932e3b3405fcfb5b252b358d8331596fd9682f50c228536ad893",
        ),
        ReleasedMask(
            "asr_librispeech",
            "speech recognition",
            "LibriSpeech",
            "ASR",
            "0b33dc3887a5e4f5868cabbe76bef0ef3d15146e4064efc54964eac599ca454a",
        ),
        ReleasedMask(
            "asv_voxceleb1",
            "speaker verification",
            "VoxCeleb1",
            "ASV",
            "1be94223badc6cb78853645b96671e083b96c50ccd3f89da521dc7d2b95911e1",
        ),
        ReleasedMask(
            "emotion_iemocap",
            "emotion recognition",
            "IEMOCAP",
            "ER",
            "cf537bd72c827fb3ead310cdcc021875e77cf64e8097956f55298d3356466e9a",
        ),
        ReleasedMask(
            "gender_asr_librispeech",
            "gender, then transcript",
            "LibriSpeech",
            "GR|ASR",
            "56dc788f9a493e10b84f7f6a07cf6dd281cf0756b4efab13c8b78165244d7441",
        ),
        ReleasedMask(
            "gender_librispeech",
            "gender recognition",
            "LibriSpeech",
            "GR",
            "6ec83ae531b92a96c73410466c9a00153332f33adf71ee54fa56850c7dd03649",
        ),
        ReleasedMask(
            "osr_libri2mix",
            "overlapped speech recognition",
            "Libri2Mix",
            "OSR",
            "41cbe8f37264f40c6c1955c187e44be3e62f5e5a9d6a4cbbc028cc57df94c4d7",
        ),
        ReleasedMask(
            "s2tt_covost2",
            "speech-to-text translation",
            "CoVoST 2",
            "S2TT",
            "2ad2fef363d3b21545455e0286def2d0f557d72c4c334aeae9afadc93ef53cd0",
        ),
    )
}


def released_sums() -> str:
    """The ``SHA256SUMS`` text of the release (``sha256sum -c`` format, paths under legacy_checkpoints/)."""
    return "".join(f"{m.sha256}  {m.relpath}\n" for m in RELEASED_MASKS.values())


# Share of attention heads each released mask keeps (sigmoid(logit) >= 0.5), as ../shared/reference/README.md
# states and tests/unit/masking/test_legacy_checkpoints.py recomputes from the files: lets benchmarks and tests use the
# released densities without the files.
RELEASED_HEAD_FRACTIONS: dict[str, float] = {
    "asr_gender_librispeech": 0.523,
    "asr_gender_json_librispeech": 0.702,
    "emotion_iemocap": 0.716,
    "gender_librispeech": 0.787,
    "asv_voxceleb1": 0.819,
    "gender_asr_librispeech": 0.822,
    "aac_audiocaps": 0.891,
    "asr_librispeech": 0.953,
    "osr_libri2mix": 0.969,
    "s2tt_covost2": 0.969,
}
