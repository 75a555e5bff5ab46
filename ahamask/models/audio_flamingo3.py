"""Audio Flamingo 3 (nvidia/audio-flamingo-3-hf) as an ahamask backbone.

transformers' ``AudioFlamingo3ForConditionalGeneration`` and its processor, loaded from a local folder.
Audio follows ``AudioFlamingo3Processor``: each clip is cut into 30 s windows (the feature extractor's
``chunk_length``), at most ``max_audio_len / chunk_length`` of them (20: 10 minutes), each padded to the
window; ``get_audio_features`` encodes every window and keeps its valid tokens, and a clip's tokens are its
windows' tokens in order (750 per full window, one per 40 ms). Where the processor truncates a longer clip
with a warning, this raises :class:`~ahamask.models.hf_audio_llm.AudioTooLongError`.

The LLM is Qwen2.5-7B (28 layers, 28 query heads over 4 key/value heads: grouped-query attention); masks
have one entry per query head. Prompts use the folder's chat template (``<sound>`` before the text in the
user turn, the default system turn); answers end at ``<|im_end|>``.
"""

from __future__ import annotations

import torch

from .frontend import whisper_features_batched
from .hf_audio_llm import AudioTooLongError, HFAudioLLM
from .qwen2_audio import encoder_token_counts

__all__ = ["AudioFlamingo3"]


class AudioFlamingo3(HFAudioLLM):
    """Audio Flamingo 3: AF-Whisper encoder, two-layer MLP projector, Qwen2.5-7B (28 layers x 28/4 heads)."""

    hf_class = "AudioFlamingo3ForConditionalGeneration"
    audio_placeholder = "<sound>"
    variants = ("instruct",)

    def _check_front_end(self) -> None:
        self._expected_frames()

    @property
    def max_windows(self) -> int:
        """Windows per clip the processor allows (``max_audio_len // chunk_length``: 20 for the real model)."""
        return int(self.processor.max_audio_len // self.feature_extractor.chunk_length)

    def _windows(self, waves: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        """Cut every clip into windows (the last one partial), as the processor does; windows per clip."""
        extractor = self.feature_extractor
        size = int(extractor.n_samples)
        chunks, per_clip = [], []
        for wave in waves:
            n_windows = max(1, -(-len(wave) // size))
            if n_windows > self.max_windows:
                raise AudioTooLongError(
                    f"a {len(wave) / extractor.sampling_rate:.1f} s clip needs {n_windows} windows of "
                    f"{extractor.chunk_length} s; Audio Flamingo 3 takes at most {self.max_windows} "
                    f"({self.processor.max_audio_len} s)"
                )
            chunks += [wave[k * size : (k + 1) * size] for k in range(n_windows)]
            per_clip.append(n_windows)
        return chunks, per_clip

    def _encode_rows(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        extractor = self.feature_extractor
        chunks, per_clip = self._windows(waves)
        raw = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
        features = whisper_features_batched(raw, extractor, self.device)  # [windows, mels, frames]
        lengths = torch.tensor([len(c) for c in chunks], device=self.device)
        frames = (lengths + extractor.hop_length - 1) // extractor.hop_length
        mask = torch.arange(features.shape[-1], device=self.device)[None, :] < frames[:, None]
        dtype = self.model.model.audio_tower.conv1.weight.dtype
        flat = self.model.get_audio_features(features.to(dtype), mask.long(), return_dict=True).pooler_output
        tokens = encoder_token_counts(frames)[1].tolist()  # per window, in window order
        per_window = list(torch.split(flat, tokens))
        rows, start = [], 0
        for n_windows in per_clip:
            rows.append(torch.cat(per_window[start : start + n_windows]))
            start += n_windows
        return rows
