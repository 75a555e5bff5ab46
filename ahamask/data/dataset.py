"""The SALMONN dataset: manifest entries turned into Whisper features and raw waveforms."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from ahamask.data.audio import AudioError, default_feature_extractor, load_feature_extractor, prepare_audio
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

    Attributes:
        annotation: The usable entries, resolved as by `load_manifest`.
        skipped: ManifestIssue of every dropped entry (empty unless skip_bad_entries).
        wav_processor: The WhisperFeatureExtractor in use (the official attribute name).

    Raises:
        FileNotFoundError: The manifest or the Whisper config is missing.
        ManifestError: The manifest is malformed, or (with skip_bad_entries) no entry is usable.
        ValueError: Both whisper_path and feature_extractor were given.

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
    ) -> None:
        super().__init__()
        if whisper_path is not None and feature_extractor is not None:
            raise ValueError("SALMONNDataset: give whisper_path or feature_extractor, not both")
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
            dict with spectrogram [n_mels, frames] float32 tensor, raw_wav [time] float32 array, and the
            text, task, Q and id strings (id is the entry's path as written in the manifest).

        Raises:
            ManifestError: Its audio is missing or unusable; names the manifest, entry index and file.
        """
        entry = self.annotation[index]
        try:
            spectrogram, raw_wav = prepare_audio(entry["path"], self.wav_processor, entry["expand_wav"])
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
