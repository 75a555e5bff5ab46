"""The SALMONN dataset: manifest entries turned into Whisper features and raw waveforms."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from ahamask.data.audio import (
    DEFAULT_RESAMPLER,
    RESAMPLERS,
    AudioError,
    default_feature_extractor,
    load_feature_extractor,
    prepare_audio,
    prepare_waveform,
)
from ahamask.data.collate import collate
from ahamask.data.manifest import (
    ManifestError,
    ManifestIssue,
    describe_audio_error,
    load_manifest,
    scan_manifest,
)
from ahamask.utils.logging import log_rank_zero

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor

logger = logging.getLogger(__name__)

# Skipped entries are all kept on the dataset; the log shows this many of them.
_LOGGED_SKIPS = 20


class SALMONNDataset(Dataset):
    """Entries of an official-schema manifest, loaded lazily one item at a time.

    Args:
        ann_path: JSON manifest (see `ahamask.data.manifest`).
        whisper_path: Whisper checkpoint folder whose `preprocessor_config.json` sets n_mels and the chunk.
        feature_extractor: An extractor to use instead of loading one (give at most one of the two). With
            neither, whisper-large-v2's front end is used (80 mel bins, 30 s).
        skip_bad_entries: Decode every file up front, drop bad entries with a warning listing them and
            keep them in `skipped`, instead of raising at the first bad entry.
        resampler: How files not at 16 kHz are resampled: "torchaudio_sinc" (the official
            `torchaudio.transforms.Resample`, default) or "soxr" (see `ahamask.data.audio.resample`).
        features: "clip" (default): each item carries its Whisper features, computed on the CPU here;
            "device": items carry the waveform only (spectrogram None) and the model computes the features of
            a whole batch in one call on its device (`SALMONN.encode_speech`): the same numbers without a
            per-clip loop, and none at all for clips a speech cache already holds.

    Attributes:
        annotation: The usable entries, resolved as by `load_manifest`.
        skipped: ManifestIssue of every dropped entry (empty unless skip_bad_entries).
        wav_processor: The WhisperFeatureExtractor in use (the official attribute name).

    Raises:
        FileNotFoundError: The manifest or the Whisper config is missing.
        ManifestError: The manifest is malformed, or (with skip_bad_entries) no entry is usable.
        ValueError: Both whisper_path and feature_extractor were given, an unknown resampler, or features
            is not "clip" or "device".

    Example:
        >>> ds = SALMONNDataset("data/test/demo.json", whisper_path="ckpt/whisper-large-v2")
        >>> loader = DataLoader(ds, batch_size=4, collate_fn=ds.collater)
    """

    def __init__(
        self,
        ann_path: str | os.PathLike,
        whisper_path: str | os.PathLike | None = None,
        feature_extractor: WhisperFeatureExtractor | None = None,
        skip_bad_entries: bool = False,
        resampler: str = DEFAULT_RESAMPLER,
        features: str = "clip",
    ) -> None:
        super().__init__()
        if features not in ("clip", "device"):
            raise ValueError(f"SALMONNDataset: features={features!r}, expected 'clip' or 'device'")
        self.features = features
        if whisper_path is not None and feature_extractor is not None:
            raise ValueError("SALMONNDataset: give whisper_path or feature_extractor, not both")
        if resampler not in RESAMPLERS:
            raise ValueError(f"datasets.resampler: {resampler!r} is not one of {', '.join(RESAMPLERS)}")
        self.resampler = resampler
        if feature_extractor is None:
            if whisper_path is None:
                log_rank_zero(
                    logger, "no whisper_path given: using whisper-large-v2's front end (80 mels, 30 s)"
                )
                feature_extractor = default_feature_extractor()
            else:
                feature_extractor = load_feature_extractor(whisper_path)
        self.wav_processor = feature_extractor
        self.ann_path = str(ann_path)

        if skip_bad_entries:
            scan = scan_manifest(ann_path, check_audio=True)
            self.skipped: list[ManifestIssue] = scan.issues
            self._indices = [index for index, _ in scan.entries]
            self.annotation = [entry for _, entry in scan.entries]
            if not self.annotation:
                raise ManifestError(
                    f"{ann_path}: no usable entries (first problem: {scan.issues[0]})", scan.issues
                )
            if self.skipped:
                shown = "\n".join(f"  {issue}" for issue in self.skipped[:_LOGGED_SKIPS])
                hidden = len(self.skipped) - _LOGGED_SKIPS
                more = f"\n  ... and {hidden} more (see dataset.skipped)" if hidden > 0 else ""
                # Every rank drops the same entries; one warning is enough.
                log_rank_zero(
                    logger,
                    "%s: skipping %d of %d entries:\n%s%s",
                    ann_path,
                    len(self.skipped),
                    len(self.skipped) + len(self.annotation),
                    shown,
                    more,
                    level=logging.WARNING,
                )
        else:
            self.skipped = []
            self.annotation = load_manifest(ann_path)
            self._indices = list(range(len(self.annotation)))

    def __len__(self) -> int:
        return len(self.annotation)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Load one example.

        Args:
            index: Position in `annotation`.

        Returns:
            dict with spectrogram [n_mels, frames] float32 tensor (None with features="device"), raw_wav [time] float32 array, and the
            text, task, Q and id strings (id is the entry's path as written in the manifest).

        Raises:
            ManifestError: Its audio is missing or unusable; names the manifest, entry index and file.
        """
        entry = self.annotation[index]
        try:
            if self.features == "device":  # the model computes the batch's features on its device
                spectrogram = None
                raw_wav = prepare_waveform(
                    entry["path"], entry["expand_wav"], self.wav_processor, self.resampler
                )
            else:
                spectrogram, raw_wav = prepare_audio(
                    entry["path"], self.wav_processor, entry["expand_wav"], self.resampler
                )
        except (FileNotFoundError, AudioError) as err:
            issue = ManifestIssue(
                self.ann_path, self._indices[index], entry["id"], describe_audio_error(entry, err)
            )
            raise ManifestError(str(issue), [issue]) from err
        return {
            "spectrogram": spectrogram,
            "raw_wav": raw_wav,
            "text": entry["text"],
            "task": entry["task"],
            "Q": entry["Q"],
            "id": entry["id"],
        }

    # The official dataset exposes its collate function under this name; trainers pass it to DataLoader.
    collater = staticmethod(collate)
